"""``scripts/quickstart`` in a fresh clone, offline, with another ``python3`` first on PATH: the venv, the wheels
and the local deploy all use the Python it was given, and its last lines say what to type next."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploytool.supply.requirements import read_requirements
from tests import indexserver
from tests.wheelfactory import make_wheel, repack_installed

pytestmark = pytest.mark.integration  # a venv, pip, an index server, a deploy

REPOSITORY = Path(__file__).resolve().parents[1]


def closure(name: str) -> set[str]:
    """``name`` and every distribution it needs, as installed in this test environment (no extras)."""
    found: set[str] = set()
    pending = [name]
    while pending:
        current = canonicalize_name(pending.pop())
        if current in found:
            continue
        found.add(current)
        for text in importlib.metadata.distribution(current).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def test_quickstart_in_a_fresh_clone_with_another_python3_first_on_path(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPOSITORY), str(clone)], check=True)
    # What pip installs deploytool from: its dependencies and the build backend, repacked from this environment.
    offline = tmp_path / "offline"
    for name in [*sorted(closure("deploytool") - {"deploytool"}), "setuptools"]:
        repack_installed(name, offline)
    # The example's pins, from a local index (mirror.sync's upstream): stand-ins of the pinned versions.
    wrong = tmp_path / "bin"
    wrong.mkdir()
    marker = tmp_path / "wrong-python3-ran"
    (wrong / "python3").write_text(f"#!/bin/sh\ntouch {marker}\necho 'not this python3' >&2\nexit 3\n")
    (wrong / "python3").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV", "UV_"))}
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env.update(
        PATH=f"{wrong}:{env['PATH']}",
        PYTHON=python,
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(offline),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    with indexserver.index_server(tmp_path / "index") as index:
        for role in sorted((clone / "requirements").glob("*.txt")):
            for pin in read_requirements(role).pins:
                if pin.version and not (index.packages / f"{pin.key.replace('-', '_')}-{pin.version}").exists():
                    make_wheel(index.packages, pin.name, pin.version)
        env["UPSTREAM"] = index.simple
        result = subprocess.run(
            ["scripts/quickstart"], cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not marker.exists(), "the python3 first on PATH was run"
    assert "Deployed " in result.stdout and "Traceback" not in output
    last = [line for line in result.stdout.splitlines() if line.strip()][-6:]
    assert last[0] == "Deployed to .deploy/local. Next, in this shell:"
    assert last[1].startswith("  source .venv/bin/activate") and last[2].startswith("  fab releases")
    current = clone / ".deploy" / "local" / "current"
    assert (current / ".deploytool.json").is_file()
    home = (current / "venv" / "pyvenv.cfg").read_text()
    assert f"home = {os.path.dirname(python)}" in home, home  # the release venv is of the Python given
    assert os.path.realpath(clone / ".venv" / "bin" / "python").startswith(os.path.dirname(python))
