"""Connections to hosts: SSH with host keys checked against known_hosts, or this machine for local stages.

Both kinds answer ``run(command, hide=..., warn=..., in_stream=...)`` (Fabric's `Connection` and Invoke's
`Context`), so every helper takes the connection first and runs the same on either.

`run` bounds each command by the host's time for its phase and tells a host that stopped answering
(`NotAnswering`), a connection that dropped (`ConnectionLost`) and a run stopped on the laptop (`Interrupted`)
apart from a step that failed.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko
from fabric import Config, Connection
from invoke.context import Context
from invoke.exceptions import CommandTimedOut, ThreadException
from invoke.watchers import StreamWatcher

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
        _links[id(local)] = _Link(host)
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
    _links[id(remote)] = _Link(host)
    return remote


def close(connection: Runner) -> None:
    """Close ``connection`` if it is an SSH connection."""
    _links.pop(id(connection), None)
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
        "-o", f"ServerAliveInterval={alive_interval(host)}",
        "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
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


#: Seconds the phases other than build and push (check, switch, clean-up, listings) may take at most, whatever
#: the host's ``timeout`` (a build installs; the others run a few quick commands and the stage's reloads).
SHORT_PHASE = 120
LONG_PHASES = ("build", "push")
#: Keepalives unanswered in a row before git's ssh gives up on a host.
ALIVE_COUNT = 3


class ConnectionLost(RemoteError):
    """The connection to the host ended while a command ran on it: whatever ran there was cut short."""


class NotAnswering(ConnectionLost):
    """The host stopped answering: a phase ran out of time and a keepalive got no reply either."""


class Interrupted(RemoteError):
    """The command was cut short (or not started) because the run was interrupted on the laptop."""


@dataclass
class _Link:
    """What `run` knows of an open connection: its host, and whether commands on it are still tried."""

    host: HostConfig
    given_up: bool = False  # the host stopped answering: nothing more is tried on it in this run
    interrupted: bool = False  # the run was interrupted: commands are refused until `resume`


_links: dict[int, _Link] = {}


def phase_timeout(host: HostConfig, phase: str) -> int:
    """Seconds ``phase`` may take on ``host``: ``timeout`` for build and push, at most `SHORT_PHASE` otherwise."""
    return host.timeout if phase in LONG_PHASES else min(host.timeout, SHORT_PHASE)


def alive_interval(host: HostConfig) -> int:
    """Seconds between SSH keepalives: often enough to notice a dead host well within its timeout."""
    return max(1, min(15, host.timeout // (ALIVE_COUNT + 1)))


class _Clock(StreamWatcher):
    """Notes when the host last sent output (invoke hands every chunk to its watchers)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = time.monotonic()

    def submit(self, stream: str) -> list[str]:
        self.last = time.monotonic()
        return []

    def silent(self) -> int:
        return round(time.monotonic() - self.last)


def _answers(c: Connection, wait: float) -> bool:
    """Whether the host replies to a keepalive (a global request OpenSSH must answer) within ``wait`` s."""
    transport = c.transport
    if transport is None or not transport.is_active():
        return False
    replied = threading.Event()

    def ask() -> None:
        transport.global_request("keepalive@openssh.com", wait=True)  # returns at once if the transport dies
        replied.set()

    threading.Thread(target=ask, daemon=True).start()
    return replied.wait(wait) and transport.is_active()


def _connection_ended(c: Runner) -> bool:
    """Whether an SSH connection is gone (a channel that closed without an exit status: the transport died)."""
    if not isinstance(c, Connection):
        return False
    transport = c.transport
    if transport is None:
        return True
    transport.join(2.0)  # it closes channels just before it stops: let it finish dying, if it is
    return not transport.is_active()


def _nowhere(output: str) -> str:
    return ""


def run(c: Runner, command: str, *, phase: str = "", label: Callable[[str], str] = _nowhere, **kwargs: Any) -> Any:
    """Run ``command`` on ``c`` within the host's time for ``phase`` (see `phase_timeout`), with keepalives.

    Returns the result as ``c.run`` does (``warn``, ``hide`` and the rest are passed on), but raises
    `NotAnswering` when the time ran out and the host does not answer a keepalive, a `RemoteError` when the
    phase took too long on a host that does answer, `ConnectionLost` when the connection dropped, and
    `Interrupted` after `interrupt`. ``label(output so far)`` says where it was, for those messages."""
    link = _links.get(id(c))
    if link is None:  # a connection this module did not open
        return c.run(command, **kwargs)
    host, during = link.host, f" during {phase}" if phase else ""
    if link.interrupted:
        raise Interrupted(host.name, f"interrupted on the laptop{during}")
    if link.given_up:
        raise NotAnswering(host.name, f"not answering; nothing more was tried{during}")
    limit, clock = phase_timeout(host, phase), _Clock()
    try:
        if isinstance(c, Connection):
            c.open()  # again, if an interruption or a lost connection closed it
            c.transport.set_keepalive(alive_interval(host))
        result = c.run(command, timeout=limit, watchers=[clock], **kwargs)
    except CommandTimedOut as timed_out:
        if link.interrupted:
            raise Interrupted(host.name, f"interrupted on the laptop{during}") from None
        where = label(timed_out.result.stderr)
        if isinstance(c, Connection) and not _answers(c, min(10, limit)):
            link.given_up = True
            c.close()
            raise NotAnswering(host.name, f"not answering (no reply for {clock.silent()} s{during}{where})") from None
        raise RemoteError(
            host.name,
            f"{phase or 'a remote command'} did not finish within {limit} s{where}; the host still answers: "
            "if it is just slow, raise timeout in hosts.yml",
        ) from None
    except (ThreadException, paramiko.SSHException, EOFError, OSError) as error:
        if link.interrupted:
            raise Interrupted(host.name, f"interrupted on the laptop{during}") from None
        if not isinstance(c, Connection):
            raise
        raise ConnectionLost(host.name, f"connection lost{during} ({type(error).__name__}: {error})") from None
    if result.return_code == -1 and _connection_ended(c):
        if link.interrupted:
            raise Interrupted(host.name, f"interrupted on the laptop{during}")
        raise ConnectionLost(host.name, f"connection lost{during}{label(result.stderr)}")
    return result


def interrupt(c: Runner) -> None:
    """Cut short what runs on ``c`` (the run was interrupted): close the connection, and refuse further
    commands on it until `resume`. A local command cannot be cut short: it is waited for."""
    link = _links.get(id(c))
    if link is not None:
        link.interrupted = True
    if isinstance(c, Connection):
        c.close()


def resume(c: Runner) -> None:
    """Allow commands on ``c`` again after `interrupt` (to clean up); they reconnect as needed."""
    link = _links.get(id(c))
    if link is not None:
        link.interrupted = False


def ssh_failure(host: HostConfig, phase: str, stderr: str) -> RemoteError | None:
    """The `NotAnswering` or `ConnectionLost` that OpenSSH's own messages in ``stderr`` describe, if any."""
    if "not responding" in stderr or "Connection timed out" in stderr:
        wait = alive_interval(host) * ALIVE_COUNT
        return NotAnswering(host.name, f"not answering (no reply for {wait} s during {phase})")
    if any(text in stderr for text in ("Connection closed by", "Connection reset by", "Broken pipe")):
        return ConnectionLost(host.name, f"connection lost during {phase}")
    return None
