"""Host-side module ``switch_wait``: wait for a ``publish`` whose connection dropped to end, and say how it ended.

A run that loses its connection to a host while ``publish`` runs there reconnects and runs this module: the
publish step goes on to its end whatever happens to the connection (it is detached), and writes where it stands
to the record inside the lock, with its whole answer once it is done. This waits (at most ``wait`` seconds) until
the record says so, or until the publish process is gone without ending (killed), or the lock is not this run's.

Arguments (one JSON line on stdin): ``root``, ``run`` (this run's token), ``wait``, ``interval``.
Answer: ``ok``, ``ours`` (the lock still carries the token), ``done`` (the publish ended and ``answer`` is what it
answered), ``running`` (its process still runs: the wait ran out), ``state`` (the record's), ``current_link``.
Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from . import _common
from ._common import LOCK, OWNER, RECORD_LIMIT, SWITCH_RECORD


def read_record(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(RECORD_LIMIT).decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive(pid: object) -> bool:
    """Whether process ``pid`` still runs (a record without a pid: assumed to, until the wait ends)."""
    return _common.process_runs(pid) is not False


def main(args: dict[str, Any]) -> dict[str, Any]:
    root, run = str(args["root"]), str(args["run"])
    lock = os.path.join(root, LOCK)
    until = time.monotonic() + float(args.get("wait") or 0)
    interval = float(args.get("interval") or 0.2)
    while True:
        answer: dict[str, Any] = {"ok": True, "ours": _common.lock_is_ours(os.path.join(lock, OWNER), run)}
        record = read_record(os.path.join(lock, SWITCH_RECORD))
        if record is not None and record.get("run") != run:
            record = None
        answer["state"] = record.get("state") if record else None
        answer["current_link"] = _common.current_link(root)
        if not answer["ours"] or record is None:
            return dict(answer, done=False, running=False)
        if record.get("done") is True:
            return dict(answer, done=True, running=False, answer=record.get("answer"))
        running = alive(record.get("pid"))
        if not running or time.monotonic() >= until:
            return dict(answer, done=False, running=running)
        time.sleep(interval)


if __name__ == "__main__":
    _common.serve(main)
