"""Host-side program: install a release's rendered ``etc/`` under the host's etc root (rules: etc_install.py).

Run by the host-side ``publish`` module, which is shipped with it, as ``python3 -c <bootstrap> RELEASE_ETC
ETC_ROOT PREVIOUS_RELEASE_ETC`` (through sudo when the stage says so). Every destination is validated before any
is touched, so a refusal (exit 3) changes nothing; each file is written to a temporary name in its directory,
fsynced and renamed. stdout: one ``backed up|installed|removed|restored <path>`` line per change and a summary;
exit 1 on a write error (the etc root may be partly updated). A file is written with the release's mode (0600 for
one that carries the app's env or secrets, or the mode its template declares), never wider than the file it
replaces. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from typing import NoReturn, Tuple

PREFIX = "deploytool etc install: "
EXIT_REFUSED = 3
EXIT_WRITE_FAILED = 1

Content = Tuple[bytes, int]


class Refused(Exception):
    """Nothing was changed: the message says why."""


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    sys.stderr.write(PREFIX + message + "\n")
    sys.exit(code)


def files(top: str) -> dict[str, str]:
    """Relative path -> path of every regular file under ``top``; anything else is refused."""
    found = {}
    for here, dirs, names in os.walk(top):
        dirs.sort()
        for name in names:
            path = os.path.join(here, name)
            if os.path.islink(path) or not os.path.isfile(path):
                raise Refused(f"{path}: not a regular file; refusing, nothing changed")
            found[os.path.relpath(path, top)] = path
    return found


def content(path: str) -> Content:
    with open(path, "rb") as handle:
        return handle.read(), stat.S_IMODE(os.stat(path).st_mode) & 0o777


def backup_of(release_etc: str, rel: str) -> tuple[str, bool]:
    """Where ``rel``'s original is kept (``<release>/etc.replaced/<rel>``), and whether a backup is there."""
    path = os.path.join(os.path.dirname(release_etc), "etc.replaced")
    for part in [*rel.split("/")[:-1], None]:
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            raise Refused(f"{path}: not a directory (symlink?); refusing, nothing changed")
        path = os.path.join(path, part) if part else path
    path = os.path.join(path, os.path.basename(rel))
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise Refused(f"{path}: not a regular file; refusing, nothing changed")
    return path, os.path.lexists(path)


def makedirs(top: str, owner: tuple[int, int] | None) -> None:
    missing, up = [], top
    while not os.path.isdir(up):
        missing.append(up)
        up = os.path.dirname(up)
    for directory in reversed(missing):
        os.mkdir(directory)
        os.chmod(directory, 0o755)
        if owner:
            os.chown(directory, owner[0], owner[1])


def write(path: str, data: bytes, mode: int) -> None:
    """Write ``path`` atomically: a temporary file in its directory, fsynced, renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


class Plan:
    """What one install will do, decided (and every destination validated) before anything is written."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.writes: list[tuple[str, str, bytes, int]] = []  # dest, real path, content, mode
        self.backups: list[tuple[str, str, str]] = []  # dest, real path, backup path
        self.removals: list[tuple[str, str]] = []
        self.restores: list[tuple[str, str, bytes, int]] = []
        self.claimed: dict[str, str] = {}
        self.unchanged = 0

    def inside(self, path: str) -> bool:
        return path.startswith(self.real_root.rstrip("/") + "/")

    def outside(self, dest: str, real: str) -> NoReturn:
        raise Refused(f"{dest}: resolves to {real}, outside {self.root} (symlink); refusing, nothing changed")

    def claim(self, dest: str, real: str) -> None:
        """One destination this run writes: inside the etc root, not a directory, not written twice."""
        if not self.inside(real):
            self.outside(dest, real)
        if real in self.claimed:
            raise Refused(f"{dest} and {self.claimed[real]} are the same file (symlink); refusing, nothing changed")
        self.claimed[real] = dest
        if os.path.isdir(real):
            raise Refused(f"{dest} is a directory; refusing, nothing changed")
        up = os.path.dirname(real)
        while not os.path.lexists(up):
            up = os.path.dirname(up)
        if not os.path.isdir(up):
            raise Refused(f"{up} is not a directory; refusing, nothing changed")

    def install(self, release_etc: str, new: dict[str, str], old: dict[str, str]) -> None:
        for rel in sorted(new):
            dest = os.path.join(self.root, rel)
            real = os.path.realpath(dest)
            self.claim(dest, real)
            data, mode = content(new[rel])
            if os.path.isfile(real):
                # Never widen: a file made narrower by hand (a 0600 secret) stays as narrow.
                mode &= stat.S_IMODE(os.stat(real).st_mode)
            if os.path.isfile(real) and stat.S_IMODE(os.stat(real).st_mode) == mode and content(real)[0] == data:
                self.unchanged += 1
                continue
            if os.path.isfile(real) and rel not in old:
                backup, kept = backup_of(release_etc, rel)
                if not kept:
                    self.backups.append((dest, real, backup))
            self.writes.append((dest, real, data, mode))

    def remove(self, previous_etc: str, new: dict[str, str], old: dict[str, str]) -> None:
        for rel in sorted(set(old) - set(new)):
            dest = os.path.join(self.root, rel)
            parent = os.path.realpath(os.path.dirname(dest))
            if not self.inside(parent + "/"):
                self.outside(dest, parent)
            real = os.path.join(parent, os.path.basename(dest))
            backup, kept = backup_of(previous_etc, rel)
            if kept:
                real = os.path.realpath(real)
                self.claim(dest, real)
                data, mode = content(backup)
                if not (os.path.isfile(real) and content(real) == (data, mode)):
                    self.restores.append((dest, real, data, mode))
            elif os.path.islink(real):
                sys.stderr.write(PREFIX + f"{dest} is a symlink; not removed\n")
            elif os.path.isfile(real):
                self.removals.append((dest, real))

    def carry_out(self, backup_owner: tuple[int, int] | None) -> None:
        for dest, real, backup in self.backups:
            data, mode = content(real)
            makedirs(os.path.dirname(backup), backup_owner)
            write(backup, data, mode)
            print("backed up " + dest)
        for dest, real, data, mode in self.writes:
            makedirs(os.path.dirname(real), None)
            write(real, data, mode)
            print("installed " + dest)
        for dest, real in self.removals:
            os.unlink(real)
            print("removed " + dest)
        for dest, real, data, mode in self.restores:
            makedirs(os.path.dirname(real), None)
            write(real, data, mode)
            print("restored " + dest)

    def summary(self) -> str:
        return (
            f"etc: {len(self.writes)} installed, {self.unchanged} unchanged, {len(self.removals)} removed, "
            f"{len(self.backups)} backed up, {len(self.restores)} restored in {self.root}"
        )


def backup_owner(release_etc: str, plan: Plan) -> tuple[int, int] | None:
    """Run as root for a release another user owns, backup directories go to that user (so it can prune)."""
    if not plan.backups or os.geteuid() != 0:
        return None
    info = os.stat(os.path.dirname(release_etc))
    return None if (info.st_uid, info.st_gid) == (0, 0) else (info.st_uid, info.st_gid)


def install(release_etc: str, root: str, previous_etc: str) -> int:
    """Install ``release_etc`` under ``root`` in place of ``previous_etc``'s files; the exit status."""
    if not os.path.isdir(root):
        fail(f"{root}: etc root is not a directory")
    plan = Plan(root)
    try:
        new = files(release_etc) if os.path.isdir(release_etc) else {}
        old = files(previous_etc) if previous_etc and os.path.isdir(previous_etc) else {}
        plan.install(release_etc, new, old)
        plan.remove(previous_etc, new, old)
    except Refused as refusal:
        fail(str(refusal))
    try:
        plan.carry_out(backup_owner(release_etc, plan))
    except OSError as error:
        fail(f"{error}; /etc may be partly updated, fix and re-run", EXIT_WRITE_FAILED)
    print(plan.summary())
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        fail("usage: etc_install RELEASE_ETC ETC_ROOT PREVIOUS_RELEASE_ETC", 2)
    sys.exit(install(sys.argv[1], sys.argv[2], sys.argv[3]))
