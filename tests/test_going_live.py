"""Going live for real: deploys and rollbacks over real SSH restart a real gunicorn, which then serves the release
`current` names: under supervisord (`supervisorctl restart`), and gunicorn's own graceful re-exec (USR2), the
latter with no failed request while a deploy or a rollback runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploytool.hostside.gunicorn_reexec import alive  # gone, or a zombie its new parent has yet to reap
from tests.conftest import Mirror, Project
from tests.gunicornhost import (
    AppHost,
    RequestLoop,
    Supervisord,
    app_files,
    free_port,
    get,
    kill_mentioning,
    serve_app_server,
    serves,
    start_supervisord,
    supervisor_restart,
    wait_for,
)
from tests.sshd import SshServer


@dataclass
class Live:
    project: Project
    hosts: dict[str, AppHost]
    supervisor: Supervisord | None = None

    def deploy(self) -> str:
        self.project.commit("another release")
        self.project.fab("deploy", "--hosts", ",".join(self.hosts))
        return next(iter(self.hosts.values())).current()

    def rollback(self) -> str:
        self.project.fab("rollback", "--hosts", ",".join(self.hosts))
        return next(iter(self.hosts.values())).current()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        for host in self.hosts.values():
            kill_mentioning(str(host.base))


def make_live(project: Project, server: SshServer, mirror: Mirror, names: tuple[str, ...], recipe: str) -> Live:
    """The example app under gunicorn on hosts ``names``, restarted by ``recipe`` (``graceful`` or ``supervisor``),
    health-checked by asking it which release it runs."""
    pins = serve_app_server(mirror.directory)
    stage = project.inventory["stages"]["test"]
    stage["hosts"] = {name: stage["hosts"][name] for name in names}
    live = Live(project, {})
    for name, settings in stage["hosts"].items():
        host = live.hosts[name] = AppHost(name, Path(settings["root"]), free_port())
        host.prepare(settings)
        settings["health_check"] = {"url": host.url, "contains": "{{ release_id }}"}
        if recipe == "graceful":
            settings["restart"] = host.graceful_restart()
        else:
            live.supervisor = start_supervisord(
                host.base / "supervisor", mirror.directory, host.base / "etc" / "supervisor" / "conf.d", server.user
            )
            settings["restart"] = supervisor_restart(live.supervisor.ctl)
    project.write_inventory()
    project.commit("the example app under gunicorn", app_files(pins))
    return live


@pytest.fixture
def supervised(ssh_project: Project, ssh_server: SshServer, mirror: Mirror) -> Iterator[Live]:
    live = make_live(ssh_project, ssh_server, mirror, ("web1",), "supervisor")
    yield live
    live.stop()


@pytest.fixture
def graceful(ssh_project: Project, ssh_server: SshServer, mirror: Mirror) -> Iterator[Live]:
    live = make_live(ssh_project, ssh_server, mirror, ("web1",), "graceful")
    yield live
    live.stop()


def test_supervisord_serves_each_deployed_release_and_the_rollback(supervised: Live) -> None:
    host = supervised.hosts["web1"]
    first = supervised.deploy()
    assert get(host.url)["release"] == first
    second = supervised.deploy()
    assert second != first and get(host.url)["release"] == second
    assert supervised.rollback() == first
    assert get(host.url)["release"] == first and get(host.url)["host"] == "web1"


def test_graceful_first_deploy_starts_then_reexecs_with_no_failed_request(graceful: Live) -> None:
    first = graceful.deploy()
    for host in graceful.hosts.values():
        assert get(host.url)["release"] == first
    web1 = graceful.hosts["web1"]
    masters = {name: host.master() for name, host in graceful.hosts.items()}

    with RequestLoop(web1.url) as during_deploy:
        wait_for(lambda: during_deploy.requests > 10, what="requests before the deploy")
        second = graceful.deploy()
    for name, host in graceful.hosts.items():
        assert host.master() != masters[name], f"{name}: the master was not re-exec'd"
        assert not alive(masters[name]), f"{name}: the old master still runs"
        assert get(host.url)["release"] == second
    assert during_deploy.failures == [], during_deploy.failures[:5]
    assert during_deploy.releases[0] == first and during_deploy.releases[-1] == second

    reexeced = web1.master()
    with RequestLoop(web1.url) as during_rollback:
        wait_for(lambda: during_rollback.requests > 10, what="requests before the rollback")
        assert graceful.rollback() == first
    assert get(web1.url)["release"] == first and web1.master() != reexeced
    assert not alive(reexeced)
    assert during_rollback.failures == [], during_rollback.failures[:5]
    assert during_rollback.releases[-1] == first


def test_graceful_restart_after_a_crash_starts_again(graceful: Live) -> None:
    first = graceful.deploy()
    web1 = graceful.hosts["web1"]
    crashed = web1.master()
    kill_mentioning(str(web1.base))  # the app server died: its pid file is left, naming a dead process
    wait_for(lambda: not serves(web1.url, first), what="web1 to stop answering")
    second = graceful.deploy()
    assert get(web1.url)["release"] == second and web1.master() != crashed


def test_graceful_release_that_cannot_boot_is_reverted_while_the_old_master_serves(graceful: Live) -> None:
    first = graceful.deploy()
    web1 = graceful.hosts["web1"]
    graceful.project.commit("broken", {"example_app/wsgi.py": "raise ImportError('this release cannot start')\n"})
    with RequestLoop(web1.url) as during:
        wait_for(lambda: during.requests > 10, what="requests before the deploy")
        result = graceful.project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "the new gunicorn master" in result.stdout + result.stderr, result.stdout
    assert web1.current() == first  # reverted: the switch back restarts (re-execs) the old release again
    assert get(web1.url)["release"] == first and alive(web1.master())
    assert during.failures == [] and during.releases == [first]
