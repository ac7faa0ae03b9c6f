"""deploytool: push-pull deploys of Python web apps with Fabric.

In a project's ``fabfile.py``::

    from deploytool import ns
"""

from .errors import DeployError, InventoryError, RemoteError, catch_early_interrupts

catch_early_interrupts()  # first: a Ctrl-C while the rest loads says so (Invoke would exit 1 silently)

from .inventory import HostConfig, Inventory, load_inventory  # noqa: E402
from .layout import Layout  # noqa: E402
from .tasks import namespace, ns  # noqa: E402

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
