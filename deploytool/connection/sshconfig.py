"""Where an SSH host really is: hosts.yml's settings over the user's ssh_config, resolved by OpenSSH itself.

``ssh -G`` prints the options OpenSSH would use for a destination (Host and Match blocks, Include, HostName,
User, Port, IdentityFile, ProxyJump, ProxyCommand), with hosts.yml's ``user``, ``port`` and ``gateway`` given as
command-line options, which OpenSSH lets win over the file. The result, an `Endpoint` (with the chain of jump
hosts it is reached through), is what both Fabric's connections and git's ssh are built from, so the two
always connect the same way.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from dataclasses import dataclass, replace

from ..errors import RemoteError
from ..inventory import HostConfig

#: ProxyJump hops nested deeper than this are taken for a loop in the ssh_config.
MAX_HOPS = 8

_HOP = re.compile(r"(?:ssh://)?(?:(?P<user>[^@/\s]+)@)?(?P<host>\[[^\]/\s]+\]|[^@:/\s\[\]]+)(?::(?P<port>\d{1,5}))?/?")


@dataclass(frozen=True)
class Endpoint:
    """One SSH destination as OpenSSH resolved it, and how it is reached."""

    alias: str  # the name looked up in ssh_config (hosts.yml's address, or a ProxyJump hop's host)
    hostname: str
    user: str
    port: int
    identity_files: tuple[str, ...]  # existing private keys, hosts.yml's identity_file alone when set
    identities_only: bool
    via: Endpoint | None = None  # the jump host the laptop reaches this one through
    proxy_command: str | None = None  # ssh_config's ProxyCommand (only when there is no jump host)
    known_hosts: tuple[str, ...] = ()  # ssh_config's UserKnownHostsFile for this hop, expanded

    def describe(self) -> str:
        """``host`` or ``host:port``, as a user would recognise it in a message."""
        return f"{self.hostname}:{self.port}" if self.port != 22 else self.hostname

    @property
    def hops(self) -> tuple[Endpoint, ...]:
        """The jump hosts, the one the laptop connects to first."""
        return (*self.via.hops, self.via) if self.via else ()


def config_file(host: HostConfig) -> str:
    """The ssh_config file read for ``host``: its ``ssh_config`` setting (``/dev/null``: none), else
    ``~/.ssh/config`` if it exists."""
    if host.ssh_config is not None:
        if host.ssh_config != os.devnull and not os.path.isfile(host.ssh_config):
            missing = "does not exist" if not os.path.exists(host.ssh_config) else "is not a file"
            raise RemoteError(
                host.name, f"ssh_config file {host.ssh_config} {missing}; fix or remove ssh_config in hosts.yml"
            )
        return host.ssh_config
    default = os.path.expanduser("~/.ssh/config")
    return default if os.path.isfile(default) else os.devnull


def resolve(host: HostConfig) -> Endpoint:
    """Resolve ``host`` through its ssh_config; raises `RemoteError` naming the host on any problem."""
    path = config_file(host)
    endpoint = _resolve(host, path, host.address, host.user, host.port, host.gateway, depth=0)
    if host.identity_file:  # hosts.yml's key wins outright, as IdentitiesOnly: no other key is offered
        endpoint = replace(endpoint, identity_files=(host.identity_file,), identities_only=True)
    return endpoint


def _resolve(
    host: HostConfig, path: str, alias: str, user: str | None, port: int | None, jump: str | None, depth: int
) -> Endpoint:
    if depth > MAX_HOPS:
        raise RemoteError(host.name, f"more than {MAX_HOPS} ProxyJump hops for {alias}: is there a loop in {path}?")
    options = _ssh_g(host, path, alias, user, port, jump)
    hostname = _one(host, options, "hostname", alias)
    resolved_user = _one(host, options, "user", alias)
    try:
        resolved_port = int(_one(host, options, "port", alias))
    except ValueError:
        raise RemoteError(host.name, f"ssh -G gave a bad port for {alias}") from None
    via = None
    proxy_command = None
    proxy_jump = options.get("proxyjump", ["none"])[0]
    if proxy_jump != "none":
        hops = proxy_jump.split(",")
        last = _HOP.fullmatch(hops[-1])
        if last is None or hops[-1].startswith("-"):
            raise RemoteError(host.name, f"cannot read the jump host {hops[-1]!r} of {alias} (ProxyJump or gateway)")
        hop_port = int(last["port"]) if last["port"] else None
        outer = ",".join(hops[:-1]) or None
        via = _resolve(host, path, last["host"].strip("[]"), last["user"], hop_port, outer, depth + 1)
    elif options.get("proxycommand", ["none"])[0] != "none":
        proxy_command = options["proxycommand"][0]
    identities_only = options.get("identitiesonly", ["no"])[0] == "yes"
    tokens = {"%%": "%", "%d": os.path.expanduser("~"), "%h": hostname, "%r": resolved_user, "%u": _local_user()}
    keys = [_expand(name, tokens) for name in options.get("identityfile", [])]
    known = [_expand(name, tokens) for line in options.get("userknownhostsfile", []) for name in line.split()]
    return Endpoint(
        alias, hostname, resolved_user, resolved_port, tuple(key for key in keys if os.path.isfile(key)),
        identities_only, via, proxy_command, tuple(known),
    )  # fmt: skip


def _ssh_g(
    host: HostConfig, path: str, alias: str, user: str | None, port: int | None, jump: str | None
) -> dict[str, list[str]]:
    command = ["ssh", "-G", "-F", path]
    if user:
        command += ["-l", user]
    if port:
        command += ["-p", str(port)]
    if jump:
        command += ["-o", f"ProxyJump={jump}"]
    command += ["--", alias]
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise RemoteError(host.name, "the OpenSSH client (ssh) is not installed on this machine") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and "Pseudo-terminal" not in line]
        raise RemoteError(host.name, f"cannot resolve {alias} with {path}: {' | '.join(lines[-3:]) or 'ssh -G failed'}")
    options: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key.lower(), []).append(value)
    return options


def _one(host: HostConfig, options: dict[str, list[str]], key: str, alias: str) -> str:
    values = options.get(key)
    if not values or not values[0]:
        raise RemoteError(host.name, f"ssh -G printed no {key} for {alias}")
    return values[0]


def _expand(name: str, tokens: dict[str, str]) -> str:
    name = os.path.expanduser(name)
    return re.sub(r"%.", lambda match: tokens.get(match.group(0), match.group(0)), name)


def _local_user() -> str:
    return getpass.getuser()
