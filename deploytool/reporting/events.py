"""Per-host events: one record per phase of every host (host, phase, start, end, result, reason, output).

The flows in `deploy` wrap each phase of each host in `EventLog.phase`; everything the user sees is made from the
events by `report` (progress lines as they happen, the summary table, ``--json``), and the benchmarks read their
phase timings from the same events. Errors stay data here: the reason of a failed phase is its error's text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: Results a phase can end with.
OK, FAILED, INTERRUPTED = "ok", "failed", "interrupted"

#: The phases of a run, in the order a reader meets them: prepare (connect, check, push, build), then publish
#: (restart, health), then finish; revert goes back. Host-side steps carry their phase as a field, so rewording a
#: message never changes an event.
CONNECT, CHECK, PUSH, BUILD = "connect", "check", "push", "build"
PUBLISH, RESTART, HEALTH = "publish", "restart", "health"
FINISH, REVERT = "finish", "revert"
MIGRATE = "migrate"  # the migrate commands, once per deploy on one host, after prepare, before any switch
SWITCH = "switch"  # the publish call as transport bounds it (`transport.LONG_PHASES`) and names it in its messages
TAKEOVER = "takeover"  # a lock left by a run of this machine that is gone was taken over (deploylock.take)
PREPARE = (CONNECT, CHECK, PUSH, BUILD)


@dataclass(frozen=True)
class Event:
    """One phase of one host, as it ended."""

    host: str
    phase: str
    result: str
    start: float  # seconds since the epoch
    end: float
    reason: str | None = None
    output: str = ""  # what the host printed during the phase, for --verbose and failures

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "phase": self.phase,
            "result": self.result,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
        }


@dataclass
class PhaseRecord:
    """Handed to the body of a phase: what it printed, filled in as it goes."""

    output: str = ""


Listener = Callable[[Event], None]


@dataclass
class EventLog:
    """Every event of one run, in the order they ended; listeners are told of each as it arrives."""

    listeners: Sequence[Listener] = ()
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            for listener in self.listeners:
                listener(event)

    @contextmanager
    def phase(self, host: str, phase: str) -> Iterator[PhaseRecord]:
        """Record ``phase`` of ``host``: ok when the body returns, failed (with the error's text as the reason)
        when it raises, interrupted on Ctrl-C or SIGTERM. The exception goes on."""
        record, start = PhaseRecord(), time.time()
        try:
            yield record
        except Exception as error:
            output = getattr(error, "output", "") or record.output  # what the failed step printed, when it says
            self.add(Event(host, phase, FAILED, start, time.time(), reason_of(host, error), str(output)))
            raise
        except BaseException:
            self.add(Event(host, phase, INTERRUPTED, start, time.time(), "interrupted", record.output))
            raise
        self.add(Event(host, phase, OK, start, time.time(), None, record.output))

    def of(self, host: str) -> list[Event]:
        with self._lock:
            return [event for event in self.events if event.host == host]


def reason_of(host: str, error: object) -> str:
    """An error's text without the ``<host>: `` it starts with."""
    return str(error).removeprefix(f"{host}: ")
