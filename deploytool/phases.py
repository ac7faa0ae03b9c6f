"""The phases of a deploy on one host, each one remote call (git push aside).

    check    probe tools and permissions, make the layout, take the lock, read current/releases/journal
    push     git push the commit from the laptop into <root>/repo.git
    build    check out from the host's own repo, write the manifest and config, fresh venv, install, pip check,
             link shared dirs
    switch   install config (validated), swap ``current`` atomically, after-switch commands, journal, prune,
             unlock
    abort    remove the half-built release, journal the failure, unlock

Rollback reuses check and switch. Every function takes the `Target` (connection first, as the helpers do).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import shlex
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

from . import hostrun as hostside
from . import installer, journal
from .errors import DeployError, LockedError, RemoteError
from .hostrun import ModuleFailed, run_module
from .inventory import HostConfig
from .layout import Layout
from .release import RELEASE_ID, Release, is_release_id
from .remote import Outcome, Script, run_checked, run_script
from .transport import Runner, git_remote, phase_timeout, ssh_failure


@dataclass
class HostState:
    """What a host told us at check time."""

    current: str | None
    releases: list[str]
    entries: list[journal.Entry]
    python_version: str | None = None
    current_link: str = ""  # what current points at, as the host has it


@dataclass
class Target:
    """One host taking part in a run: its settings, layout, open connection and last known state."""

    host: HostConfig
    c: Runner
    password: str | None = None
    state: HostState = field(default_factory=lambda: HostState(None, [], []))
    locked: bool = False  # this run holds the host's lock: only then may it clean up there
    run: str = field(default_factory=lambda: secrets.token_hex(8))  # marks the lock as this run's

    @property
    def layout(self) -> Layout:
        return Layout(self.host.root)

    @property
    def name(self) -> str:
        return self.host.name

    def sudo_stdin(self, times: int) -> str | None:
        """Password lines for ``times`` sudo invocations (each reads one line), or None without sudo."""
        if not self.host.sudo:
            return None
        return ((self.password or "") + "\n") * times


PYTHON_VERSION = re.compile(r"\d+\.\d+\.\d+[A-Za-z0-9+]{0,16}")


def _release_of_link(link: str, layout: Layout) -> str | None:
    """The release id ``current``'s link names (``releases/X``, ``./releases/X`` or ``<root>/releases/X``)."""
    for prefix in ("releases/", "./releases/", layout.releases + "/"):
        name = link.removeprefix(prefix).rstrip("/")
        if link.startswith(prefix) and is_release_id(name):
            return name
    return None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _host_state(target: Target, answer: dict[str, Any]) -> HostState:
    """The state module's answer, validated: only release ids are releases, ``current`` must name one, every
    journal line's fields are checked (a damaged or forged line is an error naming the file and line)."""
    link, names, lines, python = (answer.get(key) for key in ("current_link", "releases", "journal", "python"))
    if not (isinstance(link, str) and _strings(names) and _strings(lines) and isinstance(python, str)):
        raise RemoteError(target.name, "the host's state could not be read (its answer is malformed)")
    if not PYTHON_VERSION.fullmatch(python):
        raise RemoteError(target.name, f"{target.host.python} reports Python {journal.shown(python)}")
    releases = sorted(name for name in names if is_release_id(name))  # type: ignore[union-attr]
    try:
        entries = journal.parse(lines, target.layout.journal)  # type: ignore[arg-type]
    except journal.DamagedJournal as error:
        raise RemoteError(target.name, str(error)) from None
    return HostState(_release_of_link(link, target.layout), releases, entries, python, link)


def _state_args(target: Target, **extra: object) -> dict[str, object]:
    return {"root": target.layout.root, **extra}


def read_state(target: Target) -> HostState:
    """Read current, releases and journal without taking the lock (for listings and dry runs)."""
    answer = run_module(
        target.c, target.name, target.host.python, "state", _state_args(target), phase="reading the state"
    )
    target.state = _host_state(target, answer)
    return target.state


def check(target: Target, owner: dict[str, str | int]) -> HostState:
    """Probe the host, make the layout, and take its lock; the lock's holder is named if it is taken."""
    host, layout, q = target.host, target.layout, shlex.quote
    script = Script().step("checking for git and python")
    script.raw("command -v git >/dev/null || { echo 'git is not installed on the host' >&2; exit 3; }")
    script.raw(
        f"command -v {q(host.python)} >/dev/null || "
        f"{{ echo {q(f'{host.python} not found on the host; set python: in hosts.yml')} >&2; exit 3; }}"
    )
    if not host.allow_root:
        script.step("checking the deploy user")
        refusal = "logged in as root; deploy as an unprivileged user, or set allow_root: true for this stage"
        script.raw(f'[ "$(id -u)" != 0 ] || {{ echo {q(refusal)} >&2; exit 3; }}')
    sudo_lines = _check_sudo(script, target.password) if host.sudo else 0
    script.step(f"making the deploy root {host.root}")
    script.cmd("mkdir", "-p", layout.releases, layout.shared)
    script.raw(f"mkdir -p {q(host.etc_root)} 2>/dev/null || true")
    script.raw(f"[ -w {q(layout.root)} ] || {{ echo {q(f'{layout.root} is not writable')} >&2; exit 3; }}")
    script.raw(f"[ -d {q(layout.repo)} ] || git init -q --bare {q(layout.repo)}")
    not_link = f"{layout.current} is not a symlink; move it away (deploytool switches current by renaming a link)"
    script.raw(f"[ ! -e {q(layout.current)} ] || [ -L {q(layout.current)} ] || {{ echo {q(not_link)} >&2; exit 3; }}")
    # The script's stdin carries sudo's password lines: the module's arguments are piped into it instead.
    script.step("taking the lock and reading the state")
    args = hostside.stdin_line(_state_args(target, lock={**owner, "run": target.run}))
    script.pipe(["printf", "%s", args], hostside.argv(host.python, "state"))
    outcome = run_script(target.c, script, stdin=target.sudo_stdin(sudo_lines), phase="check")
    try:
        answer = hostside.parse_answer(target.name, "state", outcome.stdout, outcome.stderr, outcome.exit_code)
    except ModuleFailed as refused:
        if refused.result.get("reason") == "locked":
            owner_text = str(refused.result.get("owner") or "").strip()  # as `unlock` compares it
            raise LockedError(target.name, _describe_lock(owner_text, layout, host), owner_text) from None
        raise
    except RemoteError:
        raise RemoteError(target.name, outcome.failure()) from None  # an earlier step failed: it says which
    target.locked = True
    try:
        target.state = _host_state(target, answer)
        if target.state.current_link and target.state.current is None:
            raise RemoteError(
                target.name,
                f"{layout.current} points at {_printable(target.state.current_link, 200)}, not at a release "
                f"under {layout.releases}; point it at one (ln -sfn releases/ID) or remove it",
            )
    except DeployError:
        abort(target, None, None)
        raise
    return target.state


def _printable(value: object, limit: int = 100) -> str:
    """A value from a host for a message: non-printable characters replaced, shortened."""
    return "".join(char if char.isprintable() else "?" for char in str(value))[:limit]


def _describe_lock(owner_json: str, layout: Layout, host: HostConfig) -> str:
    try:
        owner = json.loads(owner_json)
        what = " ".join(_printable(owner.get(key) or "") for key in ("action", "release")).strip() or "?"
        held = f"{what} by {_printable(owner.get('user', '?'))} since {_printable(owner.get('since', '?'))}"
    except (ValueError, AttributeError):
        held = f"an unknown holder ({layout.lock_owner} is unreadable)"
    return f"locked: {held}; if that run crashed, clear it with: fab unlock --stage {host.stage} --hosts {host.name}"


def push(target: Target, project_root: str, commit: str) -> None:
    """Push ``commit`` from the laptop into the host's bare repo (the host never fetches from elsewhere)."""
    url, ssh_command = git_remote(target.host, target.layout.repo)
    env = dict(os.environ, GIT_SSH_COMMAND=ssh_command) if ssh_command else None
    limit = phase_timeout(target.host, "push")
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
        lost = ssh_failure(target.host, "push", result.stderr) if result.returncode == 255 else None
        if lost is not None:
            raise lost
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise RemoteError(target.name, f"git push failed: {' | '.join(lines[-3:]) or 'no output'}")


def build(target: Target, release: Release, install: InstallPlan, etc_tar_b64: str | None) -> None:
    """Make ``releases/<id>``: code from the host's repo, manifest, rendered config, venv with the pins."""
    host, layout = target.host, target.layout
    path = layout.release(release.id)
    script = Script()
    _report_free_space(script, layout)
    state = target.state
    stale = [r for r in journal.incomplete_releases(state.entries, state.releases, state.current) if r != release.id]
    if stale:
        _remove_incomplete(script, layout, stale)
    script.step(f"checking out {release.commit[:12]}")
    exists = f"release {release.id} already exists on the host"
    script.raw(f"[ ! -e {shlex.quote(path)} ] || {{ echo {shlex.quote(exists)} >&2; exit 3; }}")
    # A pipeline's status is its last command's: make sure git has the commit before piping its archive.
    script.cmd("git", f"--git-dir={layout.repo}", "cat-file", "-e", f"{release.commit}^{{commit}}")
    script.cmd("mkdir", path)
    script.pipe(
        ["git", f"--git-dir={layout.repo}", "archive", "--format=tar", release.commit], ["tar", "-x", "-C", path]
    )
    script.step("writing the manifest")
    manifest = replace(release, requirements_digest=install.digest).manifest(host.app, host.stage, host.name)
    script.raw(f"printf '%s\\n' {shlex.quote(manifest)} > {shlex.quote(layout.manifest(release.id))}")
    if etc_tar_b64 is not None:
        script.step("unpacking the rendered config")
        script.cmd("rm", "-rf", layout.etc(release.id))
        script.pipe(["base64", "-d"], ["tar", "-x", "-p", "-C", path])
    _prepare_installer(script, host, layout, release.id, install.installer)
    script.step("creating the virtualenv")
    script.cmd(*installer.make_venv(host, layout, release.id, install.installer), redirect=">&2")
    script.step("installing requirements")
    requirements = posixpath.join(path, install.requirements)
    command = installer.install(host, layout, release.id, requirements, install.require_hashes, install.installer)
    script.cmd(*command, redirect=">&2")
    script.step("compiling bytecode (reusing the current release's)")
    previous = layout.venv(state.current) if state.current else ""
    args = hostside.stdin_line({"venv": layout.venv(release.id), "previous": previous})
    script.raw(f"{shlex.join(['printf', '%s', args])} | {shlex.join(hostside.argv(host.python, 'bytecode'))} >&2")
    script.step("checking installed requirements (pip check)")
    script.cmd(*installer.check(host, layout, release.id, install.installer), redirect=">&2")
    for name in host.shared_dirs:
        script.step(f"linking shared/{name}")
        script.cmd("mkdir", "-p", layout.shared_dir(name))
        script.cmd("rm", "-rf", posixpath.join(path, name))
        script.cmd("ln", "-s", layout.shared_dir(name), posixpath.join(path, name))
    outcome = run_script(target.c, script, stdin=etc_tar_b64, phase="build")
    outcome = _without_free_space(outcome, layout, target.name)
    if not outcome.ok:
        raise RemoteError(target.name, outcome.failure(), outcome.stderr)
    state.releases = [rid for rid in state.releases if rid not in stale]


def _prepare_installer(script: Script, host: HostConfig, layout: Layout, release_id: str, tool: str) -> None:
    """Make the tools venv (pip) unless a complete one is there, and put the pinned uv into it when it is the
    installer and not there yet: both once per host, so a warm deploy only looks (no Python start)."""
    q = shlex.quote
    script.step(f"preparing the installer ({tool}) in {layout.tools_venv}")
    ready, tools = installer.tools_ready(layout), shlex.join(installer.make_tools(host, layout))
    # A half-made tools venv (python3-venv missing the first time) has no mark: it is made again, not trusted.
    script.raw(f"[ -e {q(ready)} ] || {{ {tools} >&2 || exit 3; : > {q(ready)}; }}")
    if tool == "uv":
        line, uv = installer.uv_version_line(), installer.uv_bin(layout)
        install_uv = shlex.join(installer.install_uv(host, layout, release_id))
        wanted = f"{q(line)}|{q(line + ' ')}*"
        script.raw(f'case "$({q(uv)} --version 2>/dev/null)" in {wanted}) ;; *) {install_uv} >&2 || exit 3 ;; esac')


FREE_MARK = "deploytool-free: "
LOW_SPACE = 2 * 1024 * 1024  # bytes: a step that failed with less than this free failed for lack of space


def _report_free_space(script: Script, layout: Layout) -> None:
    """When the script fails, it also prints the free space of the deploy root's filesystem (``stat -f``): a
    step can fail for lack of space without saying so (``ensurepip`` hides its output)."""
    probe = shlex.join(["stat", "-f", "-c", f"{FREE_MARK}%a %S", layout.root])
    script.raw(f"trap {shlex.quote(f'[ $? = 0 ] || {probe} >&2 2>/dev/null')} EXIT")


def _without_free_space(outcome: Outcome, layout: Layout, host: str) -> Outcome:
    """``outcome`` without the free-space line; a failure for lack of space raises "no space left on <root>"."""
    free, lines = None, []
    for line in outcome.stderr.splitlines():
        blocks, _, size = line.removeprefix(FREE_MARK).partition(" ")
        if line.startswith(FREE_MARK) and blocks.isdigit() and size.isdigit():
            free = int(blocks) * int(size)
        else:
            lines.append(line)
    outcome = replace(outcome, stderr="\n".join(lines))
    if not outcome.ok and ("No space left on device" in outcome.stderr or (free is not None and free < LOW_SPACE)):
        raise RemoteError(
            host, f"no space left on {layout.root} ({outcome.failed_step()} failed); free some space on the host"
        )
    return outcome


def _remove_incomplete(script: Script, layout: Layout, stale: Sequence[str]) -> None:
    """Move the releases an interrupted run left into trash/ (deleted in the background); best effort."""
    script.step(f"removing incomplete releases {', '.join(stale)}")
    script.raw(f"mkdir -p {shlex.quote(layout.trash)} 2>/dev/null || true")
    for rid in stale:
        into = posixpath.join(layout.trash, rid)
        script.raw(f"{shlex.join(['mv', '-T', layout.release(rid), into])} 2>/dev/null || true")
        script.raw(f"({shlex.join(['rm', '-rf', into])} </dev/null >/dev/null 2>&1 &)")


@dataclass(frozen=True)
class InstallPlan:
    """What to install: the requirements file's path inside the release, whether it carries hashes, and with
    which installer (`installer.choose`)."""

    requirements: str
    require_hashes: bool = False
    digest: str = ""  # sha256 of the resolved pins, recorded in the release manifest
    installer: str = "pip"


def _check_sudo(script: Script, password: str | None) -> int:
    """Add a check of the sudo password (of passwordless sudo when there is none); return how many password
    lines it may read (three when wrong)."""
    if password is None:
        script.step("checking passwordless sudo").cmd("sudo", "-n", "true")
        return 0
    script.step("checking the sudo password").cmd("sudo", "-S", "-p", "", "-v")
    return 3


def sudo_without_password(target: Target) -> bool:
    """Whether the deploy user may use sudo on this host without a password (``sudo -n true``): one call."""
    result = target.c.run(shlex.join(["sudo", "-n", "true"]), hide=True, warn=True, in_stream=False)
    return bool(result.ok)


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
        answer = run_module(target.c, target.name, target.host.python, "finish", args, phase="finish")
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


@dataclass(frozen=True)
class LostRun:
    """What a lock left behind says: its holder, and how far that run's publish step got on the host."""

    holder: str  # "deploy X by user@laptop since T"
    standing: str  # "; that run's switch had ended ... the host is on X", or ""
    finished_entry: journal.Entry | None  # the journal line of a switch that completed but was never recorded


def unlock(target: Target, only_if_owner: str | None = None) -> LostRun | None:
    """Remove the host's lock and say whose it was and where its run left the host; a switch that completed
    but was not recorded (the laptop was lost after ``publish``) is journaled. With ``only_if_owner``, only a
    lock whose ``owner.json`` is exactly that is removed. None if there was no (such) lock."""
    layout, q = target.layout, shlex.quote
    lines = [f"[ -d {q(layout.lock)} ] || exit 0"]
    if only_if_owner is not None:
        lines.append(f'[ "$(cat {q(layout.lock_owner)} 2>/dev/null)" = {q(only_if_owner)} ] || exit 0')
    lines += [
        f"printf 'locked %s\\n' \"$(cat {q(layout.lock_owner)} 2>/dev/null)\"",
        f"printf 'switch %s\\n' \"$(cat {q(layout.switch_record)} 2>/dev/null)\"",
        f"printf 'current %s\\n' \"$(readlink {q(layout.current)} 2>/dev/null)\"",
    ]
    outcome = run_checked(target.c, target.name, Script(lines), phase="unlock")
    fields = dict(line.partition(" ")[::2] for line in outcome.stdout.splitlines() if " " in line)
    if "locked" not in fields:
        return None
    owner_text = fields["locked"].strip()
    holder = _describe_lock(owner_text, layout, target.host).split(";")[0].removeprefix("locked: ")
    lost = _lost_run(holder, fields.get("switch", ""), _release_of_link(fields.get("current", ""), layout))
    try:
        run = json.loads(owner_text).get("run")
    except (ValueError, AttributeError):
        run = None
    if isinstance(run, str) and run:
        # The lost run's own token lets `finish` journal what it completed and release its lock.
        lost_target = Target(target.host, target.c, target.password, target.state, True, run)
        finish(lost_target, *([lost.finished_entry] if lost.finished_entry else []), unlock="always")
    else:
        run_checked(target.c, target.name, Script([shlex.join(["rm", "-rf", layout.lock])]), phase="unlock")
    return lost


def _lost_run(holder: str, record: str, current: str | None) -> LostRun:
    """What a lost run's publish record says about the host (validated: it comes from the host)."""
    try:
        data = json.loads(record)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return LostRun(holder, "", None)
    release, previous = data.get("release"), data.get("previous")
    names = [name for name in (release, previous) if name is not None]
    if not all(isinstance(name, str) and RELEASE_ID.fullmatch(name) for name in names):
        return LostRun(holder, "", None)
    now = current or "no release"
    if data["state"] == "publishing":
        moving = f"from {previous or 'no release'} to {release or 'no release'}"
        return LostRun(holder, f"; that run was switching it {moving}: it is on {now}", None)
    entry = journal.Entry.from_json(data["entry"]) if isinstance(data.get("entry"), str) else None
    if data["state"] != "published" or entry is None or entry.release != release or current != release:
        entry = None
    standing = f"; that run's switch had ended ({data['state']}) and not been recorded: the host is on {now}"
    return LostRun(holder, standing + (" (recorded in the journal now)" if entry else ""), entry)


def incomplete(target: Target) -> tuple[list[str], str]:
    """The releases interrupted runs left on the host (the next deploy removes them), or why they cannot be told."""
    try:
        state = read_state(target)
    except DeployError as error:
        return [], str(error).removeprefix(f"{target.name}: ")
    return journal.incomplete_releases(state.entries, state.releases, state.current), ""
