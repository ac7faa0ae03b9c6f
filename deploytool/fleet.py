"""Run one function on many hosts in parallel and gather every host's failure, never a GroupException."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import DeployError, RemoteError

T = TypeVar("T")
R = TypeVar("R")

MAX_PARALLEL = 16


@dataclass
class Results(Generic[T, R]):
    """Per-item results and failures of `on_each`."""

    done: list[tuple[T, R]]
    failed: list[tuple[T, DeployError]]

    def raise_if_failed(self, what: str, name: Callable[[T], str]) -> None:
        if self.failed:
            raise DeployError(describe_failures(what, [(name(item), error) for item, error in self.failed]))


def describe_failures(what: str, failures: Sequence[tuple[str, Exception]]) -> str:
    """One line per failing host: ``<what> failed on 2 hosts:\\n  web1: ...``."""
    if len(failures) == 1:
        name, error = failures[0]
        text = str(error)
        return f"{what} failed: {text if text.startswith(name + ':') else f'{name}: {text}'}"
    lines = [str(error) if str(error).startswith(f"{name}:") else f"{name}: {error}" for name, error in failures]
    return f"{what} failed on {len(failures)} hosts:\n  " + "\n  ".join(lines)


def on_each(items: Iterable[T], func: Callable[[T], R], name: Callable[[T], str]) -> Results[T, R]:
    """Call ``func`` on every item in parallel; a `DeployError` marks that item failed, others keep going.

    Any other exception is a bug or an unexpected remote condition: it is reported for that host as well,
    with its type, instead of escaping as a traceback that hides the other hosts' outcomes."""
    items = list(items)
    results: Results[T, R] = Results([], [])

    def call(item: T) -> tuple[T, R | None, DeployError | None]:
        try:
            return item, func(item), None
        except DeployError as error:
            return item, None, error
        except Exception as error:
            return item, None, RemoteError(name(item), f"unexpected {type(error).__name__}: {error}")

    if not items:
        return results
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(items))) as pool:
        try:
            for item, value, error in pool.map(call, items):
                if error is not None:
                    results.failed.append((item, error))
                else:
                    results.done.append((item, value))  # type: ignore[arg-type]
        except KeyboardInterrupt:
            # A remote command cannot be interrupted from here: say why the wait, start nothing new.
            print("Interrupted: waiting for the steps already running on the hosts to finish...", file=sys.stderr)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
