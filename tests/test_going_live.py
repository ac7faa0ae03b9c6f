"""Going live for real: deploys and rollbacks over real SSH restart a real gunicorn, which then serves the release
`current` names: under supervisord (`supervisorctl restart`), and gunicorn's own graceful re-exec (USR2), the
latter with no failed request while a deploy or a rollback runs."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.conftest import Mirror, Project
from tests.gunicornhost import (
    APP_SOURCE,
    EXAMPLE,
    RequestLoop,
    Supervisord,
    free_port,
    get,
    kill_mentioning,
    serves,
    start_supervisord,
    wait_for,
)
from tests.sshd import SshServer
from tests.wheelfactory import repack_installed

TEMPLATES = ("gunicorn/{{ app }}.conf.py.j2", "supervisor/conf.d/{{ app }}.conf.j2")


def serve_app_server(mirror: Mirror) -> list[str]:
    """Put gunicorn (and what it needs outside extras) and supervisor in the test mirror; the pins to install."""
    pins = []
    for name in ("gunicorn", *runtime_requirements("gunicorn")):
        repack_installed(name, mirror.directory)
        pins.append(f"{name}=={importlib.metadata.version(name)}")
    repack_installed("supervisor", mirror.directory)
    return pins


def runtime_requirements(name: str) -> list[str]:
    wanted = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            wanted.append(requirement.name)
    return wanted


@dataclass
class LiveHost:
    name: str
    root: Path  # the deploy root
    base: Path  # the host's directory (etc root, logs, pid file, supervisord live here)
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pidfile(self) -> Path:
        return self.base / "gunicorn.pid"

    def current(self) -> str:
        return os.readlink(self.root / "current").removeprefix("releases/")

    def master(self) -> int:
        return int(self.pidfile.read_text())


@dataclass
class Live:
    project: Project
    hosts: dict[str, LiveHost]
    supervisor: Supervisord | None = None

    def deploy(self, *args: str) -> str:
        self.project.fab("deploy", "--hosts", ",".join(self.hosts), *args)
        return next(iter(self.hosts.values())).current()

    def rollback(self) -> str:
        self.project.fab("rollback", "--hosts", ",".join(self.hosts))
        return next(iter(self.hosts.values())).current()

    def new_commit(self, message: str) -> None:
        self.project.commit(message)


def graceful_restart(host: LiveHost) -> dict[str, Any]:
    """hosts.yml's restart for the graceful recipe: re-exec the master in the pid file, else run `start`."""
    start = (
        "{{ venv }}/bin/gunicorn --config {{ etc_root }}/gunicorn/{{ app }}.conf.py --daemon"
        f" --pid {host.pidfile} --error-logfile {host.base}/logs/gunicorn.log"
    )
    return {"graceful": {"pidfile": str(host.pidfile), "timeout": 60}, "start": [start]}


def supervisor_restart(ctl: Path) -> dict[str, Any]:
    """hosts.yml's restart for gunicorn under supervisord."""
    return {"commands": [f"{ctl} update", f"{ctl} restart demo"]}


def make_live(ssh_project: Project, ssh_server: SshServer, mirror: Mirror, names: tuple[str, ...], recipe: str) -> Live:
    pins = serve_app_server(mirror)
    stage = ssh_project.inventory["stages"]["test"]
    stage["hosts"] = {name: stage["hosts"][name] for name in names}
    hosts = {}
    for name, settings in stage["hosts"].items():
        root = Path(settings["root"])
        base = root.parent
        (base / "etc").mkdir()
        (base / "logs").mkdir()
        for path in (base / "etc", base / "logs"):
            os.chown(path, base.stat().st_uid, base.stat().st_gid)
        host = LiveHost(name, root, base, free_port())
        hosts[name] = host
        settings["etc_root"] = str(base / "etc")
        settings["vars"] = {"port": host.port, "workers": 2, "log_dir": str(base / "logs"), "server_name": name}
    live = Live(ssh_project, hosts)
    if recipe == "supervisor":
        (first,) = hosts.values()
        live.supervisor = start_supervisord(
            first.base / "supervisor", mirror.directory, first.base / "etc" / "supervisor" / "conf.d", ssh_server.user
        )
        stage["hosts"][first.name]["after_switch"] = supervisor_restart(live.supervisor.ctl)["commands"]
    else:
        for name, host in hosts.items():
            stage["hosts"][name]["restart"] = graceful_restart(host)
    ssh_project.write_inventory()
    files = {
        "requirements/prod.txt": "".join(f"{pin}\n" for pin in pins),
        "example_app/__init__.py": "",
        "example_app/wsgi.py": APP_SOURCE.read_text(),
        "hosts.yml": (ssh_project.path / "hosts.yml").read_text(),
    }
    for template in TEMPLATES:
        files[f"etc-mock/{template}"] = (EXAMPLE / template).read_text()
    ssh_project.commit("the example app under gunicorn", files)
    return live


@pytest.fixture
def supervised(ssh_project: Project, ssh_server: SshServer, mirror: Mirror) -> Iterator[Live]:
    live = make_live(ssh_project, ssh_server, mirror, ("web1",), "supervisor")
    yield live
    assert live.supervisor is not None
    live.supervisor.stop()
    for host in live.hosts.values():
        kill_mentioning(str(host.base))


@pytest.fixture
def graceful(ssh_project: Project, ssh_server: SshServer, mirror: Mirror) -> Iterator[Live]:
    live = make_live(ssh_project, ssh_server, mirror, ("web1", "web2"), "graceful")
    yield live
    for host in live.hosts.values():
        kill_mentioning(str(host.base))


def test_supervisord_serves_each_deployed_release_and_the_rollback(supervised: Live) -> None:
    (host,) = supervised.hosts.values()
    first = supervised.deploy()
    wait_for(lambda: serves(host.url, first), what=f"web1 to serve {first}")
    supervised.new_commit("second")
    second = supervised.deploy()
    assert second != first
    wait_for(lambda: serves(host.url, second), what=f"web1 to serve {second}")
    assert supervised.rollback() == first
    wait_for(lambda: serves(host.url, first), what=f"web1 to serve {first} again")
    assert get(host.url)["host"] == "web1"


def test_graceful_first_deploy_starts_then_reexecs_with_no_failed_request(graceful: Live) -> None:
    first = graceful.deploy()
    for host in graceful.hosts.values():
        wait_for(lambda host=host: serves(host.url, first), what=f"{host.name} to serve {first}")
    web1 = graceful.hosts["web1"]
    masters = {name: host.master() for name, host in graceful.hosts.items()}

    graceful.new_commit("second")
    with RequestLoop(web1.url) as during_deploy:
        wait_for(lambda: during_deploy.requests > 10, what="requests before the deploy")
        second = graceful.deploy()
    for name, host in graceful.hosts.items():
        assert host.master() != masters[name], f"{name}: the master was not re-exec'd"
        assert not os.path.exists(f"/proc/{masters[name]}"), f"{name}: the old master still runs"
        assert get(host.url)["release"] == second
    assert during_deploy.failures == [], during_deploy.failures[:5]
    assert during_deploy.releases[0] == first and during_deploy.releases[-1] == second

    reexeced = web1.master()
    with RequestLoop(web1.url) as during_rollback:
        wait_for(lambda: during_rollback.requests > 10, what="requests before the rollback")
        assert graceful.rollback() == first
    assert get(web1.url)["release"] == first and web1.master() != reexeced
    assert during_rollback.failures == [], during_rollback.failures[:5]
    assert during_rollback.releases[-1] == first
    assert during_deploy.requests + during_rollback.requests > 100


def test_graceful_restart_after_a_crash_starts_again(graceful: Live) -> None:
    first = graceful.deploy()
    web1 = graceful.hosts["web1"]
    wait_for(lambda: serves(web1.url, first), what="web1 to serve")
    kill_mentioning(str(web1.base))  # the app server crashed: a stale pid file is left
    wait_for(lambda: not os.path.exists(f"/proc/{web1.master()}"), what="the master to die")
    graceful.new_commit("second")
    second = graceful.deploy()
    wait_for(lambda: serves(web1.url, second), what="web1 to serve the new release after a fresh start")
