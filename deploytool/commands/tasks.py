"""The ``fab`` tasks: deploy, rollback, releases, unlock (plus the requirements, mirror and etc tasks).

A project's fabfile needs one line: ``from deploytool import ns``.
"""

from __future__ import annotations

import contextlib
import json as json_module
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from ..errors import DeployError, task_boundary
from . import typos
from .common import HOSTS_HELP, ROLES_HELP, STAGE_HELP, HostsTask, selected_hosts
from .confirm import YES_HELP
from .tasks_mirror import mirror_tasks, requirements_tasks
from .tasks_run import install as install_run
from .tasks_run import run
from .tasks_status import audit, status

# What only some tasks need is imported in their bodies: `fab --list` (and a task that needs none of it) starts
# without the deploy flow, paramiko's transport use, Jinja2 (and asyncio), packaging or the mirror's index code.
if TYPE_CHECKING:
    from ..flow import deploylock
    from ..flow.target import Target
    from ..inventory import HostConfig
    from ..reporting.report import RunReport

JSON_HELP = "print one JSON document (documented in the README) instead of progress lines and a table"
VERBOSE_HELP = "show what each host printed in every phase, not only in a failed one"


def _run_and_report(
    report: RunReport,
    hosts: Sequence[HostConfig],
    project_root: Path,
    as_json: bool,
    verbose: bool,
    run: Callable[[], object],
) -> None:
    """Run a flow with progress lines (or silently, for --json), then print the summary (or the document); a
    failure still prints them, then ends in the one-line ``Error:``. The stage's ``notify`` commands run last,
    whatever the outcome, and never change it."""
    from ..connection.hostrun import step_listener
    from ..connection.transport import show_library_messages
    from ..reporting import deploylog, live
    from ..reporting.notify import notify
    from ..reporting.report import Progress, dumps

    show_library_messages(verbose)
    names = [host.name for host in hosts]
    path = deploylog.laptop_path(hosts[0].app, report.stage, report.run, report.command)
    laptop_log = deploylog.LaptopLog(path, deploylog.header(report.command, report.stage, report.release, names,
                                                            report.run))  # fmt: skip
    report.log_path = str(laptop_log.path) if laptop_log.path else None
    show = live.Live(names) if live.wanted(as_json) else None
    report.log.listeners = [laptop_log, *([] if as_json else [Progress(names, verbose=verbose, live=show)])]
    ok = False
    try:
        with step_listener(show.step) if show else contextlib.nullcontext():
            run()
        ok = report.ok
    except DeployError as error:
        if any(event.phase not in ("connect", "check") for event in report.log.events):  # hosts worked and logged
            raise DeployError(f"{error}\n{where_logs(report)}") from None
        raise
    finally:
        if show is not None:
            show.close()
        laptop_log.end(report.summary(), report.error)
        print(dumps(report.to_json()) if as_json else "\n" + report.summary())
        sys.stdout.flush()
        notify(hosts, report, ok, project_root)


def where_logs(report: RunReport) -> str:
    """Where a failed run's whole log is: the laptop's file, and each host's (``fab log``)."""
    here = f"{report.log_path}; " if report.log_path else ""
    release = f" --release {report.release}" if report.release else ""
    return f"The whole log: {here}each host's: fab log --stage {report.stage}{release}"


BATCH_HELP = 'hosts per batch: a number or a percentage like "25%" (default: hosts.yml batch_size, else all)'


def parse_batch_size(value: str | None) -> int | str | None:
    """``--batch-size`` as hosts.yml takes it: a whole number, or a percentage."""
    from ..flow.golive import batch_size_problem

    if value is None:
        return None
    size: int | str = int(value) if value.strip().isdigit() else value.strip()
    problem = batch_size_problem(size)
    if problem is not None:
        raise DeployError(f"--batch-size: {problem}")
    return size


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "ref": "branch, tag or commit to deploy (default: HEAD)",
        "dry_run": "print the plan and change nothing",
        "skip_migrate": "do not run the stage's migrate commands this time (the journal says so)",
        "batch_size": BATCH_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "yes": YES_HELP,
    },
)
@task_boundary
def deploy(
    c: Context,
    stage: str | None = None,
    hosts: str | None = None,
    ref: str = "HEAD",
    dry_run: bool = False,
    batch_size: str | None = None,
    json: bool = False,
    verbose: bool = False,
    yes: bool = False,
    roles: str | None = None,
    skip_migrate: bool = False,
) -> None:
    """Deploy a commit: new release on every host, then switch, restart and check them batch by batch."""
    from ..flow import deploy as flow
    from ..flow import sudo
    from ..flow.dryrun import print_plan
    from ..flow.release import git, uncommitted_files, working_tree_notes
    from ..reporting.events import EventLog
    from ..reporting.report import RunReport
    from .confirm import ask, deploy_lines, hosts_now, range_lines, will_ask

    inventory, selected = selected_hosts(c, stage, hosts, roles)
    batch = parse_batch_size(batch_size)
    plan = flow.plan_deploy(inventory, selected, ref)
    if not json:
        for note in working_tree_notes(inventory.project_root, inventory.path, plan.release.commit, ref):
            print(note)
        if plan.migrate_note() and not dry_run:
            print(plan.migrate_note())
    if dry_run:
        print_plan(inventory, plan, print, batch)
        return
    if will_ask(selected, "deploy", yes):
        root, commit = inventory.project_root, plan.release.commit
        subject = git(root, "log", "-1", "--format=%s", commit)
        lines = deploy_lines(plan.release.id, commit, subject, ref, selected, uncommitted_files(root, inventory.path))
        ask(selected, "deploy", lines + range_lines(root, hosts_now(selected), commit), yes)
    password = sudo.configured_password(selected, c.config)
    release = plan.release
    report = RunReport("deploy", selected[0].stage, release.id, release.commit, EventLog())
    if not json:
        print(f"Deploying {release.id} ({release.commit[:12]}) to {len(selected)} host(s)")

    def run() -> None:
        flow.run_deploy(
            plan,
            inventory.project_root,
            report,
            password,
            sudo.ask_password,
            batch_size=batch,
            skip_migrate=skip_migrate,
        )

    _run_and_report(report, selected, inventory.project_root, json, verbose, run)
    if not json:
        print(f"Deployed {release.id} ({release.commit[:12]}) to {len(selected)} host(s)")


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "to": "release id to return to (default: the previous good one)",
        "force": "roll back even to a release that lacks migration files the current one has (journaled)",
        "batch_size": BATCH_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "yes": YES_HELP,
    },
)
@task_boundary
def rollback(
    c: Context,
    stage: str | None = None,
    hosts: str | None = None,
    to: str | None = None,
    batch_size: str | None = None,
    json: bool = False,
    verbose: bool = False,
    yes: bool = False,
    roles: str | None = None,
    force: bool = False,
) -> None:
    """Switch back to the previous good release (or --to ID), config included; installs nothing."""
    from ..flow import deploy as flow
    from ..flow import sudo
    from ..flow.release import check_release_id
    from ..rendering import appsecrets
    from ..reporting.events import EventLog
    from ..reporting.report import RunReport
    from .confirm import ask, hosts_now, range_lines, rollback_lines, will_ask

    inventory, selected = selected_hosts(c, stage, hosts, roles)
    batch = parse_batch_size(batch_size)
    # Read only to be masked: the commands' output (--verbose, errors) may print the app's env.
    appsecrets.load(selected[0].secrets, inventory.project_root, inventory.path)
    if to is not None:
        check_release_id(to)  # before asking about it
    if will_ask(selected, "roll back", yes):
        lines = rollback_lines(to, selected)
        if to is None:
            lines += range_lines(inventory.project_root, hosts_now(selected), None, rollback=True)
        ask(selected, "roll back", lines, yes)
    password = sudo.configured_password(selected, c.config)
    report = RunReport("rollback", selected[0].stage, to, None, EventLog())

    def run() -> None:
        flow.run_rollback(
            selected,
            to,
            report,
            password,
            sudo.ask_password,
            batch_size=batch,
            force=force,
            project_root=inventory.project_root,
        )

    _run_and_report(report, selected, inventory.project_root, json, verbose, run)
    if not json:
        print(f"Rolled back {len(selected)} host(s) to {report.release}")
        for note in report.notes:
            print(note)


R = TypeVar("R")


def release_rows(target: Target) -> list[dict[str, str | None]]:
    """One host's releases, newest first: id, commit, when, who, and a mark (current, previous, incomplete)."""
    from ..flow import journal

    state = target.state
    deployed = {e.release: e for e in state.entries if e.event == "deploy" and e.status == "ok"}
    back_to = journal.rollback_target(state.entries, state.current, state.releases)
    incomplete = journal.incomplete_releases(state.entries, state.releases, state.current)
    rows: list[dict[str, str | None]] = []
    for release_id in reversed(state.releases):
        entry = deployed.get(release_id)
        mark = "current" if release_id == state.current else ("previous" if release_id == back_to else None)
        if not mark and release_id in incomplete:
            mark = "incomplete"
        elif entry is None:
            mark = mark or "not in the journal"
        commit = entry.commit if entry else None
        rows.append({"id": release_id, "commit": commit, "time": entry.time if entry else None,
                     "user": entry.user if entry else None, "mark": mark})  # fmt: skip
    return rows


def format_releases(target: Target) -> list[str]:
    """Lines describing one host's releases, newest first: id, commit, when, who, and which is current."""
    lines = [f"{target.name} ({target.host.root}):"]
    rows = release_rows(target)
    if not rows:
        lines.append("  no releases")
    for row in rows:
        commit, when, who, mark = (row["commit"] or "")[:12], row["time"] or "", row["user"] or "", row["mark"] or ""
        star = "*" if mark == "current" else " "
        lines.append(f"  {star} {row['id']}  {commit:12}  {when:25}  {who:20}  {mark}".rstrip())
    return lines


def releases_document(target: Target) -> dict[str, object]:
    """One host's entry in ``fab releases --json``."""
    from ..flow import journal

    back_to = journal.rollback_target(target.state.entries, target.state.current, target.state.releases)
    return {"host": target.name, "root": target.host.root, "current": target.state.current, "previous": back_to,
            "releases": release_rows(target)}  # fmt: skip


def _on_each_selected(
    c: Context,
    stage: str | None,
    hosts: str | None,
    func: Callable[[Target], R],
    show: Callable[[Target, R], str],
    what: str,
    roles: str | None = None,
) -> None:
    """Run ``func`` on each selected host in parallel and print ``show`` of each result, in inventory order;
    then fail naming every host where it failed."""
    from ..connection.fleet import connected, on_each

    _, selected = selected_hosts(c, stage, hosts, roles)
    with connected(selected) as targets:
        results = on_each(targets, func, lambda t: t.name)
    order = [target.name for target in targets]
    for target, value in sorted(results.done, key=lambda item: order.index(item[0].name)):
        print(show(target, value))
    results.raise_if_failed(what, lambda t: t.name)


@task(klass=HostsTask, help={"stage": STAGE_HELP, "hosts": HOSTS_HELP, "roles": ROLES_HELP, "json": JSON_HELP})
@task_boundary
def releases(
    c: Context, stage: str | None = None, hosts: str | None = None, json: bool = False, roles: str | None = None
) -> None:
    """List each host's releases: id, commit, when, who, and which is current."""
    from ..connection.fleet import connected, on_each
    from ..flow.target import read_state
    from ..reporting.report import dumps

    if not json:
        _on_each_selected(
            c, stage, hosts, read_state, lambda target, _: "\n".join(format_releases(target)), "reading releases", roles
        )
        return
    _, selected = selected_hosts(c, stage, hosts, roles)
    with connected(selected) as targets:
        results = on_each(targets, read_state, lambda t: t.name)
    found = {target.name: releases_document(target) for target, _ in results.done}
    failed = {target.name: {"host": target.name, "error": str(error)} for target, error in results.failed}
    entries = [found.get(host.name) or failed[host.name] for host in selected]
    print(dumps({"version": 1, "stage": selected[0].stage, "hosts": entries}))
    results.raise_if_failed("reading releases", lambda t: t.name)


@task(klass=HostsTask, help={"stage": STAGE_HELP, "hosts": HOSTS_HELP, "roles": ROLES_HELP})
@task_boundary
def unlock(c: Context, stage: str | None = None, hosts: str | None = None, roles: str | None = None) -> None:
    """Clear the deploy lock a crashed run left behind, saying whose it was."""
    from ..flow import deploylock
    from ..flow.target import incomplete

    def unlock_one(target: Target) -> tuple[deploylock.LostRun | None, list[str], str]:
        return (deploylock.unlock(target), *incomplete(target))

    def show(target: Target, found: tuple[deploylock.LostRun | None, list[str], str]) -> str:
        lost, incomplete, problem = found
        if lost is None:
            said = f"{target.name}: was not locked"
        elif lost.held:
            said = f"{target.name}: lifted the lock {lost.holder}"
        else:
            said = f"{target.name}: removed the lock of {lost.holder}{lost.standing}"
        for release_id in incomplete:
            said += f"; release {release_id} is incomplete (left by an interrupted run): the next deploy removes it"
        return said + (f"; {problem}" if problem else "")

    _on_each_selected(c, stage, hosts, unlock_one, show, "unlock", roles)


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "release": "the release whose log to show (default: the log each host wrote last)",
        "brief": "one line per step, without its output",
    },
)
@task_boundary
def log(c: Context, stage: str | None = None, hosts: str | None = None, release: str | None = None,
        brief: bool = False, roles: str | None = None) -> None:  # fmt: skip
    """Show each host's deploy log of a release: every step of every run (build, publish, restart, health,
    hooks, finish), with its output."""
    from ..flow.release import check_release_id
    from ..reporting import deploylog

    if release is not None:
        check_release_id(release)
    _on_each_selected(
        c,
        stage,
        hosts,
        lambda target: deploylog.read_host_log(target, release),
        lambda target, found: "\n".join(deploylog.format_host_log(target, found, verbose=not brief)),
        "reading the deploy log",
        roles,
    )


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "message": 'why deploys must wait, shown to whoever tries one (--message "db maintenance until 14:00")',
    },
)
@task_boundary
def lock(
    c: Context, stage: str | None = None, hosts: str | None = None, message: str | None = None, roles: str | None = None
) -> None:
    """Hold every host of the stage (or --hosts): deploys and rollbacks are refused, saying who, why and since
    when, until fab unlock. All or nothing: if one host cannot be held, none is."""
    from ..connection.fleet import connected, describe_failures, on_each
    from ..flow import deploylock
    from ..layout import Layout

    if message is None:
        raise DeployError('fab lock needs --message, saying why deploys must wait (--message "db maintenance")')
    owner = deploylock.hold_owner(message)
    _, selected = selected_hosts(c, stage, hosts, roles)
    with connected(selected) as targets:
        results = on_each(targets, lambda t: deploylock.hold(t, owner), lambda t: t.name)
        if results.failed:
            for target, held in results.done:  # all or nothing: lift the holds this call took
                with suppress(Exception):
                    deploylock.unlock(target, only_if_owner=held)
            names = ", ".join(target.name for target, _ in results.done)
            undone = f"\nNothing is held (the lock just taken on {names} was lifted again)." if names else ""
            raise DeployError(describe_failures("lock", [(t.name, e) for t, e in results.failed]) + undone)
    holder = deploylock.holder(json_module.dumps(owner, sort_keys=True), Layout(selected[0].root))
    for host in selected:
        print(f"{host.name}: locked, {holder}")
    print(f"Deploys and rollbacks of {len(selected)} host(s) are refused until: fab unlock --stage {selected[0].stage}")


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "out": "directory to write into (default: build/etc/<stage>/ in the project)",
        "diff": "also print a unified diff of each file against what the host has under its etc_root now",
    },
)
@task_boundary
def render_etc(
    c: Context,
    stage: str | None = None,
    hosts: str | None = None,
    out: str | None = None,
    diff: bool = False,
    roles: str | None = None,
) -> None:
    """Render each host's config from etc-mock/ into build/etc/ for review; changes nothing on hosts."""
    from ..connection.fleet import connected, on_each
    from ..flow.release import Release, resolve_commit
    from ..rendering import appsecrets
    from ..rendering.config import render_hosts
    from ..rendering.etc import diff_against, format_diffs, write_tree

    inventory, selected = selected_hosts(c, stage, hosts, roles)
    if not inventory.etc_templates.is_dir():
        raise DeployError(f"no templates: {inventory.etc_templates} does not exist")
    release = Release.mint(resolve_commit(inventory.project_root, "HEAD"))
    secrets = appsecrets.load(selected[0].secrets, inventory.project_root, inventory.path)
    rendered = render_hosts(inventory.etc_templates, selected, release.id, secrets)
    base = Path(out) if out else inventory.project_root / "build" / "etc" / selected[0].stage
    if base.exists() and not base.is_dir():
        what = f"--out {base}" if out else str(base)
        raise DeployError(f"{what} exists and is not a directory; give a directory to write the config into")
    for host in selected:
        try:
            written = write_tree(rendered[host.name], base / host.name)
        except OSError as error:
            where = error.filename or base / host.name
            raise DeployError(f"cannot write the rendered config under {base}: {where}: {error.strerror}") from None
        for path in written:
            print(f"wrote {path.relative_to(base.parent) if not out else path}")
    if diff:
        with connected(selected) as targets:
            results = on_each(
                targets,
                lambda t: diff_against(t.c, t.host.etc_root, rendered[t.name], python=t.host.python, host=t.name),
                lambda t: t.name,
            )
            for target, diffs in results.done:
                print(format_diffs(diffs, host=target.name))
            results.raise_if_failed("diff", lambda t: t.name)


@task
@task_boundary
def version(c: Context) -> None:
    """Print the versions of deploytool, Fabric, Invoke, Paramiko and Python (for a bug report)."""
    import importlib.metadata
    import platform
    import sys

    def of(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"deploytool {of('deploytool')}")
    print(f"Fabric {of('fabric')}, Invoke {of('invoke')}, Paramiko {of('paramiko')}")
    print(f"Python {platform.python_version()} ({sys.executable})")


def namespace() -> Collection:
    """The task collection a fabfile exposes as ``ns``."""
    collection = Collection(deploy, rollback, releases, log, lock, unlock, render_etc, status, audit, run, version)
    collection.add_collection(requirements_tasks)
    collection.add_collection(mirror_tasks)
    collection.configure({"deploytool": {"inventory": "hosts.yml"}})
    return collection


ns = namespace()
typos.install()  # fab's task part of the command line is parsed after the fabfile imported this
install_run()  # fab run's words after -- are its command, not Fabric's

__all__ = ["DeployError", "deploy", "namespace", "ns", "releases", "rollback", "unlock"]
