"""A real OpenSSH server on several loopback addresses, for tests: each address is one "host"."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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

    def stop(self) -> None:
        self.signal_all(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


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
    try:
        pwd.getpwnam(DEPLOY_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", DEPLOY_USER], check=True)
    # A fresh account is locked ("!"), and sshd without PAM refuses locked accounts even for keys: "*" means
    # "no password can match" without locking it.
    subprocess.run(["usermod", "--password", "*", DEPLOY_USER], check=True)
    return DEPLOY_USER


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESSES[0], 0))
        return int(probe.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start(base: Path, addresses: tuple[str, ...] = ADDRESSES) -> SshServer:
    """Start sshd on ``addresses`` under ``base`` (which must be traversable by the login user) and wait until it
    listens."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    user = _ensure_deploy_user()
    host_key, client_key = base / "host_key", base / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_key.pub").read_text())
    authorized.chmod(0o644)
    port = _free_port()
    host_public_key = " ".join((base / "host_key.pub").read_text().split()[:2])
    known_hosts = base / "known_hosts"
    known_hosts.write_text("".join(f"[{address}]:{port} {host_public_key}\n" for address in addresses))
    config = base / "sshd_config"
    listen = "".join(f"ListenAddress {address}:{port}\n" for address in addresses)
    config.write_text(
        f"{listen}HostKey {host_key}\nPidFile {base / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        f"AllowUsers {user}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin no\nMaxSessions 50\nMaxStartups 100\nLogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(base / "sshd.log", "wb")  # noqa: SIM115 - owned by the server's lifetime
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(base / 'sshd.log').read_text()}")
        try:
            with socket.create_connection((addresses[-1], port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError("sshd did not start listening within 10 s")
    return SshServer(process, base, port, user, addresses, client_key, known_hosts, host_public_key)
