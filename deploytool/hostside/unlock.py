"""Host-side module ``unlock``: say whose the deploy lock is and where its run left the host; clear a tokenless one.

Arguments (one JSON line on stdin): ``root``, ``only_if_owner`` (the exact ``owner.json`` text, stripped, a lock
must have to be touched; null: any lock). Answer: ``ok``, ``locked`` (there was such a lock), ``owner`` (its
``owner.json`` text), ``record`` (the text of ``switch.json``: how far its run's ``publish`` got), ``current_link``,
``removed``, ``publishing`` (the lock's run's publish step still runs: nothing was touched). A lock whose owner
carries a run token is left in place: the laptop ends that run with the ``finish`` module and the token
(journaling what the lost run completed); any other lock is removed here. Standard library only, Python 3.8
syntax.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import _common
from ._common import LOCK, SWITCH_RECORD


def run_token(owner: str) -> str | None:
    """The run token in an owner record's text, if it has one."""
    try:
        run = json.loads(owner).get("run")
    except (ValueError, AttributeError):
        return None
    return run if isinstance(run, str) and run else None


def _publishing(record: str) -> bool:
    """The record is of a publish step that has not ended and whose process still runs."""
    try:
        data = json.loads(record)
    except ValueError:
        return False
    if not isinstance(data, dict) or data.get("done") is True or data.get("state") not in ("publishing", "switched"):
        return False
    return _common.process_runs(data.get("pid")) is True


def main(args: dict[str, Any]) -> dict[str, Any]:
    root = str(args["root"])
    lock = os.path.join(root, LOCK)
    owner = _common.owner_text(lock).strip()
    wanted = args.get("only_if_owner")
    if not os.path.lexists(lock) or (wanted is not None and owner != wanted):
        return {"ok": True, "locked": False}
    try:
        with open(os.path.join(lock, SWITCH_RECORD), "rb") as handle:
            record = handle.read(_common.RECORD_LIMIT).decode("utf-8", "replace").strip()
    except OSError:
        record = ""
    answer = {"ok": True, "locked": True, "owner": owner, "record": record, "current_link": _common.current_link(root)}
    if _publishing(record):
        return dict(answer, publishing=True, removed=False)  # its publish still runs: nothing is touched
    removed = False
    if run_token(owner) is None:
        try:
            _common.remove(lock)
            removed = True
        except OSError as error:
            answer.update(ok=False, error=f"cannot remove the lock {lock}: {error.strerror or error}")
    answer["removed"] = removed
    return answer


if __name__ == "__main__":
    _common.serve(main)
