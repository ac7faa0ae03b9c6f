"""The phases of a run on one host, their names, and the steps of prepare and finish (one remote call each).

A deploy goes, in the order a reader sees it (each name is an event's ``phase``):

    prepare   CONNECT, then CHECK  (host-side ``check``: probe tools, sudo and the layout, take the lock, read
                                    current/releases/journal)
                        PUSH   (on the laptop: a git pack of what <root>/repo.git lacks of the commit,
                                `commit_pack`; it travels on the build call's stdin, no second connection)
                        BUILD  (host-side ``build``: receive the commit into repo.git, check out, manifest,
                                config, venv, install, bytecode, pip check, shared links)
    publish   PUBLISH  (host-side ``publish``, `publish.publish`: config, current, after-switch), with its
                        RESTART and HEALTH steps as phases of their own
    migrate   MIGRATE  (host-side ``appcmd``: the ``migrate`` commands, on one host, every host prepared and locked)
    finish    FINISH   (host-side ``finish``: journal, prune, unlock)

and REVERT (``publish`` back to the release a host had) when a batch fails. A rollback is check, publish and
finish. `abort` undoes a prepare: it removes the half-built release, journals the failure and unlocks. Every
step takes the `Target`; the deploy lock (taking it over, unlocking) is `deploylock`'s.
"""

from __future__ import annotations

import base64
import posixpath
import subprocess
import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace

from ..connection.hostrun import ModuleFailed, run_module, steps_output
from ..connection.transport import ConnectionLost, NotAnswering, phase_timeout
from ..errors import DeployError, RemoteError
from ..reporting.events import (
    BUILD,
    CHECK,
    CONNECT,
    FINISH,
    HEALTH,
    MIGRATE,
    PREPARE,
    PUBLISH,
    PUSH,
    RESTART,
    REVERT,
    SWITCH,
    TAKEOVER,
)
from ..supply import installer
from . import journal
from .release import Release
from .target import HostState, Target, host_state, printable

__all__ = [  # the phase names live in `events`; re-exported for the flows that say `phases.CHECK`
    "BUILD",
    "CHECK",
    "CONNECT",
    "FINISH",
    "HEALTH",
    "MIGRATE",
    "PREPARE",
    "PUBLISH",
    "PUSH",
    "RESTART",
    "REVERT",
    "SWITCH",
    "TAKEOVER",
]


@dataclass(frozen=True)
class InstallPlan:
    """What to install: the requirements file's path inside the release, whether it carries hashes, and with
    which installer (`installer.choose`)."""

    requirements: str
    require_hashes: bool = False
    digest: str = ""  # sha256 of the resolved pins, recorded in the release manifest
    installer: str = "pip"
    uv_wheel: tuple[str, str] | None = None  # installer uv: its wheel's filename and sha256 (`installer.uv_wheel`)


def check_args(target: Target, lock: dict[str, str | int], sudo: bool = True) -> dict[str, object]:
    """The ``check`` module's arguments: take the lock with owner record ``lock``."""
    host = target.host
    return {
        "root": target.layout.root,
        "etc_root": host.etc_root,
        "allow_root": host.allow_root,
        "sudo": host.sudo and sudo,
        "password": target.sudo_password if sudo else None,
        "lock": lock,
        "timeout": phase_timeout(host, CHECK),
    }


def check(target: Target, owner: dict[str, str | int]) -> HostState:
    """Probe the host, make the layout, and take its lock (host-side module ``check``). A lock another run
    holds raises `ModuleFailed` with ``reason: locked`` and its ``owner`` (`deploylock.take` says whose)."""
    host, layout = target.host, target.layout
    args = check_args(target, {**owner, "run": target.run})
    try:
        answer = run_module(target.c, target.name, host.python, "check", args, phase=CHECK)
    except ModuleFailed:
        raise
    except ConnectionLost as lost:
        # The connection dropped while the check ran: it may have taken the lock before its answer was lost. The
        # clean-up (`abort`, over a new connection) releases it if it carries this run's token, and only then.
        target.locked = not isinstance(lost, NotAnswering)
        raise
    except RemoteError as error:
        if "(exit 127)" in str(error):  # the shell did not find the host's python
            raise RemoteError(
                target.name,
                f"checking for git and python failed: {host.python} not found on the host; set python: in hosts.yml",
            ) from None
        raise
    target.locked = True
    try:
        target.state = host_state(target, answer)
        if target.state.current_link and target.state.current is None:
            raise RemoteError(
                target.name,
                f"{layout.current} points at {printable(target.state.current_link, 200)}, not at a release "
                f"under {layout.releases}; point it at one (ln -sfn releases/ID) or remove it",
            )
    except DeployError:
        abort(target, None, None)
        raise
    return target.state


def commit_pack(project_root: str, commit: str, host_head: str | None) -> str | None:
    """What a host whose ``repo.git`` names ``host_head`` as its deploy head lacks of ``commit``, as a git pack
    (base64) for the ``build`` module's stdin; None when the host has the commit already. The laptop's own git
    decides: without ``host_head`` here (another laptop's commit, a fresh host), the pack holds all of the commit's
    history. One pack serves every host with the same head (made once per run and head)."""
    key = (project_root, commit, host_head)
    with _PACKS_LOCK:
        if key not in _PACKS:
            if len(_PACKS) > 8:
                _PACKS.clear()
            _PACKS[key] = _make_pack(project_root, commit, host_head)
        return _PACKS[key]


_PACKS: dict[tuple[str, str, str | None], str | None] = {}
_PACKS_LOCK = threading.Lock()


def _make_pack(project_root: str, commit: str, host_head: str | None) -> str | None:
    def git(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", project_root, *args], input=stdin, capture_output=True, check=False)

    revs = f"{commit}\n"
    if host_head is not None and git("cat-file", "-e", f"{host_head}^{{commit}}").returncode == 0:
        if git("merge-base", "--is-ancestor", commit, host_head).returncode == 0:
            return None  # the host's head contains the commit
        revs += f"^{host_head}\n"
    done = git("pack-objects", "--revs", "--stdout", "-q", stdin=revs.encode("ascii"))
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DeployError(f"git pack-objects failed for {commit}: {' | '.join(said[-3:]) or 'no output'}")
    return base64.b64encode(done.stdout).decode("ascii")


def _installer_args(target: Target, release_id: str, install: InstallPlan) -> dict[str, object]:
    host, layout, tool = target.host, target.layout, install.installer
    if tool == "uv":
        if install.uv_wheel is None:
            raise DeployError(f"{target.name}: no {installer.UV_PIN} wheel chosen: refusing to install it unchecked")
        return {"tool": tool, "uv": installer.fetch_uv(host, layout, release_id, install.uv_wheel)}
    return {
        "tool": tool,
        "tools_venv": layout.tools_venv,
        "ready": installer.tools_ready(layout),
        "make_tools": installer.make_tools(host, layout),
    }


def build_args(
    target: Target,
    release: Release,
    install: InstallPlan,
    etc_tar_b64: str | None,
    pack: str | None = None,
    app: AppRun | None = None,
) -> dict[str, object]:
    """The ``build`` module's arguments: every command an argument list, every path from the layout; ``app``: the
    app's env and build commands."""
    host, layout, state = target.host, target.layout, target.state
    path = layout.release(release.id)
    stale = [r for r in journal.incomplete_releases(state.entries, state.releases, state.current) if r != release.id]
    requirements = posixpath.join(path, install.requirements)
    manifest = replace(release, requirements_digest=install.digest).manifest(host.app, host.stage, host.name)
    return {
        "root": layout.root,
        "release": release.id,
        "commit": release.commit,
        "path": path,
        "repo": layout.repo,
        "pack": pack,
        "manifest": manifest,
        "manifest_path": layout.manifest(release.id),
        "etc_tar": etc_tar_b64,
        "etc": layout.etc(release.id),
        "stale": [[layout.release(rid), posixpath.join(layout.trash, rid)] for rid in stale],
        "trash": layout.trash,
        "installer": _installer_args(target, release.id, install),
        "make_venv": installer.make_venv(host, layout, release.id, install.installer),
        "install": installer.install(host, layout, release.id, requirements, install.require_hashes, install.installer),
        "check": installer.check(host, layout, release.id, install.installer),
        "bytecode": {"venv": layout.venv(release.id), "previous": layout.venv(state.current) if state.current else ""},
        "shared": [[layout.shared_dir(name), posixpath.join(path, name)] for name in host.shared_dirs],
        "timeout": phase_timeout(host, BUILD),
        "log": target.log,
        "env": dict(app.env) if app else {},
        "env_file": layout.env_file(release.id),
        "venv": layout.venv(release.id),
        "command_env": dict(app.command_env) if app else {},
        "build": list(app.commands) if app else [],
    }


@dataclass(frozen=True)
class AppRun:
    """What the app's commands on a host run with: its env (values rendered, secrets in), deploytool's own
    variables, and the commands (``build`` or ``migrate``, rendered)."""

    env: Mapping[str, str] = field(default_factory=dict)
    command_env: Mapping[str, str] = field(default_factory=dict)
    commands: tuple[str, ...] = ()


def build(
    target: Target,
    release: Release,
    install: InstallPlan,
    etc_tar_b64: str | None,
    pack: str | None = None,
    app: AppRun | None = None,
) -> str:
    """Make ``releases/<id>`` (host-side module ``build``): the commit into the host's repo (``pack``, from
    `commit_pack`), code checked out from it, manifest, app env, rendered config, venv with the pins, build
    commands. A failed step raises naming it ("no space left on <root>" when the disk is full). Returns what its
    steps printed (for the log and --verbose)."""
    args = build_args(target, release, install, etc_tar_b64, pack, app)
    try:
        answer = run_module(target.c, target.name, target.host.python, "build", args, phase=BUILD)
    except ModuleFailed as failed:
        _drop_removed(target, failed.result.get("removed"))
        raise
    _drop_removed(target, answer.get("removed"))
    return steps_output(answer)


def migrate(target: Target, release: Release, app: AppRun) -> str:
    """Run the ``migrate`` commands in the new release on this host (host-side module ``appcmd``), the lock held;
    a failure raises `ModuleFailed` with the commands' output. Returns what they printed (for --verbose)."""
    layout = target.layout
    args = {
        "path": layout.release(release.id),
        "env_file": layout.env_file(release.id),
        "venv": layout.venv(release.id),
        "command_env": dict(app.command_env),
        "commands": list(app.commands),
        "phase": MIGRATE,
        "lock_owner": layout.lock_owner,
        "run": target.run,
        "timeout": phase_timeout(target.host, MIGRATE),
        "log": target.log,
    }
    answer = run_module(target.c, target.name, target.host.python, "appcmd", args, phase=MIGRATE)
    return steps_output(answer)


def _drop_removed(target: Target, removed: object) -> None:
    """Forget the incomplete releases ``build`` moved away (it names them; only known names count)."""
    if isinstance(removed, list):
        target.state.releases = [rid for rid in target.state.releases if rid not in removed]


def finish(
    target: Target,
    *entries: journal.Entry,
    prune: Sequence[str] = (),
    remove: Sequence[str] = (),
    unlock: bool | str = True,
) -> None:
    """End this run on the host (host-side module ``finish``): journal ``entries``, prune releases into trash,
    remove ``remove`` (release ids), release the lock if it is still this run's. Raises `RemoteError` when the
    journal could not be written (the lock is then kept unless ``unlock="always"``)."""
    layout = target.layout
    args = {
        "journal": layout.journal,
        "entries": [entry.to_json() for entry in entries],
        "prune": [[layout.release(rid), posixpath.join(layout.trash, rid)] for rid in prune],
        "remove": [layout.release(rid) for rid in remove],
        "record": layout.switch_record,
        "lock": layout.lock,
        "lock_owner": layout.lock_owner,
        "run": target.run,
        "unlock": unlock,
        "trash": layout.trash,
        "log": target.log,
        "logs": _kept_logs(target, prune),
    }
    try:
        answer = run_module(target.c, target.name, target.host.python, "finish", args, phase=FINISH)
    except ModuleFailed as failed:
        # "ours": false: this run never held the lock there (or no longer does): nothing of it is left to clean up
        target.locked = failed.result.get("unlocked") is not True and failed.result.get("ours") is not False
        raise
    target.locked = answer.get("unlocked") is not True


def _kept_logs(target: Target, prune: Sequence[str]) -> dict[str, str] | None:
    """When pruning: the deploy logs to keep are those from the oldest release left on."""
    kept = [rid for rid in target.state.releases if rid not in prune]
    return {"dir": target.layout.deploy_logs, "keep_from": min(kept)} if prune and kept else None


def abort(target: Target, release_id: str | None, entry: journal.Entry | None) -> None:
    """Remove the half-built release, journal the failure and release the lock; best effort, never raises.
    Does nothing on a host whose lock this run does not hold (someone else's deploy may be running there)."""
    if not target.locked:
        return
    created = release_id and release_id not in target.state.releases and release_id != target.state.current
    with suppress(Exception):  # cleanup must not hide the original failure
        removed = [release_id] if created and release_id else []
        finish(target, *([entry] if entry else []), remove=removed, unlock="always")
