"""Install a release's rendered etc/ into the host's /etc, and preview the change as diffs.

The installer is a host-side module of this package (:mod:`deploytool.hostside.etc_install`, standard
library only) that the host-side ``publish`` module runs (shipped with it) at the switch, rather than POSIX sh: it must
validate *every* destination before touching any (so a refusal leaves /etc unchanged), resolve symlinks
(``realpath``), write each file to a temporary name in its final directory, fsync and ``rename`` it, and cope
with any file name -- all awkward and fragile with find/while-read loops, trivial in Python.  Paths are passed
as argv (``install_args``).

Rules of the installer:

* every regular file under ``release_etc`` goes to the same relative path under ``etc_root``;
  missing parent directories are created 0o755; content and mode (``& 0o777``) come from the
  release file; a file whose content and mode already match is left alone (same inode);
* a destination path may pass through symlinks only if they resolve inside ``etc_root``
  (a symlinked final component is written through, to its target); any path resolving
  outside, a destination that is a directory, or a parent that is a file makes the installer
  exit 1 with ``deploytool etc install: ...`` on stderr *before changing anything*;
* a release without an ``etc/`` directory (deployed before the app had templates) has no config: installing
  it installs nothing, and a missing previous ``etc/`` removes nothing;
* a destination that is a regular file no earlier release installed (not among the files of
  ``previous_release_etc``: hand-made, or a file this release starts to manage) and that differs
  in content or mode is first copied, content and mode, to ``<release>/etc.replaced/<relpath>``
  (``<release>`` = the directory holding ``release_etc``); an existing backup is kept (a re-run
  never overwrites the oldest original).  Run as root for a release directory owned by another
  user, the directories created there are chowned to the release directory's owner (so the
  deploy user can prune the release); the backup files stay root's, as their originals were;
* files that ``previous_release_etc`` has and ``release_etc`` has not are then removed from
  ``etc_root`` -- only regular files (a symlink there is left alone), never directories -- unless
  the release that installed them kept a backup (``<previous release>/etc.replaced/<relpath>``):
  then that original is put back (written through a symlink inside ``etc_root``, like an install).
  So restoring after a failed first deploy (an empty ``release_etc``, the failed release as
  previous) puts hand-made files back, and a rollback puts back what the release left had replaced;
* a backup path under ``etc.replaced`` that is a symlink or not a regular file / directory is
  refused like an escaping destination, before anything changes;
* exit status 3: refused before changing anything (so the caller must not "restore": nothing was touched);
  1: an error while writing (``etc_root`` may be partly updated); 0: done;
* stdout: one ``backed up <path>`` / ``installed <path>`` / ``removed <path>`` /
  ``restored <path>`` line per change (``<path>`` under ``etc_root``) and a summary line.

With ``sudo: true`` the installer -- which only reads the release and writes etc_root -- runs as root
(``publish`` runs it with ``sudo -n`` once sudo has the password, see ``hostside._common.Sudo``).
"""

from __future__ import annotations

import base64
import difflib
import posixpath
from dataclasses import dataclass
from typing import Literal

from deploytool.connection.hostrun import run_module
from deploytool.connection.transport import Runner
from deploytool.errors import RemoteError
from deploytool.rendering.etc_render import EtcPathError, RenderedEtc


def _absolute(path: str, what: str) -> str:
    if not posixpath.isabs(path):
        raise EtcPathError(f"{what} must be an absolute path on the host, got {path!r}")
    return posixpath.normpath(path)


def install_args(release_etc: str, etc_root: str, previous_release_etc: str | None) -> tuple[str, str, str]:
    """The installer's three arguments, checked: release etc, etc root, previous release etc ("" for none)."""
    return (
        _absolute(release_etc, "release etc directory"),
        _absolute(etc_root, "etc_root"),
        _absolute(previous_release_etc, "previous release etc directory") if previous_release_etc else "",
    )


Status = Literal["new", "changed", "unchanged", "unreadable"]


@dataclass(frozen=True)
class FileDiff:
    """How one rendered file compares to what is on the host."""

    relpath: str
    path: str  # destination on the host
    status: Status
    diff: str = ""  # unified diff ("" when unchanged); a note for binary or unreadable files
    old_mode: int | None = None
    new_mode: int = 0o644


def _text(data: bytes) -> list[str] | None:
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _unified(path: str, old: bytes | None, new: bytes) -> str:
    old_lines = [] if old is None else _text(old)
    new_lines = _text(new)
    if old_lines is None or new_lines is None:
        return f"Binary files {path} differ\n"
    lines = difflib.unified_diff(
        old_lines, new_lines, fromfile="/dev/null" if old is None else f"a{path}", tofile=f"b{path}"
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _compare(relpath: str, path: str, entry: object, new: bytes, new_mode: int) -> FileDiff:
    if entry is None:
        return FileDiff(relpath, path, "new", _unified(path, None, new), None, new_mode)
    # What the host answered is not trusted: anything but {"data": base64, "mode": int} is unreadable.
    data, mode = (entry.get("data"), entry.get("mode")) if isinstance(entry, dict) else (None, None)
    try:
        old = base64.b64decode(data, validate=True) if isinstance(data, str) else None
    except ValueError:
        old = None
    if old is None or not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        error = entry.get("error") if isinstance(entry, dict) else None
        note = str(error)[:200] if isinstance(error, str) else "the host's answer is not a file"
        return FileDiff(relpath, path, "unreadable", f"cannot read {path}: {note}\n", None, new_mode)
    old_mode = mode
    if old == new and old_mode == new_mode:
        return FileDiff(relpath, path, "unchanged", "", old_mode, new_mode)
    diff = _unified(path, old, new)
    if old_mode != new_mode:
        diff = f"mode {old_mode:o} -> {new_mode:o} {path}\n" + diff
    return FileDiff(relpath, path, "changed", diff, old_mode, new_mode)


def diff_against(
    c: Runner,
    etc_root: str,
    rendered: RenderedEtc,
    *,
    sudo: bool = False,
    python: str = "python3",
    host: str | None = None,
) -> list[FileDiff]:
    """Fetch every rendered file's destination in one remote call (host-side module ``etc_read``) and diff it
    against the render.

    Symlinks are followed, as the installer writes through them.  Files the host cannot read
    (e.g. root-only, without sudo) are reported as "unreadable" instead of failing.
    """
    root = _absolute(etc_root, "etc_root")
    paths = {name: posixpath.join(root, name) for name in rendered}
    host = host or str(getattr(c, "host", None) or "local")
    try:
        answer = run_module(c, host, python, "etc_read", {"paths": list(paths.values())}, sudo=sudo)
    except RemoteError as error:
        raise RemoteError(
            host, f"reading the current files under {root} failed: {_reason(host, error)}; is python3 installed?"
        ) from None
    files = answer.get("files")
    if not isinstance(files, dict):
        raise RemoteError(host, f"reading the current files under {root}: the host answered without a file list")
    return [
        _compare(name, paths[name], files.get(paths[name]), rendered[name], rendered.mode(name)) for name in rendered
    ]


def _reason(host: str, error: RemoteError) -> str:
    return str(error).removeprefix(f"{host}: ")


def format_diffs(diffs: list[FileDiff], *, host: str | None = None) -> str:
    """Render diffs for printing: the diffs of new/changed/unreadable files, then a summary line."""
    counts = {status: 0 for status in ("new", "changed", "unchanged", "unreadable")}
    parts = []
    for item in diffs:
        counts[item.status] += 1
        if item.status != "unchanged":
            parts.append(item.diff)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n or status != "unreadable")
    parts.append(f"{host + ': ' if host else ''}etc: {summary}\n")
    return "".join(parts)
