"""The deploy lock of a host: who holds it, taking it (with the takeover of a lock a dead run left), clearing it.

The lock is ``<root>/deploy.lock/owner.json``, taken by the host-side ``check`` module (the ``state`` module's
`take_lock`: all or nothing) with this run's token in it, and released by ``finish`` only while it still carries
that token. Here: the owner record (`owner`), what a held lock says (`describe`), `take` (``check``, taking
over a lock whose holder was a process of this machine that is gone), and `unlock` (``fab unlock``, and the
takeover): it says whose the lock was and where that run's ``publish`` left the host (`LostRun`), journals a
switch that completed but was never recorded, and releases the lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from ..connection.hostrun import ModuleFailed, run_module
from ..errors import LockedError, RemoteError
from ..inventory import HostConfig
from ..layout import Layout
from ..reporting.events import OK, Event, EventLog
from . import journal, phases
from .release import RELEASE_ID, deployer
from .target import HostState, Target, printable, release_of_link

UNLOCK = "unlock"


def owner(action: str, release: str) -> dict[str, str | int]:
    """Who holds a lock: what for, who, since when, and which process on which machine (so that a later run on
    the same machine can tell that the holder is gone)."""
    return {
        "action": action,
        "release": release,
        "user": deployer(),
        "since": journal.now(),
        "machine": socket.gethostname(),
        "pid": os.getpid(),
    }


def holder_is_gone(owner_text: str) -> bool:
    """The lock was taken by a process of this machine that no longer runs (a killed ``fab``)."""
    try:
        owner = json.loads(owner_text)
    except ValueError:
        return False
    if not isinstance(owner, dict) or owner.get("machine") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # OverflowError: a pid no process can have (the host wrote 2**64)
        return False
    return False


def describe(owner_json: str, layout: Layout, host: HostConfig) -> str:
    """What a held lock says, and how to clear it."""
    try:
        owner = json.loads(owner_json)
        what = " ".join(printable(owner.get(key) or "") for key in ("action", "release")).strip() or "?"
        held = f"{what} by {printable(owner.get('user', '?'))} since {printable(owner.get('since', '?'))}"
    except (ValueError, AttributeError):
        held = f"an unknown holder ({layout.lock_owner} is unreadable)"
    return f"locked: {held}; if that run crashed, clear it with: fab unlock --stage {host.stage} --hosts {host.name}"


def check(target: Target, owner: dict[str, str | int]) -> HostState:
    """`phases.check`, with a lock another run holds raised as `LockedError` naming its holder."""
    try:
        return phases.check(target, owner)
    except ModuleFailed as refused:
        if refused.result.get("reason") != "locked":
            raise
        owner_text = str(refused.result.get("owner") or "").strip()  # as `unlock` compares it
        raise LockedError(target.name, describe(owner_text, target.layout, target.host), owner_text) from None


def take(target: Target, owner: dict[str, str | int], log: EventLog) -> HostState:
    """Take the host's lock (`check`); a lock left by a run of this machine that is gone is taken over, after
    recording what that run's publish step completed, and the progress says so."""
    try:
        return check(target, owner)
    except LockedError as locked:
        if not holder_is_gone(locked.owner):
            raise
        lost = unlock(target, only_if_owner=locked.owner)
        if lost is None:  # someone else cleared or took it meanwhile
            raise
        state = check(target, owner)
        at = time.time()
        note = f"took over the lock of {lost.holder} (that process is gone){lost.standing}"
        log.add(Event(target.name, phases.TAKEOVER, OK, at, at, note))
        return state


@dataclass(frozen=True)
class LostRun:
    """What a lock left behind says: its holder, and how far that run's publish step got on the host."""

    holder: str  # "deploy X by user@laptop since T"
    standing: str  # "; that run's switch had ended ... the host is on X", or ""
    finished_entry: journal.Entry | None  # the journal line of a switch that completed but was never recorded


def unlock(target: Target, only_if_owner: str | None = None) -> LostRun | None:
    """Remove the host's lock and say whose it was and where its run left the host (host-side module ``unlock``,
    then ``finish`` with the lost run's token: a switch that completed but was not recorded is journaled). With
    ``only_if_owner``, only a lock whose ``owner.json`` is exactly that is removed. None if there was no (such)
    lock."""
    layout = target.layout
    args = {"root": layout.root, "only_if_owner": only_if_owner}
    found = run_module(target.c, target.name, target.host.python, "unlock", args, phase=UNLOCK)
    if found.get("locked") is not True:
        return None
    owner_text, record, link = (str(found.get(key) or "") for key in ("owner", "record", "current_link"))
    holder = describe(owner_text, layout, target.host).split(";")[0].removeprefix("locked: ")
    lost = lost_run(holder, record, release_of_link(link, layout))
    if found.get("removed") is True:
        return lost
    try:
        run = json.loads(owner_text).get("run")
    except (ValueError, AttributeError):
        run = None
    if not isinstance(run, str) or not run:
        raise RemoteError(target.name, f"{layout.lock} was not removed")
    # The lost run's own token lets `finish` journal what it completed and release its lock.
    lost_target = Target(target.host, target.c, target.password, target.state, True, run)
    phases.finish(lost_target, *([lost.finished_entry] if lost.finished_entry else []), unlock="always")
    return lost


def lost_run(holder: str, record: str, current: str | None) -> LostRun:
    """What a lost run's publish record says about the host (validated: it comes from the host)."""
    try:
        data = json.loads(record)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return LostRun(holder, "", None)
    release, previous = data.get("release"), data.get("previous")
    names = [name for name in (release, previous) if name is not None]
    if not all(isinstance(name, str) and RELEASE_ID.fullmatch(name) for name in names):
        return LostRun(holder, "", None)
    now = current or "no release"
    if data["state"] == "publishing":
        moving = f"from {previous or 'no release'} to {release or 'no release'}"
        return LostRun(holder, f"; that run was switching it {moving}: it is on {now}", None)
    entry = journal.Entry.from_json(data["entry"]) if isinstance(data.get("entry"), str) else None
    if data["state"] != "published" or entry is None or entry.release != release or current != release:
        entry = None
    standing = f"; that run's switch had ended ({data['state']}) and not been recorded: the host is on {now}"
    return LostRun(holder, standing + (" (recorded in the journal now)" if entry else ""), entry)
