"""The phases of a run on one host, their names, and the steps of prepare and finish (one remote call each).

A deploy goes, in the order a reader sees it (each name is an event's ``phase``):

    prepare   CONNECT, then CHECK  (host-side ``check``: probe tools, sudo and the layout, take the lock, read
                                    current/releases/journal)
                        PUSH   (git push of the commit from the laptop into <root>/repo.git)
                        BUILD  (host-side ``build``: check out, manifest, config, venv, install, bytecode,
                                pip check, shared links)
    publish   PUBLISH  (host-side ``publish``, `publish.publish`: config, current, after-switch), with its
                        RESTART and HEALTH steps as phases of their own
    finish    FINISH   (host-side ``finish``: journal, prune, unlock)

and REVERT (``publish`` back to the release a host had) when a batch fails. A rollback is check, publish and
finish. `abort` undoes a prepare: it removes the half-built release, journals the failure and unlocks. Every
step takes the `Target`; the deploy lock (taking it over, unlocking) is `deploylock`'s.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, replace

from . import installer, journal
from .errors import DeployError, RemoteError
from .hostrun import ModuleFailed, run_module, steps_output, tell_step
from .release import Release
from .target import HostState, Target, host_state, printable
from .transport import git_remote, phase_timeout, ssh_failure

CONNECT, CHECK, PUSH, BUILD = "connect", "check", "push", "build"
PUBLISH, RESTART, HEALTH = "publish", "restart", "health"
FINISH, REVERT = "finish", "revert"
SWITCH = "switch"  # the publish call as transport bounds it (`transport.LONG_PHASES`) and names it in its messages
TAKEOVER = "takeover"  # a lock left by a run of this machine that is gone was taken over (deploylock.take)
PREPARE = (CONNECT, CHECK, PUSH, BUILD)


@dataclass(frozen=True)
class InstallPlan:
    """What to install: the requirements file's path inside the release, whether it carries hashes, and with
    which installer (`installer.choose`)."""

    requirements: str
    require_hashes: bool = False
    digest: str = ""  # sha256 of the resolved pins, recorded in the release manifest
    installer: str = "pip"


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


def push(target: Target, project_root: str, commit: str) -> None:
    """Push ``commit`` from the laptop into the host's bare repo (the host never fetches from elsewhere)."""
    url, ssh_command = git_remote(target.host, target.layout.repo)
    env = dict(os.environ, GIT_SSH_COMMAND=ssh_command) if ssh_command else None
    tell_step(target.name, PUSH, f"git push of {commit[:12]}")
    limit = phase_timeout(target.host, PUSH)
    try:
        result = subprocess.run(
            ["git", "-C", project_root, "push", "--quiet", "--force", url, f"{commit}:refs/heads/deploy"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        raise RemoteError(
            target.name, f"git push did not finish within {limit} s; raise timeout in hosts.yml"
        ) from None
    if result.returncode != 0:
        lost = ssh_failure(target.host, PUSH, result.stderr) if result.returncode == 255 else None
        if lost is not None:
            raise lost
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise RemoteError(target.name, f"git push failed: {' | '.join(lines[-3:]) or 'no output'}")


def _installer_args(target: Target, release_id: str, tool: str) -> dict[str, object]:
    host, layout = target.host, target.layout
    args: dict[str, object] = {
        "tool": tool,
        "tools_venv": layout.tools_venv,
        "ready": installer.tools_ready(layout),
        "make_tools": installer.make_tools(host, layout),
    }
    if tool == "uv":
        args.update(
            uv=installer.uv_bin(layout),
            uv_version=installer.uv_version_line(),
            install_uv=installer.install_uv(host, layout, release_id),
        )
    return args


def build_args(target: Target, release: Release, install: InstallPlan, etc_tar_b64: str | None) -> dict[str, object]:
    """The ``build`` module's arguments: every command an argument list, every path from the layout."""
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
        "manifest": manifest,
        "manifest_path": layout.manifest(release.id),
        "etc_tar": etc_tar_b64,
        "etc": layout.etc(release.id),
        "stale": [[layout.release(rid), posixpath.join(layout.trash, rid)] for rid in stale],
        "trash": layout.trash,
        "installer": _installer_args(target, release.id, install.installer),
        "make_venv": installer.make_venv(host, layout, release.id, install.installer),
        "install": installer.install(host, layout, release.id, requirements, install.require_hashes, install.installer),
        "check": installer.check(host, layout, release.id, install.installer),
        "bytecode": {"venv": layout.venv(release.id), "previous": layout.venv(state.current) if state.current else ""},
        "shared": [[layout.shared_dir(name), posixpath.join(path, name)] for name in host.shared_dirs],
        "timeout": phase_timeout(host, BUILD),
        "log": target.log,
    }


def build(target: Target, release: Release, install: InstallPlan, etc_tar_b64: str | None) -> str:
    """Make ``releases/<id>`` (host-side module ``build``): code from the host's repo, manifest, rendered config,
    venv with the pins. A failed step raises naming it ("no space left on <root>" when the disk is full)."""
    args = build_args(target, release, install, etc_tar_b64)
    try:
        answer = run_module(target.c, target.name, target.host.python, "build", args, phase=BUILD)
    except ModuleFailed as failed:
        _drop_removed(target, failed.result.get("removed"))
        raise
    _drop_removed(target, answer.get("removed"))
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
        target.locked = failed.result.get("unlocked") is not True
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
