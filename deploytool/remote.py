"""Run a group of remote steps as one shell script in one round trip, and report which step failed.

Scripts are built from argument lists (``shlex.join``) and constant shell fragments; data never reaches the
shell unquoted. Each step announces itself on stderr so a failure can be reported as "<host>: <step> failed".
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import transport
from .errors import RemoteError
from .transport import Runner

STEP_MARK = "deploytool-step: "


class ChunkedStream(io.StringIO):
    """A stdin payload that Invoke copies in large chunks (it asks for one byte at a time otherwise)."""

    def read(self, size: int | None = -1) -> str:
        return super().read(65536)


@dataclass
class Script:
    """A POSIX sh script assembled from quoted commands; ``set -e`` stops it at the first failure."""

    lines: list[str] = field(default_factory=lambda: ["set -e"])

    def step(self, title: str) -> Script:
        """Announce the next step (its title shows in the error when it fails)."""
        return self.cmd("printf", "%s%s\\n", STEP_MARK, title, redirect=">&2")

    def cmd(self, *argv: str, redirect: str = "") -> Script:
        """Add one command built from its arguments; ``redirect`` is a constant shell redirection."""
        self.lines.append(shlex.join(argv) + (f" {redirect}" if redirect else ""))
        return self

    def pipe(self, *commands: Iterable[str]) -> Script:
        """Add a pipeline of commands given as argument lists (``set -o pipefail`` is not POSIX: each stage
        must fail loudly on its own, as ``git archive | tar -x`` does)."""
        self.lines.append(" | ".join(shlex.join(list(argv)) for argv in commands))
        return self

    def raw(self, fragment: str) -> Script:
        """Add a constant shell fragment (control flow only: callers quote every datum with shlex.quote)."""
        self.lines.append(fragment)
        return self

    def extend(self, other: Script) -> Script:
        """Append the steps of ``other`` to this script."""
        self.lines.extend(line for line in other.lines if line != "set -e")
        return self

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def command(self, sudo: bool = False) -> str:
        """The whole script as one command line, run by ``sh`` whatever the login shell is; with ``sudo``,
        through ``sudo -S`` (which reads one password line from stdin: commands inside must not read it)."""
        argv = ["sh", "-c", self.text]
        return shlex.join(["sudo", "-S", "-p", "", *argv] if sudo else argv)


def _failed_step(stderr: str) -> tuple[str, str]:
    """Split stderr into the last announced step and what was printed after it."""
    step, detail = "", list[str]()
    for line in stderr.splitlines():
        if line.startswith(STEP_MARK):
            step, detail = line[len(STEP_MARK) :], []
        elif line.strip():
            detail.append(line.strip())
    return step, " | ".join(detail[-6:])


@dataclass(frozen=True)
class Outcome:
    """What a script printed and how it ended."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def failed_step(self) -> str:
        """The title of the last step announced (the one that failed when the script failed)."""
        return _failed_step(self.stderr)[0] or "a remote command"

    def failure(self) -> str:
        """What failed, for the user: ``<step> failed: <the last lines it printed>``."""
        step, detail = _failed_step(self.stderr)
        where = f"{step} failed" if step else f"remote command failed (exit {self.exit_code})"
        return f"{where}: {detail or 'no output'}"


def _step_label(stderr: str) -> str:
    step, _ = _failed_step(stderr)
    return f" ({step})" if step else ""


def run_script(c: Runner, script: Script, *, stdin: str | None = None, phase: str = "") -> Outcome:
    """Run ``script`` on ``c`` in one call, feeding ``stdin`` if given; never raises on a non-zero exit.

    It may take the host's time for ``phase`` (`transport.phase_timeout`); a host that stops answering, a
    connection that drops and an interrupted run raise (`transport.NotAnswering`, `ConnectionLost`,
    `Interrupted`), naming the step that was running, instead of passing for that step's failure."""
    kwargs: dict[str, Any] = {
        "hide": True,
        "warn": True,
        "in_stream": ChunkedStream(stdin) if stdin else False,
    }
    result = transport.run(c, script.command(), phase=phase, label=_step_label, **kwargs)
    return Outcome(result.stdout, result.stderr, result.return_code)


def run_checked(c: Runner, host: str, script: Script, *, stdin: str | None = None, phase: str = "") -> Outcome:
    """Run ``script`` and raise `RemoteError` naming the failed step and its output when it fails."""
    outcome = run_script(c, script, stdin=stdin, phase=phase)
    if not outcome.ok:
        raise RemoteError(host, outcome.failure(), output=outcome.stderr)
    return outcome
