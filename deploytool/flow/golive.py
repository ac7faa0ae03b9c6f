"""Going live: how a host's app server is restarted, how its health is checked, and how hosts are batched.

hosts.yml shapes (validated here, with messages that say what is wrong):

    restart: ["supervisorctl restart demo"]           # commands, run in order after the switch
    restart:                                          # or gunicorn's graceful re-exec (USR2)
      gunicorn_pidfile: /srv/demo/shared/run/gunicorn.pid
      start: ["{{ venv }}/bin/gunicorn --daemon --config {{ etc_root }}/gunicorn/demo.conf.py"]
    health_check: {url: "http://127.0.0.1:{{ port }}/", contains: "{{ release_id }}", deadline: 30}
    health_check: {command: "curl -fsS http://127.0.0.1:8000/"}
    batch_size: 2          # or "25%"; hosts switch, restart and pass their check batch by batch
    parallel: 16           # hosts worked on at once

Every string of ``restart`` and ``health_check`` is a Jinja template rendered per host and release on the laptop
(`deploytool.rendering.config.render_commands`), like ``validate`` and ``after_switch``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

RESTART_KEYS = ("gunicorn_pidfile", "start")
HEALTH_KEYS = ("url", "command", "contains", "timeout", "deadline", "interval")
HEALTH_DEFAULTS = {"timeout": 5, "deadline": 60, "interval": 1}
_PERCENT = re.compile(r"([1-9][0-9]?|100)%")


@dataclass(frozen=True)
class Restart:
    """Commands run after the switch, or gunicorn's graceful re-exec of the master in ``gunicorn_pidfile``
    (``start`` runs when no master runs there: a first deploy, or after a crash)."""

    commands: tuple[str, ...] = ()
    gunicorn_pidfile: str | None = None
    start: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.commands or self.gunicorn_pidfile)


@dataclass(frozen=True)
class HealthCheck:
    """An HTTP URL on the host that must answer 2xx (and contain ``contains``) within ``timeout`` seconds, or a
    command that must exit 0; tried every ``interval`` seconds until ``deadline`` seconds have passed."""

    url: str | None = None
    command: str | None = None
    contains: str | None = None
    timeout: float = 5
    deadline: float = 60
    interval: float = 1


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 3600


def _mapping_problem(value: Any, keys: Sequence[str], expected: str) -> str | None:
    """A mapping holding only ``keys``, or what is wrong with it."""
    if not isinstance(value, dict):
        return f"expected {expected}, got {value!r:.80}"
    unknown = [key for key in value if key not in keys]
    if unknown:
        return f"unknown key {unknown[0]!r} (allowed: {', '.join(keys)})"
    return None


def restart_problem(value: Any) -> str | None:
    """What is wrong with a ``restart`` value, or None."""
    if _str_list(value):
        return None
    problem = _mapping_problem(value, RESTART_KEYS, "a list of commands, or a mapping with gunicorn_pidfile")
    if problem is not None:
        return problem
    pidfile = value.get("gunicorn_pidfile")
    if not isinstance(pidfile, str) or not pidfile.startswith(("/", "{{")):
        return f"gunicorn_pidfile: expected the absolute path of gunicorn's pid file, got {pidfile!r:.80}"
    if "start" in value and not _str_list(value["start"]):
        return f"start: expected a list of commands (run when no master runs), got {value['start']!r:.80}"
    return None


def parse_restart(value: Any) -> Restart:
    if isinstance(value, list):
        return Restart(commands=tuple(value))
    return Restart(gunicorn_pidfile=value["gunicorn_pidfile"], start=tuple(value.get("start", [])))


def health_problem(value: Any) -> str | None:
    """What is wrong with a ``health_check`` value, or None (``None`` itself: no check)."""
    if value is None:
        return None
    problem = _mapping_problem(value, HEALTH_KEYS, "a mapping with url or command")
    if problem is not None:
        return problem
    if ("url" in value) == ("command" in value):
        return "expected exactly one of url (must answer 2xx) or command (must exit 0)"
    for key in ("url", "command", "contains"):
        if key in value and not (isinstance(value[key], str) and value[key]):
            return f"{key}: expected text, got {value[key]!r:.80}"
    if "url" in value and not value["url"].startswith(("http://", "https://", "{{")):
        return f"url: expected an http(s) URL on the host, like http://127.0.0.1:8000/, got {value['url']!r:.80}"
    if "contains" in value and "url" not in value:
        return "contains: only a url check reads an answer; a command check passes when it exits 0"
    for key in ("timeout", "deadline", "interval"):
        if key in value and not _seconds(value[key]):
            return f"{key}: expected a number of seconds (at most 3600), got {value[key]!r:.80}"
    return None


def parse_health(value: Any) -> HealthCheck | None:
    if value is None:
        return None
    return HealthCheck(**{**HEALTH_DEFAULTS, **value})


def batch_size_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        return None
    return f'expected a number of hosts (>= 1) or a percentage like "25%", got {value!r:.80}'


def batch_count(size: int | str | None, hosts: int) -> int:
    """How many hosts one batch holds: all of them (None), a number, or a percentage rounded up (at least 1)."""
    if size is None:
        return max(hosts, 1)
    if isinstance(size, str):
        return max(1, math.ceil(hosts * int(size.rstrip("%")) / 100))
    return size


def batches(items: Sequence[T], size: int | str | None) -> list[list[T]]:
    """``items`` in order, cut into batches of ``size`` (see `batch_count`)."""
    count = batch_count(size, len(items))
    return [list(items[start : start + count]) for start in range(0, len(items), count)]
