"""The ``deploy`` and ``rollback`` tasks: the runs that change what hosts serve, with their progress lines, summary
(or ``--json`` document), deploy logs and the stage's ``notify`` commands."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.tasks import task

from ..errors import DeployError, task_boundary
from .common import HOSTS_HELP, JSON_HELP, ROLES_HELP, STAGE_HELP, HostsTask, selected_hosts
from .confirm import YES_HELP

# What only some tasks need is imported in their bodies: `fab --list` (and a task that needs none of it) starts
# without the deploy flow, paramiko's transport use, Jinja2 (and asyncio), packaging or the mirror's index code.
if TYPE_CHECKING:
    from ..inventory import HostConfig
    from ..reporting.report import RunReport

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
