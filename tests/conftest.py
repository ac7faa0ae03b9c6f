"""Fixtures: a real sshd on loopback hosts, a real wheel mirror over HTTP, and an app repository to deploy."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytool.supply.installer import TOOLS_READY, UV_PIN, UV_VERSION
from tests import isolation, sshd
from tests.isolation import SHARED, shared_build, shared_directory
from tests.wheelfactory import make_wheel, repack_installed

HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
HOST_PYTHON_VERSION = subprocess.run(
    [HOST_PYTHON, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True
).stdout.strip()
HOST_NAMES = ("web1", "web2", "web3", "web4")
pytest_plugins = ["tests.djangostack"]  # PostgreSQL, redis and the Django example's wheels
_OWN_SHARED = pytest.StashKey[str]()

#: Fixtures that start or need a real service (sshd, an HTTP mirror, pip, a deploy): tests using any of them are
#: integration tests, left out of the fast tier (``scripts/test --fast``, ``-m "not integration"``), as are the
#: modules marked ``integration`` as a whole (pip, gunicorn, index servers).
SERVICE_FIXTURES = {
    "ssh_server",
    "bastion",
    "mirror",
    "uv_mirror",
    "uv_wheel_dir",
    "ssh_project",
    "local_project",
    "tools_template",
    "django_wheels",
    "postgres",
    "redis_server",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs real services or tools (sshd, HTTP, gunicorn, pip); not in the fast tier"
    )
    config.addinivalue_line(
        "markers", "cold_hosts: the test's hosts start with nothing at all (no tools venv made ahead of the test)"
    )
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist): before any worker starts
        isolation.claim_slot()
    if not hasattr(config, "workerinput") and SHARED not in os.environ:  # the controller (or a run without xdist)
        shared = Path(tempfile.mkdtemp(prefix="deploytool-tests-shared-"))
        shared.chmod(0o755)  # the hosts' user reads what is built there
        os.environ[SHARED] = config.stash[_OWN_SHARED] = str(shared)
    if SHARED in os.environ:  # the laptop's deploy logs of every fab a test runs go there, not into ~/.local/state
        os.environ["XDG_STATE_HOME"] = os.path.join(os.environ[SHARED], "laptop-state")


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_SHARED, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)
        os.environ.pop(SHARED, None)


#: Module-scoped fixtures that cost a deploy or more: the tests using one run on one worker, so that it is made once.
SHARED_SETUP = {"fleet": "status-fleet", "postgres": "django", "redis_server": "django"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVICE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)
        for fixture in sorted(fixtures & SHARED_SETUP.keys()):
            item.add_marker(pytest.mark.xdist_group(SHARED_SETUP[fixture]))
    # The sudo tests hold a machine-wide lock (the deploy account is the machine's): they go first in one suite
    # and halfway through in the other, so that two suites running side by side (scripts/test runs one per
    # interpreter) do not wait for each other.
    locked = [item for item in items if _group(item) == "sudo"]
    rest = [item for item in items if _group(item) != "sudo"]
    at = 0 if int(os.environ.get("DEPLOYTOOL_TEST_SLOT", "0") or 0) % 2 == 0 else len(rest) // 2
    items[:] = [*rest[:at], *locked, *rest[at:]]


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker of ``--dist loadgroup``: stop if xdist did not take the groups into the node ids (as
    with pytest 9.2), which would let grouped tests run on any worker, each setting up what they share."""
    if getattr(session.config.option, "loadgroup", False):
        lost = [item.nodeid for item in session.items if _group(item) and "@" not in item.nodeid]
        if lost:
            why = "see the pytest cap in pyproject.toml's test extra"
            raise pytest.UsageError(f"pytest-xdist ignored the xdist_group of {lost[0]}: {why}")


def _group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker and marker.args else None


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[sshd.SshServer]:
    """A real OpenSSH server listening on 127.0.0.2-5; in CI its absence is a failure, not a skip."""
    missing = sshd.available()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    base = Path(tempfile.mkdtemp(prefix="deploytool-sshd-"))
    server = sshd.start(base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class Mirror:
    directory: Path
    url: str

    def add(self, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
        return make_wheel(self.directory, name, version, requires)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def mirror() -> Iterator[Mirror]:
    """Tiny wheels built here, served by a real HTTP server on loopback (its directory listing is the
    ``--find-links`` page)."""
    directory = Path(tempfile.mkdtemp(prefix="deploytool-mirror-"))
    directory.chmod(0o755)
    make_wheel(directory, "demo-lib", "1.0")
    make_wheel(directory, "demo-lib", "2.0")
    make_wheel(directory, "demo-helper", "1.0", ["demo-lib>=1.0"])
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Mirror(directory, f"http://127.0.0.1:{server.server_address[1]}/")
    server.shutdown()
    shutil.rmtree(directory, ignore_errors=True)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Project:
    """An application repository with a fabfile and hosts.yml, as a user has it on the laptop."""

    path: Path
    inventory: dict[str, Any]

    def write_inventory(self) -> None:
        (self.path / "hosts.yml").write_text(yaml.safe_dump(self.inventory, sort_keys=False))

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        for name, text in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def fab(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``fab`` command line in the project (no terminal; ``env`` added to the environment)."""
        result = subprocess.run(
            [sys.executable, "-m", "fabric", *args],
            cwd=self.path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
            env={**os.environ, **(env or {})},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"fab {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


def make_project(path: Path, inventory: dict[str, Any]) -> Project:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    project = Project(path, inventory)
    project.write_inventory()
    project.commit(
        "first",
        {
            "fabfile.py": "from deploytool import ns\n",
            "app.py": "import demo_lib\nVERSION = demo_lib.VERSION\n",
            "requirements/prod.txt": "demo-lib==1.0\n",
            "hosts.yml": (path / "hosts.yml").read_text(),
        },
    )
    return project


@pytest.fixture(scope="session")
def tools_template() -> Path:
    """A complete pip tools venv of the hosts' Python (``<root>/tools/venv`` as a first deploy makes it), made
    once per run: ``ensurepip`` costs seconds of CPU per host, paid once in a host's life but once per test
    here, where every test starts with fresh hosts."""

    def make(directory: Path) -> None:
        subprocess.run([HOST_PYTHON, "-m", "venv", str(directory / "venv")], check=True, capture_output=True)
        (directory / "venv" / TOOLS_READY).touch()

    return shared_build(shared_directory(), f"tools-venv-{HOST_PYTHON_VERSION}", make) / "venv"


def seed_tools(inventory: dict[str, Any], template: Path) -> None:
    """Give every host of ``inventory`` the tools venv an earlier deploy would have left (``template``'s files
    hard-linked into fresh directories, owned like the host's directory), so that a test's first deploy is a
    host's n-th. Links, not copies: 25 MB and a thousand files per host would cost tens of GB of disk and minutes
    of CPU over a run; a deploy only ever adds files to the tools venv (uv), which land in the host's own
    directories."""
    for stage in inventory["stages"].values():
        for settings in stage["hosts"].values():
            root = Path(settings["root"])
            owner = root.parent.stat()
            (root / "tools").mkdir(parents=True)
            subprocess.run(["cp", "-al", str(template), str(root / "tools" / "venv")], check=True)
            for path in (root, root / "tools"):
                os.chown(path, owner.st_uid, owner.st_gid)
            subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(root / "tools")], check=True)


@pytest.fixture
def ssh_project(request: pytest.FixtureRequest, tmp_path: Path, ssh_server: sshd.SshServer, mirror: Mirror) -> Project:
    """A project whose ``test`` stage has four hosts on the test sshd, each with a fresh root (holding only the
    tools venv a host keeps across deploys, unless the test is marked ``cold_hosts``)."""
    inventory = ssh_inventory(ssh_server, mirror, tmp_path.name)
    if not request.node.get_closest_marker("cold_hosts"):
        seed_tools(inventory, request.getfixturevalue("tools_template"))
    return make_project(tmp_path / "project", inventory)


def ssh_inventory(ssh_server: sshd.SshServer, mirror: Mirror, label: str) -> dict[str, Any]:
    """hosts.yml of a ``test`` stage with four hosts on the test sshd, each with a fresh root named by ``label``."""
    hosts = {
        name: {"address": address, "root": str(ssh_server.host_root(f"{label}-{name}") / "app")}
        for name, address in zip(HOST_NAMES, ssh_server.addresses, strict=True)
    }
    return {
        "app": "demo",
        "default_stage": "test",
        "mirror": mirror.url,
        "keep_releases": 3,
        "python": HOST_PYTHON,
        "python_version": HOST_PYTHON_VERSION,
        "stages": {
            "test": {
                "user": ssh_server.user,
                "port": ssh_server.port,
                "known_hosts": str(ssh_server.known_hosts),
                "identity_file": str(ssh_server.client_key),
                "hosts": hosts,
            }
        },
    }


@pytest.fixture
def local_project(tmp_path: Path, mirror: Mirror) -> Project:
    """A project whose default ``local`` stage deploys into the project directory, without SSH."""
    inventory = {
        "app": "demo",
        "default_stage": "local",
        "mirror": str(mirror.directory),
        "python": HOST_PYTHON,
        "python_version": HOST_PYTHON_VERSION,
        "stages": {
            "local": {
                "transport": "local",
                "root": ".deploy/local",
                "allow_root": True,
                "hosts": ["localhost"],
            }
        },
    }
    project = make_project(tmp_path / "project", inventory)
    (project.path / ".gitignore").write_text(".deploy/\n")
    project.commit("ignore deploy dir")
    return project


@pytest.fixture(scope="session")
def bastion() -> Iterator[sshd.Bastion]:
    """Two deploy hosts in a network namespace, reachable only through a bastion sshd; in CI a missing
    prerequisite (root, iproute2, sshd) is a failure, not a skip."""
    missing = sshd.available() or sshd.netns_available()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    base = Path(tempfile.mkdtemp(prefix="deploytool-bastion-"))
    base.chmod(0o755)
    servers = sshd.start_bastion(base)
    yield servers
    servers.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def uv_wheel_dir() -> Path:
    """A directory holding the pinned uv's wheel, repacked from the test environment (made once per run)."""

    def repack(directory: Path) -> None:
        wheel = repack_installed("uv", directory)
        assert wheel.name.startswith(f"uv-{UV_VERSION}-"), f"the test env's uv is not {UV_PIN}"

    return shared_build(shared_directory(), "uv-wheel", repack)


@pytest.fixture(scope="session")
def uv_mirror(uv_wheel_dir: Path) -> Iterator[Mirror]:
    """The demo wheels and the pinned uv, served over HTTP (a find-links page)."""
    directory = Path(tempfile.mkdtemp(prefix="deploytool-uv-mirror-"))
    directory.chmod(0o755)
    make_wheel(directory, "demo-lib", "1.0")
    make_wheel(directory, "demo-lib", "2.0")
    for wheel in uv_wheel_dir.glob("*.whl"):
        shutil.copy2(wheel, directory / wheel.name)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Mirror(directory, f"http://127.0.0.1:{server.server_address[1]}/")
    server.shutdown()
    shutil.rmtree(directory, ignore_errors=True)
