"""One error type for everything a user can fix, and its translation at the task boundary."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from invoke.exceptions import Exit

P = ParamSpec("P")
R = TypeVar("R")


class DeployError(Exception):
    """A failure with a message fit for the user: what went wrong, where, and what to do."""


class InventoryError(DeployError):
    """hosts.yml is missing, unreadable or invalid."""


class RemoteError(DeployError):
    """A remote step failed on one host."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class LockedError(RemoteError):
    """Another deploy or rollback holds the host's lock."""


def task_boundary(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a DeployError raised by a task body into a one-line ``Error: ...`` and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DeployError as error:
            raise Exit(f"Error: {error}", code=1) from None

    return wrapper
