"""Host-side module ``finish``: record a run's outcome in the journal, prune, remove, and release the lock.

Used at the end of every deploy and rollback on a host (and by ``abort``, to drop a half-built release): append
the journal line (a line left unfinished by a crash is ended first, so it damages only itself), rename pruned
releases into ``trash/`` (instant), remove what ``remove`` names (a half-built release), drop the step record,
release the lock only if it is still this run's, and delete ``trash/`` in the background, detached, so the SSH
session ends at once. Pruning and the background deletion are best effort; a journal that cannot be written is
an error, and the lock is then kept (``unlock: true``) so nobody builds on a journal that lies, unless the caller
says ``unlock: "always"`` (an abort: nothing went live, a missing failure line misleads nobody).

Arguments (one JSON line on stdin): ``journal``, ``entries`` (journal lines, as text), ``prune`` (pairs of
release path and its trash path), ``remove`` (paths), ``record``, ``lock``, ``lock_owner``, ``run``, ``unlock``,
``trash``, ``log`` (the deploy log to note the outcome in, or null: `_common.RunLog`), ``logs`` (``dir`` and
``keep_from``: the deploy logs of releases older than that id are deleted, or null). Answer: ``ok``, ``error``,
``journaled``, ``pruned``, ``unlocked``, ``notes``, and ``ours: false`` when the lock does not carry this run's
token (nothing was done).
Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from typing import Any

from . import _common


def append_line(path: str, line: str) -> None:
    """Append ``line`` to ``path`` and fsync; end an unfinished last line first. The journal is made 0600 (an
    existing one of the deploy user's is narrowed to it), whatever the umask."""
    with _common.private_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(line.rstrip("\n").encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def empty_trash_in_background(trash: str) -> None:
    """Delete everything in ``trash`` (including what an earlier, interrupted deletion left), detached. A
    ``trash`` that is a symlink is never followed (its target is not ours to empty)."""
    if _common.not_a_real_directory(trash):
        return
    try:
        entries = [os.path.join(trash, name) for name in os.listdir(trash)]
    except OSError:
        return
    if entries:
        with open(os.devnull, "r+b") as null:
            subprocess.Popen(
                ["rm", "-rf", "--", *entries], stdin=null, stdout=null, stderr=null, start_new_session=True
            )


RELEASE_LOG = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}\.jsonl")


def prune_logs(logs: Any) -> None:
    """Delete the deploy logs of releases older than ``keep_from`` (ids sort by time): the logs of kept
    releases, and of failed runs since the oldest of them, stay."""
    if not isinstance(logs, dict) or not logs.get("keep_from"):
        return
    directory, keep_from = str(logs["dir"]), str(logs["keep_from"]) + ".jsonl"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if RELEASE_LOG.fullmatch(name) and name < keep_from:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def log_outcome(log: _common.RunLog, entries: list[str]) -> None:
    """Note each journal line of this run in its deploy log (the outcome, and a failure's reason)."""
    for text in entries:
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if isinstance(entry, dict):
            said = "{} {}: {}".format(entry.get("event"), entry.get("status"), entry.get("release"))
            log.write("finish", "journal: " + said, entry.get("status") == "ok", 0.0, str(entry.get("reason") or ""))


def main(args: dict[str, Any]) -> dict[str, Any]:
    notes: list[str] = []
    answer: dict[str, Any] = {"ok": True, "error": None, "journaled": False, "pruned": [], "unlocked": False}
    ours = _common.lock_is_ours(args["lock_owner"], args["run"])
    if not ours:
        answer.update(ok=False, ours=False, error="the lock is not this run's any more (cleared with fab unlock?)")
        answer["notes"] = notes
        return answer
    try:
        for entry in args.get("entries", []):
            append_line(args["journal"], entry)
        answer["journaled"] = bool(args.get("entries"))
        log_outcome(_common.RunLog(args.get("log")), args.get("entries", []))
    except OSError as error:
        answer.update(ok=False, error="cannot write {}: {}".format(args["journal"], error.strerror or error))
    for path in args.get("remove", []):
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            notes.append(f"could not remove {path}")
    prune = args.get("prune", [])
    if prune and _common.not_a_real_directory(args["trash"]):
        trash = args["trash"]
        notes.append(f"{trash} is not a directory (a symlink?): not followed, nothing pruned; remove it")
        prune = []
    for source, target in prune:
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(source, target)
            answer["pruned"].append(os.path.basename(source))
        except OSError as error:
            notes.append(f"could not prune {source}: {error.strerror or error}")
    with contextlib.suppress(OSError):
        os.unlink(args["record"])
    if args.get("unlock") == "always" or (args.get("unlock") and answer["ok"]):
        shutil.rmtree(args["lock"], ignore_errors=True)
        answer["unlocked"] = not os.path.lexists(args["lock"])
    if answer["pruned"] or args.get("prune"):
        empty_trash_in_background(args["trash"])
        prune_logs(args.get("logs"))
    answer["notes"] = notes
    return answer


if __name__ == "__main__":
    _common.serve(main, detached=True)
