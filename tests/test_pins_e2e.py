"""Pinned requirements end to end: the laptop check, hashes, uv, offline installs and the mirror tasks.

Everything is real: the ``fab`` command line, sshd on loopback, pip and uv on the "hosts", an HTTP mirror
served by deploytool's own ``serve``, and tiny wheels from `tests.wheelfactory`. Nothing touches the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploytool.hostside import _common
from deploytool.inventory import HostConfig, parse_inventory
from deploytool.layout import Layout
from deploytool.supply import installer
from deploytool.supply.mirror import serve, write_indexes
from deploytool.supply.pins import target_python
from tests import sshd
from tests.conftest import HOST_PYTHON, Mirror, Project, make_project
from tests.isolation import machine_lock
from tests.test_deploy_ssh import current, journal, root_of
from tests.wheelfactory import make_wheel

pytestmark = pytest.mark.integration  # real pip, uv and mirror servers

# The wheels of this module; names chosen not to clash with the shared ``mirror`` fixture's demo-* wheels.
WHEELS = {
    # name, version, Requires-Dist
    ("pe-core", "1.0"): (),
    ("pe-web", "1.0"): ("pe-core>=1.0",),
    ("pe-devtool", "1.0"): (),
    ("pe-testkit", "1.0"): ("pe-core",),
    ("pe-needy", "1.0"): ("pe-ghost>=2.0",),  # pe-ghost is in no requirement file
}
CORE = "pe_core-1.0-py3-none-any.whl"
PROD = "pe-core==1.0\npe-web==1.0\n"
DEV = "-r prod.txt\npe-devtool==1.0\n"
TEST = "-r prod.txt\npe-testkit==1.0\n"
DEAD = "http://127.0.0.1:9/simple"  # nothing listens on the discard port


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class PinsMirror:
    """The wheels as built once (the laptop's truth) and two HTTP mirrors of them, one tampered with."""

    built: Path
    url: str  # serves byte-identical copies of ``built``
    tampered_url: str  # same file names, but pe_core-1.0 has other bytes
    tampered_dir: Path

    def wheelhouse(self, where: Path) -> Path:
        """A fresh laptop wheelhouse holding copies of the built wheels."""
        where.mkdir(parents=True, exist_ok=True)
        for wheel in self.built.glob("*.whl"):
            shutil.copy2(wheel, where / wheel.name)
        return where


@pytest.fixture(scope="module")
def pins_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinsMirror]:
    base = tmp_path_factory.mktemp("pins-mirror")
    built = base / "built"
    for (name, version), requires in WHEELS.items():
        make_wheel(built, name, version, requires)
    good, tampered = base / "good", base / "tampered"
    for directory in (good, tampered):
        shutil.copytree(built, directory)
    make_wheel(tampered, "pe-core", "1.0", module_source="VERSION = 'evil'\n")
    assert sha256(tampered / CORE) != sha256(good / CORE)
    servers = []
    for directory in (good, tampered):
        write_indexes(directory)  # as mirror.publish leaves a mirror: index.html, simple/, .metadata files
        servers.append(serve(directory))
    yield PinsMirror(built, servers[0][1], servers[1][1], tampered)
    for server, _ in servers:
        server.shutdown()
        server.server_close()


def venv_imports(release: Path, *modules: str) -> str:
    """Import ``modules`` with the release's own venv; return their VERSIONs."""
    code = "import importlib, sys; print(' '.join(importlib.import_module(m).VERSION for m in sys.argv[1:]))"
    result = subprocess.run(
        [str(release / "venv" / "bin" / "python"), "-c", code, *modules], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def use_pins_mirror(project: Project, pins_mirror: PinsMirror, tmp_path: Path, wheelhouse: bool = True) -> None:
    """Point the project at the module's mirror (and a laptop wheelhouse of the same wheels)."""
    project.inventory["mirror"] = pins_mirror.url
    if wheelhouse:
        project.inventory["wheelhouse"] = str(pins_mirror.wheelhouse(tmp_path / "wheelhouse"))
    project.write_inventory()
    project.commit(
        "pins",
        {
            "app.py": "import pe_web\nVERSION = pe_web.VERSION\n",
            "requirements/prod.txt": PROD,
            "requirements/dev.txt": DEV,
            "requirements/test.txt": TEST,
        },
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.startswith("Error: "), result.stderr


# --- 1. fab requirements.check -------------------------------------------------------------------------------


@pytest.fixture
def check_project(tmp_path: Path, pins_mirror: PinsMirror) -> Project:
    """A project with prod/dev/test role files whose stage's mirror is the HTTP mirror (no wheelhouse)."""
    inventory = {
        "app": "demo",
        "default_stage": "local",
        "mirror": pins_mirror.url,
        "python": HOST_PYTHON,
        "stages": {"local": {"transport": "local", "root": ".deploy", "allow_root": True, "hosts": ["localhost"]}},
    }
    project = make_project(tmp_path / "project", inventory)
    use_pins_mirror(project, pins_mirror, tmp_path, wheelhouse=False)
    return project


@pytest.mark.parametrize("source", ["http mirror", "laptop wheelhouse"])
def test_check_green_prints_an_ok_line_per_role_file(
    check_project: Project, pins_mirror: PinsMirror, tmp_path: Path, source: str
) -> None:
    if source == "laptop wheelhouse":
        check_project.inventory["wheelhouse"] = str(pins_mirror.wheelhouse(tmp_path / "wheels"))
        check_project.write_inventory()
    result = check_project.fab("requirements.check")
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "ok    requirements/dev.txt: 3 pins",
        "ok    requirements/prod.txt: 2 pins",
        "ok    requirements/test.txt: 3 pins",
    ], result.stdout
    where = pins_mirror.url if source == "http mirror" else str(tmp_path / "wheels")
    assert lines[3].startswith(f"checked against {where} for cpython ")
    assert result.stderr == ""


def test_check_unpinned_nested_dependency_names_file_line_and_who_needs_it(check_project: Project) -> None:
    (check_project.path / "requirements" / "dev.txt").write_text(DEV + "pe-needy==1.0\n")
    result = check_project.fab("requirements.check", check=False)
    assert_clean_failure(result)
    assert "ok    requirements/prod.txt: 2 pins" in result.stdout
    assert "ok    requirements/test.txt: 3 pins" in result.stdout
    assert "FAIL  requirements/dev.txt" in result.stdout
    dev = check_project.path / "requirements" / "dev.txt"
    assert f"{dev}:3: pe-needy==1.0 needs pe-ghost>=2.0 but pe-ghost is not pinned in {dev}" in result.stderr
    assert "prod.txt:" not in result.stderr and "test.txt:" not in result.stderr


def test_check_range_pin_names_file_and_line(check_project: Project) -> None:
    (check_project.path / "requirements" / "test.txt").write_text(TEST + "pe-devtool>=1.0\n")
    result = check_project.fab("requirements.check", check=False)
    assert_clean_failure(result)
    assert "FAIL  requirements/test.txt" in result.stdout and "ok    requirements/dev.txt" in result.stdout
    test_txt = check_project.path / "requirements" / "test.txt"
    assert f"{test_txt}:3: pe-devtool>=1.0 is not pinned: write exactly pe-devtool==VERSION" in result.stderr


# --- 2. hashes: deploy, then a tampered mirror --------------------------------------------------------------


def test_hashed_deploy_then_tampered_mirror_fails_on_the_host(
    ssh_project: Project, pins_mirror: PinsMirror, tmp_path: Path
) -> None:
    use_pins_mirror(ssh_project, pins_mirror, tmp_path)
    hashed = ssh_project.fab("requirements.hash")
    assert "hashed requirements/prod.txt" in hashed.stdout, hashed.stdout
    digest = sha256(pins_mirror.built / CORE)
    assert f"--hash=sha256:{digest}" in (ssh_project.path / "requirements" / "prod.txt").read_text()
    ssh_project.fab("requirements.check")  # hashed files still pass the laptop check
    ssh_project.commit("hash the pins")

    ssh_project.fab("deploy", "--hosts", "web1")
    good = current(ssh_project)
    release = root_of(ssh_project) / "current"
    assert f"pe-core==1.0 \\\n    --hash=sha256:{digest}" in (release / "requirements" / "prod.txt").read_text()
    assert venv_imports(release, "pe_core", "pe_web") == "1.0 1.0"

    # The hosts' mirror now serves a pe_core-1.0 wheel with other bytes under the same name (its index
    # regenerated to match, as an attacker or a careless rebuild would leave it). The laptop wheelhouse is
    # still the truth, so the laptop check passes and pip's hash-checking mode must stop it on the host.
    ssh_project.inventory["mirror"] = pins_mirror.tampered_url
    ssh_project.write_inventory()
    ssh_project.commit("mirror moved")
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert_clean_failure(result)
    assert "web1: installing requirements failed" in result.stderr
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr
    assert f"Expected sha256 {digest}" in result.stderr, result.stderr
    assert f"Got        {sha256(pins_mirror.tampered_dir / CORE)}" in result.stderr, result.stderr
    assert "No host was switched" in result.stderr
    assert current(ssh_project) == good
    assert sorted(os.listdir(root_of(ssh_project) / "releases")) == [good.removeprefix("releases/")]
    assert not (root_of(ssh_project) / "deploy.lock").exists()
    last = journal(ssh_project)[-1]
    assert last["status"] == "failed" and "installing requirements failed" in last["reason"]
    assert venv_imports(release, "pe_core") == "1.0"


@contextmanager
def _user_file(server: sshd.SshServer, relative: str, text: str) -> Iterator[Path]:
    """Write a file in the deploy user's home, owned by that user; restore what was there afterwards.

    The home is the machine's, shared by every worker and suite running here: it is this test's only under a
    machine-wide lock."""
    account = pwd.getpwnam(server.user)
    path = Path(account.pw_dir) / relative
    with machine_lock("deploy-home"):
        saved = path.read_bytes() if path.exists() else None
        made = [parent for parent in reversed(path.parents) if not parent.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if os.geteuid() == 0:
            for item in [*made, path]:
                os.chown(item, account.pw_uid, account.pw_gid)
        try:
            yield path
        finally:
            if saved is None:
                path.unlink(missing_ok=True)
                for parent in reversed(made):
                    with suppress(OSError):
                        parent.rmdir()
            else:
                path.write_bytes(saved)


# --- 3. installer: uv ----------------------------------------------------------------------------------------


def _ssh(server: sshd.SshServer, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as the deploy user over the test sshd, as deploytool's non-interactive session does."""
    return subprocess.run(
        [
            "ssh", "-p", str(server.port), "-i", str(server.client_key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            f"{server.user}@{server.addresses[0]}", command,
        ],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


@pytest.fixture
def poisoned_uv_config(ssh_server: sshd.SshServer) -> Iterator[Path]:
    """An invalid ``~/.config/uv/uv.toml`` for the deploy user: any uv that reads it fails."""
    with _user_file(ssh_server, ".config/uv/uv.toml", "this is not toml, uv must not read it\n") as path:
        yield path


def test_uv_installer_deploy_fills_the_release_venv(
    ssh_project: Project, ssh_server: sshd.SshServer, uv_mirror: Mirror, tmp_path: Path, poisoned_uv_config: Path
) -> None:
    ssh_project.inventory["installer"] = "uv"
    ssh_project.inventory["mirror"] = uv_mirror.url
    ssh_project.write_inventory()
    result = ssh_project.fab("deploy", "--hosts", "web1")
    assert "Deployed" in result.stdout
    uv = installer.uv_bin(Layout(str(root_of(ssh_project))))
    # The poisoned user config really breaks the very uv the deploy used, when it reads it: the deploy did not.
    probe_venv = f"/tmp/{tmp_path.name}-probe-venv"
    control = _ssh(ssh_server, f"{uv} venv --quiet {probe_venv}")
    shutil.rmtree(probe_venv, ignore_errors=True)
    assert control.returncode != 0 and "uv.toml" in control.stderr, control.stderr
    release = root_of(ssh_project) / "current"
    assert f"uv = {installer.UV_VERSION}" in (release / "venv" / "pyvenv.cfg").read_text()
    assert not (release / "venv" / "bin" / "pip").exists()
    assert journal(ssh_project)[-1]["status"] == "ok"


# --- 4. the host install is offline: the host's own pip configuration is ignored --------------------------


#: Read by any pip that loads the deploy user's configuration: a dead index, a missing find-links directory, and
#: a dead proxy (which breaks even --no-index installs from an http mirror), failing fast.
POISONED_PIP_CONF = f"""[global]
index-url = {DEAD}
find-links = /nonexistent
proxy = http://127.0.0.1:9
retries = 0
timeout = 2
"""


@pytest.fixture
def poisoned_pip_conf(ssh_server: sshd.SshServer) -> Iterator[Path]:
    with _user_file(ssh_server, ".config/pip/pip.conf", POISONED_PIP_CONF) as path:
        yield path


def test_host_pip_configuration_is_ignored(
    ssh_project: Project,
    ssh_server: sshd.SshServer,
    pins_mirror: PinsMirror,
    tmp_path: Path,
    poisoned_pip_conf: Path,
) -> None:
    use_pins_mirror(ssh_project, pins_mirror, tmp_path)
    result = ssh_project.fab("deploy", "--hosts", "web1")
    assert "Deployed" in result.stdout
    release = root_of(ssh_project) / "current"
    assert venv_imports(release, "pe_core", "pe_web") == "1.0 1.0"

    # Control: the very pip the deploy used, as the deploy user, but reading its configuration, fails.
    tools_pip = shlex.join([str(root_of(ssh_project) / "tools" / "venv" / "bin" / "python"), "-m", "pip"])
    download = f"download --no-deps --no-index --find-links {pins_mirror.url} -d /tmp/{tmp_path.name}-dl pe-core==1.0"
    poisoned = _ssh(ssh_server, f"{tools_pip} config list; {tools_pip} {download}")
    assert f"global.index-url='{DEAD}'" in poisoned.stdout, poisoned.stdout + poisoned.stderr
    assert poisoned.returncode != 0, poisoned.stdout
    clean = _ssh(ssh_server, f"PIP_CONFIG_FILE=/dev/null {tools_pip} {download}")
    assert clean.returncode == 0, clean.stderr
    shutil.rmtree(f"/tmp/{tmp_path.name}-dl", ignore_errors=True)


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def _offline_host(root: Path, mirror: str, installer_name: str) -> tuple[HostConfig, Layout]:
    data = {
        "app": "demo",
        "mirror": mirror,
        "python": HOST_PYTHON,
        "installer": installer_name,
        "stages": {"x": {"transport": "local", "root": str(root), "allow_root": True, "hosts": ["here"]}},
    }
    return parse_inventory(data, root / "hosts.yml").hosts("x")[0], Layout(str(root))


def _offline(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a command with no network at all (a fresh network namespace: not even loopback is up)."""
    return subprocess.run(["unshare", "-n", *argv], capture_output=True, text=True, env=env, timeout=120, input=stdin)


@pytest.fixture(scope="module")
def offline_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host root whose pip tools venv is made once, offline, with the real make_tools command."""
    if not _unshare_works():
        pytest.skip("unshare -n does not work here (needs root or user namespaces)")
    root = tmp_path_factory.mktemp("offline-host")
    host, layout = _offline_host(root, "file:///nonexistent", "pip")
    tools = installer.make_tools(host, layout)
    assert tools is not None
    made = _offline(*tools)
    assert made.returncode == 0, made.stderr
    return root


@pytest.mark.parametrize("installer_name", ["pip", "uv"])
def test_install_command_works_without_any_network(
    offline_root: Path, pins_mirror: PinsMirror, installer_name: str, uv_wheel_dir: Path
) -> None:
    release_id = f"20260101T000000Z-{installer_name}000"
    release = offline_root / "releases" / release_id
    (release / "requirements").mkdir(parents=True)
    (release / "requirements" / "prod.txt").write_text(PROD)
    (release / "requirements" / "ghost.txt").write_text("pe-core==1.0\npe-ghost==2.0\n")

    # The network really is gone: the http mirror cannot even be listed from inside the namespace.
    probe = _offline(sys.executable, "-c", f"import urllib.request; urllib.request.urlopen({pins_mirror.url!r})")
    assert probe.returncode != 0 and "URLError" in probe.stderr, probe.stderr

    if installer_name == "uv":  # its binary from its wheel, as a first deploy puts it there (host-side uv_fetch)
        uv_host, layout = _offline_host(offline_root, str(uv_wheel_dir), "uv")
        wheel = installer.uv_wheel(str(uv_wheel_dir), "find-links", target_python(uv_host), "test")
        fetch = json.dumps({**installer.fetch_uv(uv_host, layout, release_id, wheel), "timeout": 60}) + "\n"
        fetched = _offline(*_common.program(HOST_PYTHON, "uv_fetch"), stdin=fetch)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    host, layout = _offline_host(offline_root, pins_mirror.built.as_uri(), installer_name)
    made = _offline(*installer.make_venv(host, layout, release_id, installer_name))
    assert made.returncode == 0, made.stderr
    requirements = str(release / "requirements" / "prod.txt")
    installed = _offline(*installer.install(host, layout, release_id, requirements, False, installer_name))
    assert installed.returncode == 0, installed.stderr
    checked = _offline(*installer.check(host, layout, release_id, installer_name))
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert venv_imports(release, "pe_core", "pe_web") == "1.0 1.0"

    ghost = str(release / "requirements" / "ghost.txt")
    missing = _offline(*installer.install(host, layout, release_id, ghost, False, installer_name))
    assert missing.returncode != 0
    if installer_name == "pip":
        assert "No matching distribution found for pe-ghost==2.0" in missing.stderr, missing.stderr
    else:
        assert "pe-ghost" in missing.stderr and "not found" in missing.stderr, missing.stderr


def test_pip_install_ignores_pip_environment_variables(
    offline_root: Path, pins_mirror: PinsMirror, tmp_path: Path
) -> None:
    rogue = tmp_path / "rogue"  # a directory on the host that is not the mirror
    make_wheel(rogue, "pe-ghost", "2.0")
    release_id = "20260101T000000Z-envvars"
    release = offline_root / "releases" / release_id
    release.mkdir(parents=True)
    (release / "prod.txt").write_text("pe-ghost==2.0\n")  # not in the mirror: must fail
    host, layout = _offline_host(offline_root, pins_mirror.built.as_uri(), "pip")
    assert _offline(*installer.make_venv(host, layout, release_id, "pip")).returncode == 0
    env = {**os.environ, "PIP_FIND_LINKS": str(rogue), "PIP_INDEX_URL": DEAD}
    command = installer.install(host, layout, release_id, str(release / "prod.txt"), False, "pip")
    installed = _offline(*command, env=env)
    assert installed.returncode != 0, f"pe-ghost was installed from {rogue}, which is not the mirror"
    assert "No matching distribution found for pe-ghost==2.0" in installed.stderr


# --- 5. mirror.upload, mirror.index, mirror.publish -----------------------------------------------------------


def test_upload_is_write_once_and_index_writes_index_html(
    check_project: Project, pins_mirror: PinsMirror, tmp_path: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    check_project.inventory["wheelhouse"] = str(wheelhouse)
    check_project.write_inventory()
    core, web = pins_mirror.built / CORE, pins_mirror.built / "pe_web-1.0-py3-none-any.whl"

    added = check_project.fab("mirror.upload", "--file", str(core), "--file", str(web))
    assert added.stdout.splitlines() == [f"added {CORE}", f"added {web.name}"]
    assert sha256(wheelhouse / CORE) == sha256(core)
    manifest = [json.loads(line) for line in (wheelhouse / "MANIFEST.jsonl").read_text().splitlines()]
    assert (manifest[0]["filename"], manifest[0]["sha256"], manifest[0]["source"]) == (CORE, sha256(core), "upload")
    assert CORE in (wheelhouse / "index.html").read_text()

    again = check_project.fab("mirror.upload", "--file", str(core))  # the same bytes again: nothing to do
    assert again.stdout == ""
    refused = check_project.fab("mirror.upload", "--file", str(pins_mirror.tampered_dir / CORE), check=False)
    assert_clean_failure(refused)
    assert "upload refused" in refused.stderr
    assert (
        f"{wheelhouse / CORE} already exists with sha256 {sha256(core)}; refusing to replace it with sha256 "
        f"{sha256(pins_mirror.tampered_dir / CORE)}" in refused.stderr
    )
    assert sha256(wheelhouse / CORE) == sha256(core), "the original must be unchanged"
    assert len((wheelhouse / "MANIFEST.jsonl").read_text().splitlines()) == 2

    (wheelhouse / "index.html").unlink()
    shutil.rmtree(wheelhouse / "simple")
    indexed = check_project.fab("mirror.index")
    assert indexed.stdout.strip() == f"wrote {wheelhouse / 'index.html'} and {wheelhouse / 'simple'}/"
    index = (wheelhouse / "index.html").read_text()
    assert f'href="{CORE}#sha256={sha256(core)}"' in index and web.name in index
    assert (wheelhouse / "simple" / "pe-core" / "index.html").is_file()


def _publish_stage(project: Project, server: sshd.SshServer, name: str, published: Path) -> None:
    """Add stage ``name`` whose mirror_host is the sshd's 127.0.0.2 and mirror_path ``published``."""
    address = server.addresses[0]
    project.inventory["stages"][name] = {
        "user": server.user,
        "port": server.port,
        "known_hosts": str(server.known_hosts),
        "identity_file": str(server.client_key),
        "mirror_host": address,
        "mirror_path": str(published),
        "hosts": {"wheels1": {"address": address, "root": str(published.parent / "unused")}},
    }
    project.write_inventory()


def _assert_published(wheelhouse: Path, published: Path, user: str) -> None:
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert sorted(p.name for p in published.glob("*.whl")) == wheels
    assert all(sha256(published / name) == sha256(wheelhouse / name) for name in wheels)
    assert (published / "index.html").read_text() == (wheelhouse / "index.html").read_text()
    assert (published / "simple" / "pe-web" / "index.html").is_file()
    assert (published / "MANIFEST.jsonl").is_file() == (wheelhouse / "MANIFEST.jsonl").is_file()
    assert not [p for p in published.iterdir() if p.name.startswith(".publish")]
    if os.geteuid() == 0:
        assert (published / CORE).stat().st_uid == pwd.getpwnam(user).pw_uid


def test_publish_copies_the_wheelhouse_then_hosts_deploy_from_it(
    ssh_project: Project, ssh_server: sshd.SshServer, pins_mirror: PinsMirror, tmp_path: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    ssh_project.inventory["wheelhouse"] = str(wheelhouse)
    published = ssh_server.host_root(f"{tmp_path.name}-mirror") / "wheels"
    _publish_stage(ssh_project, ssh_server, "mirror", published)
    ssh_project.fab("mirror.upload", *(f"--file={wheel}" for wheel in sorted(pins_mirror.built.glob("*.whl"))))
    result = ssh_project.fab("mirror.publish", "--stage", "mirror")
    assert result.stdout.strip() == f"published {wheelhouse} to {ssh_server.addresses[0]}:{published}"
    _assert_published(wheelhouse, published, ssh_server.user)
    again = ssh_project.fab("mirror.publish", "--stage", "mirror")  # nothing differs: fine, nothing changes
    assert again.returncode == 0
    _assert_published(wheelhouse, published, ssh_server.user)

    # The hosts install from the published directory (a path on the host): the whole loop closes.
    ssh_project.inventory["mirror"] = str(published)
    ssh_project.write_inventory()
    ssh_project.commit("pins", {"app.py": "import pe_web\nVERSION = pe_web.VERSION\n", "requirements/prod.txt": PROD})
    ssh_project.fab("deploy", "--hosts", "web2")
    assert venv_imports(root_of(ssh_project, "web2") / "current", "pe_core", "pe_web") == "1.0 1.0"


def test_publish_to_a_stage_host_with_only_exec_channels(
    ssh_project: Project, ssh_server: sshd.SshServer, pins_mirror: PinsMirror, tmp_path: Path
) -> None:
    wheelhouse = pins_mirror.wheelhouse(tmp_path / "wheelhouse")
    ssh_project.inventory["wheelhouse"] = str(wheelhouse)
    published = ssh_server.host_root(f"{tmp_path.name}-mirror") / "wheels"
    stage = ssh_project.inventory["stages"]["test"]
    stage["mirror_host"], stage["mirror_path"] = ssh_server.addresses[0], str(published)
    ssh_project.write_inventory()
    ssh_project.fab("mirror.index")
    result = ssh_project.fab("mirror.publish", "--stage", "test", check=False)
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert result.returncode == 0, result.stderr
    _assert_published(wheelhouse, published, ssh_server.user)


def test_check_names_a_bad_pin_once_under_its_own_file(check_project: Project) -> None:
    prod = check_project.path / "requirements" / "prod.txt"
    prod.write_text(PROD + "pe-devtool>=1.0\n")
    result = check_project.fab("requirements.check", check=False)
    assert_clean_failure(result)
    assert "FAIL  requirements/prod.txt\n" in result.stdout
    assert "FAIL  requirements/dev.txt: through requirements/prod.txt" in result.stdout
    assert "FAIL  requirements/test.txt: through requirements/prod.txt" in result.stdout
    problem = f"{prod}:3: pe-devtool>=1.0 is not pinned: write exactly pe-devtool==VERSION"
    assert result.stderr.count(problem) == 1, result.stderr
    assert result.stderr.startswith(f"Error: {prod}: 1 problem:\n") and "dev.txt" not in result.stderr


def test_check_suggests_mirror_sync_for_a_pin_missing_from_the_mirror(check_project: Project) -> None:
    prod = check_project.path / "requirements" / "prod.txt"
    prod.write_text(PROD + "pe-absent==1.0\n")
    result = check_project.fab("requirements.check", check=False)
    assert_clean_failure(result)
    assert result.stderr.count("pe-absent==1.0 is not in the mirror") == 1, result.stderr
    assert result.stderr.count("fab mirror.sync") == 1
    assert result.stderr.rstrip().splitlines()[-1].startswith("fab mirror.sync downloads every pinned wheel")
