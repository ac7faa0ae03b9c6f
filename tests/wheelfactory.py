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
