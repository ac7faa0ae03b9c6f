"""The mirror meets the ecosystem: a real index server (pypiserver), uv's resolver, vendored wheels, verify.

Everything is real: pypiserver from PyPI on loopback with an htpasswd file, the ``fab`` command line, sshd,
pip and uv on the hosts, uv's ``pip compile`` on the laptop. Wheels are built by the tests; no internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploytool.errors import DeployError, InventoryError
from deploytool.inventory import parse_inventory
from deploytool.supply import installer
from deploytool.supply.mirror import serve, write_indexes
from deploytool.supply.reqlock import lock
from deploytool.supply.requirements import check_nested, pip_install_args, read_requirements, uv_install_args
from deploytool.supply.wheelmeta import TargetPython
from tests import indexserver
from tests.conftest import HOST_PYTHON_VERSION, Project
from tests.test_deploy_ssh import app_version, journal, root_of
from tests.test_pins_e2e import assert_clean_failure, venv_imports
from tests.wheelfactory import make_wheel

TARGET = TargetPython(python_version=HOST_PYTHON_VERSION)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[indexserver.IndexServer]:
    with indexserver.index_server(tmp_path / "index") as server:
        yield server


@pytest.fixture
def twine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload credentials the way twine takes them (the fab subprocesses inherit them)."""
    monkeypatch.setenv("TWINE_USERNAME", indexserver.USER)
    monkeypatch.setenv("TWINE_PASSWORD", indexserver.PASSWORD)


def use_index(project: Project, index: indexserver.IndexServer, wheelhouse: Path) -> None:
    project.inventory.update(
        {"mirror": index.simple, "mirror_kind": "index", "upload_url": index.url, "wheelhouse": str(wheelhouse)}
    )
    project.write_inventory()
    project.commit("index mirror", {"hosts.yml": (project.path / "hosts.yml").read_text()})


# --- settings and install arguments ---------------------------------------------------------------------


def test_index_install_arguments_name_the_index_as_the_only_source() -> None:
    args = pip_install_args("r.txt", "http://pyrepo.internal/root/prod/+simple/", False, "index")
    assert args[:7] == [
        "install", "--no-deps", "--exists-action=w", "--index-url", "http://pyrepo.internal/root/prod/+simple/",
        "--trusted-host", "pyrepo.internal",
    ]  # fmt: skip
    assert "--no-index" not in args and "--extra-index-url" not in args and "--only-binary=:all:" in args
    uv = uv_install_args("r.txt", "https://pyrepo.internal/simple/", True, python="/v/bin/python", kind="index")
    assert uv[:5] == ["pip", "install", "--no-deps", "--default-index", "https://pyrepo.internal/simple/"]
    assert "--no-index" not in uv and "--require-hashes" in uv


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"mirror": "wheels", "mirror_kind": "index"}, "mirror_kind: index needs an http(s) index URL"),
        ({"mirror": "/srv/wheels", "mirror_kind": "vendored"}, "a directory inside the app's repository"),
        ({"mirror": "../wheels", "mirror_kind": "vendored"}, "a directory inside the app's repository"),
        ({"mirror": "http://m/", "mirror_kind": "pypi"}, "expected 'find-links', 'index' or 'vendored'"),
        ({"mirror": "http://m/simple/", "upload_url": "m:8080"}, "upload_url: expected an http(s) URL"),
    ],
)
def test_mirror_kind_settings_are_validated(tmp_path: Path, stage: dict[str, str], message: str) -> None:
    data = {"app": "demo", "stages": {"s": {"root": "/srv/demo", "hosts": ["web1"], **stage}}}
    with pytest.raises(InventoryError) as error:
        parse_inventory(data, tmp_path / "hosts.yml")
    assert "hosts.yml: stages.s." in str(error.value) and message in str(error.value)


# --- the index server: publish, check, deploy ----------------------------------------------------------------


def test_publish_uploads_verifies_and_refuses_an_overwrite(
    local_project: Project, index: indexserver.IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "demo-lib", "1.0")
    make_wheel(wheelhouse, "demo-helper", "1.0", ["demo-lib>=1.0"])
    use_index(local_project, index, wheelhouse)
    monkeypatch.delenv("TWINE_USERNAME", raising=False)
    monkeypatch.delenv("TWINE_PASSWORD", raising=False)
    refused = local_project.fab("mirror.publish", check=False)
    assert_clean_failure(refused)
    assert "HTTP 401" in refused.stderr and "TWINE_USERNAME" in refused.stderr
    assert not list(index.packages.iterdir())

    monkeypatch.setenv("TWINE_USERNAME", indexserver.USER)
    monkeypatch.setenv("TWINE_PASSWORD", indexserver.PASSWORD)
    result = local_project.fab("mirror.publish")
    assert "2 uploaded and verified, 0 already there" in result.stdout
    for wheel in wheelhouse.glob("*.whl"):
        assert (index.packages / wheel.name).read_bytes() == wheel.read_bytes()
    assert "0 uploaded and verified, 2 already there" in local_project.fab("mirror.publish").stdout

    # The same name with other bytes: refused before anything is uploaded, naming the file.
    make_wheel(wheelhouse, "demo-lib", "1.0", module_source="VERSION = 'other'\n")
    make_wheel(wheelhouse, "demo-new", "1.0")
    served = (index.packages / "demo_lib-1.0-py3-none-any.whl").read_bytes()
    overwrite = local_project.fab("mirror.publish", check=False)
    assert_clean_failure(overwrite)
    assert "demo_lib-1.0-py3-none-any.whl: the index serves sha256" in overwrite.stderr
    assert "nothing uploaded" in overwrite.stderr
    assert (index.packages / "demo_lib-1.0-py3-none-any.whl").read_bytes() == served
    assert not (index.packages / "demo_new-1.0-py3-none-any.whl").exists()


@pytest.mark.parametrize("installer_name", ["pip", "uv"])
def test_check_and_deploy_from_the_index_server_over_ssh(
    ssh_project: Project,
    index: indexserver.IndexServer,
    tmp_path: Path,
    twine_env: None,
    installer_name: str,
    request: pytest.FixtureRequest,
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "demo-lib", "1.0")
    if installer_name == "uv":  # the index serves the pinned uv too, as mirror.sync + publish leave it
        for wheel in request.getfixturevalue("uv_wheel_dir").glob("*.whl"):
            shutil.copy2(wheel, wheelhouse / wheel.name)
        ssh_project.inventory["installer"] = "uv"
    use_index(ssh_project, index, wheelhouse)
    ssh_project.fab("mirror.publish")
    shutil.rmtree(wheelhouse)  # the laptop reads the index itself, not a local copy

    checked = ssh_project.fab("requirements.check")
    assert "ok    requirements/prod.txt: 1 pins" in checked.stdout and index.simple in checked.stdout
    result = ssh_project.fab("deploy", "--hosts", "web1,web2")
    assert "Deployed" in result.stdout
    assert app_version(ssh_project, "web2") == "1.0"
    assert journal(ssh_project)[-1]["status"] == "ok"
    if installer_name == "uv":  # its binary came from the index too (the project page <index>/uv/), not via pip
        uv = root_of(ssh_project, "web2") / "tools" / f"uv-{installer.UV_VERSION}" / "uv"
        assert (
            uv.is_file() and f"uv = {installer.UV_VERSION}" in (uv.parents[2] / "current/venv/pyvenv.cfg").read_text()
        )

    # A pin the index lacks is caught on the laptop, naming file, line and the index; no host is touched.
    ssh_project.commit("more", {"requirements/prod.txt": "demo-lib==1.0\ndemo-absent==3.0\n"})
    failed = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert_clean_failure(failed)
    assert f"requirements/prod.txt:2: demo-absent==3.0 is not in the mirror {index.simple}" in failed.stderr
    assert len(journal(ssh_project)) == 1


# --- PEP 691 JSON and PEP 658 metadata ----------------------------------------------------------------------


class _JsonIndex(http.server.SimpleHTTPRequestHandler):
    """Answers project pages with PEP 691 JSON when asked for it; records what was downloaded."""

    requested: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.requested.append(self.path)
        directory = Path(self.directory)
        parts = self.path.strip("/").split("/")
        if parts[0] == "simple" and len(parts) == 2 and "json" in self.headers.get("Accept", ""):
            files = []
            for wheel in sorted(directory.glob("*.whl")):
                if wheel.name.split("-")[0].replace("_", "-") == parts[1]:
                    meta = hashlib.sha256((directory / f"{wheel.name}.metadata").read_bytes()).hexdigest()
                    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
                    entry = {"filename": wheel.name, "url": f"../../{wheel.name}", "hashes": {"sha256": sha}}
                    files.append({**entry, "core-metadata": {"sha256": meta}})
            body = json.dumps({"meta": {"api-version": "1.0"}, "name": parts[1], "files": files}).encode()
            self.send_response(200 if files else 404)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


def test_check_reads_pep691_json_and_pep658_metadata_without_downloading_wheels(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "js-core", "1.0")
    make_wheel(wheels, "js-web", "1.0", ["js-core>=2.0"])
    write_indexes(wheels)  # writes the .metadata files
    requested: list[str] = []
    handler = type("Handler", (_JsonIndex,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(wheels)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    try:
        good = tmp_path / "good.txt"
        good.write_text("js-core==1.0\n")
        check_nested(read_requirements(good), url, TARGET, kind="index")
        bad = tmp_path / "bad.txt"
        bad.write_text("js-core==1.0\njs-web==1.0\n")
        with pytest.raises(Exception, match=r"bad.txt:2: js-web==1.0 needs js-core>=2.0 but .*bad.txt:1 pins"):
            check_nested(read_requirements(bad), url, TARGET, kind="index")
    finally:
        server.shutdown()
        server.server_close()
    assert "/simple/js-web/" in requested and "/js_web-1.0-py3-none-any.whl.metadata" in requested
    assert not [path for path in requested if path.endswith(".whl")], requested


# --- requirements.lock -----------------------------------------------------------------------------------------


def test_lock_pins_every_dependency_with_hashes_then_sync_and_check_pass(
    local_project: Project, index: indexserver.IndexServer, tmp_path: Path
) -> None:
    make_wheel(index.packages, "demo-lib", "1.0")
    make_wheel(index.packages, "demo-lib", "2.0")
    make_wheel(index.packages, "demo-helper", "1.0", ["demo-lib>=1.0"])
    wheelhouse = tmp_path / "wheelhouse"
    local_project.inventory.update({"upstream": index.simple, "wheelhouse": str(wheelhouse)})
    local_project.write_inventory()
    (local_project.path / "requirements" / "prod.in").write_text("demo-helper\n")
    result = local_project.fab("requirements.lock")
    assert "locked requirements/prod.txt: 2 pins" in result.stdout
    text = (local_project.path / "requirements" / "prod.txt").read_text()
    # The project's prod.txt already pinned demo-lib==1.0: a lock keeps existing pins that still fit.
    lib = hashlib.sha256((index.packages / "demo_lib-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert "demo-helper==1.0 \\\n    --hash=sha256:" in text and "# via -r prod.in" in text
    assert f"demo-lib==1.0 \\\n    --hash=sha256:{lib}\n    # via demo-helper" in text
    assert "fab requirements.lock" in text  # the header says how to regenerate it

    local_project.fab("mirror.sync")
    assert sorted(path.name for path in wheelhouse.glob("*.whl")) == [
        "demo_helper-1.0-py3-none-any.whl", "demo_lib-1.0-py3-none-any.whl",
    ]  # fmt: skip
    assert "ok    requirements/prod.txt: 2 pins" in local_project.fab("requirements.check").stdout

    # An input nothing satisfies: one clear error, the existing role file untouched.
    (local_project.path / "requirements" / "prod.in").write_text("demo-lib>=5.0\n")
    failed = local_project.fab("requirements.lock", check=False)
    assert_clean_failure(failed)
    assert "prod.in: cannot resolve for cpython" in failed.stderr
    assert (local_project.path / "requirements" / "prod.txt").read_text() == text
    assert sorted(p.name for p in (local_project.path / "requirements").iterdir()) == ["prod.in", "prod.txt"]


def test_lock_runs_deploytools_pinned_uv_from_the_wheelhouse_without_uv_on_path(
    local_project: Project, index: indexserver.IndexServer, uv_wheel_dir: Path, tmp_path: Path
) -> None:
    make_wheel(index.packages, "demo-lib", "1.0")
    wheelhouse, cache = tmp_path / "wheelhouse", tmp_path / "cache"
    local_project.inventory.update({"upstream": index.simple, "wheelhouse": str(wheelhouse)})
    local_project.write_inventory()
    (uv_wheel,) = uv_wheel_dir.glob("*.whl")
    local_project.fab("mirror.upload", "--file", str(uv_wheel))  # as fab mirror.sync adds it: recorded
    (local_project.path / "requirements" / "prod.in").write_text("demo-lib\n")
    bare = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cache)}
    assert shutil.which("uv", path=bare["PATH"]) is None, "this machine has uv on the bare PATH"
    result = local_project.fab("requirements.lock", env=bare)
    digest = hashlib.sha256(uv_wheel.read_bytes()).hexdigest()
    binary = cache / "deploytool" / "uv" / digest / "uv"
    assert f"resolving with {binary}" in result.stdout and "locked requirements/prod.txt: 1 pins" in result.stdout
    assert "demo-lib==1.0" in (local_project.path / "requirements" / "prod.txt").read_text()

    # A cached binary that no longer matches the wheel's RECORD is unpacked again.
    binary.write_bytes(b"#!/bin/sh\necho tampered\n")
    local_project.fab("requirements.lock", env=bare)
    assert b"tampered" not in binary.read_bytes()

    # A wheel whose sha256 is not what MANIFEST.jsonl recorded is never run.
    before = (local_project.path / "requirements" / "prod.txt").read_text()
    with (wheelhouse / uv_wheel.name).open("ab") as handle:
        handle.write(b"\0")
    failed = local_project.fab("requirements.lock", env=bare, check=False)
    assert_clean_failure(failed)
    assert f"{wheelhouse / uv_wheel.name}: sha256 " in failed.stderr and "MANIFEST.jsonl records" in failed.stderr
    assert (local_project.path / "requirements" / "prod.txt").read_text() == before


# --- mirror.verify ------------------------------------------------------------------------------------------------


@pytest.fixture
def static_upstream(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static PEP 503 upstream (deploytool's own indexes served by a plain HTTP server)."""
    directory = tmp_path / "upstream"
    make_wheel(directory, "vf-one", "1.0")
    make_wheel(directory, "vf-two", "1.0")
    make_wheel(directory, "vf-three", "1.0")
    write_indexes(directory)
    server, url = serve(directory)
    yield directory, url + "simple/"
    server.shutdown()
    server.server_close()


def test_verify_reports_files_changed_or_vanished_upstream_and_changed_in_the_wheelhouse(
    local_project: Project, static_upstream: tuple[Path, str], tmp_path: Path
) -> None:
    upstream_dir, upstream = static_upstream
    wheelhouse = tmp_path / "wheelhouse"
    local_project.inventory.update({"upstream": upstream, "wheelhouse": str(wheelhouse)})
    local_project.write_inventory()
    (local_project.path / "requirements" / "prod.txt").write_text("vf-one==1.0\nvf-two==1.0\nvf-three==1.0\n")
    local_project.fab("mirror.sync")
    make_wheel(wheelhouse.parent / "mine", "vf-mine", "1.0")
    local_project.fab("mirror.upload", "--file", str(wheelhouse.parent / "mine" / "vf_mine-1.0-py3-none-any.whl"))
    clean = local_project.fab("mirror.verify")
    assert "3 files match" in clean.stdout and "1 uploaded or built here" in clean.stdout

    make_wheel(upstream_dir, "vf-one", "1.0", module_source="VERSION = 'replaced'\n")  # same name, new bytes
    (upstream_dir / "vf_two-1.0-py3-none-any.whl").unlink()
    write_indexes(upstream_dir)
    with (wheelhouse / "vf_three-1.0-py3-none-any.whl").open("ab") as handle:
        handle.write(b"tampered")
    result = local_project.fab("mirror.verify", check=False)
    assert_clean_failure(result)
    assert "changed upstream: vf_one-1.0-py3-none-any.whl: upstream now serves sha256" in result.stdout
    assert f"vanished upstream: vf_two-1.0-py3-none-any.whl: no longer listed by {upstream}" in result.stdout
    assert "changed in the wheelhouse: vf_three-1.0-py3-none-any.whl: the wheelhouse copy has" in result.stdout
    assert "3 file(s) differ from MANIFEST.jsonl" in result.stderr


# --- vendored wheels ----------------------------------------------------------------------------------------------


def test_vendored_wheels_travel_in_the_release_and_are_read_from_the_commit(ssh_project: Project) -> None:
    vendor = ssh_project.path / "vendor" / "wheels"
    ssh_project.inventory.update({"mirror": "vendor/wheels", "mirror_kind": "vendored"})
    ssh_project.write_inventory()
    ssh_project.commit("vendored mirror, wheels not committed yet")
    missing = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert_clean_failure(missing)
    assert "mirror: vendor/wheels (vendored) is not in commit" in missing.stderr

    make_wheel(vendor, "demo-lib", "1.0")
    commit = ssh_project.commit("vendor the wheels")
    ssh_project.commit("pin 2.0 without committing its wheel", {"requirements/prod.txt": "demo-lib==2.0\n"})
    make_wheel(vendor, "demo-lib", "2.0")  # in the working tree only: what ships is the commit
    unshipped = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert_clean_failure(unshipped)
    assert "demo-lib==2.0 is not in the mirror vendor/wheels" in unshipped.stderr

    result = ssh_project.fab("deploy", "--hosts", "web1", "--ref", commit)
    assert "Deployed" in result.stdout
    release = root_of(ssh_project) / "current"
    assert (release / "vendor" / "wheels" / "demo_lib-1.0-py3-none-any.whl").is_file()
    assert venv_imports(release, "demo_lib") == "1.0"


def test_lock_needs_uv_and_says_so(local_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    (local_project.path / "requirements" / "prod.in").write_text("demo-lib\n")
    monkeypatch.setattr("deploytool.supply.reqlock.shutil.which", lambda *args, **kwargs: None)
    with pytest.raises(DeployError, match=r"uv not found: fab mirror\.sync adds deploytool's pinned uv"):
        lock(local_project.path / "requirements" / "prod.in", TARGET, None)
    assert not (local_project.path / "requirements" / "prod.txt").read_text().startswith("#")
