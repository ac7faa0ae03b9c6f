"""Connections to hosts: SSH with host keys checked against known_hosts, or this machine for local stages.

Both kinds answer ``run(command, hide=..., warn=..., in_stream=...)`` (Fabric's `Connection` and Invoke's
`Context`), so every helper takes the connection first and runs the same on either.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Protocol

import paramiko
from fabric import Config, Connection
from invoke.context import Context

from .errors import RemoteError
from .inventory import HostConfig


class Runner(Protocol):
    """What the helpers need of a connection."""

    def run(self, command: str, **kwargs: Any) -> Any: ...

    def sudo(self, command: str, **kwargs: Any) -> Any: ...


def _ssh_connection(host: HostConfig) -> Connection:
    connect_kwargs: dict[str, Any] = {}
    if host.identity_file:
        identity = os.path.expanduser(host.identity_file)
        if not os.path.isfile(identity):
            missing = "does not exist" if not os.path.exists(identity) else "is not a file"
            raise RemoteError(
                host.name, f"identity_file {identity} {missing}; point identity_file in hosts.yml at the private key"
            )
        connect_kwargs["key_filename"] = identity
    connection = Connection(
        host.address,
        user=host.user,
        port=host.port,
        connect_timeout=host.connect_timeout,
        connect_kwargs=connect_kwargs,
        config=Config(overrides={"run": {"echo_stdin": False}}),
    )
    # Fabric accepts unknown host keys by default; a deploy tool must not.
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known_hosts = os.path.expanduser(host.known_hosts)
    if not os.path.exists(known_hosts):
        raise RemoteError(
            host.name,
            f"known_hosts file {known_hosts} does not exist; add the host's key to it (ssh-keyscan)",
        )
    try:
        connection.client.load_host_keys(known_hosts)
    except (OSError, paramiko.SSHException) as error:
        raise RemoteError(host.name, f"cannot read known_hosts file {known_hosts}: {error}") from None
    return connection


def _describe(host: HostConfig) -> str:
    return f"{host.address}:{host.port}" if host.port != 22 else host.address


def connect(host: HostConfig) -> Runner:
    """Open a connection to ``host``: raises `RemoteError` with a reason the user can act on."""
    if host.is_local:
        local: Runner = Context()
        return local
    connection = _ssh_connection(host)
    where = _describe(host)
    try:
        connection.open()
    except paramiko.BadHostKeyException as error:
        raise RemoteError(
            host.name,
            f"host key of {where} does not match {host.known_hosts} (got {error.key.get_name()} "
            f"{error.key.get_fingerprint().hex()}); if the host was really re-keyed, fix known_hosts",
        ) from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" in str(error):
            raise RemoteError(
                host.name,
                f"host key of {where} is unknown: it is not in {host.known_hosts}; verify the key and add it "
                f"(ssh-keyscan -p {host.port} {host.address} >> {host.known_hosts})",
            ) from None
        raise RemoteError(host.name, f"SSH to {where} failed: {error}") from None
    except (TimeoutError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise RemoteError(host.name, f"cannot connect to {where}: {reason}") from None
    remote: Runner = connection
    return remote


def close(connection: Runner) -> None:
    """Close ``connection`` if it is an SSH connection."""
    if isinstance(connection, Connection):
        connection.close()


def git_ssh_command(host: HostConfig) -> str:
    """Return the ``GIT_SSH_COMMAND`` that makes git's own ssh check host keys as strictly as we do."""
    command = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={os.path.expanduser(host.known_hosts)}",
        "-o", f"ConnectTimeout={host.connect_timeout}",
    ]  # fmt: skip
    if host.identity_file:
        command += ["-i", host.identity_file, "-o", "IdentitiesOnly=yes"]
    return shlex.join(command)


def git_url(host: HostConfig, repo_path: str) -> str:
    """Return the URL git pushes to for ``repo_path`` on ``host``."""
    if host.is_local:
        return repo_path
    user = f"{host.user}@" if host.user else ""
    return f"ssh://{user}{host.address}:{host.port}{repo_path}"
