"""``fab run [--hosts H | --roles R] [--pty] -- COMMAND...``: a one-off command on the hosts, in the current release.

The command runs on each selected host in turn (output as it comes, under a ``[host]`` line when there are
several), in ``<root>/current``, with the release's venv first on ``PATH`` and the app's env from the release's env
file (host-side program ``envexec``: only the file's path is on the command line). The words after ``--`` are the
command's argv as the laptop's shell split them, each quoted for the host's shell (never pasted into a shell line).
``--pty`` gives it a terminal (``createsuperuser``, ``shell``). The exit status is the worst host's. What it prints
passes the one sanitiser (`terminal.for_terminal`): secrets show as ``***``, control characters escaped.
"""

from __future__ import annotations

import posixpath
import shlex
import sys
from collections.abc import Sequence

from fabric.executor import Executor as FabricExecutor
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.context import ParserContext
from invoke.tasks import task

from . import appsecrets
from .commands.common import HOSTS_HELP, ROLES_HELP, STAGE_HELP, HostsTask, selected_hosts
from .connection.fleet import connected
from .connection.hostrun import argv as module_argv
from .errors import DeployError, task_boundary
from .flow.target import Target
from .layout import ENV_FILE

USAGE = "fab run [--hosts H | --roles R] [--pty] -- COMMAND..., like: fab run --hosts web1 -- python manage.py check"


class Executor(FabricExecutor):  # type: ignore[misc]  # fabric has no type hints
    """Fabric's executor, except that the words after ``--`` are ``fab run``'s command: Fabric would otherwise run
    them itself on ``-H`` hosts (and fail for want of any). `install` makes ``fab`` use it."""

    def execute(self, *tasks: ParserContext | str) -> dict[object, object]:
        names = [task if isinstance(task, str) else task.name for task in tasks]
        if any(name == "run" or str(name).endswith(".run") for name in names):
            self.core.remainder = ""
        result: dict[object, object] = super().execute(*tasks)
        return result


def install() -> None:
    """Make the ``fab`` program (Fabric's ``fabric.main.program``, which ``fab`` and ``python -m fabric`` run) use
    `Executor`; done when the fabfile imports deploytool, before the tasks are executed."""
    import fabric.main

    program = getattr(fabric.main, "program", None)
    if program is not None and getattr(program, "executor_class", None) is FabricExecutor:
        program.executor_class = Executor


def command_after_dashes(argv: Sequence[str]) -> list[str]:
    """The words after the first ``--`` of the command line (Invoke keeps them only joined by spaces)."""
    words = list(argv)
    return words[words.index("--") + 1 :] if "--" in words else []


def host_command(target: Target, command: Sequence[str]) -> str:
    """The shell line that runs ``command`` in ``target``'s current release, with its venv and env."""
    current = target.layout.current
    program = module_argv(
        target.host.python,
        "envexec",
        posixpath.join(current, ENV_FILE),
        current,
        posixpath.join(current, "venv"),
        *command,
    )
    return shlex.join(program)


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "pty": "give the command a terminal (for interactive commands: createsuperuser, shell)",
    },
)
@task_boundary
def run(
    c: Context, stage: str | None = None, hosts: str | None = None, roles: str | None = None, pty: bool = False
) -> None:
    """Run a command on the hosts in the current release, with its venv and env: fab run -- COMMAND..."""
    command = command_after_dashes(sys.argv)
    if not command:
        raise DeployError(f"no command given; {USAGE}")
    inventory, selected = selected_hosts(c, stage, hosts, roles)
    appsecrets.load(selected[0].secrets, inventory.project_root, inventory.path)  # so that output masks them
    worst = 0
    with connected(selected) as targets:
        for target in targets:
            if len(targets) > 1:
                print(f"[{target.name}]", flush=True)
            result = target.c.run(host_command(target, command), pty=pty, warn=True, hide=False)
            code = result.exited if isinstance(result.exited, int) else 1
            if code != 0 and len(targets) > 1:
                print(f"[{target.name}] exit {code}", flush=True)
            worst = max(worst, code)
    sys.stdout.flush()
    if worst:
        raise Exit(code=worst)
