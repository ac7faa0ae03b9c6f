"""The ``releases`` and ``log`` tasks: what each host keeps, its releases (newest first, which is current, which a
rollback would return to) and the deploy log it wrote of a release."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.tasks import task

from ..errors import task_boundary
from .common import HOSTS_HELP, JSON_HELP, ROLES_HELP, STAGE_HELP, HostsTask, on_each_selected, selected_hosts

if TYPE_CHECKING:  # the connection code is imported by the task when it runs (`fab --list` starts without it)
    from ..flow.target import Target


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
        on_each_selected(
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
    on_each_selected(
        c,
        stage,
        hosts,
        lambda target: deploylog.read_host_log(target, release),
        lambda target, found: "\n".join(deploylog.format_host_log(target, found, verbose=not brief)),
        "reading the deploy log",
        roles,
    )
