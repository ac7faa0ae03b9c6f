"""A real OpenSSH server on several loopback addresses, for tests: each address is one "host"."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.isolation import deadline, free_port, machine_lock, process_state, reserved_port, slot

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
DEPLOY_USER = "deploy"


@dataclass
class SshServer:
    """A running sshd and what a client needs to use it."""

    process: subprocess.Popen[bytes]
    base: Path
    port: int
    user: str
    addresses: tuple[str, ...]
    client_key: Path
    known_hosts: Path
    host_public_key: str

    def host_root(self, name: str) -> Path:
        """A fresh directory the login user owns, to serve as one host's deploy root's parent."""
        path = self.base / "hosts" / name
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam(self.user)
            for directory in (self.base / "hosts", path):
                os.chown(directory, account.pw_uid, account.pw_gid)
        return path

    def children(self) -> list[int]:
        """Every process below the listening sshd: the per-connection sshd processes and what they run."""
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
        found, frontier = [], [self.process.pid]
        while frontier:
            below = [pid for pid, parent in parents.items() if parent in frontier]
            found += below
            frontier = below
        return found

    def signal_all(self, signum: int, *, only_sshd: bool = False) -> None:
        """Send ``signum`` to the listening sshd and everything below it (or only to the sshd processes below)."""
        pids = self.children() if only_sshd else [self.process.pid, *self.children()]
        for pid in pids:
            try:
                if only_sshd and not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd"):
                    continue
                os.kill(pid, signum)
            except (OSError, ProcessLookupError):
                pass

    def freeze(self, deadline_s: float = 10.0) -> list[int]:
        """SIGSTOP the sshd and everything below it, again until no process there still runs; return the pids.

        One pass can miss a child forked between listing and signalling, and a stop lands asynchronously.
        """
        until, signalled = deadline(deadline_s), set()
        while True:
            signalled.update([self.process.pid, *self.children()])
            self.signal_all(signal.SIGSTOP)
            time.sleep(0.05)
            pids = [self.process.pid, *self.children()]
            running = [pid for pid in pids if not _frozen(pid, signalled)]
            if not running:
                return pids
            if time.monotonic() > until:
                raise AssertionError(f"could not freeze {running}: states {[process_state(pid) for pid in running]}")

    def restart(self) -> None:
        """Start the listening sshd again (same config, keys and port) after it was killed."""
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        log = open(self.base / "sshd.log", "ab")  # noqa: SIM115 - owned by the server's lifetime
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.base / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
        )
        until = deadline(20)
        while not _listening(self.addresses[-1], self.port, None):
            if self.process.poll() is not None or time.monotonic() > until:
                raise RuntimeError(f"sshd did not listen again: {(self.base / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.signal_all(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _frozen(pid: int, signalled: set[int]) -> bool:
    """Whether ``pid`` is stopped, gone, or cannot run again before it stops.

    A process in uninterruptible sleep ("D") does not stop until it leaves the kernel: a parent waiting in
    ``vfork()`` for a child that was stopped before it could ``exec`` (Python's subprocess uses vfork) stays
    there for good. Once a SIGSTOP is pending on it, it stops before it runs any code of its own again.
    """
    state = process_state(pid)
    return state in ("T", "t", "Z", "X", None) or (state == "D" and pid in signalled)


def available() -> str | None:
    """None if a test sshd can run here, else why not."""
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is not installed"
    return None


def _ensure_deploy_user() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    with machine_lock("account"):  # parallel workers and suites share the account
        return _make_deploy_user()


def _make_deploy_user() -> str:
    try:
        pwd.getpwnam(DEPLOY_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", DEPLOY_USER], check=True)
    # A fresh account is locked ("!"), and sshd without PAM refuses locked accounts even for keys: "*" means
    # "no password can match" without locking it. Only a locked account is changed, so a test run starting here
    # never takes away the password another run's sudo tests gave the shared account.
    if _password_field(DEPLOY_USER).startswith("!"):
        subprocess.run(["usermod", "--password", "*", DEPLOY_USER], check=True)
    return DEPLOY_USER


def _password_field(user: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            return rest.partition(":")[0]
    return "!"


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start(
    base: Path,
    addresses: tuple[str, ...] = ADDRESSES,
    port: int | None = None,
    netns: str | None = None,
    log_level: str = "ERROR",
) -> SshServer:
    """Start sshd under ``base`` (which must be traversable by the login user) and wait until it listens: on
    ``addresses`` at ``port`` (a free one by default), inside the network namespace ``netns`` if given."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    user = _ensure_deploy_user()
    host_key, client_key = base / "host_key", base / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_key.pub").read_text())
    authorized.chmod(0o644)
    port = port or free_port(*addresses)
    host_public_key = " ".join((base / "host_key.pub").read_text().split()[:2])
    known_hosts = base / "known_hosts"
    known_hosts.write_text("".join(f"[{address}]:{port} {host_public_key}\n" for address in addresses))
    config = base / "sshd_config"
    listen = "".join(f"ListenAddress {address}:{port}\n" for address in addresses)
    config.write_text(
        f"{listen}HostKey {host_key}\nPidFile {base / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        f"AllowUsers {user}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPermitRootLogin no\nMaxSessions 50\nMaxStartups 100\nLogLevel {log_level}\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(base / "sshd.log", "wb")  # noqa: SIM115 - owned by the server's lifetime
    in_netns = ["ip", "netns", "exec", netns] if netns else []
    process = subprocess.Popen([*in_netns, SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    until = deadline(10)
    while time.monotonic() < until:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(base / 'sshd.log').read_text()}")
        if _listening(addresses[-1], port, netns):
            break
        time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError("sshd did not start listening within 10 s")
    return SshServer(process, base, port, user, addresses, client_key, known_hosts, host_public_key)


def _listening(address: str, port: int, netns: str | None) -> bool:
    if netns is None:
        try:
            with socket.create_connection((address, port), timeout=0.2):
                return True
        except OSError:
            return False
    listeners = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-Hltn", f"src {address}:{port}"], capture_output=True, text=True
    )
    return listeners.returncode == 0 and bool(listeners.stdout.strip())


@dataclass
class Bastion:
    """Deploy hosts inside a network namespace, reachable from here only through a bastion sshd.

    The namespace holds both servers: the hosts' sshd on its own loopback (127.0.0.2-3), which nothing outside
    the namespace can reach, and the bastion's sshd (port 2200) on the namespace's end of a veth pair, which this
    machine can reach. Each has its own host key and client key. The hosts' port is held bound (not listening)
    on 127.0.0.2-3 outside the namespace while the servers run, so a connection there from this machine is
    refused whatever else runs here.
    """

    netns: str
    hosts: SshServer
    bastion: SshServer
    outside: contextlib.ExitStack

    @property
    def bastion_address(self) -> str:
        return self.bastion.addresses[0]

    def stop(self) -> None:
        self.hosts.stop()
        self.bastion.stop()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        self.outside.close()


def netns_available() -> str | None:
    """None if network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip") or not shutil.which("ss"):
        return "iproute2 is not installed (apt-get install iproute2)"
    probe = f"dtprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def start_bastion(base: Path) -> Bastion:
    """Make a fresh network namespace with a veth pair to it, and start the hosts' and the bastion's sshd."""
    tag = secrets.token_hex(3)
    netns, outside, inside = f"dt{tag}", f"dt{tag}o", f"dt{tag}i"
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    subnet = next(  # the third number is this worker's own, so parallel workers never pick the same one
        f"10.213.{slot() % 256}.{fourth}"
        for fourth in random.sample(range(0, 256, 4), 64)
        if f"10.213.{slot() % 256}.{fourth + 1}/" not in used
    )
    prefix, last = subnet.rsplit(".", 1)
    ours, theirs = f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}"
    for command in (
        ["ip", "netns", "add", netns],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", netns],
        ["ip", "addr", "add", f"{ours}/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "-n", netns, "addr", "add", f"{theirs}/30", "dev", inside],
        ["ip", "-n", netns, "link", "set", inside, "up"],
        ["ip", "-n", netns, "link", "set", "lo", "up"],
    ):
        made = subprocess.run(command, capture_output=True, text=True)
        if made.returncode != 0:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
            subprocess.run(["ip", "link", "del", outside], capture_output=True)
            raise RuntimeError(f"{shlex.join(command)} failed: {made.stderr.strip()}")
    outside = contextlib.ExitStack()
    port = outside.enter_context(reserved_port(*ADDRESSES[:2]))
    hosts = start(base / "hosts", ADDRESSES[:2], port=port, netns=netns)
    bastion = start(base / "bastion", (theirs,), port=2200, netns=netns, log_level="DEBUG1")
    return Bastion(netns, hosts, bastion, outside)
