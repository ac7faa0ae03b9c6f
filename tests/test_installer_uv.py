"""The installer: uv from the mirror by default (its binary alone, fetched by the host), pip when the mirror has
none, and compiled bytecode.

uv's wheel is made once per session from the test environment's own uv (`wheelfactory.repack_installed`, 17 MB)
and served, with the demo wheels, from a mirror of its own, so the rest of the suite keeps its small mirror
(which has no uv, so its deploys use pip).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.hostside import bytecode
from deploytool.supply import installer
from deploytool.supply.mirror import serve, sync, write_indexes
from tests.conftest import Mirror, Project, _QuietHandler
from tests.test_deploy_ssh import journal, root_of
from tests.test_pins_e2e import assert_clean_failure
from tests.wheelfactory import make_wheel

from .test_mirror import TARGET


def _pyc(release: Path, module: str) -> Path:
    found = list((release / "venv" / "lib").glob(f"python*/site-packages/__pycache__/{module}.*.pyc"))
    assert len(found) == 1, f"no compiled bytecode for {module} in {release}"
    return found[0]


def _uv(root: Path) -> Path:
    return root / "tools" / f"uv-{installer.UV_VERSION}" / "uv"


@pytest.mark.cold_hosts
def test_default_installer_is_uv_from_the_mirror_installed_once(ssh_project: Project, uv_mirror: Mirror) -> None:
    """Issue 20: a cold host gets uv's binary alone, from its find-links mirror (an HTTP directory listing): no
    pip tools venv is made for it; a warm deploy neither fetches it again nor runs it to ask its version."""
    ssh_project.inventory["mirror"] = uv_mirror.url
    ssh_project.write_inventory()
    ssh_project.commit("uv mirror", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    ssh_project.fab("deploy", "--hosts", "web1")
    root = root_of(ssh_project)
    first = (root / "current").resolve()
    uv = _uv(root)
    assert uv.is_file() and uv.stat().st_mode & 0o777 == 0o755, "uv's binary, from its wheel"
    assert sorted(os.listdir(root / "tools")) == sorted(["uv-cache", f"uv-{installer.UV_VERSION}"]), "no venv"
    assert os.listdir(uv.parent) == ["uv"], "the binary alone, no temporary file"
    (wheel,) = uv_mirror.directory.glob(f"uv-{installer.UV_VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert uv.read_bytes() == archive.read(f"uv-{installer.UV_VERSION}.data/scripts/uv")
    assert f"uv = {installer.UV_VERSION}" in (first / "venv" / "pyvenv.cfg").read_text()
    assert not (first / "venv" / "bin" / "pip").exists()
    first_pyc = _pyc(first, "demo_lib")

    # A warm deploy: uv is not fetched again (the same file), and the unchanged package's bytecode is reused.
    before = uv.stat()
    ssh_project.commit("again")
    ssh_project.fab("deploy", "--hosts", "web1")
    second = (root / "current").resolve()
    assert second != first and journal(ssh_project)[-1]["status"] == "ok"
    after = uv.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_ctime_ns,
    )
    assert not (root / "tools" / "venv").exists()
    # uv linked the same source from its cache into both venvs: the bytecode is linked too, not compiled again
    assert _pyc(second, "demo_lib").stat().st_ino == first_pyc.stat().st_ino


@pytest.mark.cold_hosts
def test_explicit_uv_without_uv_in_the_mirror_is_refused_before_any_host(ssh_project: Project, mirror: Mirror) -> None:
    ssh_project.inventory["installer"] = "uv"
    ssh_project.write_inventory()
    refused = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert_clean_failure(refused)
    assert f"installer: uv, but the mirror {mirror.url} has no {installer.UV_PIN} wheel" in refused.stderr
    assert "fab mirror.sync" in refused.stderr
    assert not root_of(ssh_project).exists(), "no host was touched"

    # Unset, the same mirror means pip; the release still ships compiled bytecode.
    del ssh_project.inventory["installer"]
    ssh_project.write_inventory()
    ssh_project.fab("deploy", "--hosts", "web1")
    release = (root_of(ssh_project) / "current").resolve()
    assert not _uv(root_of(ssh_project)).exists() and (root_of(ssh_project) / "tools" / "venv").is_dir()
    assert "uv =" not in (release / "venv" / "pyvenv.cfg").read_text()
    _pyc(release, "demo_lib")


def test_sync_adds_the_pinned_uv_wheel_or_says_it_is_missing(tmp_path: Path, uv_wheel_dir: Path) -> None:
    upstream = tmp_path / "upstream"
    make_wheel(upstream, "alpha", "1.0")
    write_indexes(upstream)
    prod = tmp_path / "prod.txt"
    prod.write_text("alpha==1.0\n")
    server, url = serve(upstream)
    try:
        report = sync([prod], tmp_path / "w1", TARGET, f"{url}simple/", user="ann", tools=[installer.uv_pin()])
        assert report.added == ["alpha-1.0-py3-none-any.whl"]
        assert report.skipped == [f"{installer.UV_PIN}: no wheel for {TARGET.describe()} upstream"]
        for wheel in uv_wheel_dir.glob("*.whl"):
            shutil.copy2(wheel, upstream / wheel.name)
        write_indexes(upstream)
        again = sync([prod], tmp_path / "w1", TARGET, f"{url}simple/", user="ann", tools=[installer.uv_pin()])
        assert [name.split("-")[:2] for name in again.added] == [["uv", installer.UV_VERSION]]
        assert again.present == ["alpha==1.0"] and not again.skipped
    finally:
        server.shutdown()
        server.server_close()


def _site(venv: Path) -> Path:
    site = venv / "lib" / "python3" / "site-packages"
    site.mkdir(parents=True)
    return site


def test_bytecode_reuses_identical_sources_and_compiles_the_rest(tmp_path: Path) -> None:
    old, new = _site(tmp_path / "old"), _site(tmp_path / "new")
    (old / "linked.py").write_text("A = 1\n")
    os.link(old / "linked.py", new / "linked.py")  # as uv links both from its cache
    (old / "same.py").write_text("B = 2\n")
    (new / "same.py").write_text("B = 2\n")  # same bytes, another file (pip)
    (old / "changed.py").write_text("C = 3\n")
    (new / "changed.py").write_text("C = 4\n")
    (new / "broken.py").write_text("print 'python 2'\n")
    assert bytecode.main({"venv": str(tmp_path / "old"), "previous": ""})["compiled"] == 3
    answer = bytecode.main({"venv": str(tmp_path / "new"), "previous": str(tmp_path / "old")})
    assert answer == {"ok": True, "reused": 2, "compiled": 1}
    cache = new / "__pycache__"
    linked = next(cache.glob("linked.*.pyc"))
    assert linked.stat().st_ino == next((old / "__pycache__").glob("linked.*.pyc")).stat().st_ino
    same = next(cache.glob("same.*.pyc"))
    assert same.stat().st_ino != next((old / "__pycache__").glob("same.*.pyc")).stat().st_ino
    assert (new / "same.py").stat().st_mtime_ns == (old / "same.py").stat().st_mtime_ns
    assert json.dumps(bytecode.main({"venv": str(tmp_path / "none"), "previous": ""})).startswith('{"ok": false')


@pytest.fixture
def tampered_uv_mirror(uv_mirror: Mirror) -> Iterator[Mirror]:
    """uv_mirror's wheels, served over HTTP, but uv's wheel has one more file (same name, other bytes): what a
    host gets when its mirror, or the way to it, is not the one the laptop checked."""
    directory = Path(tempfile.mkdtemp(prefix="deploytool-tampered-mirror-"))
    directory.chmod(0o755)
    for wheel in uv_mirror.directory.glob("*.whl"):
        shutil.copy2(wheel, directory / wheel.name)
    (uv,) = directory.glob(f"uv-{installer.UV_VERSION}-*.whl")
    with zipfile.ZipFile(uv, "a") as archive:
        archive.writestr(f"uv-{installer.UV_VERSION}.data/scripts/planted", "#!/bin/sh\necho planted\n")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Mirror(directory, f"http://127.0.0.1:{server.server_address[1]}/")
    server.shutdown()
    shutil.rmtree(directory, ignore_errors=True)


def test_the_uv_wheel_a_host_installs_must_be_the_one_the_laptop_saw(
    ssh_project: Project, uv_mirror: Mirror, tampered_uv_mirror: Mirror
) -> None:
    """Issue 17: uv was installed with no hash check (and that uv then enforces the app's hashes). The laptop
    reads its wheelhouse (the genuine wheels); the host's mirror serves another uv wheel under the same name: a
    host that switches to uv refuses it, naming both sha256s and the URL, and nothing changes on it."""
    wheelhouse = ssh_project.path / "wheels"
    wheelhouse.mkdir()
    for wheel in uv_mirror.directory.glob("*.whl"):
        shutil.copy2(wheel, wheelhouse / wheel.name)
    ssh_project.inventory.update(mirror=tampered_uv_mirror.url, installer="pip")
    ssh_project.write_inventory()
    ssh_project.commit("tampered mirror, pip", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    ssh_project.fab("deploy", "--hosts", "web1")
    root = root_of(ssh_project)
    old = (root / "current").resolve()

    del ssh_project.inventory["installer"]  # uv: the laptop's wheelhouse has it
    ssh_project.write_inventory()
    ssh_project.commit("uv", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1, result.stdout
    (genuine,) = uv_mirror.directory.glob(f"uv-{installer.UV_VERSION}-*.whl")
    served = hashlib.sha256((tampered_uv_mirror.directory / genuine.name).read_bytes()).hexdigest()
    expected = hashlib.sha256(genuine.read_bytes()).hexdigest()
    assert f"preparing the installer (uv) in {_uv(root).parent} failed" in result.stderr, result.stderr
    said = f"{tampered_uv_mirror.url}{genuine.name} has sha256 {served}, expected {expected}"
    assert said in result.stderr, result.stderr
    assert (root / "current").resolve() == old, "the old release is still current"
    assert not _uv(root).exists() and os.listdir(_uv(root).parent) == [], "nothing of the planted wheel is kept"

    ssh_project.inventory["mirror"] = uv_mirror.url  # the genuine wheel passes the same check
    ssh_project.write_inventory()
    ssh_project.commit("genuine mirror", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    ssh_project.fab("deploy", "--hosts", "web1")
    with zipfile.ZipFile(genuine) as archive:
        assert _uv(root).read_bytes() == archive.read(f"uv-{installer.UV_VERSION}.data/scripts/uv")
    assert os.listdir(_uv(root).parent) == ["uv"]
    assert f"uv = {installer.UV_VERSION}" in ((root / "current") / "venv" / "pyvenv.cfg").read_text()
