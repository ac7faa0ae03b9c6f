"""Files as committed: what a deploy ships is the commit, never the laptop's working tree."""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

from .errors import DeployError


def extract(project_root: Path, commit: str, pathspecs: list[str], into: Path) -> bool:
    """Write the files of ``commit`` matching ``pathspecs`` under ``into``; False if none match."""
    archive = subprocess.run(
        ["git", "-C", str(project_root), "archive", "--format=tar", commit, "--", *pathspecs],
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
            tar.extractall(into, filter="tar")  # keeps symlinks as symlinks, so etc-mock's check still sees them
    return True


def relative_to_project(project_root: Path, path: Path, what: str) -> str:
    """``path`` relative to the project, or a DeployError: only what is in the repository can be shipped."""
    try:
        return path.resolve().relative_to(project_root.resolve()).as_posix()
    except ValueError:
        raise DeployError(f"{what} {path} is outside the project {project_root}; it must be committed") from None
