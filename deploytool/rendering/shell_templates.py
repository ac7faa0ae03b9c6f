"""Jinja for hosts.yml's commands: every value a ``{{ ... }}`` inserts into a shell command is shell-quoted.

``validate``, ``after_switch``, ``restart`` (and ``restart.start``) and ``health_check.command`` run with ``sh -c``
on the host. A value rendered into them is data (a path such as ``{{ root }}``, a ``vars`` entry, a release id),
so it is quoted as one word (`shlex.quote`: nothing to quote in ``/srv/demo``, ``'/srv/x $(touch y)'``
otherwise), as autoescaping does for HTML. ``{{ value|raw }}`` inserts a value as shell text, for a ``vars``
entry that is meant to be a command or several arguments. The text of the command itself (outside ``{{ }}``)
is the user's shell, as written.

``restart.gunicorn_pidfile`` and ``health_check``'s ``url`` and ``contains`` are not shell: they are rendered
without quoting (``|raw`` is accepted there too, and changes nothing).
"""

from __future__ import annotations

import shlex
from typing import Any

import jinja2

#: Keys (as `config.render_commands` names them) whose text is not run by a shell.
NOT_SHELL = frozenset({"restart.gunicorn_pidfile", "health_check.url", "health_check.contains"})


class Raw(str):
    """A value marked ``|raw``: inserted into a command as it is."""


def raw(value: Any) -> Raw:
    """The ``raw`` filter: ``{{ value|raw }}`` is inserted unquoted."""
    return Raw("" if value is None else value)


def shell_word(value: Any) -> str:
    """What a ``{{ ... }}`` inserts into a shell command: one quoted word, unless marked `Raw`."""
    if isinstance(value, Raw):
        return str(value)
    return shlex.quote("" if value is None else str(value))


def _environment(shell: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        finalize=shell_word if shell else None,
    )
    env.filters["raw"] = raw
    return env


SHELL = _environment(shell=True)
DATA = _environment(shell=False)


def command_environment(where: str) -> jinja2.Environment:
    """The environment rendering ``where`` (``validate[0]``, ``health_check.url``...): quoting for shell
    commands, none for the keys in `NOT_SHELL`."""
    return DATA if where in NOT_SHELL else SHELL
