"""Host-side module ``mirror_receive``: add a wheelhouse's files to a mirror directory, write-once, then its indexes.

Arguments: ``{"dir": absolute path, "archive": base64 of a tar, "sums": {wheel file name: sha256}}``. The tar
holds the wheels (and their ``.metadata`` files) at its top, and the indexes (``index.html``, ``simple/...``,
``MANIFEST.jsonl``) under ``index/``. Every member is data: regular files only, names without ``..``, nothing
followed through a symlink. A file already in ``dir`` must have the sha256 the laptop sent; if any differs,
nothing at all is written and the answer names them (``differing``). Otherwise new files are written (each
checked against its sha256, then renamed into place) and the indexes replaced. Answer: ``ok``, ``added``,
``differing``, ``error``. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import posixpath
import tarfile
from typing import Any

from . import _common


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _members(archive: bytes) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The wheels (by file name) and the index files (by path under the mirror), refusing anything else."""
    wheels: dict[str, bytes] = {}
    index: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isdir():
                continue
            name = member.name
            parts = name.split("/")
            if not member.isfile() or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
                raise ValueError(f"refusing archive member {name!r}")
            handle = tar.extractfile(member)
            data = handle.read() if handle is not None else b""
            if len(parts) == 1:
                wheels[name] = data
            elif parts[0] == "index":
                index[posixpath.join(*parts[1:])] = data
            else:
                raise ValueError(f"refusing archive member {name!r}")
    return wheels, index


def _write(path: str, data: bytes) -> None:
    """``data`` into ``path`` by a rename, never through a symlink at ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.receiving-{os.getpid()}"
    with open(temporary, "xb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def main(args: dict[str, Any]) -> dict[str, Any]:
    directory = args["dir"]
    sums: dict[str, str] = args["sums"]
    wheels, index = _members(base64.b64decode(args["archive"]))
    if set(wheels) != set(sums):
        return {"ok": False, "error": "the archive and its sums name different files", "added": [], "differing": []}
    bad = sorted(name for name, data in wheels.items() if _sha256(data) != sums[name])
    if bad:
        return {"ok": False, "error": "damaged in transfer: " + ", ".join(bad), "added": [], "differing": []}
    os.makedirs(directory, exist_ok=True)
    differing: list[str] = []
    new: list[str] = []
    for name in sorted(wheels):
        path = os.path.join(directory, name)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            differing.append(name)
        elif os.path.exists(path):
            if _file_sha256(path) != sums[name]:
                differing.append(name)
        else:
            new.append(name)
    if differing:
        return {
            "ok": False,
            "error": "refusing to overwrite files that differ on the host (indexes unchanged): " + ", ".join(differing),
            "added": [],
            "differing": differing,
        }
    for name in new:
        _write(os.path.join(directory, name), wheels[name])
    for relative, data in sorted(index.items()):
        _write(os.path.join(directory, relative), data)
    return {"ok": True, "error": None, "added": new, "differing": []}


if __name__ == "__main__":
    _common.serve(main)
