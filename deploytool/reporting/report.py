"""What the user sees of a run, made from its events: progress lines, the summary table, and ``--json``.

Progress: one whole line per host and phase as it ends (``web1  build    ok      1.32 s``), written under a lock
so parallel hosts never interleave halves; a failed phase's last lines of output always follow it, and all
output with ``--verbose``. The summary table and the JSON document describe each host's outcome.
The JSON document's keys are documented in the README ("--json") and kept stable.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .events import FAILED, INTERRUPTED, REVERT, Event, EventLog
from .live import Live
from .terminal import clean_document, for_terminal

FAILURE_LINES = 8  # lines of a failed phase's output shown without --verbose
JSON_VERSION = 1


class Progress:
    """An event listener printing one line per phase as it ends."""

    def __init__(
        self, hosts: Sequence[str], out: TextIO | None = None, verbose: bool = False, live: Live | None = None
    ) -> None:
        self.width = max((len(name) for name in hosts), default=4)
        self.out = out
        self.verbose = verbose
        self.live = live  # on a terminal: each host's current step, redrawn below these lines
        self._lock = threading.Lock()

    def line(self, event: Event) -> str:
        text = f"{event.host:<{self.width}}  {event.phase:<8}  {event.result:<11}  {event.seconds:6.2f} s"
        if event.reason:
            text += f"  {event.reason}"
        output = [line for line in event.output.splitlines() if line.strip()]
        if output and not self.verbose and event.result == FAILED:
            output = output[-FAILURE_LINES:]
        elif not self.verbose:
            output = []
        return "\n".join([text.rstrip(), *(f"{'':<{self.width}}  | {line}" for line in output)])

    def __call__(self, event: Event) -> None:
        text = for_terminal(self.line(event))  # also when written to a stream of its own

        def write() -> None:
            out = self.out or sys.stdout
            out.write(text + "\n")
            out.flush()

        with self._lock:
            if self.live is not None:
                self.live.around(write, event.host)
            else:
                write()


@dataclass
class HostOutcome:
    """Where one host ended: ``result`` is ok, failed, unchanged or interrupted; ``current`` the release its
    ``current`` names after the run (None: no release); ``reason`` why it is not ok."""

    host: str
    result: str
    current: str | None
    reason: str | None = None


@dataclass
class RunReport:
    """One deploy or rollback across a stage: what it tried, each host's outcome, and every event."""

    command: str
    stage: str
    release: str | None
    commit: str | None
    log: EventLog
    outcomes: list[HostOutcome] = field(default_factory=list)
    error: str | None = None
    run: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))  # the run's id
    log_path: str | None = None  # the laptop's log of this run (`deploylog.LaptopLog`)
    notes: list[str] = field(default_factory=list)  # what the user must know of a run that went through

    @property
    def ok(self) -> bool:
        return self.error is None and all(outcome.result in ("ok", "unchanged") for outcome in self.outcomes)

    def seconds(self, host: str) -> float:
        return sum(event.seconds for event in self.log.of(host))

    def settle(self, hosts: Sequence[str], current: Mapping[str, str | None], ok: set[str]) -> None:
        """Each host's outcome from its events: failed with its first failure's reason, interrupted, ok (``ok``
        names the hosts the flow finished), reverted or not switched; ``current`` the release each names now."""
        self.outcomes = []
        for host in hosts:
            events = self.log.of(host)
            failed = next((event for event in events if event.result == FAILED), None)
            interrupted = next((event for event in events if event.result == INTERRUPTED), None)
            if failed is not None:
                result, reason = "failed", failed.reason
            elif interrupted is not None:
                result, reason = "interrupted", f"interrupted during {interrupted.phase}"
            elif host in ok:
                result, reason = "ok", None
            elif any(event.phase == REVERT for event in events):
                result, reason = "reverted", "switched back: " + (self.error or "the run failed").split("\n")[0]
            else:
                result, reason = "unchanged", "not switched: " + (self.error or "the run stopped").split("\n")[0]
            self.outcomes.append(HostOutcome(host, result, current.get(host), reason))

    def summary(self) -> str:
        """A table: host, release (current after the run), result, time, reason."""
        rows = [("host", "release", "result", "time", "reason")]
        for outcome in self.outcomes:
            rows.append(
                (
                    outcome.host,
                    outcome.current or "-",
                    outcome.result,
                    f"{self.seconds(outcome.host):.2f} s",
                    outcome.reason or "",
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        lines = []
        for row in rows:
            cells = "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
            lines.append((cells + ("  " + row[4] if row[4] else "")).rstrip())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "command": self.command,
            "stage": self.stage,
            "release": self.release,
            "commit": self.commit,
            "ok": self.ok,
            "error": self.error,
            "hosts": [
                {
                    "host": outcome.host,
                    "result": outcome.result,
                    "current": outcome.current,
                    "seconds": round(self.seconds(outcome.host), 3),
                    "reason": outcome.reason,
                }
                for outcome in self.outcomes
            ],
            "events": [event.to_json() for event in self.log.events],
            "run": self.run,
            "log": self.log_path,
            "notes": self.notes,
        }


def dumps(document: dict[str, Any]) -> str:
    """A ``--json`` document as printed: every string's control characters escaped (`terminal`), as in the
    table, so a field read with ``jq -r`` is as harmless as the table."""
    return json.dumps(clean_document(document), indent=2, sort_keys=True)
