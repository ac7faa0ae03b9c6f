"""The laptop's runner of host-side modules (`deploytool.hostside`): ship one, run it, read its JSON answer.

A module runs in one round trip, the way Ansible runs its modules: the program of ``<python> -c <bootstrap>`` is
`hostside._common.bootstrap`, which carries the module and every host-side module it imports (``_common``
included, compressed: AnsiballZ's way) and runs it as ``__main__``; its arguments are one line of JSON on stdin (so
a password or a large payload never shows in ``ps``), and its one line of JSON comes back on stdout. Nothing is
installed on the host and no program text is built in a string.

What a module answers is data from a host that the laptop does not trust: `run_module` only checks that it is a
JSON object; each caller validates the fields it uses.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import RemoteError
from ..hostside import _common
from ..hostside._common import EXIT_FAILED
from . import transport
from .remote import ChunkedStream
from .transport import Runner

__all__ = [
    "EXIT_FAILED",
    "ModuleFailed",
    "NoAnswer",
    "argv",
    "command",
    "parse_answer",
    "run_module",
    "source",
    "stdin_line",
]


class ModuleFailed(RemoteError):
    """A host-side module answered with ``{"ok": false, ...}``; ``result`` is what it said."""

    def __init__(self, host: str, message: str, result: Mapping[str, Any]) -> None:
        super().__init__(host, message, output=steps_output(result))
        self.result = result


@functools.cache
def source(name: str) -> str:
    """The text of host-side module ``name`` (read once per process)."""
    if not name.isidentifier() or not (Path(_common.__file__).parent / f"{name}.py").is_file():
        raise ValueError(f"no host-side module {name!r}")
    return _common.source(name)


@functools.cache
def program(name: str) -> str:
    """The ``-c`` program that runs module ``name`` with the host-side modules it imports (built once)."""
    return _common.bootstrap(_common.bundle(name, source), name)


def command(python: str, name: str, *, sudo: bool = False) -> str:
    """The command line that runs module ``name`` (its arguments are fed on stdin)."""
    line = argv(python, name)
    return shlex.join(["sudo", "-n", *line] if sudo else line)


def stdin_line(args: Mapping[str, Any]) -> str:
    """A module's arguments as it reads them: one line of JSON."""
    return json.dumps(args, sort_keys=True, separators=(",", ":")) + "\n"


def argv(python: str, name: str, *args: str) -> list[str]:
    """The argument list running module ``name`` (a JSON module's arguments are fed on stdin; ``args`` are for
    ``etc_install``, which takes its own as words)."""
    return [python, "-c", program(name), *args]


def progress(stderr: str) -> str:
    """Where a module was, from the progress lines it wrote on stderr so far (``{"progress": <step>}``, one JSON
    object a line, see `_common.Steps`): `` (<step>)``, or "" before its first step (for `transport.run`'s
    "not answering" and "connection lost" messages)."""
    for line in reversed(stderr.splitlines()):
        try:
            said = json.loads(line)
        except ValueError:
            continue
        if isinstance(said, dict) and isinstance(said.get("progress"), str):
            return f" ({said['progress'][:200]})"
    return ""


#: Who hears of each step a host-side module starts, as it starts (`step_listener`): host, phase, step title (as
#: the host wrote it: not trusted).
StepListener = Callable[[str, str, str], None]
_step_listeners: list[StepListener] = []


@contextlib.contextmanager
def step_listener(listener: StepListener) -> Iterator[None]:
    """Tell ``listener`` of every step any module starts on any host while this is entered (live progress)."""
    _step_listeners.append(listener)
    try:
        yield
    finally:
        _step_listeners.remove(listener)


def tell_step(host: str, phase: str, title: str) -> None:
    """Tell the step listeners of a step the laptop itself runs for ``host`` (the ``git push``)."""
    for listener in list(_step_listeners):
        with contextlib.suppress(Exception):  # a display must never break a run
            listener(host, phase, title)


def _step_reporter(host: str, phase: str) -> Callable[[str], None] | None:
    if not _step_listeners:
        return None

    def report(line: str) -> None:
        said = json.loads(line)
        if isinstance(said, dict) and isinstance(said.get("progress"), str):
            where = said.get("phase") if isinstance(said.get("phase"), str) else phase
            for listener in list(_step_listeners):
                listener(host, str(where)[:20], said["progress"][:300])

    return report


class NoAnswer(RemoteError):
    """A host-side module ended without its JSON answer (it crashed, or was killed)."""


def parse_answer(host: str, name: str, stdout: str, stderr: str, exit_code: int) -> dict[str, Any]:
    """The module's JSON object, or a `RemoteError` saying what came back instead."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    answer = _common.json_answer(stdout)
    if answer is None:
        said = [line.strip() for line in stderr.splitlines() if line.strip() and not progress(line)]
        detail = " | ".join(said[-4:]) or (lines[-1][:200] if lines else "no output")
        raise NoAnswer(host, f"{name} failed (exit {exit_code}): {detail}")
    if exit_code != 0 or answer.get("ok") is False:
        message = answer.get("error")
        raise ModuleFailed(host, str(message) if message else f"{name} failed (exit {exit_code})", answer)
    return answer


def steps_output(answer: Mapping[str, Any]) -> str:
    """What a module's reported ``steps`` printed, each under its title (for a failure's lines and --verbose)."""
    steps = answer.get("steps")
    if not isinstance(steps, list):
        return ""
    parts = []
    for step in steps:
        if isinstance(step, dict) and isinstance(step.get("output"), str) and step["output"].strip():
            parts.append(f"[{step.get('step')}]\n{step['output']}".rstrip())
    return "\n".join(parts)


def run_module(
    c: Runner,
    host: str,
    python: str,
    name: str,
    args: Mapping[str, Any],
    *,
    sudo: bool = False,
    phase: str = "",
) -> dict[str, Any]:
    """Run host-side module ``name`` on ``c`` with ``args``; return its JSON answer (unvalidated data).

    It may take the host's time for ``phase`` (`transport.phase_timeout`); a host that stops answering or a
    dropped connection raise as `transport.run` says, not as the module's failure."""
    stdin = ChunkedStream(stdin_line(args))
    result = transport.run(
        c,
        command(python, name, sudo=sudo),
        phase=phase or name,
        label=progress,
        on_line=_step_reporter(host, phase or name),
        hide=True,
        warn=True,
        in_stream=stdin,
    )
    return parse_answer(host, name, result.stdout, result.stderr, result.return_code)
