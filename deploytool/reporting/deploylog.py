"""Deploy logs that stay: every step of every host, on the host with its release and on the laptop for the run.

On a host, the host-side modules append one JSON line per step as it ends (`hostside._common.RunLog`) to
``<root>/deploy-logs/<release>.jsonl`` (`Layout.deploy_log`): ``build`` (and every step added to it), ``publish``
(config, validate, switch, after-switch, restart, health: also a revert's and a rollback's) and ``finish`` (the
journal line, with a failure's reason). `spec` is what the laptop passes them; no extra round trip. The file lives
beside the releases, not in one, so the log of a failed deploy outlives its removed release; ``finish`` deletes
the logs of releases older than the oldest one kept.

On the laptop, `LaptopLog` (an `events.EventLog` listener) writes every phase of every host, with what the host
printed, as it ends, to ``$XDG_STATE_HOME/deploytool/<app>/<stage>/<run>-<action>.log`` (default
``~/.local/state``): outside the project, so it never shows as an uncommitted change.

``fab log`` reads a host's file back (host-side module ``deploylog``: the last `READ_LIMIT` bytes); every line is
validated here and shown through `terminal` (`HostLogLine`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..connection.hostrun import run_module
from ..flow.release import RELEASE_ID, deployer
from ..flow.target import Target
from .events import Event
from .terminal import for_terminal

READ_LIMIT = 1 << 20  # bytes of a host's log read by `fab log` (its end)
LINE_LIMIT = 2000  # lines shown per host
NAME = re.compile(r"[^A-Za-z0-9._-]")


def spec(target: Target, release_id: str, action: str, run: str) -> dict[str, str]:
    """What a host-side module needs to append to ``release_id``'s deploy log on ``target``."""
    return {"path": target.layout.deploy_log(release_id), "run": run, "action": action}


def state_home() -> Path:
    value = os.environ.get("XDG_STATE_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "state"


def laptop_path(app: str, stage: str, run: str, action: str) -> Path:
    """Where the laptop keeps the log of run ``run``."""
    return state_home() / "deploytool" / NAME.sub("_", app) / NAME.sub("_", stage) / f"{run}-{action}.log"


class LaptopLog:
    """An event listener writing each phase of each host, whole output included, to the run's log file. Best
    effort: a log that cannot be written (the path is then None) never changes a run."""

    def __init__(self, path: Path, header: str) -> None:
        self.path: Path | None = path
        self._lock = threading.Lock()
        self._write(header.rstrip("\n") + "\n")

    def _write(self, text: str) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8", errors="replace") as handle:
                handle.write(for_terminal(text))
        except OSError:
            self.path = None

    def end(self, summary: str, error: str | None) -> None:
        """The run's outcome: the summary table, and the error that ended it."""
        with self._lock:
            self._write("\n" + summary.rstrip("\n") + "\n" + (f"Error: {error}\n" if error else ""))

    def __call__(self, event: Event) -> None:
        when = time.strftime("%H:%M:%S", time.gmtime(event.end))
        text = f"{when}  {event.host}  {event.phase}  {event.result}  {event.seconds:.2f} s"
        text += f"  {event.reason}\n" if event.reason else "\n"
        text += "".join(f"    | {line}\n" for line in event.output.splitlines())
        with self._lock:
            self._write(text)


def header(action: str, stage: str, release: str | None, hosts: list[str], run: str) -> str:
    what = f"{action} of {release}" if release else action
    return f"# deploytool {what} to stage {stage} ({', '.join(hosts)}), run {run}, by {deployer()}"


@dataclass(frozen=True)
class HostLogLine:
    """One line of a host's deploy log, validated."""

    time: str
    run: str
    action: str
    phase: str
    step: str
    ok: bool
    seconds: float
    output: str


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def parse_line(text: str) -> HostLogLine | None:
    """A line from a host, or None when it is not a deploy log line (the host is not trusted)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        return None
    seconds = data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e7:
        return None
    limits = (("time", 40), ("run", 40), ("action", 20), ("phase", 20), ("step", 500), ("output", 1 << 17))
    fields = [_text(data.get(key), limit) for key, limit in limits]
    if any(field is None for field in fields):
        return None
    when, run, action, phase, step, output = (field or "" for field in fields)
    return HostLogLine(when, run, action, phase, step, data["ok"], float(seconds), output)


@dataclass
class HostLog:
    """What ``fab log`` read from one host."""

    release: str | None
    lines: list[HostLogLine]
    refused: int  # lines that were not deploy log lines
    truncated: bool
    missing: bool = False


def read_host_log(target: Target, release: str | None) -> HostLog:
    """The deploy log of ``release`` (None: the one written last) on ``target``: one call, bounded."""
    args = {"dir": target.layout.deploy_logs, "release": release, "limit": READ_LIMIT}
    answer = run_module(target.c, target.name, target.host.python, "deploylog", args, phase="log")
    found = answer.get("release")
    if found is not None and not (isinstance(found, str) and RELEASE_ID.fullmatch(found)):
        found = None
    text = answer.get("text") if isinstance(answer.get("text"), str) else ""
    raw = [line for line in str(text)[-READ_LIMIT:].split("\n") if line.strip()]
    truncated = answer.get("truncated") is True
    if truncated and raw:
        raw = raw[1:]  # the first line read from the middle of the file is a part of one
    parsed = [parse_line(line) for line in raw]
    lines = [line for line in parsed if line is not None]
    return HostLog(found, lines[-LINE_LIMIT:], len(parsed) - len(lines), truncated or len(lines) > LINE_LIMIT,
                   answer.get("missing") is True)  # fmt: skip


def format_host_log(target: Target, log: HostLog, verbose: bool = True) -> list[str]:
    """``fab log``'s lines for one host (sanitised by the task boundary's `terminal`)."""
    name, where = target.name, target.layout.deploy_logs
    if log.release is None:
        return [f"{name}: no deploy log in {where}"]
    path = f"{where}/{log.release}.jsonl"
    if log.missing:
        return [f"{name}: no deploy log for release {log.release} ({path} does not exist)"]
    lines = [f"{name}: release {log.release} ({path})" + (", its end only" if log.truncated else "")]
    for line in log.lines:
        mark = "ok" if line.ok else "FAILED"
        lines.append(f"  {line.time}  {line.action} {line.run}  {line.phase:<8} {mark:<6} {line.seconds:7.2f} s  "
                     f"{line.step}")  # fmt: skip
        if verbose:
            lines += [f"      | {text}" for text in line.output.splitlines() if text.strip()]
    if log.refused:
        lines.append(f"  ({log.refused} line(s) of {path} were not deploy log lines and are not shown)")
    return lines
