"""Host-side program: install a release's rendered ``etc/`` under the host's etc root (rules: etc_install.py).

Run by the host-side ``publish`` module, which is shipped with it, as ``python3 -c <bootstrap> RELEASE_ETC
ETC_ROOT PREVIOUS_RELEASE_ETC`` (through sudo when the stage says so), with one JSON line on stdin: ``root`` (the
deploy root), ``release`` and ``previous`` (the ids those directories belong to, or null) and ``expected`` (the
sha256 and mode of every file the laptop rendered for ``release``, at a deploy; null at a rollback or a switch
back). Every destination is validated before any is touched, so a refusal (exit 3) changes nothing; each file is
written to a temporary name in its directory, fsynced and renamed. stdout: one ``backed up|installed|removed|
restored <path>`` line per change and a summary; exit 1 on a write error (the etc root may be partly updated). A
file is written with the release's mode (0600 for one that carries the app's env or secrets, or the mode its
template declares), never wider than the file it replaces.

The release's ``etc/`` is writable by the deploy user, so nothing is installed on its word: at a deploy its files
must be those the laptop rendered (``expected``), and that list is kept as the release's *record*, a 0600 file in a
0700 directory under the etc root (`Records`: ``<etc root>/.deploytool/<key of the deploy root>/<id>.json``, root's
when run through sudo; unreadable to others, as a weak secret could be guessed from its sha256). A later install of
the release (rollback, switch back, restore) checks every file against its record; the files the installer removes
are those the record of the release being replaced lists, and a backup it puts back (``etc.replaced``) must be the
one it recorded when it made it. Run as root, a release without a record is refused (deployed before records
existed: redeploy its commit), except a release that is being replaced at a deploy: its files are then *adopted*
(`Guard.adopt`). Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
from typing import Any, Callable, Dict, NoReturn, Tuple

PREFIX = "deploytool etc install: "
EXIT_REFUSED = 3
EXIT_WRITE_FAILED = 1

Content = Tuple[bytes, int]
Sums = Dict[str, Dict[str, Any]]  # relative path -> {"sha256": hex, "mode": int}
RECORDS = ".deploytool"  # under the etc root: never a rendered path
RECORD_LIMIT = 16 * 1024 * 1024


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


def write_backup(release_dir: str, rel: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Write ``<release_dir>/etc.replaced/<rel>`` without following a symlink anywhere below ``release_dir``: the
    deploy user owns that tree, and could swap a directory for a symlink between the checks and this write (run as
    root, a path walk would then create directories, chowned to that user, or the file, where the link points).
    Each directory is opened relative to its parent with ``O_NOFOLLOW``; the file is written under a new name in
    its directory and renamed there."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW
    fd = os.open(release_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in ["etc.replaced", *rel.split("/")[:-1]]:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            below = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = below
            if created:
                os.fchmod(fd, 0o755)
                if owner:
                    os.fchown(fd, owner[0], owner[1])
        name = os.path.basename(rel)
        temporary = f".{name}.{os.urandom(6).hex()}.tmp"
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
            os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=fd)
            raise
    finally:
        os.close(fd)


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
        self.backups: list[tuple[str, str, str, Content]] = []  # relative path, dest, backup path, original
        self.contents: dict[str, Content] = {}  # the release's files as read (and written)
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

    def installed(self, rel: str) -> Content | None:
        """What the etc root holds at ``rel`` now (through symlinks inside it), or None."""
        real = os.path.realpath(os.path.join(self.root, rel))
        return content(real) if self.inside(real) and os.path.isfile(real) else None

    def install(
        self, release_etc: str, new: dict[str, str], old: dict[str, str], recorded: Callable[[str], bool]
    ) -> None:
        """Plan writing ``new``'s files (read once: what is checked is what is written); a file the etc root has
        and no earlier release installed (not in ``old``) is backed up first, unless a backup the record
        vouches for (``recorded``) is already there."""
        for rel in sorted(new):
            dest = os.path.join(self.root, rel)
            real = os.path.realpath(dest)
            self.claim(dest, real)
            data, mode = self.contents[rel] = content(new[rel])
            if os.path.isfile(real):
                # Never widen: a file made narrower by hand (a 0600 secret) stays as narrow.
                mode &= stat.S_IMODE(os.stat(real).st_mode)
            if os.path.isfile(real) and stat.S_IMODE(os.stat(real).st_mode) == mode and content(real)[0] == data:
                self.unchanged += 1
                continue
            if os.path.isfile(real) and rel not in old:
                backup, kept = backup_of(release_etc, rel)
                if not (kept and recorded(rel)):
                    self.backups.append((rel, dest, backup, content(real)))
            self.writes.append((dest, real, data, mode))

    def remove(
        self, previous_etc: str, new: dict[str, str], old: dict[str, str], vouch: Callable[[str, str, Content], None]
    ) -> None:
        """Plan removing ``old``'s files that ``new`` has not, or putting back the backup the release being
        replaced made of them (``vouch`` refuses one it did not record)."""
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
                vouch(rel, backup, (data, mode))
                if not (os.path.isfile(real) and content(real) == (data, mode)):
                    self.restores.append((dest, real, data, mode))
            elif os.path.islink(real):
                sys.stderr.write(PREFIX + f"{dest} is a symlink; not removed\n")
            elif os.path.isfile(real):
                self.removals.append((dest, real))

    def carry_out(self, release_etc: str, backup_owner: tuple[int, int] | None) -> None:
        for rel, dest, _backup, (data, mode) in self.backups:
            write_backup(os.path.dirname(release_etc), rel, data, mode, backup_owner)
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


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sums_of(found: Content) -> dict[str, Any]:
    return {"sha256": digest(found[0]), "mode": found[1]}


def valid_sums(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(rel, str)
        and isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and len(entry["sha256"]) == 64
        and isinstance(entry.get("mode"), int)
        for rel, entry in value.items()
    )


def differences(found: dict[str, Content], sums: Sums, leave: Callable[[str, Content], bool]) -> list[str]:
    """What differs between a release's files and their recorded sums, one "<path> (why)" each; a file the
    sums do not list is let through only if ``leave`` says the install leaves it as it is."""
    said = []
    for rel in sorted(set(found) | set(sums)):
        if rel not in sums:
            if not leave(rel, found[rel]):
                said.append(rel + " (not rendered for this release)")
        elif rel not in found:
            said.append(rel + " (missing)")
        elif digest(found[rel][0]) != sums[rel]["sha256"]:
            said.append(rel + " (content differs)")
        elif found[rel][1] != sums[rel]["mode"]:
            said.append("{} (mode {:o}, rendered {:o})".format(rel, found[rel][1], sums[rel]["mode"]))
    return said


class Records:
    """The record of each release's config: ``<etc root>/.deploytool/<key>/<release id>.json``, the key naming
    the deploy root. Run as root, every part must be root's and writable by root only (else it is refused);
    otherwise this user's. A record holds ``files`` and ``replaced`` (backups made), each path -> sha256, mode."""

    def __init__(self, etc_root: str, deploy_root: str) -> None:
        self.top = os.path.join(etc_root, RECORDS)
        self.root = os.path.normpath(deploy_root)
        self.dir = os.path.join(self.top, digest(self.root.encode())[:16])
        self.privileged = os.geteuid() == 0
        self.owners = (0,) if self.privileged else (0, os.geteuid())

    def path(self, release: str) -> str:
        return os.path.join(self.dir, release + ".json")

    def trusted(self, path: str, directory: bool) -> bool:
        """Whether ``path`` exists; refused if it is not a real directory (or single-linked file) that only its
        owner may write, owned by root (or, not run as root, by this user)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode) and info.st_nlink == 1
        if not kind or info.st_uid not in self.owners or info.st_mode & 0o022:
            who = "root" if self.privileged else "root or this user"
            raise Refused(
                f"{path}: not a {'directory' if directory else 'file'} owned by {who} and writable by its owner "
                "only; the record of the releases' config cannot be trusted; refusing, nothing changed"
            )
        return True

    def load(self, release: str) -> dict[str, Any] | None:
        path = self.path(release)
        if not (self.trusted(self.top, True) and self.trusted(self.dir, True) and self.trusted(path, False)):
            return None
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            text = handle.read(RECORD_LIMIT)
        try:
            record = json.loads(text.decode("utf-8"))
        except ValueError:
            record = None
        if not (isinstance(record, dict) and valid_sums(record.get("files")) and valid_sums(record.get("replaced"))):
            raise Refused(f"{path}: not a record of release {release}'s config; refusing, nothing changed")
        return record

    def save(self, release: str, record: dict[str, Any]) -> str | None:
        """Write a release's record; None, or (not run as root, where it is only a check against accidents: the
        deploy user could write the etc root anyway) why it could not be written."""
        try:
            for directory in (self.top, self.dir):
                if not self.trusted(directory, True):
                    os.mkdir(directory, 0o700)
                    os.chmod(directory, 0o700)
            body = dict(record, root=self.root, release=release)
            write(self.path(release), (json.dumps(body, sort_keys=True) + "\n").encode(), 0o600)
        except OSError as error:
            if self.privileged:
                raise
            return f"no record of release {release}'s config kept in {self.dir}: {error.strerror or error}"
        return None


class Guard:
    """Installs nothing on the word of a release's ``etc/`` (which the deploy user can write): the checks of one
    install, driven by the JSON the laptop sent (see the module's docstring)."""

    def __init__(self, etc_root: str, check: dict[str, Any], release_etc: str, previous_etc: str) -> None:
        root, self.release, self.previous = check.get("root"), check.get("release"), check.get("previous")
        self.expected = check.get("expected")
        if not isinstance(root, str) or not root.startswith("/"):
            raise Refused("the deploy root is not an absolute path; refusing, nothing changed")
        root = os.path.normpath(root)
        for rid, path in ((self.release, release_etc), (self.previous, previous_etc)):
            if rid is not None and (
                not isinstance(rid, str)
                or rid in ("", ".", "..")
                or "/" in rid
                or os.path.normpath(path) != os.path.join(root, "releases", rid, "etc")
            ):
                raise Refused(f"{path} is not the etc/ of release {rid!r} under {root}; refusing, nothing changed")
        if self.expected is not None and not valid_sums(self.expected):
            raise Refused("the rendered files' sha256s are malformed; refusing, nothing changed")
        self.release_etc, self.previous_etc = release_etc, previous_etc
        self.records = Records(etc_root, root)
        self.new_record = self.records.load(self.release) if self.release else None
        self.old_record = self.records.load(self.previous) if self.previous else None
        self.notes: list[str] = []
        self.save: dict[str, dict[str, Any]] = {}

    def new_files(self, listed: dict[str, str]) -> dict[str, str]:
        """The files to install: none for no release, and never one under the records' directory."""
        if self.release is None:
            return {}
        for rel in listed:
            if rel == RECORDS or rel.startswith(RECORDS + "/"):
                raise Refused(f"{self.release_etc}/{rel}: {RECORDS}/ holds the installer's records; refusing")
        return listed

    def old_files(self, listed: dict[str, str], new: dict[str, str]) -> dict[str, str]:
        """The files of the release being replaced that the installer may remove: those of its record, not of its
        writable directory. Without a record, run as root: none (they are left in place, and said so)."""
        if self.previous is None:
            return {}
        if self.old_record is not None:
            return {rel: os.path.join(self.previous_etc, rel) for rel in self.old_record["files"]}
        if not self.records.privileged:
            self.notes.append(f"release {self.previous} has no record of its config (not checked)")
            return listed
        left = sorted(set(listed) - set(new))
        if left:
            self.notes.append(
                f"release {self.previous} has no record of its config: its files are not removed: " + ", ".join(left)
            )
        return {}

    def recorded_backup(self, rel: str) -> bool:
        """Whether the backup of ``rel`` in the release being installed is one the installer made (recorded)."""
        return self.new_record is not None and rel in self.new_record["replaced"]

    def verify(self, plan: Plan) -> None:
        """The release's files as read must be those rendered (``expected``) or recorded; refuse naming the rest."""
        if self.release is None:
            return
        found = plan.contents
        if self.expected is not None:
            said = differences(found, self.expected, lambda rel, data: False)
            if said:
                raise Refused(
                    f"{self.release_etc} is not what the laptop rendered for release {self.release}: "
                    + ", ".join(said)
                    + "; refusing, nothing changed"
                )
            self.new_record = {"files": self.expected, "replaced": {}}
            self.save[self.release] = self.new_record
            return
        record = self.new_record
        if record is None:
            if self.records.privileged:
                raise Refused(
                    f"release {self.release} has no record of its config in {self.records.dir} (deployed before "
                    "deploytool recorded the sha256s of what it rendered, or the record is gone): its etc/ is not "
                    "installed as root unchecked; refusing, nothing changed; deploy its commit again instead"
                )
            self.notes.append(f"release {self.release} has no record of its config (not checked)")
            return

        def unchanged(rel: str, data: Content) -> bool:  # an adopted record: a file the install leaves alone
            return record.get("adopted") is True and plan.installed(rel) == data

        said = differences(found, record["files"], unchanged)
        if said:
            raise Refused(
                f"{self.release_etc} is not what was deployed for release {self.release} (its record: "
                f"{self.records.path(self.release)}): " + ", ".join(said) + "; refusing, nothing changed"
            )

    def adopt(self, plan: Plan, listed: dict[str, str]) -> None:
        """At a deploy over a release without a record (deployed before records existed), record the files it
        shares with the new release that are exactly what the etc root holds (what was installed): a switch back
        can then put them back. Its other files are not vouched for (never removed on its word)."""
        if self.expected is None or self.previous is None or self.old_record is not None:
            return
        adopted = {}
        for rel in sorted(set(listed) & set(plan.contents)):
            mine, there = content(listed[rel]), plan.installed(rel)
            if there is not None and mine == there:
                adopted[rel] = sums_of(mine)
        self.save[self.previous] = {"files": adopted, "replaced": {}, "adopted": True}

    def vouch(self, rel: str, backup: str, found: Content) -> None:
        """A backup being put back must be the original the installer recorded when it made it."""
        record = self.old_record
        if record is None and not self.records.privileged:
            return
        sums = (record or {}).get("replaced", {}).get(rel)
        if sums is None or sums != sums_of(found):
            raise Refused(
                f"{backup}: not the backup the installer made (it is not in the record of release "
                f"{self.previous}); refusing, nothing changed; check it, then put it back by hand or remove it"
            )

    def record_backups(self, plan: Plan) -> None:
        if not plan.backups or self.release is None or self.new_record is None:
            return
        replaced = dict(self.new_record["replaced"])
        replaced.update({rel: sums_of(original) for rel, _dest, _backup, original in plan.backups})
        self.save[self.release] = dict(self.new_record, replaced=replaced)

    def write_records(self) -> None:
        """Write the records this install makes, and drop those of releases no longer on the host."""
        releases = os.path.join(self.records.root, "releases")
        with contextlib.suppress(OSError, Refused):
            for name in os.listdir(self.records.dir) if self.records.trusted(self.records.dir, True) else []:
                rid = name[: -len(".json")]
                keep = rid in (self.release, self.previous) or rid in self.save
                if name.endswith(".json") and not keep and not os.path.lexists(os.path.join(releases, rid)):
                    os.unlink(os.path.join(self.records.dir, name))
        for release, record in self.save.items():
            problem = self.records.save(release, record)
            if problem:
                print("note: " + problem)


def backup_owner(release_etc: str, plan: Plan) -> tuple[int, int] | None:
    """Run as root for a release another user owns, backup directories go to that user (so it can prune)."""
    if not plan.backups or os.geteuid() != 0:
        return None
    info = os.stat(os.path.dirname(release_etc))
    return None if (info.st_uid, info.st_gid) == (0, 0) else (info.st_uid, info.st_gid)


def install(release_etc: str, root: str, previous_etc: str, check: dict[str, Any]) -> int:
    """Install ``release_etc`` under ``root`` in place of ``previous_etc``'s files, once `Guard` has checked them
    against what the laptop rendered (``check``); the exit status."""
    if not os.path.isdir(root):
        fail(f"{root}: etc root is not a directory")
    plan = Plan(root)
    try:
        guard = Guard(root, check, release_etc, previous_etc)
        new = guard.new_files(files(release_etc) if os.path.isdir(release_etc) else {})
        listed = files(previous_etc) if previous_etc and os.path.isdir(previous_etc) else {}
        old = guard.old_files(listed, new)
        plan.install(release_etc, new, {**listed, **old}, guard.recorded_backup)
        guard.verify(plan)
        guard.adopt(plan, listed)
        plan.remove(previous_etc, new, old, guard.vouch)
        guard.record_backups(plan)
    except Refused as refusal:
        fail(str(refusal))
    for note in guard.notes:
        print("note: " + note)
    try:
        guard.write_records()
        plan.carry_out(release_etc, backup_owner(release_etc, plan))
    except OSError as error:
        fail(f"{error}; /etc may be partly updated, fix and re-run", EXIT_WRITE_FAILED)
    print(plan.summary())
    return 0


def read_check() -> dict[str, Any]:
    try:
        check = json.loads(sys.stdin.readline(RECORD_LIMIT))
    except ValueError:
        check = None
    if not isinstance(check, dict):
        fail("stdin: one JSON line with root, release, previous and expected was expected", 2)
    return check


if __name__ == "__main__":
    if len(sys.argv) != 4:
        fail("usage: etc_install RELEASE_ETC ETC_ROOT PREVIOUS_RELEASE_ETC < CHECK_JSON", 2)
    sys.exit(install(sys.argv[1], sys.argv[2], sys.argv[3], read_check()))
