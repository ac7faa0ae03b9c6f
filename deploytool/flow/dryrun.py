"""``fab deploy --dry-run``: what a deploy would change on each host, changing nothing anywhere."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import migrations
from ..connection.fleet import connected, on_each
from ..errors import DeployError
from ..inventory import Inventory
from ..rendering.config import render_commands
from ..rendering.etc import diff_against, format_diffs
from ..supply.pins import extract_requirement_files
from ..supply.requirements import read_requirements
from .deploy import Plan
from .golive import batches
from .release import git
from .target import Target, read_state

Say = Callable[[str], None]


def _pins_at(inventory: Inventory, commit: str, relative: str) -> dict[str, str]:
    """name -> version of the requirements file ``relative`` as committed in ``commit``."""
    with tempfile.TemporaryDirectory(prefix="deploytool-dry-") as tmp:
        extract_requirement_files(inventory.project_root, commit, Path(tmp))
        reqs = read_requirements(Path(tmp) / relative, check_hashes=False)
        return {pin.name: pin.version or pin.display for pin in reqs.pins}


def requirement_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Lines like ``+ name==1.0``, ``- name==1.0``, ``~ name 1.0 -> 2.0`` (empty when nothing changes)."""
    lines = [f"    + {name}=={new[name]}" for name in sorted(new.keys() - old.keys())]
    lines += [f"    - {name}=={old[name]}" for name in sorted(old.keys() - new.keys())]
    lines += [
        f"    ~ {name} {old[name]} -> {new[name]}" for name in sorted(old.keys() & new.keys()) if old[name] != new[name]
    ]
    return lines


def _running_commit(target: Target) -> str | None:
    """The commit ``current`` runs, by the journal (whose commit ids `target.read_state` has validated)."""
    current = target.state.current
    commits = [entry.commit for entry in target.state.entries if entry.release == current and entry.commit]
    return commits[-1] if commits else None


def _migration_lines(inventory: Inventory, old: str | None, new: str, globs: tuple[str, ...]) -> str:
    """``  migrations: ...``: the migration files the deploy adds (A) or changes (M)."""
    try:
        found = migrations.changes(inventory.project_root, old, new, globs)
    except DeployError:
        return "  migrations: unknown (the running commit is not in this repository)"
    return "  migrations:" + ("".join(f"\n    {line}" for line in found) if found else " none added or changed")


def _host_report(inventory: Inventory, plan: Plan, target: Target) -> list[str]:
    new = plan.release.commit
    old = _running_commit(target)
    lines = [f"{target.name}: runs {target.state.current or 'nothing yet'}" + (f" ({old[:12]})" if old else "")]
    relative = plan.install[target.name].requirements
    new_pins = _pins_at(inventory, new, relative)
    if old is None:
        lines.append(f"  commits: first deploy of {new[:12]}")
        lines.append(f"  requirements ({relative}): {len(new_pins)} pins, all new")
    else:
        try:
            log = git(inventory.project_root, "log", "--oneline", "--no-decorate", "--end-of-options", f"{old}..{new}")
            lines.append("  commits:" + ("".join(f"\n    {line}" for line in log.splitlines()) or " none"))
            changes = requirement_changes(_pins_at(inventory, old, relative), new_pins)
        except DeployError:
            lines.append(f"  commits: {old[:12]} is not in this repository (git fetch?)")
            changes = []
        lines.append(f"  requirements ({relative}):" + ("\n" + "\n".join(changes) if changes else " unchanged"))
    lines.append(_migration_lines(inventory, old, new, target.host.migrations))
    commands = render_commands(target.host, plan.release.id, target.state.current)
    if commands.build:
        lines.append(f"  build: {list(commands.build)}")
    restart = commands.restart
    if restart.gunicorn_pidfile:
        start = f", else start: {list(restart.start)}" if restart.start else ""
        lines.append(f"  restart: gunicorn re-exec (USR2) of {restart.gunicorn_pidfile}{start}")
    elif restart.commands:
        lines.append(f"  restart: {list(restart.commands)}")
    check = commands.health_check
    if check is not None:
        what = f"GET {check.url}" + (f" containing {check.contains!r}" if check.contains else "")
        lines.append(f"  health check: {what if check.url else check.command} (until {check.deadline:g} s)")
    rendered = plan.rendered.get(target.name)
    if rendered is not None:
        diffs = diff_against(target.c, target.host.etc_root, rendered, python=target.host.python, host=target.name)
        lines.append(
            "  config:\n" + "\n".join(f"    {line}" for line in format_diffs(diffs, host=target.name).splitlines())
        )
    return lines


def print_plan(inventory: Inventory, plan: Plan, say: Say, batch_size: int | str | None = None) -> None:
    """Print the release id, the batches and, per host, the commits, requirement changes, restart and health
    check, and config diff (``batch_size``: ``--batch-size``, else hosts.yml's)."""
    say(f"Dry run: would deploy {plan.release.id} ({plan.release.commit[:12]}) to {len(plan.hosts)} host(s)")
    cut = batches([host.name for host in plan.hosts], batch_size or plan.hosts[0].batch_size)
    if len(cut) > 1:
        say(f"in {len(cut)} batches: " + "; ".join(", ".join(batch) for batch in cut))
    migrate_host = plan.migrate_host()
    if migrate_host is not None:
        commands = plan.commands[migrate_host].migrate
        say(f"migrate: once, on {migrate_host}, after every host is prepared, before any switch: {list(commands)}")
    with connected(plan.hosts) as targets:
        states = on_each(targets, read_state, lambda t: t.name)
        states.raise_if_failed("reading the hosts", lambda t: t.name)
        reports = on_each(targets, lambda t: _host_report(inventory, plan, t), lambda t: t.name)
        for _, lines in sorted(reports.done, key=lambda item: item[0].name):
            say("\n".join(lines))
        reports.raise_if_failed("dry run", lambda t: t.name)
    say("Nothing was changed.")
