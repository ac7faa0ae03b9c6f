"""A release as the laptop knows it: id minted once for every host, the commit, who and when."""

from __future__ import annotations

import getpass
import json
import re
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import DeployError

RELEASE_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}")  # ASCII digits: \d takes any Unicode digit
COMMIT_ID = re.compile(r"[0-9a-f]{40}")


def is_release_id(value: object) -> bool:
    """Whether ``value`` (anything, e.g. read from a host) is a release id."""
    return isinstance(value, str) and RELEASE_ID.fullmatch(value) is not None


def is_commit_id(value: object) -> bool:
    """Whether ``value`` is a full commit id (40 lowercase hex digits): never an option or a revision range."""
    return isinstance(value, str) and COMMIT_ID.fullmatch(value) is not None


class NotARepositoryError(DeployError):
    """The project directory is not (inside) a git repository: there is no committed code to deploy."""


def deployer() -> str:
    """Who is deploying: ``user@laptop``."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def git(project_root: Path, *args: str) -> str:
    """Run a local git command in ``project_root`` and return its output, or raise `DeployError`."""
    try:
        result = subprocess.run(["git", "-C", str(project_root), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DeployError("git is not installed on this machine") from None
    if result.returncode != 0:
        if "not a git repository" in result.stderr:
            raise NotARepositoryError(
                f"{project_root} is not a git repository: deploytool deploys and renders committed code; "
                "run fab inside your project's git repository (or git init and commit it there)"
            )
        message = result.stderr.strip().splitlines()
        raise DeployError(f"git {' '.join(args)} failed in {project_root}: {message[-1] if message else ''}")
    return result.stdout.strip()


def resolve_commit(project_root: Path, ref: str) -> str:
    """The full commit id ``ref`` names in the local repository."""
    try:
        return git(project_root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    except NotARepositoryError:
        raise
    except DeployError:
        raise DeployError(f"{ref!r} is not a commit in {project_root}; give --ref a branch, tag or commit") from None


@dataclass(frozen=True)
class Release:
    """One deploy's release: the same id, commit and metadata on every host."""

    id: str
    commit: str
    user: str
    time: str
    requirements_digest: str = ""
    hosts_yml_digest: str = ""  # sha256 of the hosts.yml (working tree) the deploy read: hosts, settings, vars

    @classmethod
    def mint(cls, commit: str, now: datetime | None = None) -> Release:
        moment = now or utc_now()
        return cls(
            id=f"{moment:%Y%m%dT%H%M%SZ}-{commit[:7]}",
            commit=commit,
            user=deployer(),
            time=moment.isoformat(timespec="seconds"),
        )

    def manifest(self, app: str, stage: str, host: str) -> str:
        """The manifest stored in the release directory, as JSON."""
        return json.dumps(
            {
                "app": app,
                "stage": stage,
                "host": host,
                "release": self.id,
                "commit": self.commit,
                "user": self.user,
                "time": self.time,
                "requirements_sha256": self.requirements_digest,
                "hosts_yml_sha256": self.hosts_yml_digest,
            },
            indent=2,
            sort_keys=True,
        )


def check_release_id(release_id: str) -> str:
    """Refuse a malformed release id before it reaches a remote path."""
    if not RELEASE_ID.fullmatch(release_id):
        raise DeployError(f"{release_id!r} is not a release id (like 20261121T093000Z-1a2b3c4); see fab releases")
    return release_id


def uncommitted_files(project_root: Path, inventory_file: Path) -> list[str]:
    """Tracked files whose working-tree content differs from HEAD (a deploy does not ship them), but hosts.yml:
    it is not "not deployed", it is read from the working tree (`working_tree_notes` says so)."""
    top = Path(git(project_root, "rev-parse", "--show-toplevel"))
    inventory_path = inventory_file.resolve().relative_to(top.resolve()).as_posix()
    return [path for path in git(project_root, "diff", "--name-only", "HEAD").splitlines() if path != inventory_path]


def working_tree_notes(project_root: Path, inventory_file: Path, commit: str, ref: str) -> list[str]:
    """What a deploy of ``commit`` should say about the working tree: the uncommitted files it does not ship,
    and whether the hosts.yml it reads (always the working tree's) differs from the one in ``commit``."""
    notes = []
    changed = uncommitted_files(project_root, inventory_file)
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        notes.append(f"Note: deploying commit {commit[:12]} ({ref}); uncommitted changes are not deployed: {shown}")
    try:
        committed: bytes | None = subprocess.run(
            ["git", "-C", str(inventory_file.parent), "show", f"{commit}:./{inventory_file.name}"],
            capture_output=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError:
        committed = None
    if committed != inventory_file.read_bytes():
        how = "differs from" if committed is not None else "is not in"
        notes.append(
            f"Note: {inventory_file.name} {how} commit {commit[:12]}: deploys read it from the working tree, so its "
            "hosts, settings and vars as they are now are used (and render the config); commit it to keep them"
        )
    return notes
