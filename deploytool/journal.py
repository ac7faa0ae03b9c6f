"""The per-host journal of deploys and rollbacks, and what it says about which releases are good.

Each line of ``journal.jsonl`` is one JSON object: ``event`` (deploy, rollback, unlock), ``release``, ``status``
(ok or failed), ``from`` (the release that was current), ``commit``, ``user``, ``time`` and, on failure,
``reason``. The journal, not directory listings or mtimes, decides rollback targets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One journal line."""

    event: str
    release: str
    status: str
    previous: str | None = None
    commit: str | None = None
    user: str | None = None
    time: str | None = None
    reason: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "event": self.event,
            "release": self.release,
            "status": self.status,
            "from": self.previous,
            "commit": self.commit,
            "user": self.user,
            "time": self.time,
        }
        if self.reason:
            data["reason"] = self.reason
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Entry | None:
        """Parse one line; a damaged line (a crash mid-write) is skipped rather than trusted."""
        try:
            data = json.loads(line)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("release"), str):
            return None
        return cls(
            event=str(data.get("event", "")),
            release=data["release"],
            status=str(data.get("status", "")),
            previous=data.get("from"),
            commit=data.get("commit"),
            user=data.get("user"),
            time=data.get("time"),
            reason=data.get("reason"),
        )


def parse(lines: Iterable[str]) -> list[Entry]:
    """Parse journal lines, skipping blank and damaged ones."""
    entries = (Entry.from_json(line) for line in lines if line.strip())
    return [entry for entry in entries if entry is not None]


def deployed_in_order(entries: Sequence[Entry]) -> list[str]:
    """Release ids that were deployed successfully, in the order they were first deployed."""
    ordered = (entry.release for entry in entries if entry.event == "deploy" and entry.status == "ok")
    return list(dict.fromkeys(ordered))


def rolled_back_from(entries: Sequence[Entry]) -> set[str]:
    """Releases a rollback stepped back over since they last went live: rolling back from P to an older T
    marks P and every release deployed between T and P (the operator skipped them on purpose). A plain
    rollback never chooses them; going to one again (``--to``, or a redeploy) clears the mark."""
    order = {release: position for position, release in enumerate(deployed_in_order(entries))}
    went_live: dict[str, int] = {}
    left: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.status != "ok":
            continue
        if entry.event in ("deploy", "rollback"):
            went_live[entry.release] = index
        if entry.event == "rollback" and entry.previous:
            start, end = order.get(entry.release, -1), order.get(entry.previous, len(order))
            if start < end:  # a step back; a step forward marks nothing
                for release, position in order.items():
                    if start < position <= end:
                        left[release] = index
                if entry.previous not in order:
                    left[entry.previous] = index
    return {release for release, index in left.items() if index > went_live.get(release, -1)}


def rollback_target(entries: Sequence[Entry], current: str | None, present: Iterable[str]) -> str | None:
    """The previous good release: deployed successfully before ``current``, not rolled back from, and still
    present on the host. None when there is none."""
    on_host = set(present)
    avoid = rolled_back_from(entries)
    order = deployed_in_order(entries)
    before = order[: order.index(current)] if current in order else order
    candidates = [rid for rid in before if rid in on_host and rid not in avoid and rid != current]
    return candidates[-1] if candidates else None


def good_releases(entries: Sequence[Entry]) -> set[str]:
    """Every release that was once deployed successfully."""
    return set(deployed_in_order(entries))


def releases_to_prune(entries: Sequence[Entry], present: Iterable[str], keep: int, current: str) -> list[str]:
    """Releases to delete: every one whose deploy failed, and all but the newest ``keep`` of the rest, never
    ``current`` nor the rollback target. Releases the journal does not know (a crashed run, a lost journal) are
    not trusted as rollback targets but are kept while they are among the newest."""
    present = sorted(present)
    good = good_releases(entries)
    failed = {e.release for e in entries if e.event == "deploy" and e.status == "failed"} - good
    protected = {current, rollback_target(entries, current, present)}
    kept = [rid for rid in present if rid not in failed][-keep:]
    return [rid for rid in present if rid not in protected and rid not in kept]
