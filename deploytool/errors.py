"""One error type for everything a user can fix, and its translation at the task boundary."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, ParamSpec, TypeVar

from fabric.connection import Connection
from invoke.exceptions import Exit

from .reporting.terminal import for_terminal

P = ParamSpec("P")
R = TypeVar("R")


class DeployError(Exception):
    """A failure with a message fit for the user: what went wrong, where, and what to do."""


class InventoryError(DeployError):
    """hosts.yml is missing, unreadable or invalid."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, a supervisor stopping fab), handled like Ctrl-C."""


def how_stopped(terminated: bool) -> str:
    """How a run was stopped, in the user's words: ``terminated (SIGTERM)`` or ``interrupted (Ctrl-C)``."""
    return "terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)"


class RemoteError(DeployError):
    """A remote step failed on one host."""

    def __init__(self, host: str, message: str, output: str = "") -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.output = output  # what the failed step printed, for the progress lines and --verbose


class LockedError(RemoteError):
    """Another deploy or rollback holds the host's lock; ``owner`` is its ``owner.json`` as the host has it."""

    def __init__(self, host: str, message: str, owner: str = "") -> None:
        super().__init__(host, message)
        self.owner = owner


class _ReaderGone:
    """``sys.stdout`` as a task writes to it, through `terminal.for_terminal` (every control character escaped:
    whatever a host said reaches the terminal as text, never as an escape sequence; a URL's ``user:password@``
    redacted), and, once its reader has
    gone (``fab releases | head -1``), the rest of the output sent to /dev/null instead of raising
    BrokenPipeError: the task carries on (a deploy is never cut short by its output) and ends with its own
    status, quietly."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            self._stream.write(for_terminal(text))
            return len(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # not a real file: nothing will be flushed at exit either
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)  # what is still buffered, and Python's flush at exit, go there
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet_when_reader_gone() -> Iterator[None]:
    original = sys.stdout
    wrapped = _ReaderGone(original)
    sys.stdout = wrapped
    try:
        yield
    finally:
        wrapped.flush()
        sys.stdout = original


FABRIC_HOSTS_REFUSED = (
    "Error: fab -H/--hosts (Fabric's own option) is not used: deploytool takes the hosts from hosts.yml; "
    "to act on some of a stage's hosts give the task's option after it, e.g. fab deploy --hosts web1,web2"
)


def task_boundary(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a DeployError raised by a task body into a one-line ``Error: ...`` and exit status 1; what the task
    prints, and that line, pass `terminal.for_terminal`; output to a closed pipe ends
    quietly; Fabric's ``-H`` is refused before the task does anything."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if args and isinstance(args[0], Connection):
            # Fabric's own -H: it would call the task once per host, each with a Connection, which would break
            # "prepare every host, then switch them all"; the hosts come from hosts.yml.
            raise Exit(FABRIC_HOSTS_REFUSED, code=1)
        _phase[0] = "running"
        try:
            with _quiet_when_reader_gone():
                return func(*args, **kwargs)
        except DeployError as error:
            raise Exit(for_terminal(f"Error: {error}"), code=1) from None
        except KeyboardInterrupt as stop:
            # The flows (deploy, rollback) turn an interruption into a DeployError saying where each host stands
            # once they have touched one. One that gets here came before (reading hosts.yml, planning, the
            # mirror check, connecting): nothing was changed on any host; or it stopped a task acting on each
            # host in turn (unlock, lock, status): the hosts it had done are named.
            from .connection.fleet import interrupted_message

            raise Exit(for_terminal(interrupted_message(func.__name__.replace("_", "-"), stop)), code=1) from None
        finally:
            _phase[0] = "ended"

    return wrapper


_phase = ["starting"]  # where this fab process is: starting (loading the fabfile, parsing), running a task, ended


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGINT or SIGTERM while ``fab`` loads the fabfile or parses its arguments: Invoke would end it with status
    1 and say nothing (SIGTERM: Python would end it silently, -15); say that nothing was touched. Within a task it
    is a KeyboardInterrupt (`Terminated` for SIGTERM), which the task boundary and the flows handle."""
    terminated = signum == signal.SIGTERM
    if _phase[0] != "starting":
        raise Terminated if terminated else KeyboardInterrupt
    raise SystemExit(
        for_terminal(f"Error: {how_stopped(terminated)} while fab was starting: nothing was changed on any host")
    )


def catch_early_interrupts() -> None:
    """In a ``fab`` process, from here on a Ctrl-C before any task runs ends it with one ``Error:`` line (see
    `_interrupted`). Python's own handler must still be in place (nothing else wanted SIGINT), in the main thread."""
    main = sys.modules.get("__main__")
    running_fab = os.path.basename(sys.argv[0]) == "fab" or getattr(main, "__package__", None) == "fabric"
    if not running_fab or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted)
