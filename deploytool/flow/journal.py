"""The per-host journal of deploys and rollbacks, and what it says about which releases are good.

Each line of ``journal.jsonl`` is one JSON object: ``event`` (deploy, rollback, unlock), ``release``, ``status``
(ok or failed), ``from`` (the release that was current), ``commit``, ``user``, ``time`` and, on failure,
``reason``. The journal, not directory listings or mtimes, decides rollback targets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..reporting.terminal import mask_secrets
from .release import deployer, is_commit_id, is_release_id, utc_now

EVENTS = ("deploy", "rollback", "unlock")


def now() -> str:
    """The time as journal lines and lock owners record it (UTC, seconds)."""
    return utc_now().isoformat(timespec="seconds")


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

    @classmethod
    def ok(cls, event: str, release: str, previous: str | None, commit: str | None, reason: str | None = None) -> Entry:
        """This run's line for ``release``: it went live (a ``reason`` says what went wrong all the same)."""
        return cls(event, release, "ok", previous, commit, deployer(), now(), reason)

    @classmethod
    def failed(cls, event: str, release: str, previous: str | None, commit: str | None, reason: str) -> Entry:
        """This run's line for ``release``: it failed (never a rollback target), and why."""
        return cls(event, release, "failed", previous, commit, deployer(), now(), reason)

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
            data["reason"] = mask_secrets(self.reason)  # a failure's output may quote the app's env
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Entry | None:
        """One line as an entry; None for a damaged line or a bad field (never trusted)."""
        entries = parse([line])
        return entries[0] if entries else None

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Entry:
        """An entry from one line's JSON object, every field checked (it comes from a host: the laptop acts on
        it, and gives ``commit`` to git); raises ValueError naming the first bad field."""
        for key, valid, expected in _FIELDS:
            if not valid(data.get(key)):
                raise ValueError(f"{key} {shown(data.get(key))} is not {expected}")
        return cls(
            event=data["event"],
            release=data["release"],
            status=data["status"],
            previous=data.get("from"),
            commit=data.get("commit"),
            user=data.get("user"),
            time=data.get("time"),
            reason=data.get("reason"),
        )


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _text(value: object, limit: int = 200) -> bool:
    return isinstance(value, str) and len(value) <= limit and value.isprintable()


def _timestamp(value: object) -> bool:
    if not _text(value, 64):
        return False
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return True


_FIELDS: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("event", lambda value: value in EVENTS, "an event (" + ", ".join(EVENTS) + ")"),
    ("status", lambda value: value in ("ok", "failed"), "a status (ok, failed)"),
    ("release", is_release_id, "a release id"),
    ("from", _optional(is_release_id), "a release id"),
    ("commit", _optional(is_commit_id), "a commit id"),
    ("user", _optional(_text), "a user name"),
    ("time", _optional(_timestamp), "a time"),
    ("reason", _optional(lambda value: isinstance(value, str)), "a text"),
)


def shown(value: object) -> str:
    """A value read from a host, fit to print: quoted, control characters escaped, shortened."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class DamagedJournal(ValueError):
    """A journal line is valid JSON but not a valid entry (damaged by hand, or tampered with)."""


def parse(lines: Iterable[str], where: str | None = None) -> list[Entry]:
    """Parse journal lines. Blank lines and lines that are not a JSON object (a write torn by a crash) are
    skipped. A JSON object with a bad field raises `DamagedJournal` naming ``where`` (the file), the line and the
    field; without ``where`` it is skipped too (never trusted)."""
    entries = []
    for number, line in enumerate(lines, start=1):
        try:
            data = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        try:
            entries.append(Entry.from_data(data))
        except ValueError as error:
            if where is None:
                continue
            raise DamagedJournal(
                f"{where} line {number}: {error}; the journal is damaged or was tampered with "
                "(correct or remove that line)"
            ) from None
    return entries


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


def incomplete_releases(entries: Sequence[Entry], present: Iterable[str], current: str | None) -> list[str]:
    """Releases a killed run left half-made: on the host, not ``current``, and never live by the journal (no ok
    entry for them, never the ``from`` of an entry; so never the rollback target either). With no journal at all
    nothing is called incomplete: a lost journal must not make every release debris."""
    if not entries:
        return []
    live = {e.release for e in entries if e.status == "ok"} | {e.previous for e in entries if e.previous}
    return [rid for rid in sorted(present) if rid != current and rid not in live]
