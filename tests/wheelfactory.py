"""Build tiny, real wheels for the tests: no build backend, no network."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.utils import canonicalize_name


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    module_source: str | None = None,
) -> Path:
    """Write ``name-version-py3-none-any.whl`` into ``directory`` and return its path.

    The wheel holds one module named after the distribution whose ``VERSION`` is the version,
    METADATA with the given ``Requires-Dist`` lines, and a valid RECORD.
    """
    directory.mkdir(parents=True, exist_ok=True)
    module = canonicalize_name(name).replace("-", "_")
    dist = f"{module}-{version}"
    metadata_lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        metadata_lines.append(f"Requires-Python: {requires_python}")
    metadata_lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    files = {
        f"{module}.py": (module_source or f"VERSION = {version!r}\n").encode(),
        f"{dist}.dist-info/METADATA": ("\n".join(metadata_lines) + "\n").encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: deploytool-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist}.dist-info/RECORD,,\n"
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{dist}.dist-info/RECORD", record)
    return path


_NOT_REPACKED = {"INSTALLER", "RECORD", "REQUESTED", "direct_url.json"}


def repack_installed(name: str, directory: Path) -> Path:
    """Write a wheel of distribution ``name`` as installed in this test environment into ``directory``.

    Real packages the tests serve from their mirror (gunicorn, supervisor, uv) come from the test extra that is
    already installed, so the suite needs no internet. Module files are copied as they are; a file installed
    outside site-packages (uv's ``bin/uv`` binary) goes to ``<dist>.data/scripts/``, except console scripts,
    which the installer generates again from ``entry_points.txt``; compiled bytecode and the installer's own
    files are left out. The wheel's tags are the ones its WHEEL file names.
    """
    import importlib.metadata

    dist = importlib.metadata.distribution(name)
    version = dist.version
    stem = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    console = {entry.name for entry in dist.entry_points if entry.group == "console_scripts"}
    files: dict[str, bytes] = {}
    for file in dist.files or ():
        parts = Path(str(file)).parts
        if "__pycache__" in parts or str(file).endswith(".pyc"):
            continue
        if parts[0] == "..":
            if parts[-2] != "bin" or parts[-1] in console:
                continue
            member = f"{stem}.data/scripts/{parts[-1]}"
        elif parts[0].endswith(".dist-info"):
            if parts[-1] in _NOT_REPACKED:
                continue
            member = "/".join((info, *parts[1:]))
        else:
            member = str(file)
        files[member] = Path(file.locate()).read_bytes()
    wheel_text = files[f"{info}/WHEEL"].decode()
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    pythons, abis, platforms = zip(*(tag.split("-") for tag in tags), strict=True)
    tag = "-".join(".".join(dict.fromkeys(part)) for part in (pythons, abis, platforms))
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            info_entry = zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0))
            info_entry.compress_type = zipfile.ZIP_DEFLATED
            info_entry.external_attr = (0o100755 if "/scripts/" in member else 0o100644) << 16
            archive.writestr(info_entry, data)
        archive.writestr(f"{info}/RECORD", record)
    return path
