"""What keeps parallel test runs apart: ports, machine-wide locks, shared build products and load-scaled waits.

Tests run in several pytest-xdist workers at once, and ``scripts/test`` runs one suite per laptop Python at the
same time, so nothing a test starts may depend on a fixed port being free or on being alone on the machine:

- **Ports** come from a range of this worker's own, below the kernel's ephemeral range (so no outgoing
  connection can take one between the probe and the server's bind), and each is probed before it is handed out.
  The range is chosen by the suite's slot and the xdist worker's number. A suite claims a free slot when it
  starts (`claim_slot`: an flock held for the run, so two suites on one machine, from two checkouts or two
  interpreters, never share a range); ``DEPLOYTOOL_TEST_SLOT`` set by hand forces one.
- **Machine-wide state** (the shared ``deploy`` account, sudoers drop-ins) is changed under ``machine_lock``.
- **Expensive read-only files** (repacked wheels) are built once per run and shared by the workers
  (``shared_build``).
- **Waits** have a condition and a deadline that grows with the machine's load (``deadline``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_DIR = Path("/tmp/deploytool-tests-locks")
SHARED = "DEPLOYTOOL_TEST_SHARED"  # names the directory every worker of this run shares (made by conftest.py)
_FIRST_PORT, _PORTS_PER_WORKER, _WORKERS_PER_SLOT = 10000, 250, 8
SLOT = "DEPLOYTOOL_TEST_SLOT"
_held_slot: int | None = None  # the descriptor of the flock that holds this suite's slot, for the run's life


def claim_slot() -> None:
    """Give this suite (the pytest controller, before its workers start) a slot no other suite running on this
    machine holds, in the environment its workers inherit; the flock goes with the process."""
    global _held_slot
    if os.environ.get(SLOT) or _held_slot is not None:
        return
    LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    count = max(1, (_ephemeral_low() - _FIRST_PORT) // (_PORTS_PER_WORKER * _WORKERS_PER_SLOT))
    for number in range(count):
        descriptor = os.open(LOCK_DIR / f"slot-{number}", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        _held_slot = descriptor
        os.environ[SLOT] = str(number)
        return
    raise RuntimeError(f"all {count} test slots are taken: {count} suites already run on this machine")


def worker_number() -> int:
    """This xdist worker's number (``gw3`` -> 3), 0 outside xdist."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else 0


def slot() -> int:
    """This worker's index among every worker of every suite running here (suites differ by DEPLOYTOOL_TEST_SLOT)."""
    suite = int(os.environ.get(SLOT, "0") or 0)
    return suite * _WORKERS_PER_SLOT + worker_number() % _WORKERS_PER_SLOT


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_next_port = 0


def free_port(*addresses: str) -> int:
    """A port of this worker's range that nothing listens on, on every given address (default 127.0.0.1).

    Each call hands out the next port of the range (so a worker never hands the same one out twice in a row of
    500), skipping any that another process holds."""
    global _next_port
    first = _FIRST_PORT + slot() * _PORTS_PER_WORKER
    if first + _PORTS_PER_WORKER > _ephemeral_low():
        raise RuntimeError(f"test slot {slot()} has no port range below the ephemeral ports")
    for _ in range(_PORTS_PER_WORKER):
        port = first + _next_port % _PORTS_PER_WORKER
        _next_port += 1
        if all(_bindable(address, port) for address in addresses or ("127.0.0.1",)):
            return port
    raise RuntimeError(f"no free port in {first}-{first + _PORTS_PER_WORKER - 1}")


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def reserved_port(*addresses: str) -> Iterator[int]:
    """A port held bound (not listening) on ``addresses`` while the block runs: a connection to it is refused,
    and no other process can listen there meanwhile."""
    port = free_port(*addresses)
    holders = []
    try:
        for address in addresses:
            holder = socket.socket()
            holders.append(holder)
            holder.bind((address, port))
        yield port
    finally:
        for holder in holders:
            holder.close()


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Hold the machine-wide lock ``name`` (an flock, released if the holder dies) while the block runs."""
    LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    with open(LOCK_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_directory() -> Path:
    """The directory this run's workers share, for what is built once (`shared_build`)."""
    return Path(os.environ[SHARED])


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc ("R", "S", "D", "T", "Z"...), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def shared_build(root: Path, name: str, build: Callable[[Path], object]) -> Path:
    """The directory ``root/name`` filled once by ``build(directory)`` for every worker sharing ``root``.

    The first worker to come builds it under a lock and marks it complete; the others wait for that lock and
    reuse the result. A build that failed leaves no mark, so the next worker tries again."""
    directory, done = root / name, root / f"{name}.done"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not done.exists():
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir()
            build(directory)
            done.touch()
    return directory


def load_factor() -> float:
    """How much slower than an idle machine this one is likely to be now: runnable work per core, at least 1."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def deadline(seconds: float) -> float:
    """A ``time.monotonic()`` deadline ``seconds`` from now on an idle machine, stretched by the current load."""
    return time.monotonic() + seconds * load_factor()


def wait_for(condition: Callable[[], object], seconds: float = 30.0, what: str = "condition") -> None:
    """Return once ``condition()`` is true (an exception counts as false); fail after the load-scaled deadline."""
    until = deadline(seconds)
    while True:
        try:
            if condition():
                return
        except Exception:
            pass
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what} ({seconds:.0f} s, load {os.getloadavg()[0]:.1f})")
        time.sleep(0.05)
