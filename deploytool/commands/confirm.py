"""``confirm: true``: a deploy or rollback of such a stage asks on the terminal first, before any host is touched.

What it shows is known on the laptop alone (no host is connected before the answer): the release id, the commit
and its subject, the hosts, and the uncommitted files the deploy does not ship. ``--yes`` answers for CI; with no
terminal and no ``--yes`` the run stops with an error, nothing touched.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from ..errors import DeployError
from ..inventory import HostConfig
from ..reporting.terminal import for_terminal

YES_HELP = "answer yes to a confirm: true stage's question (CI, scripts); without a terminal it is required there"
SHOWN_FILES = 10


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
    if stdin is None and not _stdin_is_terminal():
        raise DeployError(
            f"stage {stage!r} has confirm: true and there is no terminal to ask on: give --yes to {what} without "
            "asking (CI, scripts). Nothing was changed"
        )
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
        "(fab deploy --dry-run shows what each host runs now and the commits that would go out)",
    ]


def rollback_lines(to: str | None, hosts: Sequence[HostConfig]) -> list[str]:
    """What a rollback's question shows."""
    return [
        f"to           {to}" if to else "to           the previous good release of each host (from its journal)",
        f"hosts        {', '.join(host.name for host in hosts)} ({len(hosts)})",
    ]
