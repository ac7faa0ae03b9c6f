"""The wheelhouse: write-once uploads, manifest, indexes real pip can use, hashes, sync, publish."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import invoke
import pytest

from deploytool.hostside import mirror_receive
from deploytool.supply.mirror import (
    MirrorError,
    hash_requirements,
    publish,
    read_manifest,
    serve,
    sync,
    upload,
    write_indexes,
)
from deploytool.supply.requirements import (
    TargetPython,
    pip_install_args,
    read_requirements,
    uv_install_args,
)
from deploytool.supply.wheelmeta import sha256_file
from tests.conftest import Project
from tests.wheelfactory import make_wheel

pytestmark = pytest.mark.integration  # real pip installs from the wheelhouse

TARGET = TargetPython(python_version="3.11")
POISONED = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or POISONED, check=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    wheelhouse = tmp_path / "wheelhouse"
    upload([make_wheel(tmp_path / "built", "alpha", "1.0", requires_python=">=3.8,<4")], wheelhouse, user="ann")
    server, url = serve(wheelhouse)
    yield wheelhouse, url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pip-less venv for the module; pip runs from outside with ``--python``."""
    path = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def install(python: Path, requirements: Path, mirror: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = pip_install_args(str(requirements), mirror, require_hashes="--hash" in requirements.read_text())
    return pip("--python", str(python), *args, "--force-reinstall", *extra)


def test_upload_refuses_bad_names_non_wheels_and_overwrites(tmp_path: Path) -> None:
    good = make_wheel(tmp_path / "a", "alpha", "1.0")
    other = make_wheel(tmp_path / "b", "alpha", "1.0", module_source="VERSION = 'evil'\n")
    shout = make_wheel(tmp_path / "c", "shout", "1.0").rename(tmp_path / "c" / "Shout-1.0-py3-none-any.whl")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "fake-1.0-py3-none-any.whl").write_text("not a zip")
    wheelhouse = tmp_path / "wheelhouse"
    assert upload([good], wheelhouse, user="ann") == ["alpha-1.0-py3-none-any.whl"]
    assert upload([good], wheelhouse, user="bob") == []  # same content: no-op
    bad = [other, shout, tmp_path / "notes.txt", tmp_path / "fake-1.0-py3-none-any.whl", tmp_path / "x-y.whl"]
    with pytest.raises(MirrorError) as caught:
        upload(bad, wheelhouse, user="eve")
    message = str(caught.value)
    assert f"{wheelhouse / good.name} already exists with sha256 {sha256_file(good)}" in message
    assert f"sha256 {sha256_file(other)}" in message
    assert (
        "Shout-1.0-py3-none-any.whl: wheel filename is not normalised: expected it to start with shout-1.0-" in message
    )
    assert "notes.txt: not a valid wheel filename" in message
    assert "fake-1.0-py3-none-any.whl: not a valid wheel" in message
    assert "x-y.whl: not a valid wheel filename" in message
    assert sha256_file(wheelhouse / good.name) == sha256_file(good)
    assert [entry["user"] for entry in read_manifest(wheelhouse)] == ["ann"]


def test_manifest_records_each_added_file(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    files = [make_wheel(tmp_path / "in", "alpha", "1.0"), make_wheel(tmp_path / "in", "beta", "2.0")]
    upload(files, wheelhouse, user="ann")
    entries = read_manifest(wheelhouse)
    assert [(e["filename"], e["sha256"], e["source"], e["user"]) for e in entries] == [
        (f.name, sha256_file(f), "upload", "ann") for f in files
    ]
    assert all(datetime.fromisoformat(e["time"]).utcoffset().total_seconds() == 0 for e in entries)  # type: ignore[union-attr]


def test_indexes_work_with_real_pip(tmp_path: Path, served: tuple[Path, str]) -> None:
    wheelhouse, url = served
    digest = sha256_file(wheelhouse / "alpha-1.0-py3-none-any.whl")
    page = (wheelhouse / "simple" / "alpha" / "index.html").read_text()
    assert f'href="../../alpha-1.0-py3-none-any.whl#sha256={digest}"' in page
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page
    assert 'href="alpha/"' in (wheelhouse / "simple" / "index.html").read_text()
    flat = pip("download", "--no-deps", "--no-index", "--find-links", url, "alpha==1.0", "-d", str(tmp_path / "f"))
    assert flat.returncode == 0, flat.stderr
    simple = pip("download", "--no-deps", "--index-url", f"{url}simple/", "alpha==1.0", "-d", str(tmp_path / "s"))
    assert simple.returncode == 0, simple.stderr
    assert sha256_file(tmp_path / "s" / "alpha-1.0-py3-none-any.whl") == digest


def test_offline_install_and_missing_package(tmp_path: Path, venv: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    upload([make_wheel(tmp_path / "in", "alpha", "1.0")], wheelhouse, user="ann")
    good = tmp_path / "good.txt"
    good.write_text("alpha==1.0\n")
    result = install(venv, good, str(wheelhouse))
    assert result.returncode == 0, result.stderr
    missing = tmp_path / "missing.txt"
    missing.write_text("ghost==1.0\n")
    result = install(venv, missing, str(wheelhouse))
    assert result.returncode != 0
    assert "No matching distribution found for ghost==1.0" in result.stderr


def test_uv_install_args_work_offline(tmp_path: Path, venv: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    wheelhouse = tmp_path / "wheelhouse"
    upload([make_wheel(tmp_path / "in", "gamma", "1.0")], wheelhouse, user="ann")
    requirements = tmp_path / "r.txt"
    requirements.write_text("gamma==1.0\n")
    env = {**POISONED, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_INDEX_URL": "http://127.0.0.1:9/"}
    args = uv_install_args(str(requirements), str(wheelhouse), False, python=str(venv))
    result = subprocess.run([uv, *args], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr


def test_hash_requirements_then_require_hashes_install_and_tampering(tmp_path: Path, venv: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    upload(
        [make_wheel(tmp_path / "in", "alpha", "1.0"), make_wheel(tmp_path / "in", "beta", "2.0")],
        wheelhouse,
        user="a",
    )
    (tmp_path / "base.txt").write_text("# shared\nbeta==2.0  # pinned for x\n")
    prod = tmp_path / "prod.txt"
    prod.write_text("-r base.txt\nalpha==1.0\n")
    assert hash_requirements(prod, wheelhouse, TARGET) == [prod, tmp_path / "base.txt"]
    assert hash_requirements(prod, wheelhouse, TARGET) == []  # idempotent
    alpha = sha256_file(wheelhouse / "alpha-1.0-py3-none-any.whl")
    assert prod.read_text() == f"-r base.txt\nalpha==1.0 \\\n    --hash=sha256:{alpha}\n"
    assert (tmp_path / "base.txt").read_text().startswith("# shared\nbeta==2.0 \\\n    --hash=sha256:")
    assert (tmp_path / "base.txt").read_text().endswith("  # pinned for x\n")
    assert all(pin.hashes for pin in read_requirements(prod).pins)
    tampered = tmp_path / "tampered"
    make_wheel(tampered, "alpha", "1.0", module_source="VERSION = 'evil'\n")
    shutil.copy(wheelhouse / "beta-2.0-py3-none-any.whl", tampered)
    result = install(venv, prod, str(tampered))
    assert result.returncode != 0 and "DO NOT MATCH THE HASHES" in result.stderr
    result = install(venv, prod, str(wheelhouse))
    assert result.returncode == 0, result.stderr


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A PEP 503 index on loopback standing in for PyPI, with one sdist-only project."""
    root = tmp_path / "upstream"
    make_wheel(root, "alpha", "1.0")
    make_wheel(root, "alpha", "1.1")
    make_wheel(root, "beta", "2.0", requires_python=">=3.8")
    write_indexes(root)
    sdist = root / "tinysdist-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name, text in SDIST_FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(f"tinysdist-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (root / "simple" / "tinysdist").mkdir()
    (root / "simple" / "tinysdist" / "index.html").write_text(
        f'<a href="../../{sdist.name}#sha256={sha256_file(sdist)}">{sdist.name}</a>'
    )
    server, url = serve(root)
    yield root, url
    server.shutdown()
    server.server_close()


SDIST_FILES = {
    "PKG-INFO": "Metadata-Version: 2.1\nName: tinysdist\nVersion: 1.0\n",
    "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
    "backend.py": """\
import zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, info = "tinysdist-1.0-py3-none-any.whl", "tinysdist-1.0.dist-info"
    with zipfile.ZipFile(f"{wheel_directory}/{name}", "w") as archive:
        archive.writestr("tinysdist.py", "VERSION = '1.0'\\n")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\\nName: tinysdist\\nVersion: 1.0\\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
        archive.writestr(f"{info}/RECORD", "")
    return name
""",
}


def test_sync_from_local_upstream_is_idempotent_and_offline_the_second_time(
    tmp_path: Path, upstream: tuple[Path, str]
) -> None:
    root, url = upstream
    prod = tmp_path / "prod.txt"
    prod.write_text("alpha==1.0\nbeta==2.0\n")
    dev = tmp_path / "dev.txt"
    dev.write_text("-r prod.txt\ntinysdist==1.0\n")
    wheelhouse = tmp_path / "wheelhouse"
    report = sync([prod, dev], wheelhouse, TARGET, f"{url}simple/", user="ann")
    assert sorted(report.added) == [
        "alpha-1.0-py3-none-any.whl",
        "beta-2.0-py3-none-any.whl",
        "tinysdist-1.0-py3-none-any.whl",
    ]
    assert report.built == ["tinysdist-1.0-py3-none-any.whl"]
    sources = {entry["filename"]: entry["source"] for entry in read_manifest(wheelhouse)}
    assert sources["alpha-1.0-py3-none-any.whl"] == f"{url}alpha-1.0-py3-none-any.whl"
    assert sources["tinysdist-1.0-py3-none-any.whl"] == "built from sdist tinysdist-1.0.tar.gz"
    assert sha256_file(wheelhouse / "alpha-1.0-py3-none-any.whl") == sha256_file(root / "alpha-1.0-py3-none-any.whl")
    assert "tinysdist-1.0-py3-none-any.whl#sha256=" in (wheelhouse / "index.html").read_text()
    shutil.rmtree(root)  # upstream gone: a second sync must not need it
    again = sync([prod, dev], wheelhouse, TARGET, f"{url}simple/", user="bob")
    assert again.added == [] and sorted(again.present) == ["alpha==1.0", "beta==2.0", "tinysdist==1.0"]
    assert len(read_manifest(wheelhouse)) == 3


def test_sync_never_replaces_a_present_pin_and_reports_missing_upstream(
    tmp_path: Path, upstream: tuple[Path, str]
) -> None:
    _, url = upstream
    wheelhouse = tmp_path / "wheelhouse"
    ours = make_wheel(tmp_path / "ours", "alpha", "1.0", module_source="VERSION = 'ours'\n")
    upload([ours], wheelhouse, user="ann")
    prod = tmp_path / "prod.txt"
    prod.write_text("alpha==1.0\n")
    assert sync([prod], wheelhouse, TARGET, f"{url}simple/", user="bob").present == ["alpha==1.0"]
    assert sha256_file(wheelhouse / ours.name) == sha256_file(ours)
    prod.write_text("alpha==1.0\nghost==9.9\n")
    with pytest.raises(MirrorError, match=r"prod.txt:2: ghost==9.9: no wheel for cpython 3.11 .* and no sdist"):
        sync([prod], wheelhouse, TARGET, f"{url}simple/", user="bob")


class LocalConnection(invoke.Context):  # type: ignore[misc]
    """A real local shell standing in for a fabric.Connection (run + put)."""

    def put(self, local: str, remote: str) -> None:
        shutil.copyfile(local, remote)


def test_publish_adds_files_and_refuses_to_overwrite_different_remote_files(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    upload([make_wheel(tmp_path / "in", "alpha", "1.0")], wheelhouse, user="ann")
    remote = tmp_path / "remote" / "wheels"
    publish(LocalConnection(), wheelhouse, str(remote))
    assert sha256_file(remote / "alpha-1.0-py3-none-any.whl") == sha256_file(wheelhouse / "alpha-1.0-py3-none-any.whl")
    assert (remote / "simple" / "alpha" / "index.html").is_file() and (remote / "MANIFEST.jsonl").is_file()
    assert not [p for p in remote.iterdir() if p.name.startswith(".publish")]
    publish(LocalConnection(), wheelhouse, str(remote))  # again: nothing differs, fine
    (remote / "alpha-1.0-py3-none-any.whl").write_bytes(b"tampered")
    upload([make_wheel(tmp_path / "in", "beta", "1.0")], wheelhouse, user="ann")
    with pytest.raises(MirrorError, match=r"refusing to overwrite .*alpha-1\.0-py3-none-any\.whl"):
        publish(LocalConnection(), wheelhouse, str(remote))
    assert (remote / "alpha-1.0-py3-none-any.whl").read_bytes() == b"tampered"
    assert "beta" not in (remote / "index.html").read_text()


def test_publish_writes_nothing_when_a_remote_file_differs(tmp_path: Path) -> None:
    """The host-side ``mirror_receive`` checks every existing file before it writes any: a refusal adds no new
    wheel either."""
    wheelhouse = tmp_path / "wheelhouse"
    upload([make_wheel(tmp_path / "in", "alpha", "1.0")], wheelhouse, user="ann")
    remote = tmp_path / "remote"
    publish(LocalConnection(), wheelhouse, str(remote))
    (remote / "alpha-1.0-py3-none-any.whl").write_bytes(b"tampered")
    upload([make_wheel(tmp_path / "in", "beta", "1.0")], wheelhouse, user="ann")
    with pytest.raises(MirrorError, match=r"alpha-1\.0-py3-none-any\.whl"):
        publish(LocalConnection(), wheelhouse, str(remote))
    assert not list(remote.glob("beta*"))
    assert not [path.name for path in remote.iterdir() if ".receiving-" in path.name]


@pytest.mark.parametrize("member", ["../escape.whl", "/abs.whl", "simple/../../x", "other/dir.whl"])
def test_mirror_receive_refuses_archive_members_outside_its_places(tmp_path: Path, member: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(member)
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="refusing archive member"):
        mirror_receive._members(buffer.getvalue())


def test_mirror_receive_refuses_a_symlink_member(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("index/simple")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc"
        archive.addfile(info)
    with pytest.raises(ValueError, match="refusing archive member"):
        mirror_receive._members(buffer.getvalue())


def test_fab_mirror_publish_over_ssh_adds_files_and_refuses_a_differing_one(ssh_project: Project) -> None:
    """`fab mirror.publish` over real SSH: the host-side ``mirror_receive`` adds the wheels and indexes; a file
    changed on the host is refused by name, and nothing is written."""
    stage = ssh_project.inventory["stages"]["test"]
    first = next(iter(stage["hosts"].values()))
    remote = Path(first["root"]).parent / "wheels"
    stage.update(mirror_host=first["address"], mirror_path=str(remote))
    ssh_project.inventory["wheelhouse"] = "wheelhouse"
    ssh_project.write_inventory()
    wheelhouse = ssh_project.path / "wheelhouse"
    upload([make_wheel(ssh_project.path.parent / "in", "alpha", "1.0")], wheelhouse, user="ann")
    ssh_project.fab("mirror.publish")
    wheel = "alpha-1.0-py3-none-any.whl"
    assert sha256_file(remote / wheel) == sha256_file(wheelhouse / wheel)
    assert (remote / "simple" / "alpha" / "index.html").is_file()
    (remote / wheel).write_bytes(b"tampered")
    upload([make_wheel(ssh_project.path.parent / "in", "beta", "1.0")], wheelhouse, user="ann")
    failed = ssh_project.fab("mirror.publish", check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"refusing to overwrite files that differ on the host (indexes unchanged): {wheel}" in failed.stderr
    assert not list(remote.glob("beta*")) and "beta" not in (remote / "index.html").read_text()
