"""Host-side module ``gunicorn_reexec``: replace a running gunicorn master by a new one without dropping a request.

gunicorn's own binary upgrade (its arbiter, 19.6 and later): ``USR2`` makes the master fork and exec a new master
that inherits the listening sockets and writes its pid to ``<pidfile>.2``; both sets of workers then accept on the
same sockets. ``WINCH`` makes a daemonized old master stop its workers gracefully, and ``TERM`` stops the old master
gracefully (its workers finish their requests within ``graceful_timeout``; ``QUIT``/``INT`` would cut them off).
When its parent is gone the new master is "promoted": it renames ``<pidfile>.2`` to ``<pidfile>``.

Readiness: a new master counts as serving once a worker of it has loaded the app. The gunicorn config deploytool
ships has a ``post_worker_init`` hook (called by a worker after the app is imported, before it accepts) that
appends the worker's pid to ``<pidfile>.ready.<master pid>``; this module waits until a live worker of the new
master is listed there. A live process alone proves nothing: a worker that cannot import the app is alive for a
moment before it exits and takes its master with it.

Arguments (one JSON line on stdin): ``pidfile`` (the path gunicorn was started with, ``--pid``), ``timeout``
(seconds for the whole re-exec; once the new master is ready, the old one's graceful stop gets at least 5 s more).
Answer: ``ok``, ``running`` (a master was running, so it was re-exec'd), ``old_pid``,
``new_pid``, ``error``, ``output`` (what it did, one line per step). No master running (no pidfile, or a pid that is
not a live gunicorn of this user): ``ok`` true, ``running`` false, nothing changed. If the new master exits or is
not ready in time the old one keeps serving and the new one is stopped: ``ok`` false. Exit status 0 when ok, 2
when not. Standard library only, Python 3.8 syntax; Linux (/proc).
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import time
from typing import Any

from . import _common

POLL = 0.05  # seconds between looks at /proc and the pid files
STOP_GRACE = 5.0  # seconds a stopped process gets before SIGKILL, and the least any step past readiness gets


class Failed(Exception):
    """The re-exec failed; the message is the answer's ``error``."""


def read_pid(path: str) -> int | None:
    """The pid in a gunicorn pid file, or None when the file is missing or does not hold one pid."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(64)
    except OSError:
        return None
    text = data.decode("ascii", "replace").strip()
    if not text.isdigit() or len(text) > 10:
        return None
    pid = int(text)
    return pid if 1 < pid < 2**22 else None


def proc_stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` fields after the command name (state first, then ppid), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent to reap it."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parent(pid: int) -> int | None:
    fields = proc_stat(pid)
    return int(fields[1]) if fields else None


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent(int(entry)) == pid and alive(int(entry)):
            found.add(int(entry))
    return found


def owned(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def is_gunicorn(pid: int) -> bool:
    """A live process of this user whose command line runs gunicorn (a script, ``-m gunicorn``, or a proc title)."""
    if not alive(pid) or not owned(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return False
    return b"gunicorn" in cmdline


def environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return entry in handle.read().split(b"\0")
    except OSError:
        return False


def ready_file(pidfile: str, master: int) -> str:
    """Where the shipped ``post_worker_init`` hook lists the booted workers of ``master``."""
    return f"{pidfile}.ready.{master}"


def booted_workers(pidfile: str, master: int) -> set[int]:
    """Live workers of ``master`` that have reported loading the app (garbage lines are ignored)."""
    try:
        with open(ready_file(pidfile, master), "rb") as handle:
            lines = handle.read(65536).decode("ascii", "replace").split()
    except OSError:
        return set()
    listed = {int(line) for line in lines if line.isdigit() and len(line) <= 10}
    return listed & children(master)


class Reexec:
    def __init__(self, args: dict[str, Any]) -> None:
        pidfile, timeout = args.get("pidfile"), args.get("timeout")
        if not isinstance(pidfile, str) or not pidfile.startswith("/") or "\0" in pidfile:
            raise Failed(f"pidfile must be an absolute path, not {pidfile!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
            raise Failed(f"timeout must be a number of seconds, not {timeout!r}")
        self.pidfile = pidfile
        self.timeout = float(timeout)
        self.deadline = time.monotonic() + self.timeout
        self.lines: list[str] = []
        self.old_pid: int | None = None
        self.new_pid: int | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)

    def answer(self, ok: bool, running: bool, error: str | None = None) -> dict[str, Any]:
        return {
            "ok": ok,
            "running": running,
            "old_pid": self.old_pid,
            "new_pid": self.new_pid,
            "error": error,
            "output": "\n".join(self.lines),
        }

    def left(self, at_least: float = 0.0) -> float:
        """Seconds left of the whole run's ``timeout`` (every wait shares it), but ``at_least`` this many."""
        return max(self.deadline - time.monotonic(), at_least)

    def wait(self, condition: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True

    # -- the steps ------------------------------------------------------------------------------------------

    def running_master(self) -> int | None:
        pid = read_pid(self.pidfile)
        if pid is None:
            self.say(f"no gunicorn master: {self.pidfile} is missing or holds no pid")
            return None
        if not is_gunicorn(pid):
            self.say(f"no gunicorn master: pid {pid} from {self.pidfile} is not a running gunicorn of this user")
            return None
        pending = self.find_new_master(pid)
        if pending is not None:
            self.old_pid = pid
            raise Failed(
                f"gunicorn master {pid} already has a new master (pid {pending}) from a re-exec that did not "
                "finish; it ignores USR2 until one of them is stopped"
            )
        return pid

    def find_new_master(self, old: int) -> int | None:
        """The new master: a child of the old one exec'd with ``GUNICORN_PID=<old>``, or the pid in ``.2``."""
        marker = f"GUNICORN_PID={old}".encode()
        for pid in children(old):
            if environ_has(pid, marker):
                return pid
        named = read_pid(self.pidfile + ".2")
        if named is not None and parent(named) == old and is_gunicorn(named):
            return named
        return None

    def stop_new(self, new: int) -> None:
        """Stop a new master that is not ready (quick shutdown: it serves nothing we keep), SIGKILL if it lingers."""
        workers = children(new)
        self.signal(new, signal.SIGQUIT, "quick shutdown of the new master")
        if not self.wait(lambda: not alive(new), STOP_GRACE):
            for pid in [new, *workers]:
                self.signal(pid, signal.SIGKILL, "it did not stop")
            self.wait(lambda: not alive(new), STOP_GRACE)

    def signal(self, pid: int, signum: int, why: str) -> None:
        try:
            os.kill(pid, signum)
            self.say(f"sent {signal.Signals(signum).name} to pid {pid} ({why})")
        except OSError as error:
            self.say(f"could not send {signal.Signals(signum).name} to pid {pid}: {error}")

    def start_new(self, old: int) -> int:
        self.signal(old, signal.SIGUSR2, "re-exec: a new master from the release current points to")
        found: list[int] = []

        def new_master() -> bool:
            pid = self.find_new_master(old)
            if pid is not None:
                found.append(pid)
            return bool(found) or not alive(old)

        if not self.wait(new_master, self.left()) or not found:
            if not alive(old):
                raise Failed(f"the old gunicorn master (pid {old}) exited after USR2")
            raise Failed(f"no new gunicorn master appeared within {self.timeout:g} s of USR2")
        self.new_pid = found[0]
        self.say(f"new master pid {found[0]}")
        return found[0]

    def await_ready(self, new: int) -> None:
        if self.wait(lambda: bool(booted_workers(self.pidfile, new)) or not alive(new), self.left()) and alive(new):
            self.say(f"workers of the new master loaded the app: {sorted(booted_workers(self.pidfile, new))}")
            return
        if not alive(new):
            raise Failed(
                f"the new gunicorn master (pid {new}) exited before a worker loaded the app (an import error? see "
                "gunicorn's error log); the old master still serves"
            )
        self.stop_new(new)
        raise Failed(
            f"no worker of the new gunicorn master (pid {new}) reported loading the app within {self.timeout:g} s "
            "(is the post_worker_init hook of deploytool's gunicorn config in place?); the new master was "
            "stopped and the old one still serves"
        )

    def retire_old(self, old: int, new: int) -> None:
        workers = children(old) - {new}
        self.signal(old, signal.SIGWINCH, "graceful stop of the old workers")
        if self.wait(lambda: not (children(old) - {new}), self.left(STOP_GRACE)):
            self.say(f"old workers gone: {sorted(workers)}")
        else:
            self.say("old workers still running (gunicorn ignores WINCH unless daemonized); TERM stops them")
        self.signal(old, signal.SIGTERM, "graceful stop of the old master")
        if not self.wait(lambda: not alive(old), self.left(STOP_GRACE)):
            self.signal(old, signal.SIGKILL, "it did not exit in time")
            self.wait(lambda: not alive(old), STOP_GRACE)
        self.say(f"old master {old} exited")
        if self.wait(lambda: read_pid(self.pidfile) == new, self.left(STOP_GRACE)):
            self.say(f"new master {new} promoted: {self.pidfile} names it")
        else:
            self.say(f"warning: {self.pidfile} does not name the new master {new} yet")

    def clean_ready_files(self, keep: int) -> None:
        for path in glob.glob(glob.escape(self.pidfile) + ".ready.*"):
            suffix = path.rpartition(".")[2]
            if suffix.isdigit() and int(suffix) != keep and not alive(int(suffix)):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def main(self) -> dict[str, Any]:
        old = self.running_master()
        if old is None:
            return self.answer(True, False)
        self.old_pid = old
        self.say(f"old master pid {old}")
        new = self.start_new(old)
        try:
            self.await_ready(new)
        finally:
            self.clean_ready_files(new)
        self.retire_old(old, new)
        self.clean_ready_files(new)
        return self.answer(True, True)


def main(args: dict[str, Any]) -> dict[str, Any]:
    try:
        reexec = Reexec(args)
    except Failed as error:
        return {"ok": False, "running": False, "old_pid": None, "new_pid": None, "error": str(error), "output": ""}
    try:
        return reexec.main()
    except Failed as error:
        return reexec.answer(False, reexec.old_pid is not None, str(error))


if __name__ == "__main__":
    _common.serve(main, detached=True)
