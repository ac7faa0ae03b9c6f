"""The files that change the database (hosts.yml ``migrations``, globs; default ``**/migrations/*.py``), read from
the laptop's git: what a deploy adds or changes (``fab deploy --dry-run``), and what a rollback would leave the
database with that the release it goes back to lacks (refused without ``--force``).

Globs match paths relative to the repository's top: ``*`` and ``?`` within one path component, ``**/`` any
number of directories (none included), ``**`` anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .errors import DeployError
from .flow.release import git


def _pattern(glob: str) -> re.Pattern[str]:
    parts, index = [], 0
    while index < len(glob):
        if glob.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif glob.startswith("**", index):
            parts.append(".*")
            index += 2
        elif glob[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif glob[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(glob[index]))
            index += 1
    return re.compile("".join(parts))


def matches(path: str, globs: Sequence[str]) -> bool:
    """Whether ``path`` (relative, with ``/``) is a migration file by ``globs``."""
    return any(_pattern(glob).fullmatch(path) for glob in globs)


def files_at(project_root: Path, commit: str, globs: Sequence[str]) -> set[str]:
    """The migration files of ``commit`` (the laptop's git must have it: `DeployError` otherwise)."""
    listing = git(project_root, "ls-tree", "-r", "--name-only", "-z", "--end-of-options", commit)
    return {path for path in listing.split("\0") if path and matches(path, globs)}


def changes(project_root: Path, old: str | None, new: str, globs: Sequence[str]) -> list[str]:
    """Lines ``A path`` / ``M path`` for the migration files a deploy of ``new`` over ``old`` adds or changes
    (every one of ``new``'s for a first deploy)."""
    if old is None:
        return [f"A {path}" for path in sorted(files_at(project_root, new, globs))]
    diff = git(project_root, "diff", "--name-status", "-z", "--no-renames", "--end-of-options", old, new)
    fields = diff.split("\0")
    lines = []
    for status, path in zip(fields[0::2], fields[1::2], strict=False):
        if status in ("A", "M") and matches(path, globs):
            lines.append(f"{status} {path}")
    return sorted(lines, key=lambda line: line[2:])


def lost_on_rollback(project_root: Path, current: str, target: str, globs: Sequence[str]) -> list[str]:
    """The migration files ``current``'s commit has and ``target``'s lacks, sorted."""
    try:
        return sorted(files_at(project_root, current, globs) - files_at(project_root, target, globs))
    except DeployError:
        raise DeployError(
            f"cannot compare the migrations of {current[:12]} and {target[:12]}: this repository lacks one of them "
            "(git fetch?); fetch it, or roll back with --force to skip the check"
        ) from None
