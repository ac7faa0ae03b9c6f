"""The ``fab`` tasks: deploy, rollback, releases, unlock (plus the requirements, mirror and etc tasks).

A project's fabfile needs one line: ``from deploytool import ns``.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from . import deploy as flow
from . import journal, phases
from .errors import DeployError, InventoryError, task_boundary
from .fleet import on_each
from .inventory import HostConfig, Inventory, load_inventory

STAGE_HELP = "stage of hosts.yml to act on (default: its default_stage)"
HOSTS_HELP = "comma-separated host names of the stage to limit to"


def find_inventory(c: Context) -> Inventory:
    """Load the inventory named by config ``deploytool.inventory``, looked up from the current directory up."""
    name = Path(c.config.get("deploytool", {}).get("inventory", "hosts.yml"))
    if name.is_absolute():
        return load_inventory(name)
    for directory in [Path.cwd(), *Path.cwd().parents]:
        if (directory / name).is_file():
            return load_inventory(directory / name)
    raise InventoryError(f"no {name} in {Path.cwd()} or its parents; create one (see the README)")


def _hosts(c: Context, stage: str | None, hosts: str | None) -> tuple[Inventory, tuple[HostConfig, ...]]:
    inventory = find_inventory(c)
    return inventory, inventory.hosts(stage, hosts)


@task(
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "ref": "branch, tag or commit to deploy (default: HEAD)",
        "dry_run": "print the plan and change nothing",
    }
)
@task_boundary
def deploy(c: Context, stage: str | None = None, hosts: str | None = None, ref: str = "HEAD", dry_run: bool = False) -> None:
    """Deploy a commit: new release on every host, then switch them all to it."""
    inventory, selected = _hosts(c, stage, hosts)
    plan = flow.plan_deploy(inventory, selected, ref)
    if dry_run:
        print(f"Would deploy {plan.release.id} to {', '.join(h.name for h in selected)}")
        return
    password = flow.prompt_sudo_password(selected)
    flow.run_deploy(plan, inventory.project_root, print, password=password)
    print(f"Deployed {plan.release.id} ({plan.release.commit[:12]}) to {len(selected)} host(s)")


@task(help={"stage": STAGE_HELP, "hosts": HOSTS_HELP, "to": "release id to return to (default: the previous good one)"})
@task_boundary
def rollback(c: Context, stage: str | None = None, hosts: str | None = None, to: str | None = None) -> None:
    """Switch back to the previous good release (or --to ID), config included; installs nothing."""
    _, selected = _hosts(c, stage, hosts)
    password = flow.prompt_sudo_password(selected)
    chosen = flow.run_rollback(selected, to, print, password=password)
    print(f"Rolled back {len(selected)} host(s) to {chosen}")


def format_releases(target: phases.Target) -> list[str]:
    """Lines describing one host's releases, newest first: id, commit, when, who, and which is current."""
    state = target.state
    deployed = {e.release: e for e in state.entries if e.event == "deploy" and e.status == "ok"}
    back_to = journal.rollback_target(state.entries, state.current, state.releases)
    lines = [f"{target.name} ({target.host.root}):"]
    if not state.releases:
        lines.append("  no releases")
    for release_id in reversed(state.releases):
        entry = deployed.get(release_id)
        mark = "current" if release_id == state.current else ("previous" if release_id == back_to else "")
        if entry is None:
            mark = mark or "incomplete"
        commit = (entry.commit or "")[:12] if entry else ""
        when = entry.time if entry and entry.time else ""
        who = entry.user if entry and entry.user else ""
        lines.append(f"  {'*' if mark == 'current' else ' '} {release_id}  {commit:12}  {when:25}  {who:20}  {mark}".rstrip())
    return lines


@task(help={"stage": STAGE_HELP, "hosts": HOSTS_HELP})
@task_boundary
def releases(c: Context, stage: str | None = None, hosts: str | None = None) -> None:
    """List each host's releases: id, commit, when, who, and which is current."""
    _, selected = _hosts(c, stage, hosts)
    with flow.connected(selected) as targets:
        results = on_each(targets, phases.read_state, lambda t: t.name)
        for target in targets:
            if any(t is target for t, _ in results.done):
                print("\n".join(format_releases(target)))
        results.raise_if_failed("reading releases", lambda t: t.name)


@task(help={"stage": STAGE_HELP, "hosts": HOSTS_HELP})
@task_boundary
def unlock(c: Context, stage: str | None = None, hosts: str | None = None) -> None:
    """Clear the deploy lock a crashed run left behind, saying whose it was."""
    _, selected = _hosts(c, stage, hosts)
    with flow.connected(selected) as targets:
        results = on_each(targets, phases.unlock, lambda t: t.name)
        for target, holder in results.done:
            print(f"{target.name}: " + (f"removed the lock of {holder}" if holder else "was not locked"))
        results.raise_if_failed("unlock", lambda t: t.name)


def namespace() -> Collection:
    """The task collection a fabfile exposes as ``ns``."""
    collection = Collection(deploy, rollback, releases, unlock)
    collection.configure({"deploytool": {"inventory": "hosts.yml"}})
    return collection


ns = namespace()

__all__ = ["DeployError", "deploy", "namespace", "ns", "releases", "rollback", "unlock"]
