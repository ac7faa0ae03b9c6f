"""``confirm: true``: a deploy or rollback of such a stage asks on the terminal first, before any host is touched.

What it shows: the release id, the commit and its subject, the hosts, the uncommitted files the deploy does not
ship, and per host what it runs now and the commit range that goes out (or, for a rollback, comes back out):
``git log --oneline`` of it, at most `SHOWN_COMMITS` lines. The hosts' current releases are read (`HostNow`:
the ``state`` module, no lock) only once a terminal is there to ask on; declining touches nothing. ``--yes``
answers for CI; with no terminal and no ``--yes`` the run stops with an error before any host is connected.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import DeployError
from ..reporting.terminal import for_terminal

if TYPE_CHECKING:
    from ..inventory import HostConfig

YES_HELP = "answer yes to a confirm: true stage's question (CI, scripts); without a terminal it is required there"
SHOWN_FILES = 10
SHOWN_COMMITS = 10


@dataclass(frozen=True)
class HostNow:
    """What a host runs before the question: its current release and that release's commit (from its journal),
    its rollback target and that one's commit, or why it could not be read."""

    release: str | None = None
    commit: str | None = None
    previous: str | None = None
    previous_commit: str | None = None
    error: str | None = None


def will_ask(hosts: Sequence[HostConfig], what: str, yes: bool) -> bool:
    """Whether `ask` will ask (and so whether to read the hosts first); the error without a terminal comes here,
    before any host is connected."""
    if not hosts or not hosts[0].confirm or yes:
        return False
    if not _stdin_is_terminal():
        raise DeployError(
            f"stage {hosts[0].stage!r} has confirm: true and there is no terminal to ask on: give --yes to {what} "
            "without asking (CI, scripts). Nothing was changed"
        )
    return True


def hosts_now(hosts: Sequence[HostConfig]) -> dict[str, HostNow]:
    """Each host's `HostNow`, read in parallel without the lock (an unreachable host says why)."""
    from ..connection.fleet import connected, on_each
    from ..flow import journal
    from ..flow.target import read_state

    try:
        with connected(hosts) as targets:
            results = on_each(targets, read_state, lambda t: t.name)
    except DeployError as error:
        return {host.name: HostNow(error=str(error).split("\n")[0]) for host in hosts}
    now = {target.name: HostNow(error=str(error).removeprefix(f"{target.name}: ")) for target, error in results.failed}
    for target, state in results.done:
        commits = {e.release: e.commit for e in state.entries if e.event == "deploy" and e.status == "ok" and e.commit}
        back = journal.rollback_target(state.entries, state.current, state.releases)
        now[target.name] = HostNow(state.current, commits.get(state.current or ""), back, commits.get(back or ""))
    return now


def commit_lines(project_root: Path, old: str | None, new: str | None, leaving: bool = False) -> list[str]:
    """``git log --oneline old..new``, at most `SHOWN_COMMITS` lines (``leaving``: the commits a rollback takes
    back out, ``new..old``)."""
    if old is None or new is None:
        return ["(no earlier commit known: everything up to it goes out)"] if new and not leaving else []
    from ..flow.release import git

    start, end = (new, old) if leaving else (old, new)
    try:
        log = git(project_root, "log", "--oneline", "--no-decorate", "--end-of-options", f"{start}..{end}")
    except DeployError:
        return [f"({start[:12]} or {end[:12]} is not in this repository: git fetch?)"]
    commits = log.splitlines()
    if not commits:
        return ["(no commits: the same commit, or an older one)"] if not leaving else ["(no commits leave)"]
    more = len(commits) - SHOWN_COMMITS
    return commits[:SHOWN_COMMITS] + ([f"... and {more} more"] if more > 0 else [])


def range_lines(
    project_root: Path, now: Mapping[str, HostNow], commit: str | None, rollback: bool = False
) -> list[str]:
    """Per group of hosts running the same thing: what they run now, and the commits that go out (deploy of
    ``commit``) or come back out (rollback to each host's previous good release)."""
    groups: dict[tuple[str | None, str | None, str | None, str | None, str | None], list[str]] = {}
    for name, host in now.items():
        key = (host.release, host.commit, host.previous, host.previous_commit, host.error)
        groups.setdefault(key, []).append(name)
    lines = []
    for (release, old, previous, previous_commit, error), names in groups.items():
        who = ", ".join(names)
        if error is not None:
            lines.append(f"now          {who}: cannot tell ({error})")
            continue
        running = f"{release} ({old[:12] if old else 'commit unknown'})" if release else "no release yet"
        lines.append(f"now          {who}: {running}")
        if rollback:
            target = f"{previous} ({previous_commit[:12] if previous_commit else 'commit unknown'})"
            lines.append(f"back to      {target if previous else 'none: no earlier good release'}")
            shown = commit_lines(project_root, old, previous_commit, leaving=True) if previous else []
            lines += [f"  leaving    {line}" for line in shown]
        else:
            span = f"{old[:12]}..{commit[:12]}" if old and commit else (commit or "")[:12]
            lines.append(f"commits      {span}")
            lines += [f"             {line}" for line in commit_lines(project_root, old, commit)]
    return lines


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def ask(
    hosts: Sequence[HostConfig],
    what: str,
    lines: Sequence[str],
    yes: bool,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> None:
    """Return when the run may go ahead: the stage does not ask, ``--yes`` was given, or the user typed y on the
    terminal; otherwise raise `DeployError` (nothing has been touched). ``what`` is the verb ("deploy")."""
    if not hosts or not hosts[0].confirm or yes:
        return
    stage = hosts[0].stage
    if stdin is None:
        will_ask(hosts, what, yes)
    stdin = stdin or sys.stdin
    out = out or sys.stderr
    text = "\n".join([f"About to {what} stage {stage} (confirm: true):", *(f"  {line}" for line in lines)])
    out.write(for_terminal(text) + f"\n{what.capitalize()}? [y/N] ")
    out.flush()
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:
        answer = ""
        out.write("\n")
    if answer.strip().lower() not in ("y", "yes"):
        said = f"answered {answer.strip()!r}" if answer.strip() else "no answer"
        raise DeployError(f"{what} not confirmed ({said}): nothing was changed")


def deploy_lines(
    release_id: str, commit: str, subject: str, ref: str, hosts: Sequence[HostConfig], uncommitted: Sequence[str]
) -> list[str]:
    """What a deploy's question shows."""
    files = ", ".join(uncommitted[:SHOWN_FILES]) + (
        f" and {len(uncommitted) - SHOWN_FILES} more" if len(uncommitted) > SHOWN_FILES else ""
    )
    return [
        f"release      {release_id}",
        f"commit       {commit[:12]} {subject}" + (f" ({ref})" if ref != "HEAD" else ""),
        f"hosts        {', '.join(host.name for host in hosts)} ({len(hosts)})",
        f"uncommitted  {files} (not deployed)" if uncommitted else "uncommitted  none",
    ]


def rollback_lines(to: str | None, hosts: Sequence[HostConfig]) -> list[str]:
    """What a rollback's question shows."""
    return [
        f"to           {to}" if to else "to           the previous good release of each host (from its journal)",
        f"hosts        {', '.join(host.name for host in hosts)} ({len(hosts)})",
    ]
