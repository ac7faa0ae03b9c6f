"""What every task shares: finding hosts.yml, choosing the stage's hosts, running a function on each of them, and
the help of their options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from invoke.context import Context
from invoke.tasks import Task

from ..errors import InventoryError

if TYPE_CHECKING:  # the inventory (YAML, the settings' checks) is loaded when a task runs, not when fab lists them
    from ..flow.target import Target
    from ..inventory import HostConfig, Inventory

STAGE_HELP = "stage of hosts.yml to act on (default: its default_stage)"
HOSTS_HELP = "comma-separated host names of the stage to limit to"
ROLES_HELP = "comma-separated roles: limit to the stage's hosts having one of them (with --hosts: both limits)"
JSON_HELP = "print one JSON document (documented in the README) instead of progress lines and a table"


def find_inventory(c: Context) -> Inventory:
    """Load the file named by config ``deploytool.inventory`` (hosts.yml), from the current directory up."""
    from ..inventory import load_inventory

    name = Path(c.config.get("deploytool", {}).get("inventory", "hosts.yml"))
    if name.is_absolute():
        return load_inventory(name)
    for directory in [Path.cwd(), *Path.cwd().parents]:
        if (directory / name).is_file():
            return load_inventory(directory / name)
    raise InventoryError(f"no {name} in {Path.cwd()} or its parents; create one (see the README)")


def selected_hosts(
    c: Context, stage: str | None, hosts: str | None, roles: str | None = None
) -> tuple[Inventory, tuple[HostConfig, ...]]:
    """The inventory and the hosts of ``stage`` limited to ``hosts`` and to those having one of ``roles``."""
    inventory = find_inventory(c)
    return inventory, inventory.hosts(stage, hosts, roles)


R = TypeVar("R")


def on_each_selected(
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


class HostsTask(Task[Any]):
    """A task with a ``--hosts`` option (and ``--roles``): they get no short flag, so ``fab deploy -h`` is help
    (Invoke would make ``-h`` mean ``--hosts``), and no other option may take ``-h`` either."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, {*taken_names, "h"})
        if name in ("hosts", "roles"):
            opts["names"] = [name]
        return opts
