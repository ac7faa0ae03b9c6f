"""The installer: uv from the mirror by default, pip when the mirror has none, and compiled bytecode.

uv's wheel is made once per session from the test environment's own uv (`wheelfactory.repack_installed`, 17 MB)
and served, with the demo wheels, from a mirror of its own, so the rest of the suite keeps its small mirror
(which has no uv, so its deploys use pip).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from deploytool.hostside import bytecode
from deploytool.supply import installer
from deploytool.supply.mirror import serve, sync, write_indexes
from tests.conftest import Mirror, Project
from tests.test_deploy_ssh import journal, root_of
from tests.test_pins_e2e import assert_clean_failure
from tests.wheelfactory import make_wheel

from .test_mirror import TARGET

# A first deploy with uv installs it into a tools venv made by that deploy.
pytestmark = pytest.mark.cold_hosts


def _pyc(release: Path, module: str) -> Path:
    found = list((release / "venv" / "lib").glob(f"python*/site-packages/__pycache__/{module}.*.pyc"))
    assert len(found) == 1, f"no compiled bytecode for {module} in {release}"
    return found[0]


def test_default_installer_is_uv_from_the_mirror_installed_once(ssh_project: Project, uv_mirror: Mirror) -> None:
    ssh_project.inventory["mirror"] = uv_mirror.url
    ssh_project.write_inventory()
    ssh_project.commit("uv mirror", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    ssh_project.fab("deploy", "--hosts", "web1")
    root = root_of(ssh_project)
    first = (root / "current").resolve()
    assert (root / "tools" / "venv" / "bin" / "uv").is_file(), "uv is installed into the tools venv"
    assert f"uv = {installer.UV_VERSION}" in (first / "venv" / "pyvenv.cfg").read_text()
    assert not (first / "venv" / "bin" / "pip").exists()
    first_pyc = _pyc(first, "demo_lib")

    # A warm deploy: uv is not installed again, and the unchanged package's bytecode is reused, not recompiled.
    uv_inode = (root / "tools" / "venv" / "bin" / "uv").stat().st_ino
    ssh_project.commit("again")
    result = ssh_project.fab("deploy", "--hosts", "web1")
    second = (root / "current").resolve()
    assert second != first and journal(ssh_project)[-1]["status"] == "ok"
    assert (root / "tools" / "venv" / "bin" / "uv").stat().st_ino == uv_inode
    assert "Successfully installed uv" not in result.stdout + result.stderr
    # uv linked the same source from its cache into both venvs: the bytecode is linked too, not compiled again
    assert _pyc(second, "demo_lib").stat().st_ino == first_pyc.stat().st_ino


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
    assert not (root_of(ssh_project) / "tools" / "venv" / "bin" / "uv").exists()
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
