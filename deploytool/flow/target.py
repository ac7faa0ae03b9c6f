"""One host taking part in a run (`Target`) and what it told us (`HostState`), validated.

Every step of a run takes the `Target` (its settings, layout, open connection, sudo password, lock token and
last known state). What a host answers about itself is checked here before anything acts on it: only release
ids are releases, ``current`` must name one, every journal line's fields are checked.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..connection.hostrun import run_module
from ..connection.transport import Runner
from ..errors import DeployError, RemoteError
from ..inventory import HostConfig
from ..layout import Layout
from . import journal
from .release import is_commit_id, is_release_id


@dataclass
class HostState:
    """What a host told us at check time."""

    current: str | None
    releases: list[str]
    entries: list[journal.Entry]
    python_version: str | None = None
    current_link: str = ""  # what current points at, as the host has it
    deploy_head: str | None = None  # the commit the host's repo.git has as refs/heads/deploy (validated)


@dataclass
class Target:
    """One host taking part in a run: its settings, layout, open connection and last known state."""

    host: HostConfig
    c: Runner
    password: str | None = None
    state: HostState = field(default_factory=lambda: HostState(None, [], []))
    locked: bool = False  # this run holds the host's lock: only then may it clean up there
    run: str = field(default_factory=lambda: secrets.token_hex(8))  # marks the lock as this run's

    @property
    def layout(self) -> Layout:
        return Layout(self.host.root)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def sudo_password(self) -> str | None:
        """The password a host-side module may give sudo when it asks (None without sudo or without one)."""
        return self.password if self.host.sudo else None


PYTHON_VERSION = re.compile(r"\d+\.\d+\.\d+[A-Za-z0-9+]{0,16}")


def printable(value: object, limit: int = 100) -> str:
    """A value from a host for a message: non-printable characters replaced, shortened."""
    return "".join(char if char.isprintable() else "?" for char in str(value))[:limit]


def release_of_link(link: str, layout: Layout) -> str | None:
    """The release id ``current``'s link names (``releases/X``, ``./releases/X`` or ``<root>/releases/X``)."""
    for prefix in ("releases/", "./releases/", layout.releases + "/"):
        name = link.removeprefix(prefix).rstrip("/")
        if link.startswith(prefix) and is_release_id(name):
            return name
    return None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def host_state(target: Target, answer: dict[str, Any]) -> HostState:
    """The state a host answered (``state`` or ``check`` module), validated: only release ids are releases,
    ``current`` must name one, every journal line's fields are checked (a damaged or forged line is an error
    naming the file and line)."""
    link, names, lines, python = (answer.get(key) for key in ("current_link", "releases", "journal", "python"))
    if not (isinstance(link, str) and _strings(names) and _strings(lines) and isinstance(python, str)):
        raise RemoteError(target.name, "the host's state could not be read (its answer is malformed)")
    if not PYTHON_VERSION.fullmatch(python):
        raise RemoteError(target.name, f"{target.host.python} reports Python {journal.shown(python)}")
    releases = sorted(name for name in names if is_release_id(name))  # type: ignore[union-attr]
    try:
        entries = journal.parse(lines, target.layout.journal)  # type: ignore[arg-type]
    except journal.DamagedJournal as error:
        raise RemoteError(target.name, str(error)) from None
    head = answer.get("deploy_head")
    deploy_head = head if isinstance(head, str) and is_commit_id(head) else None  # anything else: send it all
    return HostState(release_of_link(link, target.layout), releases, entries, python, link, deploy_head)


def read_state(target: Target) -> HostState:
    """Read current, releases and journal without taking the lock (for listings and dry runs)."""
    args = {"root": target.layout.root}
    answer = run_module(target.c, target.name, target.host.python, "state", args, phase="reading the state")
    target.state = host_state(target, answer)
    return target.state


def incomplete(target: Target) -> tuple[list[str], str]:
    """The releases interrupted runs left on the host (the next deploy removes them), or why they cannot be told."""
    try:
        state = read_state(target)
    except DeployError as error:
        return [], str(error).removeprefix(f"{target.name}: ")
    return journal.incomplete_releases(state.entries, state.releases, state.current), ""
