"""deploytool: push-pull deploys of Python web apps with Fabric.

In a project's ``fabfile.py``::

    from deploytool import ns
"""

from .commands.tasks import namespace, ns
from .errors import DeployError, InventoryError, RemoteError
from .inventory import HostConfig, Inventory, load_inventory
from .layout import Layout

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
