"""The deploy and rollback flows across a stage's hosts: laptop checks, prepare everywhere, then go live.

    deploy:   plan (laptop only: commit, requirements, config)  ->  connect
              -> prepare on every host in parallel (check + lock, push, build: `phases`)
              -> publish batch by batch (config, current, after-switch, restart, health), then finish
                 everywhere (journal, prune, unlock): `rollout`
    rollback: connect -> check + lock everywhere -> choose one target for all -> publish and finish, batch by batch

Prepare and publish are separate so that nothing goes live until every host is ready.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..connection.fleet import connected, describe_failures, interruption, on_each, terminate_as_interrupt
from ..connection.transport import interrupt
from ..errors import DeployError
from ..inventory import MIGRATE_ROLE, HostConfig, Inventory
from ..rendering import appsecrets
from ..rendering.config import payload, render_commands, render_commit, render_env
from ..rendering.etc import RenderedEtc
from ..reporting import deploylog
from ..reporting.events import EventLog
from ..reporting.report import RunReport
from ..supply.pins import check_pins, target_python
from . import deploylock, journal, migrations, phases, sudo
from .publish import command_env
from .release import Release, check_release_id, resolve_commit
from .release_claim import mint_unclaimed
from .rollout import Rollout, abort_all, deploy_batches, failed_deploy, interrupted_batches, rollback_batches
from .target import Target


@dataclass
class Plan:
    """Everything a deploy decides on the laptop before any host is touched."""

    release: Release
    hosts: tuple[HostConfig, ...]
    install: dict[str, phases.InstallPlan] = field(default_factory=dict)  # host name -> what to install
    rendered: dict[str, RenderedEtc] = field(default_factory=dict)  # host name -> its config ({}: no templates)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # host name -> the app's env (secrets in)
    commands: dict[str, HostConfig] = field(default_factory=dict)  # host name -> its settings, commands rendered

    def app_run(self, target: Target, migrate: bool = False) -> phases.AppRun:
        """What the app's commands run with on ``target``: its env, deploytool's variables, and its ``build``
        (or ``migrate``) commands."""
        rendered = self.commands.get(target.name, target.host)
        return phases.AppRun(
            self.env.get(target.name, {}),
            command_env(target, self.release.id, target.state.current),
            rendered.migrate if migrate else rendered.build,
        )

    def migrate_host(self) -> str | None:
        """The host that runs the ``migrate`` commands: the first with the role ``migrate`` (None: no step)."""
        host = next((host for host in self.hosts if MIGRATE_ROLE in host.roles), None)
        return host.name if host is not None and host.migrate else None

    def migrate_note(self) -> str | None:
        """A line saying why a stage with ``migrate`` commands runs none this time (no selected host has the role
        ``migrate``), or None."""
        if not self.hosts or not self.hosts[0].migrate or self.migrate_host() is not None:
            return None
        return (
            "Note: migrate is not run: none of the hosts this deploy goes to has the role migrate "
            "(deploy to it too, or run the migrate commands with fab run)"
        )


def _prepare(plan: Plan, project_root: Path, target: Target, log: EventLog, run: str) -> None:
    release, name = plan.release, target.name
    target.log = deploylog.spec(target, release.id, "deploy", run)
    try:
        with log.phase(name, phases.CHECK):
            state = deploylock.take(target, deploylock.owner("deploy", release.id), log)
            _check_python(target, state.python_version)
        with log.phase(name, phases.PUSH):  # the pack of what the host lacks: it travels with the build call
            pack = phases.commit_pack(str(project_root), release.commit, state.deploy_head)
        rendered = plan.rendered.get(name)
        with log.phase(name, phases.BUILD) as record:
            config = payload(rendered) if rendered is not None else None
            record.output = phases.build(target, release, plan.install[name], config, pack, plan.app_run(target))
    except Exception as error:
        phases.abort(target, release.id, failed_deploy(release, target, error))
        raise


def _check_python(target: Target, actual: str | None) -> None:
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


def _stop(target: Target) -> None:
    # A check under way is not cut short: it may have taken the lock, and only its answer says so (then the
    # clean-up releases it). It takes a fraction of a second; anything later is cut.
    interrupt(target.c, spare=(phases.CHECK,))


def _currents(targets: Sequence[Target]) -> dict[str, str | None]:
    return {target.name: target.state.current for target in targets}


def run_deploy(
    plan: Plan,
    project_root: Path,
    report: RunReport | None = None,
    password: str | None = None,
    ask_password: sudo.AskPassword | None = None,
    batch_size: int | str | None = None,
    skip_migrate: bool = False,
) -> RunReport:
    """Prepare the release on every host, run ``migrate`` once (on the first host with role ``migrate``, every
    lock held), then make it live batch by batch (`rollout.deploy_batches`); any failure before the switch leaves
    every host's ``current`` untouched and the half-built release removed, a failed batch puts every switched host
    back. Without ``password``, sudo hosts that need one get it from ``ask_password``; ``batch_size`` overrides
    hosts.yml's; ``skip_migrate`` skips the migrate step (journaled). Fills ``report`` as it goes."""
    release = plan.release
    report = report or RunReport("deploy", plan.hosts[0].stage, release.id, release.commit, EventLog())
    log, live = report.log, set[str]()
    limit = plan.hosts[0].parallel
    targets: list[Target] = []
    try:
        with terminate_as_interrupt(), connected(plan.hosts, password, log) as targets:
            if password is None and ask_password is not None:
                sudo.passwords(targets, ask_password)
            try:
                prepared = on_each(
                    targets, lambda t: _prepare(plan, project_root, t, log, report.run), lambda t: t.name, _stop, limit
                )
            except KeyboardInterrupt as stop:
                stuck = abort_all(targets, release, f"{interruption(stop)} on the laptop", limit)
                raise DeployError(
                    f"{interruption(stop)}: no host was switched; the half-built releases were removed{stuck}"
                ) from None
            if prepared.failed:
                # The failed hosts cleaned up after themselves where they could; the prepared ones are still locked.
                failed = ", ".join(t.name for t, _ in prepared.failed) + " failed"
                stuck = abort_all(targets, release, failed, limit)
                raise DeployError(
                    describe_failures("deploy", [(t.name, e) for t, e in prepared.failed])
                    + f"\nNo host was switched; current is unchanged everywhere.{stuck}"
                )
            note = _migrate(plan, targets, log, skip_migrate, limit)
            rollout = Rollout(targets, log, _batch_size(plan.hosts, batch_size), limit, finished=live)
            try:
                deploy_batches(rollout, release, plan.rendered, note)
            except KeyboardInterrupt as stop:
                # A host-side step under way runs to its end whatever happens here: it is waited for.
                raise DeployError(interrupted_batches(stop, rollout, release.id, release)) from None
            return report
    except DeployError as error:
        report.error = str(error)
        raise
    finally:
        report.settle([host.name for host in plan.hosts], _currents(targets), live)


def _migrate(plan: Plan, targets: Sequence[Target], log: EventLog, skip: bool, limit: int) -> str | None:
    """Run the ``migrate`` commands once, on the migrate host, every host prepared and locked, none switched.
    A failure aborts everywhere (no host switches). Returns the journal's note for a skipped migrate, or None."""
    name = plan.migrate_host()
    if name is None:
        return None
    if skip:
        return f"migrate skipped (--skip-migrate; {name} would have run it)"
    target = next(target for target in targets if target.name == name)
    try:
        with log.phase(name, phases.MIGRATE) as record:
            record.output = phases.migrate(target, plan.release, plan.app_run(target, migrate=True))
    except KeyboardInterrupt as stop:
        stuck = abort_all(targets, plan.release, f"{interruption(stop)} on the laptop during migrate", limit)
        raise DeployError(
            f"{interruption(stop)} during migrate on {name}: no host was switched; the half-built releases were "
            f"removed (the database may be partly migrated){stuck}"
        ) from None
    except Exception as error:
        stuck = abort_all(targets, plan.release, f"migrate failed on {name}", limit)
        output = str(getattr(error, "output", "") or "").strip()
        said = f"\n{output}" if output else ""
        raise DeployError(
            f"migrate on {name} failed: {error}{said}\nNo host was switched; current is unchanged everywhere.{stuck}"
        ) from None
    return None


def _batch_size(hosts: Sequence[HostConfig], override: int | str | None) -> int | str | None:
    """``--batch-size`` if given, else the stage's ``batch_size`` (a stage setting: every host has the same)."""
    return override if override is not None else hosts[0].batch_size


def choose_rollback_target(targets: Sequence[Target], to: str | None) -> str:
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
    split = _split_fleet_target(targets, choices)
    if split is not None:
        return split
    none = [name for name, choice in choices.items() if choice is None]
    if none:
        raise DeployError(f"no earlier good release to roll back to on {', '.join(none)}; nothing was switched")
    distinct = set(choices.values())
    if len(distinct) > 1:
        listing = ", ".join(f"{name}: {choice}" for name, choice in choices.items())
        raise DeployError(f"hosts disagree on the previous release ({listing}); choose one with --to ID")
    return distinct.pop()  # type: ignore[return-value]


def _split_fleet_target(targets: Sequence[Target], choices: dict[str, str | None]) -> str | None:
    """A fleet split by an interrupted deploy (its first batches live on the new release, the rest still on the
    release they had): rolling back means every host on the release the others are still on. That is the one
    release R, if there is exactly one, that every host either is on already or would roll back to, and that
    some host is not on yet."""
    currents = {t.name: t.state.current for t in targets}
    if len(set(currents.values())) < 2:
        return None
    candidates = {choice for choice in choices.values() if choice is not None}
    fits = [
        release
        for release in candidates
        if all(currents[name] == release or choices[name] == release for name in currents)
        and any(currents[name] != release for name in currents)
    ]
    return fits[0] if len(fits) == 1 else None


def run_rollback(
    hosts: Sequence[HostConfig],
    to: str | None,
    report: RunReport | None = None,
    password: str | None = None,
    ask_password: sudo.AskPassword | None = None,
    batch_size: int | str | None = None,
    force: bool = False,
    project_root: Path | None = None,
) -> str:
    """Switch every host back to the previous good release (or ``to``), batch by batch, restarted and checked;
    installs nothing. A target lacking migration files the current release has is refused (the laptop's git in
    ``project_root`` compares them) unless ``force``, which the journal records."""
    report = report or RunReport("rollback", hosts[0].stage, to, None, EventLog())
    log, done = report.log, set[str]()
    limit = hosts[0].parallel
    targets: list[Target] = []

    def lock(target: Target) -> None:
        with log.phase(target.name, phases.CHECK):
            deploylock.take(target, deploylock.owner("rollback", to or ""), log)

    try:
        with terminate_as_interrupt(), connected(hosts, password, log) as targets:
            if password is None and ask_password is not None:
                sudo.passwords(targets, ask_password)
            try:
                locked = on_each(targets, lock, lambda t: t.name, _stop, limit)
            except KeyboardInterrupt as stop:
                raise DeployError(f"{interruption(stop)}: no host was switched{abort_all(targets)}") from None
            if locked.failed:
                stuck = abort_all(targets, limit=limit)
                raise DeployError(describe_failures("rollback", [(t.name, e) for t, e in locked.failed]) + stuck)
            try:
                chosen = choose_rollback_target(targets, to)
                for target in targets:  # a command template that cannot render stops the rollback here
                    render_commands(target.host, chosen, target.state.current)
                note = _migrations_check(targets, chosen, project_root, force)
                if note:
                    report.notes.append(note)
            except DeployError:
                abort_all(targets, limit=limit)
                raise
            report.release = chosen
            for target in targets:
                target.log = deploylog.spec(target, chosen, "rollback", report.run)
            rollout = Rollout(targets, log, _batch_size(hosts, batch_size), limit, finished=done)
            try:
                rollback_batches(rollout, chosen, note)
            except KeyboardInterrupt as stop:
                raise DeployError(interrupted_batches(stop, rollout, chosen, None)) from None
            return chosen
    except DeployError as error:
        report.error = str(error)
        raise
    finally:
        report.settle([host.name for host in hosts], _currents(targets), done)


def _commit_of(target: Target, release_id: str | None) -> str | None:
    """The commit of a release on ``target``, by its journal (validated commit ids)."""
    return next((e.commit for e in reversed(target.state.entries) if e.release == release_id and e.commit), None)


def _migrations_check(targets: Sequence[Target], chosen: str, project_root: Path | None, force: bool) -> str | None:
    """Refuse a rollback to ``chosen`` when it lacks migration files a host's current release has (the database
    keeps them), unless ``force``; returns the journal's note for a forced one."""
    if project_root is None:
        return None
    lost: dict[str, list[str]] = {}
    for target in targets:
        current, target_commit = _commit_of(target, target.state.current), _commit_of(target, chosen)
        if target.state.current == chosen or current is None or target_commit is None or current == target_commit:
            continue
        try:
            files = migrations.lost_on_rollback(project_root, current, target_commit, target.host.migrations)
        except DeployError:
            if force:
                continue
            raise
        if files:
            lost[target.name] = files
    if not lost:
        return None
    files = sorted({path for paths in lost.values() for path in paths})
    listing = ", ".join(files)
    if not force:
        raise DeployError(
            f"release {chosen} lacks migration files the current release has ({', '.join(lost)}): {listing}; "
            "the database keeps these migrations: migrate it back first (fab run -- ...), or roll back with --force"
        )
    return f"forced (--force): the database keeps migrations {chosen} lacks: {listing}"


def plan_deploy(inventory: Inventory, hosts: Sequence[HostConfig], ref: str) -> Plan:
    """Decide the release on the laptop: resolve the commit and mint one id for every host."""
    commit = resolve_commit(inventory.project_root, ref)
    pins = check_pins(inventory, tuple(hosts), commit)
    inventory_digest = hashlib.sha256(inventory.path.read_bytes()).hexdigest()  # recorded in the manifest
    release = mint_unclaimed(inventory.app, commit)  # never an id a deploy from here had before
    plan = Plan(release=replace(release, hosts_yml_digest=inventory_digest), hosts=tuple(hosts))
    plan.install = {name: checked.install for name, checked in pins.items()}
    secrets = appsecrets.load(hosts[0].secrets, inventory.project_root, inventory.path)  # the stage's source
    plan.rendered = render_commit(inventory, hosts, plan.release.id, commit, secrets)
    for host in hosts:  # a template that cannot render (a missing secret) stops the deploy before any host is touched
        plan.commands[host.name] = render_commands(host, plan.release.id, None)
        plan.env[host.name] = render_env(host, plan.release.id, secrets)
    return plan
