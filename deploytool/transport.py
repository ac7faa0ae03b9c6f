"""Connections to hosts: SSH with host keys checked against known_hosts, or this machine for local stages.

Both kinds answer ``run(command, hide=..., warn=..., in_stream=...)`` (Fabric's `Connection` and Invoke's
`Context`), so every helper takes the connection first and runs the same on either.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
from typing import Any, Protocol

import paramiko
from fabric import Config, Connection
from invoke.context import Context

from .errors import RemoteError
from .inventory import HostConfig
from .sshconfig import Endpoint, resolve


class Runner(Protocol):
    """What the helpers need of a connection."""

    def run(self, command: str, **kwargs: Any) -> Any: ...

    def sudo(self, command: str, **kwargs: Any) -> Any: ...


class UnknownHostKey(paramiko.SSHException):
    """A host (or jump host) offered a key that is not in known_hosts: carries the key for the message."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"Server {hostname!r} not found in known_hosts")
        self.key = key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Paramiko's `RejectPolicy`, keeping the offered key so the error can show its fingerprint."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key)


def _known_hosts(host: HostConfig) -> str:
    known_hosts = os.path.expanduser(host.known_hosts)
    if not os.path.exists(known_hosts):
        raise RemoteError(
            host.name,
            f"known_hosts file {known_hosts} does not exist; add the host's key to it (ssh-keyscan)",
        )
    return known_hosts


def _ssh_connection(host: HostConfig, endpoint: Endpoint, known_hosts: str) -> Connection:
    """A Fabric `Connection` to ``endpoint`` exactly as resolved (Fabric reads no ssh_config itself), through
    its jump hosts, every hop's host key checked against ``known_hosts``."""
    connect_kwargs: dict[str, Any] = {}
    if endpoint.identity_files:
        connect_kwargs["key_filename"] = list(endpoint.identity_files)
    if endpoint.identities_only:
        connect_kwargs["look_for_keys"] = False
    gateway: Connection | str | bool = False
    if endpoint.via is not None:
        gateway = _ssh_connection(host, endpoint.via, known_hosts)
    elif endpoint.proxy_command is not None:
        gateway = endpoint.proxy_command
    connection = Connection(
        endpoint.hostname,
        user=endpoint.user,
        port=endpoint.port,
        gateway=gateway,
        connect_timeout=host.connect_timeout,
        connect_kwargs=connect_kwargs,
        config=Config(overrides={"run": {"echo_stdin": False}}, ssh_config=paramiko.SSHConfig()),
    )
    # Fabric accepts unknown host keys by default, its gateways included; a deploy tool must not.
    connection.client.set_missing_host_key_policy(_RejectUnknown())
    try:
        connection.client.load_host_keys(known_hosts)
    except (OSError, paramiko.SSHException) as error:
        raise RemoteError(host.name, f"cannot read known_hosts file {known_hosts}: {error}") from None
    return connection


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>``, as OpenSSH prints a key's fingerprint."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode()
    return f"SHA256:{digest.rstrip('=')}"


def _open(host: HostConfig, connection: Connection, endpoint: Endpoint, role: str) -> None:
    """Open one hop (its gateway already open): errors name it (``bastion b1 (10.0.0.1:2222)``)."""
    where = endpoint.describe() if role == "host" else f"{role} {endpoint.alias} ({endpoint.describe()})"
    known = host.known_hosts
    try:
        connection.open()
    except paramiko.BadHostKeyException as error:
        raise RemoteError(
            host.name,
            f"host key of {where} does not match {known} (got {error.key.get_name()} {fingerprint(error.key)}); "
            "if the host was really re-keyed, fix known_hosts",
        ) from None
    except UnknownHostKey as error:
        scan = f"ssh-keyscan -p {endpoint.port} {endpoint.hostname}"
        how = f"({scan} >> {known})" if endpoint.via is None else f"(on {endpoint.via.alias}: {scan})"
        raise RemoteError(
            host.name,
            f"host key of {where} is unknown: it is not in {known} (it offered {error.key.get_name()} "
            f"{fingerprint(error.key)}); verify the key and add it {how}",
        ) from None
    except paramiko.ChannelException as error:
        assert endpoint.via is not None
        raise RemoteError(
            host.name, f"jump host {endpoint.via.alias} cannot reach {where}: {error.text or error.code}"
        ) from None
    except paramiko.SSHException as error:
        raise RemoteError(host.name, f"SSH to {where} failed: {error}") from None
    except (TimeoutError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise RemoteError(host.name, f"cannot connect to {where}: {reason}") from None


def _chain(connection: Connection) -> list[Connection]:
    """``connection`` and its gateways, the one the laptop connects to first."""
    gateway = connection.gateway
    return [*_chain(gateway), connection] if isinstance(gateway, Connection) else [connection]


def connect(host: HostConfig) -> Runner:
    """Open a connection to ``host``: raises `RemoteError` with a reason the user can act on."""
    if host.is_local:
        local: Runner = Context()
        return local
    if host.identity_file and not os.path.isfile(host.identity_file):
        missing = "does not exist" if not os.path.exists(host.identity_file) else "is not a file"
        raise RemoteError(
            host.name,
            f"identity_file {host.identity_file} {missing}; point identity_file in hosts.yml at the private key",
        )
    known_hosts = _known_hosts(host)
    endpoint = resolve(host)
    connection = _ssh_connection(host, endpoint, known_hosts)
    try:
        for hop, link in zip([*endpoint.hops, endpoint], _chain(connection), strict=True):
            _open(host, link, hop, "host" if hop is endpoint else "jump host")
    except RemoteError:
        close(connection)
        raise
    remote: Runner = connection
    return remote


def close(connection: Runner) -> None:
    """Close ``connection`` and its jump hosts' connections if it is an SSH connection."""
    if isinstance(connection, Connection):
        for link in reversed(_chain(connection)):
            link.close()


def git_remote(host: HostConfig, repo_path: str) -> tuple[str, str | None]:
    """Return the URL git pushes to for ``repo_path`` on ``host`` and the ``GIT_SSH_COMMAND`` (None for a local
    stage): ssh with the very values the Fabric connection uses, through the same jump hosts, checking every
    hop's host key as strictly."""
    if host.is_local:
        return repo_path, None
    endpoint = resolve(host)
    name = f"[{endpoint.hostname}]" if ":" in endpoint.hostname else endpoint.hostname
    url = f"ssh://{endpoint.user}@{name}:{endpoint.port}{repo_path}"
    return url, shlex.join(["ssh", *_ssh_options(host, endpoint)])


def _ssh_options(host: HostConfig, endpoint: Endpoint) -> list[str]:
    """OpenSSH options to reach ``endpoint`` (not its name, user and port): no ssh_config file (everything
    resolved is given here), strict host keys, its keys and its jump hosts."""
    options = [
        "-F", os.devnull,
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "CheckHostIP=no",
        "-o", f"UserKnownHostsFile={os.path.expanduser(host.known_hosts)}",
        "-o", f"ConnectTimeout={host.connect_timeout}",
    ]  # fmt: skip
    for key in endpoint.identity_files:
        options += ["-i", key]
    if endpoint.identities_only:
        options += ["-o", "IdentitiesOnly=yes"]
    proxy = endpoint.proxy_command
    if endpoint.via is not None:
        via = endpoint.via
        hop = ["ssh", *_ssh_options(host, via), "-W", f"[{endpoint.hostname}]:{endpoint.port}"]
        hop += ["-l", via.user, "-p", str(via.port), "--", via.hostname]
        proxy = shlex.join(hop).replace("%", "%%")  # ssh expands %-tokens in a ProxyCommand: none are meant here
    if proxy is not None:
        options += ["-o", f"ProxyCommand={proxy}"]
    return options
