"""Connections to hosts: SSH with host keys checked against known_hosts, or this machine for local stages.

Both kinds answer ``run(command, hide=..., warn=..., in_stream=...)`` (Fabric's `Connection` and Invoke's
`Context`), so every helper takes the connection first and runs the same on either.

`run` bounds each command by the host's time for its phase and tells a host that stopped answering
(`NotAnswering`), a connection that dropped (`ConnectionLost`) and a run stopped on the laptop (`Interrupted`)
apart from a step that failed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke.config import Config as InvokeConfig
from invoke.context import Context
from invoke.exceptions import CommandTimedOut, ThreadException
from invoke.runners import Local
from invoke.watchers import StreamWatcher

from ..errors import RemoteError
from ..inventory import HostConfig
from ..reporting.terminal import escape_controls
from .sshconfig import Endpoint, resolve

#: Characters of stdout, and of stderr, that one command on a host may answer; beyond it the rest is read and
#: dropped, and the command fails as `AnswerTooLarge` (a host is not trusted: its answers are bounded).
ANSWER_LIMIT = 16 * 1024 * 1024


class AnswerTooLarge(Exception):
    """A command's output went past `ANSWER_LIMIT` (raised by the runners below, named per host by `run`)."""

    def __init__(self, stream: str, limit: int) -> None:
        super().__init__(f"its {stream} went past {limit // (1024 * 1024)} MiB (refused)")


class _Bounded:
    """Invoke's output reading, bounded and linear: Invoke joins everything read so far for its watchers after
    every chunk of 1000 bytes (quadratic: 16 MB of output cost 11 s of CPU), and keeps all of it. Here chunks
    are 64 KiB, the join happens only for watchers that look at the text (not `_Clock`), and past
    `answer_limit` characters the rest is read and dropped, and the result refused."""

    read_chunk_size = 65536
    answer_limit = ANSWER_LIMIT
    watchers: list[StreamWatcher]
    too_large: str | None = None

    def _handle_output(self, buffer_: list[str], hide: bool, output: Any, reader: Callable[[int], Any]) -> None:
        size = 0
        runner: Any = self
        for data in runner.read_proc_output(reader):
            size += len(data)
            if size > self.answer_limit:
                self.too_large = self.too_large or ("output" if reader == runner.read_proc_stdout else "error output")
                continue  # read to the end (the host is not left blocked on a full pipe), kept nowhere
            if not hide:
                runner.write_our_output(stream=output, string=data)
            buffer_.append(data)
            self.respond(buffer_)

    def respond(self, buffer_: list[str]) -> None:
        if all(isinstance(watcher, _Clock) for watcher in self.watchers):
            for watcher in self.watchers:
                watcher.seen(id(buffer_), buffer_[-1] if buffer_ else "")
            return
        super().respond(buffer_)  # type: ignore[misc]

    def generate_result(self, **kwargs: Any) -> Any:
        if self.too_large:
            raise AnswerTooLarge(self.too_large, self.answer_limit)
        return super().generate_result(**kwargs)  # type: ignore[misc]


class _Polling:
    """Invoke's runner polls, every ``input_sleep`` (10 ms), for its command's end and for its stdin thread to
    stop: up to 20 ms after every command, most of a short one's time. Here the first polls of a command come
    quickly and slow down as it runs: one tenth of the time it has run so far, from 1 ms up to Invoke's 10 ms.
    A command of 30 ms is seen ending within about 3 ms; a long build polls as before (a fleet's laptop CPU)."""

    _poll_started: float | None = None
    _slowest_poll = 0.01

    @property
    def input_sleep(self) -> float:
        now = time.monotonic()
        if self._poll_started is None:
            self._poll_started = now
        return min(self._slowest_poll, max(0.001, (now - self._poll_started) / 10))

    @input_sleep.setter
    def input_sleep(self, value: object) -> None:
        # Invoke's Runner.__init__ copies the class attribute, which is this property here: Invoke's 10 ms stays
        if isinstance(value, (int, float)):
            self._slowest_poll = float(value)


class BoundedRemote(_Polling, _Bounded, Remote):  # type: ignore[misc]
    """Fabric's runner with bounded, linear output reading, and quick polls for a short command's end."""


class BoundedLocal(_Bounded, Local):
    """Invoke's local runner with bounded, linear output reading."""


class _LibraryMessages(logging.Handler):
    """Where paramiko's log goes (its transport thread logs a dying connection's traceback, line by line, at
    ERROR): nowhere by default, since `run` reports what happened to the host in its own words; with
    `show_library_messages` (``--verbose``), one line per message on stderr, traceback lines left out."""

    verbose = False
    #: The lines of a logged traceback (paramiko logs one line per record): headers, frames, exception lines.
    _TRACEBACK = re.compile(r"Traceback |During handling |The above exception |\s|$|[\w.]+(Error|Exception|Exit)\b")

    def emit(self, record: logging.LogRecord) -> None:
        if not self.verbose or record.levelno < logging.WARNING:
            return
        try:
            text = record.getMessage().strip().splitlines()
        except Exception:  # a message that cannot be formatted is not worth a traceback either
            return
        if text and not self._TRACEBACK.match(record.getMessage()):
            sys.stderr.write(escape_controls(f"{record.name}: {text[0]}") + "\n")


_LIBRARY = _LibraryMessages()
for _name in ("paramiko", "invoke", "fabric"):
    logging.getLogger(_name).addHandler(_LIBRARY)
    logging.getLogger(_name).propagate = False  # never up to the root logger, nor Python's last-resort printing


def show_library_messages(verbose: bool) -> None:
    """Show paramiko's (and Invoke's, Fabric's) warnings and errors as one line each on stderr (``--verbose``)."""
    _LIBRARY.verbose = verbose


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


def _known_hosts_named(host: HostConfig, endpoint: Endpoint) -> tuple[str, ...]:
    """The known_hosts files for ``endpoint``: hosts.yml's ``known_hosts`` for every hop when it is set, else
    that hop's own UserKnownHostsFile from ssh_config (OpenSSH's default: ~/.ssh/known_hosts and known_hosts2)."""
    if host.known_hosts:
        return (os.path.expanduser(host.known_hosts),)
    return endpoint.known_hosts or (os.path.expanduser("~/.ssh/known_hosts"),)


def known_hosts_files(host: HostConfig, endpoint: Endpoint) -> tuple[str, ...]:
    """Those of ``endpoint``'s known_hosts files that exist, which its key must be in; none: an error naming the
    first."""
    files = _known_hosts_named(host, endpoint)
    existing = tuple(path for path in files if os.path.exists(path))
    if not existing:
        raise RemoteError(
            host.name,
            f"known_hosts file {files[0]} does not exist; add the host's key to it (ssh-keyscan)",
        )
    return existing


class _Connection(Connection):  # type: ignore[misc]
    """A Fabric `Connection` whose own TCP socket (no jump host) is opened here with ``TCP_NODELAY``.

    Paramiko's socket keeps Nagle's algorithm, and SSH sends small packets back to back (a channel's request,
    its data, its EOF): each second one waited for the server's delayed ACK, about 40 ms on Linux, several times
    per command. OpenSSH's own client sets ``TCP_NODELAY`` as well, and Fabric sets it on its tunnels' sockets.
    Through a jump host the socket is a channel of the jump host's connection, which is opened here in turn.
    """

    def open(self) -> Any:
        if self.is_connected or self.gateway:
            return super().open()
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connect_kwargs["sock"] = sock
            return super().open()
        except BaseException:
            sock.close()
            raise
        finally:
            self.connect_kwargs.pop("sock", None)


def _ssh_connection(host: HostConfig, endpoint: Endpoint) -> Connection:
    """A Fabric `Connection` to ``endpoint`` exactly as resolved (Fabric reads no ssh_config itself), through
    its jump hosts, every hop's host key checked against its known_hosts files (`known_hosts_files`)."""
    connect_kwargs: dict[str, Any] = {}
    if endpoint.identity_files:
        connect_kwargs["key_filename"] = list(endpoint.identity_files)
    if endpoint.identities_only:
        connect_kwargs["look_for_keys"] = False
    gateway: Connection | str | bool = False
    if endpoint.via is not None:
        gateway = _ssh_connection(host, endpoint.via)
    elif endpoint.proxy_command is not None:
        gateway = endpoint.proxy_command
    connection = _Connection(
        endpoint.hostname,
        user=endpoint.user,
        port=endpoint.port,
        gateway=gateway,
        connect_timeout=host.connect_timeout,
        connect_kwargs=connect_kwargs,
        config=Config(
            overrides={"run": {"echo_stdin": False}, "runners": {"remote": BoundedRemote}},
            ssh_config=paramiko.SSHConfig(),
        ),
    )
    # Fabric accepts unknown host keys by default, its gateways included; a deploy tool must not.
    connection.client.set_missing_host_key_policy(_RejectUnknown())
    for known_hosts in known_hosts_files(host, endpoint):
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
    try:
        connection.open()
    except paramiko.BadHostKeyException as error:
        known = " or ".join(known_hosts_files(host, endpoint))
        raise RemoteError(
            host.name,
            f"host key of {where} does not match {known} (got {error.key.get_name()} {fingerprint(error.key)}); "
            "if the host was really re-keyed, fix known_hosts",
        ) from None
    except UnknownHostKey as error:
        files = known_hosts_files(host, endpoint)
        known, scan = " or ".join(files), f"ssh-keyscan -p {endpoint.port} {endpoint.hostname}"
        # the command appends to the first file only: "a or b" is a sentence, not a path
        how = f"({scan} >> {files[0]})" if endpoint.via is None else f"(on {endpoint.via.alias}: {scan})"
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
        local: Runner = Context(InvokeConfig(overrides={"runners": {"local": BoundedLocal}}))
        _links[id(local)] = _Link(host)
        return local
    if host.identity_file and not os.path.isfile(host.identity_file):
        missing = "does not exist" if not os.path.exists(host.identity_file) else "is not a file"
        raise RemoteError(
            host.name,
            f"identity_file {host.identity_file} {missing}; point identity_file in hosts.yml at the private key",
        )
    endpoint = resolve(host)
    connection = _ssh_connection(host, endpoint)
    try:
        for hop, link in zip([*endpoint.hops, endpoint], _chain(connection), strict=True):
            _open(host, link, hop, "host" if hop is endpoint else "jump host")
    except RemoteError:
        close(connection)
        raise
    remote: Runner = connection
    _links[id(remote)] = _Link(host)
    return remote


def close(connection: Runner) -> None:
    """Close ``connection`` and its jump hosts' connections if it is an SSH connection."""
    _links.pop(id(connection), None)
    if isinstance(connection, Connection):
        for link in reversed(_chain(connection)):
            link.close()


#: Seconds the phases other than build and push (check, switch, clean-up, listings) may take at most, whatever
#: the host's ``timeout`` (a build installs; the others run a few quick commands and the stage's reloads).
SHORT_PHASE = 120
LONG_PHASES = ("build", "switch", "migrate")  # switch: the validate and after-switch commands may be slow
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
    running: str | None = None  # the phase of the command running on it, if one is


_links: dict[int, _Link] = {}


def phase_timeout(host: HostConfig, phase: str) -> int:
    """Seconds ``phase`` may take on ``host``: ``timeout`` for build and push, at most `SHORT_PHASE` otherwise."""
    return host.timeout if phase in LONG_PHASES else min(host.timeout, SHORT_PHASE)


def alive_interval(host: HostConfig) -> int:
    """Seconds between SSH keepalives: often enough to notice a dead host well within its timeout."""
    return max(1, min(15, host.timeout // (ALIVE_COUNT + 1)))


class _Clock(StreamWatcher):
    """Notes when the host last sent output (invoke hands every chunk to its watchers), and hands each whole line
    the host writes to ``on_line`` (live progress), reading only the new chunk (linear)."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.last = time.monotonic()
        self.on_line = on_line
        self.partial: dict[int, str] = {}  # per stream: the end of its last chunk, not yet a whole line

    def submit(self, stream: str) -> list[str]:
        self.last = time.monotonic()
        return []

    def seen(self, stream: int, chunk: str) -> None:
        self.last = time.monotonic()
        if self.on_line is None or not chunk:
            return
        text = self.partial.pop(stream, "") + chunk
        *lines, rest = text.split("\n")
        if len(rest) < 65536:  # a longer "line" is no progress line: not kept
            self.partial[stream] = rest
        for line in lines:
            if line.startswith('{"progress"'):
                with contextlib.suppress(Exception):  # a display must never break a run
                    self.on_line(line)

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


def run(
    c: Runner,
    command: str,
    *,
    phase: str = "",
    label: Callable[[str], str] = _nowhere,
    on_line: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``command`` on ``c`` within the host's time for ``phase`` (see `phase_timeout`), with keepalives.

    Returns the result as ``c.run`` does (``warn``, ``hide`` and the rest are passed on), but raises
    `NotAnswering` when the time ran out and the host does not answer a keepalive, a `RemoteError` when the
    phase took too long on a host that does answer, `ConnectionLost` when the connection dropped, and
    `Interrupted` after `interrupt`. ``label(output so far)`` says where it was, for those messages; ``on_line``
    is given each progress line (``{"progress": ...}``) the command writes, as it comes."""
    link = _links.get(id(c))
    if link is None:  # a connection this module did not open
        return c.run(command, **kwargs)
    host, during = link.host, f" during {phase}" if phase else ""
    if link.interrupted:
        raise Interrupted(host.name, f"interrupted on the laptop{during}")
    if link.given_up:
        raise NotAnswering(host.name, f"not answering; nothing more was tried{during}")
    limit, clock = phase_timeout(host, phase), _Clock(on_line)
    try:
        if isinstance(c, Connection):
            c.open()  # again, if an interruption or a lost connection closed it
            c.transport.set_keepalive(alive_interval(host))
        link.running = phase
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
    except AnswerTooLarge as error:
        raise RemoteError(host.name, f"{phase or 'a remote command'}: {error}") from None
    except (ThreadException, paramiko.SSHException, EOFError, OSError) as error:
        if link.interrupted:
            raise Interrupted(host.name, f"interrupted on the laptop{during}") from None
        if not isinstance(c, Connection):
            raise
        raise ConnectionLost(host.name, f"connection lost{during} ({_cause(error)})") from None
    finally:
        link.running = None
    if result.return_code == -1 and _connection_ended(c):
        if link.interrupted:
            raise Interrupted(host.name, f"interrupted on the laptop{during}")
        raise ConnectionLost(host.name, f"connection lost{during}{label(result.stderr)}")
    return result


def _cause(error: BaseException) -> str:
    """``Type: message`` of ``error`` in one line; for Invoke's ThreadException (whose text holds each thread's
    whole traceback), of the first exception a thread raised."""
    if isinstance(error, ThreadException) and error.exceptions:
        error = error.exceptions[0].value
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def interrupt(c: Runner, spare: Collection[str] = ()) -> None:
    """Cut short what runs on ``c`` (the run was interrupted): close the connection, and refuse further
    commands on it until `resume`. A command of a phase in ``spare`` is not cut short but left to end (its
    caller needs its answer: a check that takes the lock); a local command cannot be: both are waited for."""
    link = _links.get(id(c))
    if link is not None:
        link.interrupted = True
        if link.running is not None and link.running in spare:
            return
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
