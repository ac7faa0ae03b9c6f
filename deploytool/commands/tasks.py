"""The ``fab`` tasks' collection, ``ns`` (and the ``version`` task); each family of tasks lives in its own module.

A project's fabfile needs one line: ``from deploytool import ns``.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from ..errors import DeployError, task_boundary
from . import typos
from .tasks_deploy import deploy, rollback
from .tasks_etc import render_etc
from .tasks_lock import lock, unlock
from .tasks_mirror import mirror_tasks, requirements_tasks
from .tasks_releases import log, releases
from .tasks_run import install as install_run
from .tasks_run import run
from .tasks_status import audit, status


@task
@task_boundary
def version(c: Context) -> None:
    """Print the versions of deploytool, Fabric, Invoke, Paramiko and Python (for a bug report)."""
    import importlib.metadata
    import platform
    import sys

    def of(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"deploytool {of('deploytool')}")
    print(f"Fabric {of('fabric')}, Invoke {of('invoke')}, Paramiko {of('paramiko')}")
    print(f"Python {platform.python_version()} ({sys.executable})")


def namespace() -> Collection:
    """The task collection a fabfile exposes as ``ns``."""
    collection = Collection(deploy, rollback, releases, log, lock, unlock, render_etc, status, audit, run, version)
    collection.add_collection(requirements_tasks)
    collection.add_collection(mirror_tasks)
    collection.configure({"deploytool": {"inventory": "hosts.yml"}})
    return collection


ns = namespace()
typos.install()  # fab's task part of the command line is parsed after the fabfile imported this
install_run()  # fab run's words after -- are its command, not Fabric's

__all__ = ["DeployError", "deploy", "namespace", "ns", "releases", "rollback", "unlock"]
