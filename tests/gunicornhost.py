"""Real gunicorn for the tests: releases laid out as a deploy makes them, HTTP probes, and cleaning up what ran."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from deploytool.rendering.etc_render import render_all
from tests.isolation import free_port, process_state, shared_build, shared_directory, wait_for
from tests.wheelfactory import repack_installed

__all__ = ["free_port", "wait_for"]  # re-exported for the tests that start app servers

EXAMPLE = Path(__file__).resolve().parent.parent / "etc-mock"
APP_SOURCE = Path(__file__).resolve().parent.parent / "example_app" / "wsgi.py"
HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def get(url: str, timeout: float = 5.0) -> dict[str, str]:
    """GET ``url`` and return its JSON answer (raises on any failure)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        data = json.loads(answer.read())
    assert isinstance(data, dict)
    return data


def serves(url: str, release: str) -> bool:
    try:
        return get(url, timeout=2).get("release") == release
    except (OSError, ValueError):
        return False


def gunicorn_config(variables: dict[str, object]) -> bytes:
    """The example app's gunicorn config (etc-mock/) rendered with ``variables`` (the deploy's template facts)."""
    facts = {"server_name": "localhost", "workers": 2, **variables}
    return render_all(EXAMPLE, {"host": facts})["host"]["gunicorn/demo.conf.py"]


def processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            found[int(entry)] = (int(stat.rpartition(")")[2].split()[1]), cmdline)
    return found


def kill_mentioning(marker: str) -> None:
    """SIGKILL, by pid, each process whose command line names ``marker`` (a test's own directory), again until
    none is left: a gunicorn master killed after its worker forks a new worker in between, which one pass over
    the process list would miss."""
    needle = marker.encode()

    def survivors() -> list[int]:
        return [
            pid
            for pid, (_, cmdline) in processes().items()
            if needle in cmdline and pid != os.getpid() and process_state(pid) not in ("Z", None)
        ]

    def killed_all() -> bool:
        for pid in survivors():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return not survivors()

    wait_for(killed_all, 10, f"every process mentioning {marker} to die")


def children(pid: int) -> list[int]:
    return [child for child, (parent, _) in processes().items() if parent == pid]


@dataclass
class LocalApp:
    """An app root as a deploy leaves it: ``releases/<id>/`` (the example app, a manifest, ``venv`` linked to the
    test environment's venv), ``current``, and each release's gunicorn config under ``etc/``."""

    root: Path
    port: int
    venv: Path
    releases: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pidfile(self) -> Path:
        return self.root / "gunicorn.pid"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "gunicorn" / "demo.conf.py"

    def release(self, release_id: str, app_source: str | None = None) -> Path:
        path = self.root / "releases" / release_id
        (path / "example_app").mkdir(parents=True)
        (path / "example_app" / "__init__.py").write_text("")
        (path / "example_app" / "wsgi.py").write_text(app_source or APP_SOURCE.read_text())
        (path / ".deploytool.json").write_text(json.dumps({"app": "demo", "release": release_id}))
        (path / "venv").symlink_to(self.venv)
        self.releases.append(release_id)
        return path

    def switch(self, release_id: str) -> None:
        """What publish does: the release's config installed, then `current` renamed over."""
        variables = {
            "app": "demo",
            "stage": "test",
            "host": "host",
            "release_id": release_id,
            "release_path": str(self.root / "releases" / release_id),
            "root": str(self.root),
            "current": str(self.root / "current"),
            "venv": str(self.root / "current" / "venv"),
            "shared": str(self.root / "shared"),
            "shared_dirs": {},
            "user": "root",
            "etc_root": str(self.root / "etc"),
            "port": self.port,
        }
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_bytes(gunicorn_config(variables))
        link = self.root / "current.tmp"
        link.symlink_to(f"releases/{release_id}")
        link.replace(self.root / "current")

    def start_argv(self) -> list[str]:
        """The graceful recipe's `start` command."""
        return [
            str(self.root / "current" / "venv" / "bin" / "gunicorn"),
            "--config",
            str(self.config),
            "--daemon",
            "--pid",
            str(self.pidfile),
            "--error-logfile",
            str(self.root / "gunicorn.log"),
        ]


class RequestLoop:
    """A thread doing GETs against ``url`` (one at a time, at most ``limit`` of them) until stopped; counts
    failures and keeps each request's latency and the releases that answered."""

    def __init__(self, url: str, limit: int = 20000) -> None:
        self.url, self.limit = url, limit
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.releases: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.latencies) + len(self.failures) < self.limit:
            started = time.perf_counter()
            try:
                release = get(self.url, timeout=10).get("release", "")
            except (OSError, ValueError, urllib.error.URLError) as error:
                self.failures.append(f"{type(error).__name__}: {error}")
                continue
            self.latencies.append(time.perf_counter() - started)
            if not self.releases or self.releases[-1] != release:
                self.releases.append(release)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.failures)


@dataclass
class Supervisord:
    """A supervisord of the deploy user, all of it under ``base`` (socket, config, logs): never the machine's /etc."""

    base: Path
    process: subprocess.Popen[bytes]

    @property
    def ctl(self) -> Path:
        """A ``supervisorctl`` bound to this supervisord (a wrapper script, as a package would install one)."""
        return self.base / "bin" / "supervisorctl"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_supervisord(base: Path, wheels: Path, include: Path, user: str) -> Supervisord:
    """Install supervisor from the test mirror into ``base`` and start supervisord as ``user``, reading program
    sections from ``include`` (``<etc_root>/supervisor/conf.d``)."""
    lib, conf, bin_dir = base / "lib", base / "supervisord.conf", base / "bin"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(wheels),
            "--target",
            str(lib),
            "supervisor",
        ],
        check=True,
        capture_output=True,
    )
    conf.write_text(
        f"[unix_http_server]\nfile={base}/supervisor.sock\nchmod=0700\n\n"
        f"[supervisord]\nlogfile={base}/supervisord.log\npidfile={base}/supervisord.pid\nnodaemon=true\n"
        f"childlogdir={base}\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{base}/supervisor.sock\n\n"
        f"[include]\nfiles = {include}/*.conf\n"
    )
    bin_dir.mkdir()
    (bin_dir / "supervisorctl").write_text(
        f'#!/bin/sh\nPYTHONPATH={lib} exec {HOST_PYTHON} -m supervisor.supervisorctl -c {conf} "$@"\n'
    )
    (bin_dir / "supervisorctl").chmod(0o755)
    account = pwd.getpwnam(user)
    for path in (base, *base.rglob("*")):
        os.lchown(path, account.pw_uid, account.pw_gid)
    process = subprocess.Popen(
        [HOST_PYTHON, "-m", "supervisor.supervisord", "-c", str(conf)],
        env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin", "HOME": str(base)},
        cwd=base,
        user=account.pw_uid if os.geteuid() == 0 else None,
        group=account.pw_gid if os.geteuid() == 0 else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: (base / "supervisor.sock").exists() or process.poll() is not None, 30, "supervisord")
    if process.poll() is not None:
        raise RuntimeError(f"supervisord exited: {(base / 'supervisord.log').read_text()}")
    return Supervisord(base, process)


# ---------------------------------------------------------------- a deployed app on a test host

TEMPLATES = ("gunicorn/{{ app }}.conf.py.j2", "supervisor/conf.d/{{ app }}.conf.j2")


def serve_app_server(wheels: Path) -> list[str]:
    """Put gunicorn (with what it needs outside extras) and supervisor into the mirror directory ``wheels``,
    repacked from this environment (once per run, shared by the workers); return the pins that install
    gunicorn."""
    names = ("gunicorn", *runtime_requirements("gunicorn"))

    def repack(directory: Path) -> None:
        for name in (*names, "supervisor"):
            repack_installed(name, directory)

    for wheel in shared_build(shared_directory(), "app-server-wheels", repack).glob("*.whl"):
        shutil.copy2(wheel, wheels / wheel.name)
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def runtime_requirements(name: str) -> list[str]:
    wanted = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            wanted.append(requirement.name)
    return wanted


def app_files(pins: list[str]) -> dict[str, str]:
    """The example app, its gunicorn and supervisor templates, and its pins, as files of a project commit."""
    files = {
        "requirements/prod.txt": "".join(f"{pin}\n" for pin in pins),
        "example_app/__init__.py": "",
        "example_app/wsgi.py": APP_SOURCE.read_text(),
    }
    for template in TEMPLATES:
        files[f"etc-mock/{template}"] = (EXAMPLE / template).read_text()
    return files


@dataclass
class AppHost:
    """One test host of the app: its deploy root and, beside it in ``base``, its etc root, logs and pid file."""

    name: str
    root: Path
    port: int

    @property
    def base(self) -> Path:
        return self.root.parent

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

    def prepare(self, settings: dict[str, Any]) -> None:
        """Make the etc root and logs directory (owned like the host's directory) and set them in ``settings``
        (the host's hosts.yml mapping), with the app's port; no health check, restart left to the caller."""
        owner = self.base.stat()
        for name in ("etc", "logs"):
            (self.base / name).mkdir(exist_ok=True)
            os.chown(self.base / name, owner.st_uid, owner.st_gid)
        settings["etc_root"] = str(self.base / "etc")
        settings["vars"] = {"port": self.port, "workers": 2, "log_dir": str(self.base / "logs")}

    def graceful_restart(self) -> dict[str, Any]:
        """hosts.yml ``restart`` of the graceful recipe: re-exec the master in the pid file, else ``start``."""
        start = (
            "{{ venv }}/bin/gunicorn --config {{ etc_root }}/gunicorn/{{ app }}.conf.py --daemon"
            f" --pid {self.pidfile} --error-logfile {self.base}/logs/gunicorn.log"
        )
        return {"gunicorn_pidfile": str(self.pidfile), "start": [start]}


def supervisor_restart(ctl: Path) -> list[str]:
    """hosts.yml ``restart`` of gunicorn under supervisord: ``update`` adds (and on a first deploy starts) the
    program, ``restart`` starts a new gunicorn from the release ``current`` names."""
    return [f"{ctl} update", f"{ctl} restart {{{{ app }}}}"]
