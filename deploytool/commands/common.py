"""What every task shares: finding hosts.yml, choosing the stage's hosts, and the help of their options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.tasks import Task

from ..errors import InventoryError
from ..inventory import HostConfig, Inventory, load_inventory

STAGE_HELP = "stage of hosts.yml to act on (default: its default_stage)"
HOSTS_HELP = "comma-separated host names of the stage to limit to"
ROLES_HELP = "comma-separated roles: limit to the stage's hosts having one of them (with --hosts: both limits)"


def find_inventory(c: Context) -> Inventory:
    """Load the file named by config ``deploytool.inventory`` (hosts.yml), from the current directory up."""
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


class HostsTask(Task[Any]):
    """A task with a ``--hosts`` option (and ``--roles``): they get no short flag, so ``fab deploy -h`` is help
    (Invoke would make ``-h`` mean ``--hosts``), and no other option may take ``-h`` either."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, {*taken_names, "h"})
        if name in ("hosts", "roles"):
            opts["names"] = [name]
        return opts
