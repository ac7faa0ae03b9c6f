"""deploytool: push-pull deploys of Python web apps with Fabric.

In a project's ``fabfile.py``::

    from deploytool import ns
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DeployError, InventoryError, RemoteError, catch_early_interrupts

catch_early_interrupts()  # first: a Ctrl-C while the rest loads says so (Invoke would exit 1 silently)

from .commands.tasks import namespace, ns  # noqa: E402

if TYPE_CHECKING:
    from .inventory import HostConfig, Inventory, load_inventory
    from .layout import Layout

_LAZY = {"HostConfig": "inventory", "Inventory": "inventory", "load_inventory": "inventory", "Layout": "layout"}


def __getattr__(name: str) -> Any:
    """The inventory's and the layout's names, imported on first use (``fab`` itself needs neither to start)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DeployError",
    "HostConfig",
    "Inventory",
    "InventoryError",
    "Layout",
    "RemoteError",
    "load_inventory",
    "namespace",
    "ns",
]
