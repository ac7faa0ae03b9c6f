"""The laptop's side of the host-side ``publish`` module: make a release live on one host, wholly or not at all.

`config_switch` builds what a publish of one release over another needs (``etc_install``'s arguments both ways,
the rendered validate, after-switch and restart commands and health check); `publish` sends it, the
``validate`` and ``after_switch`` commands and the environment naming the release, and gets back what happened,
which it validates like anything else a host says (each step carries its phase: publish, restart or health).
The lock stays held; `phases.finish` journals and unlocks.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..connection.hostrun import ModuleFailed, NoAnswer, run_module
from ..connection.transport import ConnectionLost, NotAnswering, phase_timeout
from ..errors import DeployError, RemoteError
from ..inventory import HostConfig
from ..layout import Layout
from ..rendering.config import render_commands
from ..rendering.etc import RenderedEtc, install_args
from . import journal
from .golive import HealthCheck
from .phases import HEALTH, PUBLISH, RESTART, SWITCH
from .release import RELEASE_ID
from .target import Target, printable, release_of_link

STEP_TEXT_LIMIT = 20000
PHASES = (PUBLISH, RESTART, HEALTH)  # the phases a publish step may belong to


@dataclass(frozen=True)
class ConfigSwitch:
    """The ``etc_install`` arguments that put a release's config in place of another's, and back, plus the
    stage's validate and after-switch commands."""

    install: tuple[str, str, str]  # release etc, etc root, previous release etc ("" for none)
    restore: tuple[str, str, str]
    # etc_install's stdin for each: the deploy root, the two releases, and (installing a release just rendered)
    # the sha256 and mode of every file the laptop rendered; the host checks and records them (`etc_check`)
    check: dict[str, dict[str, Any]] = field(default_factory=dict)
    validate: tuple[str, ...] = ()
    after_switch: tuple[str, ...] = ()
    restart: dict[str, Any] | None = None  # publish's ``restart`` argument (see config.config_switch)
    health: dict[str, Any] | None = None
    health_checks: tuple[dict[str, Any], ...] = ()  # every check (a host with several roles has several)
    app_env: str = ""  # the release's env file on the host ("" for no release)


def _empty_etc(layout: Layout) -> str:
    """A directory that never exists: the "config" of no release (installing it removes the other's files)."""
    return posixpath.join(layout.root, "tools", "empty-etc")


def rendered_sums(rendered: RenderedEtc | None) -> dict[str, dict[str, Any]]:
    """The sha256 and mode of every file rendered for a host (none when the commit has no templates)."""
    if rendered is None:
        return {}
    return {
        name: {"sha256": hashlib.sha256(rendered[name]).hexdigest(), "mode": rendered.mode(name)} for name in rendered
    }


def etc_check(
    layout: Layout, release_id: str | None, previous: str | None, expected: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """``etc_install``'s stdin: which releases its two directories are, and the rendered files' sums (``None``:
    not rendered in this run, so the host checks the release against the record it kept at its deploy)."""
    return {"root": layout.root, "release": release_id, "previous": previous, "expected": expected}


def config_switch(
    target: Target,
    release_id: str | None,
    previous: str | None,
    sums: dict[str, dict[str, Any]] | None = None,
) -> ConfigSwitch:
    """The installer arguments that put ``release_id``'s config in place of ``previous``'s, and that put it back.

    A release without ``etc/`` has no config: switching to it removes the files the other one installed; so does
    switching to no release at all (``release_id`` None). ``sums``: the sha256s of the files rendered for
    ``release_id`` in this run (a deploy); without them (a rollback, a switch back) the host checks the release's
    files against the record it made at the release's deploy."""
    host, layout = target.host, target.layout
    etc_root = host.etc_root
    new_etc = layout.etc(release_id) if release_id else _empty_etc(layout)
    previous_etc = layout.etc(previous) if previous else None
    install = install_args(new_etc, etc_root, previous_etc)
    # With no previous release, restoring means removing what the new one installed.
    restore = install_args(previous_etc or _empty_etc(layout), etc_root, new_etc if release_id else None)
    rendered = render_commands(host, release_id, previous)
    check = {
        "install": etc_check(layout, release_id, previous, sums if release_id else None),
        "restore": etc_check(layout, previous, release_id, None),
    }
    return ConfigSwitch(
        install=install,
        restore=restore,
        check=check,
        validate=rendered.validate,
        after_switch=rendered.after_switch,
        restart=_restart_args(rendered) if release_id else None,  # no release: nothing to restart or check
        health=health_args(rendered.health_check) if release_id and rendered.health_check else None,
        health_checks=tuple(health_args(check) for check in rendered.health_checks) if release_id else (),
        app_env=layout.env_file(release_id) if release_id else "",
    )


def health_args(check: HealthCheck) -> dict[str, Any]:
    """The ``health`` module's arguments (a rendered check), for ``publish`` and ``survey``."""
    return asdict(check)


def _restart_args(host: HostConfig) -> dict[str, Any] | None:
    """The publish module's ``restart`` argument: the commands, or gunicorn's re-exec and its start commands."""
    restart = host.restart
    if not restart:
        return None
    gunicorn = None
    if restart.gunicorn_pidfile:
        gunicorn = {"pidfile": restart.gunicorn_pidfile, "timeout": host.timeout}
    return {"commands": list(restart.commands), "gunicorn": gunicorn, "start": list(restart.start)}


@dataclass(frozen=True)
class Step:
    """One step of a host-side module, as it reported it."""

    step: str
    ok: bool
    seconds: float
    output: str
    phase: str = PUBLISH  # publish, restart or health


@dataclass(frozen=True)
class Published:
    """What ``publish`` did on one host: ``switched`` says whether ``current`` moved; ``current`` what it names."""

    ok: bool
    switched: bool
    current: str | None
    error: str | None
    steps: tuple[Step, ...]

    def failure(self) -> str:
        """``<step> failed: <its last lines>``, as every host-side step failure reads."""
        failed = next((step for step in self.steps if not step.ok), None)
        if failed is None:
            return self.error or "publish failed"
        lines = [line.strip() for line in failed.output.splitlines() if line.strip()]
        return f"{failed.step} failed: {' | '.join(lines[-6:]) or 'no output'}"


def steps_output(steps: Sequence[Step]) -> str:
    """The steps' output, each under its title, for --verbose and failures."""
    return "\n".join(f"[{step.step}]\n{step.output}".rstrip() for step in steps if step.output.strip())


class PublishFailed(RemoteError):
    """``publish`` did not complete; ``published`` says how far it got (``switched``: current moved)."""

    def __init__(self, host: str, published: Published) -> None:
        super().__init__(host, published.failure(), output=steps_output(published.steps))
        self.published = published


def _text(value: Any, what: str, host: str) -> str:
    if not isinstance(value, str):
        raise RemoteError(host, f"publish answered a bad {what}: {value!r:.80}")
    return value[-STEP_TEXT_LIMIT:]


def parse_published(host: str, answer: dict[str, Any], asked: tuple[str | None, str | None]) -> Published:
    """Validate a host's answer: types, and a ``current`` that is one of the two releases it was asked about."""
    steps = answer.get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise RemoteError(host, "publish answered without its steps")
    parsed = tuple(
        Step(
            _text(step.get("step"), "step name", host),
            step.get("ok") is True,
            float(step["seconds"]) if isinstance(step.get("seconds"), (int, float)) else 0.0,
            _text(step.get("output", ""), "step output", host),
            step.get("phase") if step.get("phase") in PHASES else PUBLISH,
        )
        for step in steps
    )
    current = answer.get("current")
    if current not in asked or (current is not None and not RELEASE_ID.fullmatch(str(current))):
        raise RemoteError(host, f"publish answered that current is {current!r:.80}, which it was not asked about")
    error = answer.get("error")
    return Published(
        ok=answer.get("ok") is True,
        switched=answer.get("switched") is True,
        current=current,
        error=_text(error, "error", host) if error is not None else None,
        steps=parsed,
    )


def command_env(target: Target, release_id: str | None, previous: str | None) -> dict[str, str]:
    """The environment the validate, after-switch (and restart) commands run with."""
    host, layout = target.host, target.layout
    env = {
        "DEPLOYTOOL_APP": host.app,
        "DEPLOYTOOL_STAGE": host.stage,
        "DEPLOYTOOL_HOST": host.name,
        "DEPLOYTOOL_ROOT": layout.root,
        "DEPLOYTOOL_CURRENT": layout.current,
        "DEPLOYTOOL_RELEASE": release_id or "",
        "DEPLOYTOOL_RELEASE_PATH": layout.release(release_id) if release_id else "",
        "DEPLOYTOOL_PREVIOUS": previous or "",
        "DEPLOYTOOL_ETC_ROOT": host.etc_root,
    }
    for key, value in env.items():  # hosts.yml refuses a NUL already; no environment variable can carry one
        if "\x00" in value:
            raise DeployError(f"{host.name}: {key} would hold a NUL character, which no environment variable can")
    return env


def publish(
    target: Target,
    release_id: str | None,
    previous: str | None,
    config: ConfigSwitch,
    *,
    entry: journal.Entry | None = None,
) -> Published:
    """Install ``release_id``'s config (validated), point ``current`` at it and run the after-switch commands;
    ``None`` means no release (config and ``current`` removed). Raises `PublishFailed` when a step failed."""
    host, layout = target.host, target.layout
    env = command_env(target, release_id, previous)
    args = {
        "run": target.run,
        "lock_owner": layout.lock_owner,
        "record": layout.switch_record,
        "current": layout.current,
        "release": release_id,
        "link": layout.release_link(release_id) if release_id else None,
        "previous": previous,
        "entry": entry.to_json() if entry is not None else None,
        "etc": {"install": list(config.install), "restore": list(config.restore), "check": config.check},
        "sudo": host.sudo,
        "password": target.sudo_password,
        "validate": list(config.validate),
        "after_switch": list(config.after_switch),
        "restart": config.restart,
        "health": config.health,
        "health_checks": list(config.health_checks),
        "app_env": config.app_env,
        "env": env,  # each value one argument of ``env`` on the host: a newline is carried as it is
        "command_timeout": host.timeout,
        "log": target.log,
    }
    try:
        answer = run_module(target.c, target.name, host.python, "publish", args, phase=SWITCH)
    except ModuleFailed as failed:
        answer = dict(failed.result)
    except (ConnectionLost, NoAnswer) as lost:  # NoAnswer: the publish process died (killed) on a live connection
        answer = how_it_ended(target, lost, release_id, previous)
    published = parse_published(target.name, answer, (release_id, previous))
    target.state.current = published.current
    if not published.ok:
        raise PublishFailed(target.name, published)
    return published


RECONNECTS = 3  # tries to reach a host again after its connection dropped mid-publish, a second apart and more


def how_it_ended(target: Target, lost: RemoteError, release_id: str | None, previous: str | None) -> dict[str, Any]:
    """The connection dropped while ``publish`` ran, or its process ended without answering: it runs on to its end
    there (detached) unless it was killed, so reconnect (a few tries) and wait for it to end (``switch_wait``,
    within the switch's time): its answer, as if it had come back. A publish killed on the host before it ended
    answers as failed, saying whether ``current`` had moved. Raises ``lost`` (extended) when the host cannot be
    reached again or the publish still runs at the end of the wait."""
    if isinstance(lost, NotAnswering):
        raise lost  # a host that stopped answering is not tried again in this run
    layout, what = target.layout, str(lost).removeprefix(f"{target.name}: ")
    args = {"root": layout.root, "run": target.run, "wait": max(5, phase_timeout(target.host, SWITCH) - 10)}
    found: dict[str, Any] | None = None
    for attempt in range(RECONNECTS):
        time.sleep(attempt)
        try:
            found = run_module(target.c, target.name, target.host.python, "switch_wait", args, phase=SWITCH)
            break
        except NotAnswering:
            break
        except DeployError:
            continue
    if found is None:
        raise ConnectionLost(target.name, f"{what}; it could not be reached again") from None
    state = found.get("state") if isinstance(found.get("state"), str) else "?"
    if found.get("ours") is not True:
        raise ConnectionLost(target.name, f"{what}; its lock is not this run's any more") from None
    if found.get("done") is True and isinstance(found.get("answer"), dict):
        answer = dict(found["answer"])
        steps: list[Any] = answer["steps"] if isinstance(answer.get("steps"), list) else []
        note = {"step": f"reconnected after: {what}", "phase": "publish", "ok": True, "output": ""}
        return dict(answer, steps=[note, *steps])
    if found.get("running") is True:
        raise ConnectionLost(
            target.name, f"{what}; reconnected, but its publish step still runs ({printable(state)})"
        ) from None
    now = release_of_link(str(found.get("current_link") or ""), layout)
    moved = now == release_id != previous
    return {
        "ok": False,
        "switched": moved,
        "current": release_id if moved else previous,
        "error": f"{what}; its publish step was killed on the host ({printable(state)})",
        "steps": [],
    }
