"""The deploy and rollback flows across a stage's hosts: laptop checks, prepare everywhere, then switch.

    deploy:   plan (laptop only: commit, requirements, config)  ->  connect
              -> prepare on every host in parallel (check + lock, push, build)
              -> switch every host (config, current, after-switch, journal, prune, unlock)
    rollback: connect -> check + lock everywhere -> choose one target for all -> switch everywhere

"prepare" and "switch" are separate phases so that nothing goes live until every host is ready.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import journal, phases
from .config import config_switch, payload, render_commit
from .errors import DeployError, LockedError
from .etc import RenderedEtc
from .events import FAILED, INTERRUPTED, OK, Event, EventLog, reason_of
from .fleet import Interrupted, Results, describe_failures, interruption, on_each, terminate_as_interrupt
from .inventory import HostConfig, Inventory
from .pins import check_pins, target_python
from .release import Release, check_release_id, deployer, resolve_commit, utc_now
from .report import HostOutcome, RunReport
from .switch import PublishFailed, publish
from .transport import ConnectionLost, close, connect, interrupt, resume


@dataclass
class Plan:
    """Everything a deploy decides on the laptop before any host is touched."""

    release: Release
    hosts: tuple[HostConfig, ...]
    install: dict[str, phases.InstallPlan] = field(default_factory=dict)  # host name -> what to install
    rendered: dict[str, RenderedEtc] = field(default_factory=dict)  # host name -> its config ({}: no templates)


def _owner(action: str, release: str) -> dict[str, str | int]:
    """Who holds a lock: what for, who, since when, and which process on which machine (so that a later run on
    the same machine can tell that the holder is gone)."""
    return {
        "action": action,
        "release": release,
        "user": deployer(),
        "since": _now(),
        "machine": socket.gethostname(),
        "pid": os.getpid(),
    }


def _holder_is_gone(owner_text: str) -> bool:
    """The lock was taken by a process of this machine that no longer runs (a killed ``fab``)."""
    try:
        owner = json.loads(owner_text)
    except ValueError:
        return False
    if not isinstance(owner, dict) or owner.get("machine") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _lock(target: phases.Target, owner: dict[str, str | int], log: EventLog) -> phases.HostState:
    """Take the host's lock (`phases.check`); a lock left by a run of this machine that is gone is taken over,
    after recording what that run's publish step completed, and the progress says so."""
    try:
        return phases.check(target, owner)
    except LockedError as locked:
        if not _holder_is_gone(locked.owner):
            raise
        lost = phases.unlock(target, only_if_owner=locked.owner)
        if lost is None:  # someone else cleared or took it meanwhile
            raise
        state = phases.check(target, owner)
        now = time.time()
        note = f"took over the lock of {lost.holder} (that process is gone){lost.standing}"
        log.add(Event(target.name, "takeover", OK, now, now, note))
        return state


def _now() -> str:
    return utc_now().isoformat(timespec="seconds")


AskPassword = Callable[[list[str]], str]


def configured_sudo_password(hosts: Sequence[HostConfig], config: Any) -> str | None:
    """The sudo password as Fabric users give it (config ``sudo.password``: ``fab --prompt-for-sudo-password``,
    the environment variable FABRIC_SUDO_PASSWORD, a fabric.yml), when any host uses sudo; never stored."""
    if not any(host.sudo for host in hosts):
        return None
    return (config.get("sudo") or {}).get("password") or None


def ask_sudo_password(hosts: list[str]) -> str:
    """Ask once on the terminal for the password ``hosts`` need for sudo; without a terminal, say how to give it."""
    how = (
        f"sudo: true, and the deploy user needs a password for sudo on {', '.join(hosts)}: give it with "
        "fab --prompt-for-sudo-password or in the environment variable FABRIC_SUDO_PASSWORD "
        "(or allow the deploy user passwordless sudo there)"
    )
    if not sys.stdin.isatty():
        raise DeployError(f"{how}; there is no terminal to ask on. Nothing was changed")
    try:
        return getpass.getpass("sudo password for the deploy user (used for /etc and service commands): ")
    except EOFError:
        raise DeployError(f"{how}. Nothing was changed") from None


def _sudo_passwords(targets: Sequence[phases.Target], ask: AskPassword) -> None:
    """Before anything is locked or built: hosts where ``sudo -n true`` works need no password; for the others
    ``ask`` once."""
    sudo = [target for target in targets if target.host.sudo]
    if not sudo:
        return
    probed = on_each(sudo, phases.sudo_without_password, lambda t: t.name)
    needing = [t for t, free in probed.done if not free] + [t for t, _ in probed.failed]
    if needing:
        password = ask(sorted((t.name for t in needing), key=[t.name for t in targets].index))
        for target in needing:
            target.password = password


@contextmanager
def connected(
    hosts: Sequence[HostConfig], password: str | None = None, log: EventLog | None = None
) -> Iterator[list[phases.Target]]:
    """Open connections to every host in parallel, or fail naming each host that could not be reached."""
    log = log or EventLog()

    def open_one(host: HostConfig) -> phases.Target:
        with log.phase(host.name, "connect"):
            return phases.Target(host, connect(host), password)

    try:
        results = on_each(hosts, open_one, lambda host: host.name)
    except Interrupted as stop:
        for _, target in stop.results.done:
            close(target.c)
        raise DeployError(f"{interruption(stop)} while connecting: nothing was changed") from None
    targets = [target for _, target in results.done]
    try:
        if results.failed:
            raise DeployError(describe_failures("connecting", [(host.name, error) for host, error in results.failed]))
        yield sorted(targets, key=lambda target: [h.name for h in hosts].index(target.name))
    finally:
        for target in targets:
            close(target.c)


def _prepare(plan: Plan, project_root: Path, target: phases.Target, log: EventLog) -> None:
    release, name = plan.release, target.name
    try:
        with log.phase(name, "check"):
            state = _lock(target, _owner("deploy", release.id), log)
            _check_python(target, state.python_version)
        with log.phase(name, "push"):
            phases.push(target, str(project_root), release.commit)
        rendered = plan.rendered.get(name)
        with log.phase(name, "build"):
            phases.build(target, release, plan.install[name], payload(rendered) if rendered is not None else None)
    except Exception as error:
        phases.abort(target, release.id, _failed_deploy(release, target, error))
        raise


def _check_python(target: phases.Target, actual: str | None) -> None:
    """Requirements were checked for ``target_python``; a host running another Python must not install them
    (a marker like ``python_full_version < '3.11.3'`` can change what must be pinned)."""
    host, assumed = target.host, target_python(target.host).python_version
    if actual == assumed:
        return
    if host.python_version:
        raise DeployError(f"{host.name}: {host.python} is Python {actual}, but hosts.yml says python_version {assumed}")
    raise DeployError(
        f"{host.name}: {host.python} is Python {actual}, but the requirements were checked for this machine's "
        f'Python {assumed} (hosts.yml sets no python_version); set python_version: "{actual}" for the stage or host'
    )


def _entry(
    target: phases.Target, event: str, release_id: str, commit: str | None, failure: object = None, **fields: str
) -> journal.Entry:
    """A journal line for ``target``: ok, or failed with the reason ``failure`` (``fields`` override)."""
    status = "failed" if failure is not None else "ok"
    reason = reason_of(target.name, failure) if failure is not None else None
    entry = journal.Entry(event, release_id, status, target.state.current, commit, deployer(), _now(), reason)
    return replace(entry, **fields)


def _failed_deploy(release: Release, target: phases.Target, error: object) -> journal.Entry:
    return _entry(target, "deploy", release.id, release.commit, error)


def _abort_all(targets: Sequence[phases.Target], release: Release | None = None, reason: str = "") -> str:
    """Clean up every host this run still holds: the half-built ``release`` removed and its failure journaled
    (for a deploy), the lock released. Hosts it does not hold (never locked, already cleaned up) are left alone.
    Returns a note naming the hosts that could not be cleaned up (not answering), or ""."""

    def clean(target: phases.Target) -> None:
        resume(target.c)  # after an interruption: cleaning up reconnects where it must
        if release is None:
            phases.abort(target, None, None)
        else:
            phases.abort(target, release.id, _failed_deploy(release, target, reason))

    on_each(targets, clean, lambda t: t.name)
    stuck = [target for target in targets if target.locked]
    if not stuck:
        return ""
    names = ",".join(target.name for target in stuck)
    return (
        f"\nStill locked by this run (could not be reached to clean up): {names.replace(',', ', ')}; once they "
        f"answer: fab unlock --stage {stuck[0].host.stage} --hosts {names}"
    )


def _stop(target: phases.Target) -> None:
    interrupt(target.c)


def _prune_list(target: phases.Target, entry: journal.Entry) -> list[str]:
    entries = [*target.state.entries, entry]
    present = [*target.state.releases, entry.release]
    return journal.releases_to_prune(entries, present, target.host.keep_releases, current=entry.release)


def _outcomes(report: RunReport, hosts: Sequence[HostConfig], targets: Sequence[phases.Target], ok: set[str]) -> None:
    """Each host's outcome from its events: failed with its first failure's reason, interrupted, ok (``ok``
    names the hosts the flow finished), or not switched; and the release its ``current`` names now."""
    current = {target.name: target.state.current for target in targets}
    report.outcomes = []
    for host in hosts:
        events = report.log.of(host.name)
        failed = next((event for event in events if event.result == FAILED), None)
        interrupted = next((event for event in events if event.result == INTERRUPTED), None)
        if failed is not None:
            result, reason = "failed", failed.reason
        elif interrupted is not None:
            result, reason = "interrupted", f"interrupted during {interrupted.phase}"
        elif host.name in ok:
            result, reason = "ok", None
        else:
            result, reason = "unchanged", "not switched: " + (report.error or "the run stopped").split("\n")[0]
        report.outcomes.append(HostOutcome(host.name, result, current.get(host.name), reason))


def run_deploy(
    plan: Plan,
    project_root: Path,
    report: RunReport | None = None,
    password: str | None = None,
    ask_password: AskPassword | None = None,
) -> RunReport:
    """Prepare the release on every host, then switch them all; any failure before a host's switch leaves
    that host's ``current`` untouched and its half-built release removed. Without ``password``, sudo hosts that
    need one get it from ``ask_password``. Fills ``report`` as it goes."""
    release = plan.release
    report = report or RunReport("deploy", plan.hosts[0].stage, release.id, release.commit, EventLog())
    log, live = report.log, set[str]()
    targets: list[phases.Target] = []
    try:
        with terminate_as_interrupt(), connected(plan.hosts, password, log) as targets:
            if password is None and ask_password is not None:
                _sudo_passwords(targets, ask_password)
            try:
                prepared = on_each(
                    targets, lambda t: _prepare(plan, project_root, t, log), lambda t: t.name, cancel=_stop
                )
            except KeyboardInterrupt as stop:
                stuck = _abort_all(targets, release, f"{interruption(stop)} on the laptop")
                raise DeployError(
                    f"{interruption(stop)}: no host was switched; the half-built releases were removed{stuck}"
                ) from None
            if prepared.failed:
                # The failed hosts cleaned up after themselves where they could; the prepared ones are still locked.
                stuck = _abort_all(targets, release, ", ".join(t.name for t, _ in prepared.failed) + " failed")
                raise DeployError(
                    describe_failures("deploy", [(t.name, e) for t, e in prepared.failed])
                    + f"\nNo host was switched; current is unchanged everywhere.{stuck}"
                )
            try:
                switched = on_each(targets, lambda target: _go_live(target, release, log), lambda t: t.name)
            except KeyboardInterrupt as stop:
                # A host-side step under way runs to its end whatever happens here: it is waited for.
                raise DeployError(_interrupted_switch(stop, targets, release.id, release)) from None
            live.update(target.name for target, _ in switched.done)
            if switched.failed:
                raise DeployError(describe_failures("switch", [(t.name, e) for t, e in switched.failed]))
            return report
    except DeployError as error:
        report.error = str(error)
        raise
    finally:
        _outcomes(report, plan.hosts, targets, live)


def _interrupted_switch(
    stop: KeyboardInterrupt, targets: Sequence[phases.Target], live_on: str, release: Release | None
) -> str:
    """Clean up the hosts an interruption kept from switching, and say where every host stands."""
    results: Results[phases.Target, object] = (
        stop.results if isinstance(stop, Interrupted) else Results([], [], list(targets))
    )
    reason = f"{interruption(stop)} on the laptop before this host switched"
    stuck = _abort_all(results.not_started, release, reason)
    where = {target.name: f"{target.name}: live on {live_on}" for target, _ in results.done}
    where |= {target.name: str(error) for target, error in results.failed}
    where |= {
        t.name: f"{t.name}: still on {t.state.current or 'no release'} (not switched)" for t in results.not_started
    }
    lines = [where[target.name] for target in targets if target.name in where]
    return f"{interruption(stop)} during the switch; where each host stands:\n  " + "\n  ".join(lines) + stuck


def _lost_in_switch(target: phases.Target, error: ConnectionLost) -> str:
    """The host's connection dropped (or it stopped answering) during its switch: say where ``current`` points
    now if the host can be reached again, and release this run's lock there."""
    phases.abort(target, None, None)
    try:
        now = phases.read_state(target).current or "no release"
    except DeployError:
        return f"{error}; where {target.name} stands is unknown: check it (fab releases), then deploy or roll back"
    return f"{error}; {target.name} is on {now} now (the switch was cut short: check it, then deploy or roll back)"


def _go_live(target: phases.Target, release: Release, log: EventLog) -> None:
    """Publish ``release`` on one host and finish; an after-switch failure switches the host back."""
    name, previous = target.name, target.state.current
    entry = _entry(target, "deploy", release.id, release.commit)
    try:
        with log.phase(name, "publish") as record:
            config = config_switch(target, release.id, previous)
            published = publish(target, release.id, previous, config, entry=entry)
            record.output = published.output
    except ConnectionLost as error:
        raise DeployError(_lost_in_switch(target, error)) from None
    except PublishFailed as error:
        if error.published.switched:
            _switch_back(target, release, previous, error, log)
        phases.abort(target, release.id, _failed_deploy(release, target, error))
        raise DeployError(f"{error}; {name} is still on {previous or 'no release'}") from None
    try:
        with log.phase(name, "finish"):
            phases.finish(target, entry, prune=_prune_list(target, entry))
    except DeployError as error:
        raise DeployError(
            f"{error}; {name} is live on {release.id} all the same, and its lock is kept: check its journal, "
            f"then fab unlock --stage {target.host.stage} --hosts {name}"
        ) from None


def _switch_back(
    target: phases.Target, release: Release, previous: str | None, error: PublishFailed, log: EventLog
) -> None:
    """Point ``current`` at ``previous`` again, with its config, after a failed after-switch command, then clean
    up; always raises the `DeployError` that says where the host ended."""
    name, problem, back = target.name, "", False
    try:
        with log.phase(name, "revert"):
            publish(target, previous, release.id, config_switch(target, previous, release.id))
        back = True
    except PublishFailed as again:
        back, problem = again.published.switched, reason_of(name, again)  # current moved back even if a hook failed
    except DeployError as again:
        problem = reason_of(name, again)
    if not back:
        # Neither forward nor back: say so, keep the release current points at, and free the host.
        phases.abort(target, None, _failed_deploy(release, target, f"{error}; switching back failed"))
        raise DeployError(
            f"{error}; switching back to {previous or 'no release'} failed too ({problem}): "
            f"{name} is on {release.id} (check the host, then fab rollback or fab deploy)"
        ) from None
    back_entry = (
        []
        if previous is None
        else [_entry(target, "rollback", previous, None, previous=release.id, reason="switch back")]
    )
    failed = _failed_deploy(release, target, error)
    with suppress(Exception):
        phases.finish(target, *back_entry, failed, remove=[release.id], unlock="always")
    on_the_way = f" (on the way back: {problem})" if problem else ""
    raise DeployError(f"{error}; {name} is back on {previous or 'no release'}{on_the_way}") from None


def choose_rollback_target(targets: Sequence[phases.Target], to: str | None) -> str:
    """One release every host can return to: ``to`` if given, else each host's previous good release,
    which must agree. Refused before any host is switched."""
    if to is not None:
        check_release_id(to)
        missing = [t.name for t in targets if to not in t.state.releases]
        if missing:
            raise DeployError(f"release {to} is not on {', '.join(missing)}; nothing was switched (see: fab releases)")
        failed = [t.name for t in targets if to not in journal.good_releases(t.state.entries)]
        if failed:
            raise DeployError(f"release {to} never went live on {', '.join(failed)}; refusing to switch to it")
        return to
    choices = {t.name: journal.rollback_target(t.state.entries, t.state.current, t.state.releases) for t in targets}
    none = [name for name, choice in choices.items() if choice is None]
    if none:
        raise DeployError(f"no earlier good release to roll back to on {', '.join(none)}; nothing was switched")
    distinct = set(choices.values())
    if len(distinct) > 1:
        listing = ", ".join(f"{name}: {choice}" for name, choice in choices.items())
        raise DeployError(f"hosts disagree on the previous release ({listing}); choose one with --to ID")
    return distinct.pop()  # type: ignore[return-value]


def run_rollback(
    hosts: Sequence[HostConfig],
    to: str | None,
    report: RunReport | None = None,
    password: str | None = None,
    ask_password: AskPassword | None = None,
) -> str:
    """Switch every host back to the previous good release (or ``to``); installs nothing."""
    report = report or RunReport("rollback", hosts[0].stage, to, None, EventLog())
    log, done = report.log, set[str]()
    targets: list[phases.Target] = []

    def lock(target: phases.Target) -> None:
        with log.phase(target.name, "check"):
            _lock(target, _owner("rollback", to or ""), log)

    def switch_one(target: phases.Target, chosen: str) -> None:
        current = target.state.current
        if current == chosen:
            with log.phase(target.name, "finish"):
                phases.finish(target)
            return
        commit = next((e.commit for e in target.state.entries if e.release == chosen and e.commit), None)
        entry = _entry(target, "rollback", chosen, commit)
        try:
            with log.phase(target.name, "publish") as record:
                config = config_switch(target, chosen, current)
                record.output = publish(target, chosen, current, config, entry=entry).output
        except ConnectionLost as error:
            raise DeployError(_lost_in_switch(target, error)) from None
        except PublishFailed as error:
            # The journal records where current points: a rollback whose after-switch command failed did
            # move it (status ok, with the failure as the reason); one whose config was rejected did not.
            status = "ok" if error.published.switched else "failed"
            phases.abort(target, None, replace(entry, status=status, reason=reason_of(target.name, error)))
            where = f"current is now {chosen}" if error.published.switched else f"current is still {current}"
            raise DeployError(f"{error}; {where}") from None
        with log.phase(target.name, "finish"):
            phases.finish(target, entry)

    try:
        with terminate_as_interrupt(), connected(hosts, password, log) as targets:
            if password is None and ask_password is not None:
                _sudo_passwords(targets, ask_password)
            try:
                locked = on_each(targets, lock, lambda t: t.name, cancel=_stop)
            except KeyboardInterrupt as stop:
                raise DeployError(f"{interruption(stop)}: no host was switched{_abort_all(targets)}") from None
            if locked.failed:
                stuck = _abort_all(targets)
                raise DeployError(describe_failures("rollback", [(t.name, e) for t, e in locked.failed]) + stuck)
            try:
                chosen = choose_rollback_target(targets, to)
            except DeployError:
                _abort_all(targets)
                raise
            report.release = chosen
            try:
                results = on_each(targets, lambda target: switch_one(target, chosen), lambda t: t.name)
            except KeyboardInterrupt as stop:
                raise DeployError(_interrupted_switch(stop, targets, chosen, None)) from None
            done.update(target.name for target, _ in results.done)
            results.raise_if_failed("rollback", lambda t: t.name)
            return chosen
    except DeployError as error:
        report.error = str(error)
        raise
    finally:
        _outcomes(report, hosts, targets, done)


def plan_deploy(inventory: Inventory, hosts: Sequence[HostConfig], ref: str) -> Plan:
    """Decide the release on the laptop: resolve the commit and mint one id for every host."""
    commit = resolve_commit(inventory.project_root, ref)
    pins = check_pins(inventory, tuple(hosts), commit)
    inventory_digest = hashlib.sha256(inventory.path.read_bytes()).hexdigest()  # recorded in the manifest
    plan = Plan(release=replace(Release.mint(commit), hosts_yml_digest=inventory_digest), hosts=tuple(hosts))
    plan.install = {name: checked.install for name, checked in pins.items()}
    plan.rendered = render_commit(inventory, hosts, plan.release.id, commit)
    return plan
