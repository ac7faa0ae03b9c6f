"""One error type for everything a user can fix, and its translation at the task boundary."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
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
        try:
            with _quiet_when_reader_gone():
                return func(*args, **kwargs)
        except DeployError as error:
            raise Exit(for_terminal(f"Error: {error}"), code=1) from None

    return wrapper
