"""The sudo password of a run: from Fabric's config, or asked once on the terminal, only for the hosts that need it.

Hosts with ``sudo: true`` where ``sudo -n true`` works need none; for the others it is asked once, before any host
is locked. It is never stored: it travels to a host only inside a host-side module's arguments (stdin), and the
module gives it to sudo only when sudo prompts (`hostside._common.Sudo`).
"""

from __future__ import annotations

import getpass
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..connection.fleet import on_each
from ..errors import DeployError
from ..inventory import HostConfig
from .target import Target

AskPassword = Callable[[list[str]], str]


def configured_password(hosts: Sequence[HostConfig], config: Any) -> str | None:
    """The sudo password as Fabric users give it (config ``sudo.password``: ``fab --prompt-for-sudo-password``,
    the environment variable FABRIC_SUDO_PASSWORD, a fabric.yml), when any host uses sudo; never stored."""
    if not any(host.sudo for host in hosts):
        return None
    return (config.get("sudo") or {}).get("password") or None


def ask_password(hosts: list[str]) -> str:
    """Ask once on the terminal for the password ``hosts`` need for sudo; without a terminal, say how to give it."""
    how = (
        f"sudo: true, and the deploy user needs a password for sudo on {', '.join(hosts)}: give it with "
        "fab --prompt-for-sudo-password or in the environment variable FABRIC_SUDO_PASSWORD "
        "(or allow the deploy user passwordless sudo there)"
    )
    if not sys.stdin.isatty():
        raise DeployError(f"{how}; there is no terminal to ask on. Nothing was changed")
    try:
        return getpass.getpass("sudo password for the deploy user (used for /etc and service commands): ")
    except EOFError:
        raise DeployError(f"{how}. Nothing was changed") from None


def passwords(targets: Sequence[Target], ask: AskPassword) -> None:
    """Before anything is locked or built: hosts where ``sudo -n true`` works need no password; for the others
    ``ask`` once."""
    sudo = [target for target in targets if target.host.sudo]
    if not sudo:
        return
    probed = on_each(sudo, without_password, lambda t: t.name)
    needing = [t for t, free in probed.done if not free] + [t for t, _ in probed.failed]
    if needing:
        password = ask(sorted((t.name for t in needing), key=[t.name for t in targets].index))
        for target in needing:
            target.password = password


def without_password(target: Target) -> bool:
    """Whether the deploy user may use sudo on this host without a password (``sudo -n true``): one call."""
    result = target.c.run(shlex.join(["sudo", "-n", "true"]), hide=True, warn=True, in_stream=False)
    return bool(result.ok)
