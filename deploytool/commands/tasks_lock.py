"""The ``lock`` and ``unlock`` tasks: holding a stage's hosts against deploys (all or nothing, with a message), and
clearing a hold or the lock a crashed run left behind, saying whose it was."""

from __future__ import annotations

import json as json_module
from contextlib import suppress
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.tasks import task

from ..errors import DeployError, task_boundary
from .common import HOSTS_HELP, ROLES_HELP, STAGE_HELP, HostsTask, on_each_selected, selected_hosts

if TYPE_CHECKING:  # the deploy lock's code is imported by the task when it runs (`fab --list` starts without it)
    from ..flow import deploylock
    from ..flow.target import Target


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

    on_each_selected(c, stage, hosts, unlock_one, show, "unlock", roles)
