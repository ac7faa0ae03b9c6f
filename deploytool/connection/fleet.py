"""Run one function on many hosts in parallel and gather every host's failure, never a GroupException.

Ctrl-C, and SIGTERM inside `terminate_as_interrupt`, stop `on_each` with an `Interrupted` that carries what
each host had done by then, so the caller can clean up and say where every host stands.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Generic, TypeVar

from ..errors import DeployError, RemoteError, Terminated, how_stopped
from ..flow.phases import CONNECT
from ..flow.target import Target
from ..inventory import HostConfig
from ..reporting.events import EventLog
from .transport import close, connect

T = TypeVar("T")
R = TypeVar("R")

MAX_PARALLEL = 16


@dataclass
class Results(Generic[T, R]):
    """Per-item results and failures of `on_each`."""

    done: list[tuple[T, R]]
    failed: list[tuple[T, DeployError]]
    not_started: list[T] = field(default_factory=list)  # left out by an interruption

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


class Interrupted(KeyboardInterrupt):
    """`on_each` was interrupted: ``results`` holds what every item had done (or not started) by then."""

    def __init__(self, results: Results[Any, Any], cause: KeyboardInterrupt) -> None:
        super().__init__()
        self.results = results
        self.cause = cause


def interruption(error: KeyboardInterrupt) -> str:
    """How the run was stopped, for the user: ``interrupted (Ctrl-C)`` or ``terminated (SIGTERM)``."""
    cause = error.cause if isinstance(error, Interrupted) else error
    return how_stopped(isinstance(cause, Terminated))


def interrupted_message(task: str, error: KeyboardInterrupt) -> str:
    """The ``Error:`` line of a task stopped by ``error``: where each host stands when it stopped an `on_each`
    that had begun (done, failed, not started), else that nothing was changed."""
    results = error.results if isinstance(error, Interrupted) else None
    if results is None or not (results.done or results.failed):
        return f"Error: {interruption(error)} while {task} was starting: nothing was changed on any host"

    def names(items: Iterable[Any]) -> str:
        return ", ".join(str(getattr(item, "name", item)) for item in items) or "none"

    return (
        f"Error: {interruption(error)} during {task}: done on {names(item for item, _ in results.done)}; "
        f"failed on {names(item for item, _ in results.failed)}; not started on {names(results.not_started)}"
    )


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, the first SIGTERM raises `Terminated` (cleaned up like Ctrl-C); later ones are ignored,
    so that cleaning up is not cut short. Outside the main thread signals cannot be handled: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def on_each(
    items: Iterable[T],
    func: Callable[[T], R],
    name: Callable[[T], str],
    cancel: Callable[[T], None] | None = None,
    limit: int = MAX_PARALLEL,
) -> Results[T, R]:
    """Call ``func`` on every item in parallel; a `DeployError` marks that item failed, others keep going.

    Any other exception is a bug or an unexpected remote condition: it is reported for that host as well,
    with its type, instead of escaping as a traceback that hides the other hosts' outcomes.

    At most ``limit`` items are worked on at once (hosts.yml ``parallel``).

    On Ctrl-C (or SIGTERM in `terminate_as_interrupt`) nothing new starts; ``cancel`` is called for every item
    still running (to cut it short; without it, those are waited for), then `Interrupted` is raised."""
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
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(items)))) as pool:
        futures = [pool.submit(call, item) for item in items]
        try:
            wait(futures)
            for future in futures:  # a KeyboardInterrupt raised inside func stops the run as one here does
                if isinstance(future.exception(), KeyboardInterrupt):
                    raise future.exception()  # type: ignore[misc]
        except KeyboardInterrupt as interrupt:
            running = [item for item, future in zip(items, futures, strict=True) if future.running()]
            if cancel is None:
                print("Interrupted: waiting for the steps already running on the hosts to finish...", file=sys.stderr)
            else:
                print("Interrupted: stopping the steps running on the hosts...", file=sys.stderr)
                for item in running:
                    cancel(item)
            pool.shutdown(wait=True, cancel_futures=True)
            _collect(results, items, futures, name)
            raise Interrupted(results, interrupt) from None
        _collect(results, items, futures, name)
    return results


def _collect(
    results: Results[T, R],
    items: list[T],
    futures: list[Future[tuple[T, R | None, DeployError | None]]],
    name: Callable[[T], str],
) -> None:
    for item, future in zip(items, futures, strict=True):
        if future.cancelled():
            results.not_started.append(item)
            continue
        if future.exception() is not None:  # only a KeyboardInterrupt escapes ``call``
            results.failed.append((item, RemoteError(name(item), "interrupted")))
            continue
        _, value, error = future.result()
        if error is not None:
            results.failed.append((item, error))
        else:
            results.done.append((item, value))  # type: ignore[arg-type]


@contextmanager
def connected(
    hosts: Sequence[HostConfig], password: str | None = None, log: EventLog | None = None
) -> Iterator[list[Target]]:
    """Open connections to every host in parallel (a `Target` each, in ``hosts``' order), or fail naming each host
    that could not be reached; every connection is closed on the way out."""
    log = log or EventLog()

    def open_one(host: HostConfig) -> Target:
        with log.phase(host.name, CONNECT):
            return Target(host, connect(host), password)

    try:
        results = on_each(hosts, open_one, lambda host: host.name)
    except Interrupted as stop:
        for _, target in stop.results.done:
            close(target.c)
        raise DeployError(f"{interruption(stop)} while connecting: nothing was changed") from None
    targets = [target for _, target in results.done]
    try:
        if results.failed:
            raise DeployError(describe_failures("connecting", [(host.name, error) for host, error in results.failed]))
        yield sorted(targets, key=lambda target: [h.name for h in hosts].index(target.name))
    finally:
        for target in targets:
            close(target.c)
