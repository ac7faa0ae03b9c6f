"""The test wheel factory's repacking of installed distributions, installed by a real pip with no index."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.wheelfactory import repack_installed

pytestmark = pytest.mark.integration  # a real venv and pip install


def test_a_repacked_distribution_installs_offline_and_imports(tmp_path: Path) -> None:
    wheel = repack_installed("packaging", tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not any(name.endswith((".pyc", "/INSTALLER", "/direct_url.json")) for name in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheel.parent), "packaging"],
        check=True,
    )
    import packaging

    shown = subprocess.run(
        [python, "-c", "import packaging, sys; print(packaging.__version__, packaging.__file__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert shown[0] == packaging.__version__ and shown[1].startswith(str(venv))
    checked = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
