"""Ctrl-C before a deploy touches any host: while fab loads the fabfile, and while the deploy plans (issue 21)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Project
from tests.isolation import deadline


def interrupt_when(project: Project, marker: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``fab`` in the project, send it SIGINT (as Ctrl-C does) once ``marker`` exists; its status and stderr."""
    fab = subprocess.Popen(
        [sys.executable, "-m", "fabric", *args],
        cwd=project.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        until = deadline(60)
        while not marker.exists():
            assert fab.poll() is None, f"fab ended before the marker: {fab.communicate()}"
            assert time.monotonic() < until, "never reached the marker"
            time.sleep(0.02)
        fab.send_signal(signal.SIGINT)
        out, err = fab.communicate(timeout=60)
    finally:
        fab.kill()
    return fab.returncode, out + err


def assert_nothing_touched(project: Project) -> None:
    assert not (project.path / ".deploy").exists(), "the local host's deploy root was never made"


def test_ctrl_c_while_the_deploy_plans_says_nothing_was_changed(local_project: Project, tmp_path: Path) -> None:
    """Soak violation (issue 21): ``fab_sigint`` early in a deploy, seed 2126 run 18, exited 1 with no output
    (Invoke's program.py swallowed the KeyboardInterrupt raised before deploytool's own handling began)."""
    marker, tools = tmp_path / "planning", tmp_path / "bin"
    tools.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    wrapper = tools / "git"
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" rev-parse "*) touch {marker}; sleep 30;; esac\nexec {real_git} "$@"\n'
    )
    wrapper.chmod(0o755)
    status, output = interrupt_when(local_project, marker, "deploy", env={"PATH": f"{tools}:{os.environ['PATH']}"})
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == ["Error: interrupted (Ctrl-C) while deploy was starting: nothing was changed on any host"]
    assert_nothing_touched(local_project)


def test_ctrl_c_while_fab_loads_the_fabfile_says_so(local_project: Project, tmp_path: Path) -> None:
    """Soak violation (issue 21), seed 2126 run 18: a Ctrl-C before any task runs (the fabfile still loading)
    ended fab with status 1 and nothing said."""
    marker = tmp_path / "loading"
    fabfile = f"from deploytool import ns\nimport pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
    fabfile += "time.sleep(30)\n"
    (local_project.path / "fabfile.py").write_text(fabfile)
    status, output = interrupt_when(local_project, marker, "deploy")
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == ["Error: interrupted (Ctrl-C) while fab was starting: nothing was changed on any host"], output
    assert_nothing_touched(local_project)
