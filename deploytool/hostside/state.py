"""Host-side module ``state``: read what the laptop needs to know about a host, taking the deploy lock if asked.

Arguments (JSON): ``root`` (the deploy root), and ``lock`` (the owner record to take the lock with, its ``run``
token included) or none. Answer::

    {"ok": true, "current_link": "releases/<id>" or "", "releases": [names of the directories under releases/],
     "journal": [the lines of journal.jsonl], "python": "3.11.2"}

or ``{"ok": false, "reason": "locked" | "no_space" | "unreadable" | "lock", "error": ..., "owner": ...}`` (exit 2).
Nothing here is trusted by the laptop: it validates every name and journal line it uses.

Taking the lock is all-or-nothing: the lock directory is built with its ``owner.json`` under a temporary name and
renamed into place. rename(2) fails onto a non-empty directory, and every lock made here holds owner.json; an
existing ``deploy.lock`` of any kind is looked for first, so an empty one (a hand-made lock) is not replaced
either. A lock that cannot be written (a full disk) leaves nothing behind. Reading the state is done under the
lock; a journal or releases directory that cannot be read releases the lock again and is an error.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import tempfile
from typing import Any

from . import _common
from ._common import JOURNAL, LOCK, OWNER


class Refused(Exception):
    def __init__(self, reason: str, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.answer: dict[str, Any] = {"ok": False, "reason": reason, "error": error}
        self.answer.update(extra)


def take_lock(root: str, owner: dict[str, Any]) -> None:
    """Make ``<root>/deploy.lock`` holding ``owner``, or raise `Refused` (locked, or the disk is full)."""
    lock = os.path.join(root, LOCK)
    if os.path.lexists(lock):
        raise Refused("locked", "locked", owner=_common.owner_text(lock))
    temporary = None
    try:
        temporary = tempfile.mkdtemp(prefix=".deploy.lock.", dir=root)
        os.chmod(temporary, 0o755)
        with open(os.path.join(temporary, OWNER), "w") as handle:
            handle.write(json.dumps(owner, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, lock)
    except OSError as error:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR) and os.path.lexists(lock):
            raise Refused("locked", "locked", owner=_common.owner_text(lock)) from None
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Refused(
                "no_space", f"no space left on {root}: cannot take the lock; free some space on the host"
            ) from None
        raise Refused("lock", f"cannot take the lock {lock}: {error.strerror}") from None


def remove_lock(root: str) -> None:
    """Remove the lock (just taken by this call: nothing happened under it)."""
    lock = os.path.join(root, LOCK)
    try:
        _common.remove(lock)
    except OSError as error:
        raise Refused("lock", f"cannot remove the lock {lock}: {error.strerror}") from None


def _unreadable(path: str, problem: str, verb: str = "read") -> Refused:
    return Refused(
        "unreadable", f"cannot {verb} {path}: {problem}; the deploy user must be able to read and append to it"
    )


def read_journal(root: str, writable: bool) -> list[str]:
    """The journal's lines ([] when there is none yet); `Refused` when it exists but cannot be read (or, when
    ``writable``, appended to: a deploy must not switch a host it cannot record)."""
    path = os.path.join(root, JOURNAL)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise _unreadable(path, error.strerror or str(error)) from None
    if writable and not os.access(path, os.W_OK):
        raise _unreadable(path, "permission denied", "append to")
    return data.decode("utf-8", "replace").split("\n")


def list_releases(root: str) -> list[str]:
    """Names of the directories (not symlinks, not files) under ``<root>/releases`` (`_common.list_releases`)."""
    try:
        return _common.list_releases(root)
    except OSError as error:
        raise _unreadable(os.path.join(root, _common.RELEASES), error.strerror or str(error)) from None


def read(root: str, locked: bool) -> dict[str, Any]:
    """The host's state; `Refused` when it cannot be read (or, when ``locked``, the journal appended to)."""
    return {
        "ok": True,
        "current_link": _common.current_link(root),
        "releases": list_releases(root),
        "journal": read_journal(root, writable=locked),
        "python": platform.python_version(),
        "deploy_head": deploy_head(root),
    }


def deploy_head(root: str) -> str | None:
    """The commit ``refs/heads/deploy`` of ``repo.git`` names (loose or packed), or None: the laptop sends only
    what is not reachable from it. Read as a file, no git process; the laptop validates it."""
    repo = os.path.join(root, _common.REPO)
    try:
        with open(os.path.join(repo, "refs", "heads", "deploy"), "rb") as handle:
            return handle.read(100).decode("ascii", "replace").strip() or None
    except OSError:
        pass
    try:
        with open(os.path.join(repo, "packed-refs"), "rb") as handle:
            for line in handle.read(1 << 20).decode("ascii", "replace").splitlines():
                words = line.split()
                if len(words) == 2 and words[1] == "refs/heads/deploy":
                    return words[0]
    except OSError:
        pass
    return None


def main(args: dict[str, Any]) -> dict[str, Any]:
    root = str(args["root"])
    owner = args.get("lock")
    try:
        if owner is not None:
            take_lock(root, owner)
        try:
            return read(root, locked=owner is not None)
        except Refused:
            if owner is not None:
                remove_lock(root)  # just taken by this call: nothing else happened under it
            raise
    except Refused as refused:
        return refused.answer


if __name__ == "__main__":
    _common.serve(main)
