"""Install a release's rendered etc/ into the host's /etc, and preview the change as diffs.

The installer is a short Python 3 script run with ``python3 -c`` (Python >= 3.5 on the host)
rather than POSIX sh: it must validate *every* destination before touching any (so a refusal
leaves /etc unchanged), resolve symlinks (``realpath``), write each file to a temporary name
in its final directory, fsync and ``rename`` it, and cope with any file name -- all awkward
and fragile with find/while-read loops, trivial in Python.  Paths are passed as argv, never
formatted into the script, and the command line is built with ``shlex.join``.

Rules of the installer (``install_command``):

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

With ``sudo=True`` the whole script -- which only reads the release and writes etc_root --
runs as root: ``sudo -n`` (fails at once if a password is needed) or, given ``sudo_prompt``,
``sudo -S -p <prompt>`` so the caller answers the prompt with an invoke ``Responder``.
"""

from __future__ import annotations

import base64
import difflib
import json
import posixpath
import shlex
from dataclasses import dataclass
from typing import Literal, Protocol

from deploytool.errors import RemoteError
from deploytool.etc_render import EtcPathError, RenderedEtc

SUDO_PROMPT = "[deploytool sudo password]: "

_INSTALL_SCRIPT = r"""
import os, stat, sys, tempfile
def fail(msg, code=3):
    sys.stderr.write("deploytool etc install: %s\n" % msg)
    sys.exit(code)
src, root, prev = sys.argv[1], sys.argv[2], sys.argv[3]
if not os.path.isdir(root):
    fail("%s: etc root is not a directory" % root)
real_root = os.path.realpath(root)
def inside(path):
    return path.startswith(real_root.rstrip("/") + "/")
def files(top):
    found = {}
    for here, dirs, names in os.walk(top):
        dirs.sort()
        for name in names:
            path = os.path.join(here, name)
            if os.path.islink(path) or not os.path.isfile(path):
                fail("%s: not a regular file; refusing, nothing changed" % path)
            found[os.path.relpath(path, top)] = path
    return found
def outside(dest, real):
    fail("%s: resolves to %s, outside %s (symlink); refusing, nothing changed" % (dest, real, root))
def backup_of(top, rel):
    path = os.path.join(os.path.dirname(top), "etc.replaced")
    for part in rel.split("/")[:-1] + [None]:
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            fail("%s: not a directory (symlink?); refusing, nothing changed" % path)
        path = os.path.join(path, part) if part else path
    path = os.path.join(path, os.path.basename(rel))
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        fail("%s: not a regular file; refusing, nothing changed" % path)
    return path, os.path.lexists(path)
def content(path):
    with open(path, "rb") as f:
        return f.read(), stat.S_IMODE(os.stat(path).st_mode) & 0o777
def parent_ok(real):
    up = os.path.dirname(real)
    while not os.path.lexists(up):
        up = os.path.dirname(up)
    if not os.path.isdir(up):
        fail("%s is not a directory; refusing, nothing changed" % up)
def makedirs(top, owner):
    missing, up = [], top
    while not os.path.isdir(up):
        missing.append(up)
        up = os.path.dirname(up)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, 0o755)
        if owner:
            os.chown(d, owner[0], owner[1])
def write(path, data, mode):
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
new = files(src) if os.path.isdir(src) else {}
old = files(prev) if prev and os.path.isdir(prev) else {}
plan, backups, targets, unchanged = [], [], {}, 0
def claim(dest, real):
    # one destination this run will write: inside etc_root, not a directory, not written twice
    if not inside(real):
        outside(dest, real)
    if real in targets:
        fail("%s and %s are the same file (symlink); refusing, nothing changed" % (dest, targets[real]))
    targets[real] = dest
    if os.path.isdir(real):
        fail("%s is a directory; refusing, nothing changed" % dest)
    parent_ok(real)
for rel in sorted(new):
    dest = os.path.join(root, rel)
    real = os.path.realpath(dest)
    claim(dest, real)
    data, mode = content(new[rel])
    if os.path.isfile(real) and stat.S_IMODE(os.stat(real).st_mode) == mode:
        with open(real, "rb") as f:
            if f.read() == data:
                unchanged += 1
                continue
    if os.path.isfile(real) and rel not in old:
        backup, kept = backup_of(src, rel)
        if not kept:
            backups.append((dest, real, backup))
    plan.append((dest, real, data, mode))
removals, restores = [], []
for rel in sorted(set(old) - set(new)):
    dest = os.path.join(root, rel)
    parent = os.path.realpath(os.path.dirname(dest))
    if not inside(parent + "/"):
        outside(dest, parent)
    real = os.path.join(parent, os.path.basename(dest))
    backup, kept = backup_of(prev, rel)
    if kept:
        real = os.path.realpath(real)
        claim(dest, real)
        data, mode = content(backup)
        if not (os.path.isfile(real) and content(real) == (data, mode)):
            restores.append((dest, real, data, mode))
    elif os.path.islink(real):
        sys.stderr.write("deploytool etc install: %s is a symlink; not removed\n" % dest)
    elif os.path.isfile(real):
        removals.append((dest, real))
owner = None
if backups and os.geteuid() == 0:
    st = os.stat(os.path.dirname(src))
    if (st.st_uid, st.st_gid) != (0, 0):
        owner = (st.st_uid, st.st_gid)
try:
    for dest, real, backup in backups:
        data, mode = content(real)
        makedirs(os.path.dirname(backup), owner)
        write(backup, data, mode)
        print("backed up " + dest)
    for dest, real, data, mode in plan:
        makedirs(os.path.dirname(real), None)
        write(real, data, mode)
        print("installed " + dest)
    for dest, real in removals:
        os.unlink(real)
        print("removed " + dest)
    for dest, real, data, mode in restores:
        makedirs(os.path.dirname(real), None)
        write(real, data, mode)
        print("restored " + dest)
except OSError as error:
    fail("%s; /etc may be partly updated, fix and re-run" % error, 1)
print("etc: %d installed, %d unchanged, %d removed, %d backed up, %d restored in %s"
      % (len(plan), unchanged, len(removals), len(backups), len(restores), root))
"""

_READ_SCRIPT = r"""
import base64, json, os, stat, sys
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        out[path] = {"data": base64.b64encode(data).decode("ascii"), "mode": mode}
    except FileNotFoundError:
        out[path] = None
    except OSError as error:
        out[path] = {"error": error.strerror or str(error)}
sys.stdout.write("@@deploytool-etc@@" + json.dumps(out) + "@@end@@\n")
"""


def _compact(script: str) -> str:
    return script.strip() + "\n"


def _privileged(argv: list[str], sudo: bool, sudo_prompt: str | None) -> str:
    if sudo:
        prefix = ["sudo", "-S", "-p", sudo_prompt] if sudo_prompt else ["sudo", "-n"]
        argv = [*prefix, "--", *argv]
    return shlex.join(argv)


def _absolute(path: str, what: str) -> str:
    if not posixpath.isabs(path):
        raise EtcPathError(f"{what} must be an absolute path on the host, got {path!r}")
    return posixpath.normpath(path)


def install_command(
    release_etc: str,
    etc_root: str,
    previous_release_etc: str | None,
    sudo: bool,
    *,
    sudo_prompt: str | None = None,
    python: str = "python3",
) -> str:
    """Build the one shell command that installs release_etc into etc_root (see module docstring).

    For rollback pass the target release's etc as `release_etc` and the release being left as
    `previous_release_etc`.  Exit status 0 on success, 1 with a message on stderr otherwise.
    """
    argv = [
        python,
        "-c",
        _compact(_INSTALL_SCRIPT),
        _absolute(release_etc, "release etc directory"),
        _absolute(etc_root, "etc_root"),
        _absolute(previous_release_etc, "previous release etc directory") if previous_release_etc else "",
    ]
    return _privileged(argv, sudo, sudo_prompt)


class _Result(Protocol):
    stdout: str
    stderr: str
    return_code: int


class Runner(Protocol):
    """What diff_against needs of a fabric.Connection or invoke.Context."""

    def run(self, command: str, **kwargs: object) -> _Result | None: ...


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
    if not isinstance(entry, dict) or "error" in entry:
        note = entry.get("error") if isinstance(entry, dict) else "bad answer"
        return FileDiff(relpath, path, "unreadable", f"cannot read {path}: {note}\n", None, new_mode)
    old = base64.b64decode(entry["data"])
    old_mode = int(entry["mode"])
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
    sudo_prompt: str | None = None,
    python: str = "python3",
    host: str | None = None,
) -> list[FileDiff]:
    """Fetch every rendered file's destination in one remote call and diff it against the render.

    Symlinks are followed, as the installer writes through them.  Files the host cannot read
    (e.g. root-only, without sudo) are reported as "unreadable" instead of failing.
    """
    root = _absolute(etc_root, "etc_root")
    paths = {name: posixpath.join(root, name) for name in rendered}
    command = _privileged([python, "-c", _compact(_READ_SCRIPT), *paths.values()], sudo, sudo_prompt)
    result = c.run(command, hide=True, warn=True, in_stream=False)
    host = host or str(getattr(c, "host", None) or "local")
    if result is None:
        raise RemoteError(host, "reading the current /etc files returned no result")
    stdout = result.stdout
    start, end = stdout.rfind("@@deploytool-etc@@"), stdout.rfind("@@end@@")
    if result.return_code != 0 or start < 0 or end < start:
        detail = (result.stderr or stdout).strip().splitlines()
        raise RemoteError(
            host,
            f"reading the current files under {root} failed (exit {result.return_code}): "
            f"{detail[-1] if detail else 'no output'}; is python3 installed?",
        )
    answers = json.loads(stdout[start + len("@@deploytool-etc@@") : end])
    return [
        _compare(name, paths[name], answers.get(paths[name]), rendered[name], rendered.mode(name)) for name in rendered
    ]


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
