"""Files as committed: what a deploy ships is the commit, never the laptop's working tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import DeployError


def extract(project_root: Path, commit: str, pathspecs: list[str], into: Path) -> bool:
    """Write the files of ``commit`` matching ``pathspecs`` under ``into``; False if none match."""
    archive = subprocess.run(
        # --end-of-options: a commit is never read as an option (git then takes no "--": paths follow it).
        ["git", "-C", str(project_root), "archive", "--format=tar", "--end-of-options", commit, *pathspecs],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        message = archive.stderr.decode(errors="replace").strip()
        if "did not match any files" in message:
            return False
        raise DeployError(f"cannot read {' '.join(pathspecs)} of commit {commit[:12]}: {message}")
    with tempfile.TemporaryFile() as buffer:
        buffer.write(archive.stdout)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            unpack(tar, into, f"commit {commit[:12]}")
    return True


def unpack(tar: tarfile.TarFile, into: Path, what: str) -> None:
    """Unpack ``tar`` under ``into``: regular files, directories and symlinks (kept as symlinks, so the
    etc-mock check still sees them). Refused with a DeployError naming the member: absolute names, ``..``,
    a path through a symlink, a symlink leading outside ``into``, and any other kind of member.

    Written by hand rather than with ``extractall(filter=...)``, which Debian 12's Python 3.11.2 lacks."""
    top = os.path.realpath(into)
    links: list[tuple[str, str]] = []
    for member in tar:
        name = member.name.rstrip("/")
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or not name:
            raise DeployError(f"{what}: refusing to unpack {member.name!r}: absolute or '..' path")
        dest = os.path.join(top, *parts)
        parent = os.path.dirname(dest)
        again = os.path.lexists(dest) and not (member.isdir() and os.path.isdir(dest) and not os.path.islink(dest))
        if os.path.realpath(parent) != os.path.normpath(parent) or again:
            raise DeployError(f"{what}: refusing to unpack {name}: its path passes through a symlink or repeats")
        if member.isdir():
            os.makedirs(dest, mode=0o755, exist_ok=True)
        elif member.isfile():
            os.makedirs(parent, mode=0o755, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            with source, open(dest, "xb") as out:
                shutil.copyfileobj(source, out)
            os.chmod(dest, 0o755 if member.mode & 0o100 else 0o644)
        elif member.issym():
            os.makedirs(parent, mode=0o755, exist_ok=True)
            os.symlink(member.linkname, dest)
            links.append((name, member.linkname))
        else:
            raise DeployError(f"{what}: refusing to unpack {name}: not a file, directory or symlink")
    for name, linkname in links:  # checked once all are in place: a link may lead through another
        if os.path.commonpath([top, os.path.realpath(os.path.join(top, name))]) != top:
            raise DeployError(f"{what}: refusing to unpack {name}: a symlink to {linkname}, leading outside its files")


def relative_to_project(project_root: Path, path: Path, what: str) -> str:
    """``path`` relative to the project, or a DeployError: only what is in the repository can be shipped."""
    try:
        return path.resolve().relative_to(project_root.resolve()).as_posix()
    except ValueError:
        raise DeployError(f"{what} {path} is outside the project {project_root}; it must be committed") from None
