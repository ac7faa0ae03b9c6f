"""The ``fab`` command line itself: output to a closed pipe, Fabric's own ``-H``, ``-h`` for help."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import Project


def test_releases_into_a_closed_pipe_ends_quietly(ssh_project: Project) -> None:
    """``fab releases | head -1``: the reader is gone before fab writes; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # like head -1 having exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fabric", "releases"],
            cwd=ssh_project.path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 0


def test_releases_piped_into_head(ssh_project: Project) -> None:
    """The real thing: a shell pipeline into ``head -1``, with pipefail, prints one line and no traceback."""
    command = f"set -o pipefail; {sys.executable} -m fabric releases 2>&1 | head -1"
    result = subprocess.run(
        ["bash", "-c", command], cwd=ssh_project.path, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.startswith("web1 (") and result.stdout.count("\n") == 1
    assert result.returncode == 0, result.stderr
