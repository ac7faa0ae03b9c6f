"""The phases of a run on one host, their names, and the steps of prepare and finish (one remote call each).

A deploy goes, in the order a reader sees it (each name is an event's ``phase``):

    prepare   CONNECT, then CHECK  (host-side ``check``: probe tools, sudo and the layout, take the lock, read
                                    current/releases/journal)
                        PUSH   (git push of the commit from the laptop into <root>/repo.git)
                        BUILD  (host-side ``build``: check out, manifest, config, venv, install, bytecode,
                                pip check, shared links)
    publish   PUBLISH  (host-side ``publish``, `publish.publish`: config, current, after-switch), with its
                        RESTART and HEALTH steps as phases of their own
    migrate   MIGRATE  (host-side ``appcmd``: the ``migrate`` commands, on one host, every host prepared and locked)
    finish    FINISH   (host-side ``finish``: journal, prune, unlock)

and REVERT (``publish`` back to the release a host had) when a batch fails. A rollback is check, publish and
finish. `abort` undoes a prepare: it removes the half-built release, journals the failure and unlocks. Every
step takes the `Target`; the deploy lock (taking it over, unlocking) is `deploylock`'s.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace

from . import installer, journal
from .errors import DeployError, RemoteError
from .hostrun import ModuleFailed, run_module
from .release import Release
from .target import HostState, Target, host_state, printable
from .transport import git_remote, phase_timeout, ssh_failure

CONNECT, CHECK, PUSH, BUILD = "connect", "check", "push", "build"
PUBLISH, RESTART, HEALTH = "publish", "restart", "health"
FINISH, REVERT = "finish", "revert"
MIGRATE = "migrate"  # the migrate commands, once per deploy on one host, after prepare, before any switch
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


def check(target: Target, owner: dict[str, str | int]) -> HostState:
    """Probe the host, make the layout, and take its lock (host-side module ``check``). A lock another run
    holds raises `ModuleFailed` with ``reason: locked`` and its ``owner`` (`deploylock.take` says whose)."""
    host, layout = target.host, target.layout
    args = {
        "root": layout.root,
        "etc_root": host.etc_root,
        "allow_root": host.allow_root,
        "sudo": host.sudo,
        "password": target.sudo_password,
        "lock": {**owner, "run": target.run},
        "timeout": phase_timeout(host, CHECK),
    }
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


def build_args(
    target: Target,
    release: Release,
    install: InstallPlan,
    etc_tar_b64: str | None,
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
    target: Target, release: Release, install: InstallPlan, etc_tar_b64: str | None, app: AppRun | None = None
) -> None:
    """Make ``releases/<id>`` (host-side module ``build``): code from the host's repo, manifest, app env, rendered
    config, venv with the pins, build commands. A failed step raises naming it ("no space left on <root>" when the
    disk is full)."""
    args = build_args(target, release, install, etc_tar_b64, app)
    try:
        answer = run_module(target.c, target.name, target.host.python, "build", args, phase=BUILD)
    except ModuleFailed as failed:
        _drop_removed(target, failed.result.get("removed"))
        raise
    _drop_removed(target, answer.get("removed"))


def migrate(target: Target, release: Release, app: AppRun) -> None:
    """Run the ``migrate`` commands in the new release on this host (host-side module ``appcmd``), the lock held;
    a failure raises `ModuleFailed` with the commands' output."""
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
    }
    run_module(target.c, target.name, target.host.python, "appcmd", args, phase=MIGRATE)


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
    }
    try:
        answer = run_module(target.c, target.name, target.host.python, "finish", args, phase=FINISH)
    except ModuleFailed as failed:
        target.locked = failed.result.get("unlocked") is not True
        raise
    target.locked = answer.get("unlocked") is not True


def abort(target: Target, release_id: str | None, entry: journal.Entry | None) -> None:
    """Remove the half-built release, journal the failure and release the lock; best effort, never raises.
    Does nothing on a host whose lock this run does not hold (someone else's deploy may be running there)."""
    if not target.locked:
        return
    created = release_id and release_id not in target.state.releases and release_id != target.state.current
    with suppress(Exception):  # cleanup must not hide the original failure
        removed = [release_id] if created and release_id else []
        finish(target, *([entry] if entry else []), remove=removed, unlock="always")
