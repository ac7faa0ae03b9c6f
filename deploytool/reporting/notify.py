"""``notify``: commands run on the laptop when a deploy or rollback ends, ok or not.

Each runs with ``sh -c`` in the project directory, the run's ``--json`` document on stdin and ``DEPLOYTOOL_*``
variables in its environment, in its own process group, cut off (the whole group) after ``notify_timeout``
seconds. A notify command that fails is reported on stderr; it never changes the run's outcome or exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..flow.release import deployer
from ..inventory import HostConfig
from .report import RunReport, dumps
from .terminal import for_terminal

SHOWN_LINES = 5  # of a failed notify command's output


def environment(hosts: Sequence[HostConfig], report: RunReport, ok: bool) -> dict[str, str]:
    """The ``DEPLOYTOOL_*`` variables a notify command gets (on top of the laptop's environment)."""
    values = {
        "DEPLOYTOOL_RESULT": "ok" if ok else "failed",
        "DEPLOYTOOL_TASK": report.command,
        "DEPLOYTOOL_STAGE": report.stage,
        "DEPLOYTOOL_APP": hosts[0].app if hosts else "",
        "DEPLOYTOOL_RELEASE": report.release or "",
        "DEPLOYTOOL_COMMIT": report.commit or "",
        "DEPLOYTOOL_HOSTS": ",".join(host.name for host in hosts),
        "DEPLOYTOOL_USER": deployer(),
        "DEPLOYTOOL_ERROR": report.error or "",
    }
    return {key: for_terminal(value) for key, value in values.items()}  # no NUL or escape from a host's words


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run_one(command: str, document: bytes, env: dict[str, str], timeout: float, cwd: Path) -> str | None:
    """Run one notify command; None when it exited 0, else what went wrong (for a warning: a sentence, then the
    last lines it printed)."""
    try:
        process = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group: a timeout stops what it started too (curl, sleep)
        )
    except OSError as error:
        return f"could not be started: {error.strerror or error}"
    try:
        output, _ = process.communicate(document, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        return f"still running after {timeout:g} s (notify_timeout): stopped"
    except BaseException:
        _kill_group(process)
        process.communicate()
        raise
    if process.returncode == 0:
        return None
    code = process.returncode
    how = f"exited with status {code}" if code > 0 else f"was killed by signal {-code}"
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()][-SHOWN_LINES:]
    return how + (":" if lines else "") + "".join(f"\n  | {line}" for line in lines)


def notify(hosts: Sequence[HostConfig], report: RunReport, ok: bool, cwd: Path, err: TextIO | None = None) -> None:
    """Run the stage's notify commands one after the other, each reported on stderr when it fails."""
    if not hosts or not hosts[0].notify:
        return
    err = err or sys.stderr
    document = (dumps(report.to_json()) + "\n").encode()
    env = {**os.environ, **environment(hosts, report, ok)}
    for index, command in enumerate(hosts[0].notify):
        try:
            problem = run_one(command, document, env, hosts[0].notify_timeout, cwd)
        except KeyboardInterrupt:  # Ctrl-C while a notify command runs: stop notifying, keep the run's outcome
            left = len(hosts[0].notify) - index
            err.write(f"Warning: interrupted during notify[{index}]: {left} notify command(s) stopped or not run\n")
            err.flush()
            return
        if problem is not None:
            said, _, output = problem.partition("\n")
            text = f"Warning: notify[{index}] ({command}) {said.rstrip(':')} (the {report.command} is not affected)"
            err.write(for_terminal(text + (":\n" + output if output else "")) + "\n")
            err.flush()
