"""Shared helpers for the benchmark scripts: timing, tables, the test sshd, a tiny app project, a mirror.

Everything runs on loopback only: the sshd listens on 127.0.0.2-5 and mirrors are served on 127.0.0.1.
Importing this module puts the repository root on ``sys.path`` so ``tests.sshd`` and ``deploytool`` import
from the working tree whatever the current directory is.
"""

from __future__ import annotations

import compileall
import functools
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

# An installed deploytool has its bytecode; an editable checkout run with PYTHONDONTWRITEBYTECODE=1 (as on the
# shared benchmark box) would compile every module at every `fab` start: compile it once, as pip would.
compileall.compile_dir(REPO / "deploytool", quiet=1)

from tests import sshd  # noqa: E402

HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
HOST_PYTHON_VERSION = subprocess.run(
    [HOST_PYTHON, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True
).stdout.strip()
HOST_NAMES = ("web1", "web2", "web3", "web4")
#: What the benchmarks download once (wheels, uv, ansible-core): outside the repository, kept between runs.
CACHE = Path.home() / ".cache" / "deploytool-bench"
PHASES = ("check", "push", "build", "publish", "finish")
PLAN = "plan (laptop: commit, pins, config)"
TOTAL = "total in-process"
FAB_TIMEOUT = 600  # seconds: one fab command never runs longer than this
# The environment an SSH session of the deploy user gets (sshd's compiled-in PATH), for direct timings.
DEPLOY_ENV_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"


# ---------------------------------------------------------------- timing and tables


@dataclass
class Samples:
    """Timings of one scenario, in seconds."""

    scenario: str
    hosts: int | str
    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> float:
        self.values.append(seconds)
        return seconds

    def row(self) -> list[str]:
        if not self.values:
            return [self.scenario, str(self.hosts), "-", "-", "0"]
        median, low = statistics.median(self.values), min(self.values)
        return [self.scenario, str(self.hosts), f"{median:.2f}", f"{low:.2f}", str(len(self.values))]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable in a terminal and pastable into the README)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "| " + " | ".join("-" * width for width in widths) + " |"
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])


def samples_table(samples: Sequence[Samples], second: str = "hosts") -> str:
    return table(["scenario", second, "median s", "min s", "runs"], [s.row() for s in samples])


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    holder: list[float] = []
    started = time.perf_counter()
    try:
        yield holder
    finally:
        holder.append(time.perf_counter() - started)


def machine_note() -> str:
    """CPU count and load average: other work on a 2-core box skews every figure, so print it with them."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) / {five:.2f} (5 min) when the tables were printed"


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def run(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = FAB_TIMEOUT, **kwargs: Any) -> str:
    """Run a command, raise with its output if it fails; return stdout."""
    result = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_timed(argv: Sequence[str], **kwargs: Any) -> float:
    started = time.perf_counter()
    run(argv, **kwargs)
    return time.perf_counter() - started


def as_deploy_user(server: sshd.SshServer, command: str) -> list[str]:
    """argv running ``command`` with ``sh -c`` as the sshd's login user, in the environment an SSH
    session gets (clean env, sshd's PATH), so direct timings match what a deploy runs."""
    home = os.path.expanduser(f"~{server.user}")
    env = ["env", "-i", f"HOME={home}", f"USER={server.user}", f"PATH={DEPLOY_ENV_PATH}", "LANG=C.UTF-8"]
    if os.geteuid() == 0 and server.user != "root":
        return ["runuser", "-u", server.user, "--", *env, "sh", "-c", command]
    return [*env, "sh", "-c", command]


# ---------------------------------------------------------------- sshd


def start_sshd(base: Path) -> sshd.SshServer:
    missing = sshd.available()
    if missing:
        raise SystemExit(f"cannot benchmark over SSH: {missing}")
    return sshd.start(base)


#: OpenSSH's MAX_LISTEN_SOCKS: one sshd listens on at most 16 addresses, so a larger fleet runs several.
ADDRESSES_PER_SSHD = 16
MAX_HOSTS = 64


def host_names(count: int) -> list[str]:
    return [f"web{i + 1}" for i in range(count)]


@dataclass
class Fleet:
    """``count`` loopback hosts (127.0.0.2, .3, ...): one sshd per 16 addresses, one known_hosts file for all."""

    servers: list[sshd.SshServer]
    known_hosts: Path
    hosts: dict[str, tuple[sshd.SshServer, str]]  # host name -> (its sshd, its address)

    @property
    def user(self) -> str:
        return self.servers[0].user

    def names(self, count: int) -> list[str]:
        return list(self.hosts)[:count]

    def fresh_roots(self, label: str, count: int) -> dict[str, str]:
        """New, empty deploy roots (owned by the login user) for the first ``count`` hosts."""
        return {
            name: str(server.host_root(f"{label}-{name}") / "app")
            for name, (server, _) in list(self.hosts.items())[:count]
        }

    def stage(self, roots: dict[str, str], etc_in_root: bool = False, **settings: Any) -> dict[str, Any]:
        """A stage of ``hosts.yml`` for these host names -> roots (each host its own address, port and key;
        ``etc_in_root``: each host's ``etc_root`` is ``<root>/etc``)."""
        hosts = {}
        for name, root in roots.items():
            server, address = self.hosts[name]
            entry = {"address": address, "port": server.port, "identity_file": str(server.client_key), "root": root}
            hosts[name] = {**entry, **({"etc_root": f"{root}/etc"} if etc_in_root else {})}
        return {"user": self.user, "known_hosts": str(self.known_hosts), **settings, "hosts": hosts}

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_fleet(base: Path, count: int) -> Fleet:
    """Start the sshds for ``count`` (1-64) loopback hosts under ``base``."""
    missing = sshd.available()
    if missing:
        raise SystemExit(f"cannot benchmark over SSH: {missing}")
    if not 1 <= count <= MAX_HOSTS:
        raise SystemExit(f"host count {count}: between 1 and {MAX_HOSTS}")
    addresses = [f"127.0.0.{2 + i}" for i in range(count)]
    fleet = Fleet([], base / "known_hosts", {})
    try:
        for first in range(0, count, ADDRESSES_PER_SSHD):
            chunk = tuple(addresses[first : first + ADDRESSES_PER_SSHD])
            fleet.servers.append(sshd.start(base / f"sshd{first // ADDRESSES_PER_SSHD}", chunk))
    except BaseException:
        fleet.stop()
        raise
    fleet.known_hosts.write_text("".join(server.known_hosts.read_text() for server in fleet.servers))
    names = iter(host_names(count))
    for server in fleet.servers:
        for address in server.addresses:
            fleet.hosts[next(names)] = (server, address)
    return fleet


def ensure_uv_wheel(cache: Path) -> Path:
    """deploytool's pinned uv wheel, downloaded once into ``cache`` (hosts install it from the mirror)."""
    from deploytool.supply.installer import UV_PIN, UV_VERSION

    directory = cache / f"uv-{UV_VERSION}"
    found = sorted(directory.glob(f"uv-{UV_VERSION}-*.whl"))
    if not found:
        log(f"downloading {UV_PIN} into {directory} (once)")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        run([*pip, UV_PIN, "-d", str(directory)], timeout=900)
        found = sorted(directory.glob(f"uv-{UV_VERSION}-*.whl"))
    if not found:
        raise SystemExit(f"no {UV_PIN} wheel in {directory}")
    return found[0]


# ---------------------------------------------------------------- the app project


def git(repo: Path, *args: str) -> str:
    return run(["git", "-C", str(repo), *args], timeout=60).strip()


@dataclass
class Project:
    """An application repository with a fabfile and hosts.yml, as a user has it on the laptop."""

    path: Path
    inventory: dict[str, Any]
    commits: int = 0

    def write_inventory(self) -> None:
        (self.path / "hosts.yml").write_text(yaml.safe_dump(self.inventory, sort_keys=False))

    def commit(self, message: str | None = None, files: dict[str, str] | None = None) -> str:
        """Commit the working tree (plus ``files``); every deploy gets its own commit, because a release id
        is the second plus the commit: the same commit twice in one second would collide."""
        self.commits += 1
        for name, text in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        (self.path / "BUILD").write_text(f"{self.commits}\n")
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message or f"bench {self.commits}")
        return git(self.path, "rev-parse", "HEAD")

    def fab(self, *args: str) -> float:
        """Run the real ``fab`` command line in the project; return its wall time in seconds."""
        return run_timed([sys.executable, "-m", "fabric", *args], cwd=self.path)


def ssh_stage(
    server: sshd.SshServer, roots: dict[str, str], addresses: dict[str, str] | None = None, **settings: Any
) -> dict[str, Any]:
    """A stage of ``hosts.yml`` with the given host names -> deploy roots on the test sshd (``addresses``: host
    name -> address; default web1-web4 -> 127.0.0.2-5)."""
    addresses = addresses or dict(zip(HOST_NAMES, server.addresses, strict=True))
    return {
        "user": server.user,
        "port": server.port,
        "known_hosts": str(server.known_hosts),
        "identity_file": str(server.client_key),
        **settings,
        "hosts": {name: {"address": addresses[name], "root": root} for name, root in roots.items()},
    }


def fresh_roots(server: sshd.SshServer, label: str, names: Sequence[str]) -> dict[str, str]:
    """New, empty deploy roots (owned by the login user) for ``names``."""
    return {name: str(server.host_root(f"{label}-{name}") / "app") for name in names}


def make_project(path: Path, inventory: dict[str, Any], requirements: str, app_source: str) -> Project:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    project = Project(path, inventory)
    project.write_inventory()
    project.commit(
        "first",
        {"fabfile.py": "from deploytool import ns\n", "app.py": app_source, "requirements/prod.txt": requirements},
    )
    return project


# ---------------------------------------------------------------- mirrors


def serve_mirror(directory: Path) -> tuple[Any, str]:
    """Write the indexes of ``directory`` and serve it on 127.0.0.1 (an ephemeral port)."""
    from deploytool.supply.mirror import serve, write_indexes

    directory.chmod(0o755)
    write_indexes(directory)
    return serve(directory, "127.0.0.1", 0)


def stop_mirror(server: Any) -> None:
    server.shutdown()
    server.server_close()


def rmtree(path: Path) -> None:
    """Remove a tree (``rm -rf``: release venvs hold tens of thousands of files, several times faster than
    shutil.rmtree)."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=900)
    shutil.rmtree(path, ignore_errors=True)


def tear_down(mirror_server: Any | None, ssh_server: Any | None, base: Path) -> None:
    """Stop the mirror and sshd a benchmark started (either may not have started) and remove its files."""
    if mirror_server is not None:
        stop_mirror(mirror_server)
    if ssh_server is not None:
        ssh_server.stop()
    rmtree(base)


# ---------------------------------------------------------------- the build phase, step by step


def build_breakdown(server: sshd.SshServer, host: Any, requirements: Path, runs: int, label: str) -> list[Samples]:
    """Time the build phase's steps one by one, as the deploy user, with exactly the commands a deploy runs
    (from deploytool.supply.installer): fresh venv, install the pins from the mirror, pip check.

    ``host`` is the HostConfig of an already deployed root (pip needs its tools venv); scratch releases
    ``bench-N`` are made in it and removed again. ``requirements`` must be readable by the deploy user."""
    import shlex

    from deploytool.layout import Layout
    from deploytool.supply import installer

    layout = Layout(host.root)
    venv = Samples("create venv", label)
    install = Samples("install requirements", label)
    check = Samples("pip check", label)
    floor = Samples("installer start-up only (--version)", label)
    # Not what a deploy runs: the other choice about byte-compiling, to show what it costs or saves.
    tool = host.installer or "pip"  # as hosts.yml names it (a deploy chooses on the laptop: installer.choose)
    flip = ["--compile-bytecode"] if tool == "uv" else ["--compile"]
    other = Samples(f"(for comparison) install with {flip[0]}", label)
    version = (
        [installer.uv_bin(layout), "--version"]
        if tool == "uv"
        else [installer.tools_python(layout), "-m", "pip", "--version"]
    )
    for i in range(runs):
        release = f"bench-{os.getpid()}-{i}"
        path = layout.release(release)
        run(as_deploy_user(server, shlex.join(["mkdir", "-p", path])))
        try:
            floor.add(run_timed(as_deploy_user(server, shlex.join(version))))
            venv.add(run_timed(as_deploy_user(server, shlex.join(installer.make_venv(host, layout, release, tool)))))
            command = installer.install(host, layout, release, str(requirements), False, tool)
            install.add(run_timed(as_deploy_user(server, shlex.join(command))))
            check.add(run_timed(as_deploy_user(server, shlex.join(installer.check(host, layout, release, tool)))))
            run(as_deploy_user(server, shlex.join(["rm", "-rf", layout.venv(release)])))
            run(as_deploy_user(server, shlex.join(installer.make_venv(host, layout, release, tool))))
            other.add(run_timed(as_deploy_user(server, shlex.join([*command, *flip]))))
        finally:
            run(as_deploy_user(server, shlex.join(["rm", "-rf", path])))
    return [floor, venv, install, check, other]


# ---------------------------------------------------------------- in-process instruments


class Instruments:
    """Round-trip counters on fabric's Connection (this process only), and phase timings from the run's events."""

    def __init__(self, address_to_name: dict[str, str]) -> None:
        self.names = address_to_name
        self.lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.times: dict[str, list[float]] = defaultdict(list)  # phase -> per-host seconds
        self._saved: list[tuple[Any, str, Any]] = []

    def _record(self, host: str, kind: str, seconds: float | None = None, phase: str | None = None) -> None:
        with self.lock:
            self.counts[host][kind] += 1
            if seconds is not None and phase:
                self.times[phase].append(seconds)

    def _patch(self, owner: Any, name: str, wrapper: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    def install(self) -> None:
        import fabric

        instruments = self
        original_run, original_open = fabric.Connection.run, fabric.Connection.open

        @functools.wraps(original_run)
        def run(self: Any, command: str, **kwargs: Any) -> Any:
            instruments._record(instruments.names.get(self.host, self.host), "ssh exec (Connection.run)")
            return original_run(self, command, **kwargs)

        @functools.wraps(original_open)
        def open_(self: Any) -> Any:
            if not self.is_connected:
                instruments._record(instruments.names.get(self.host, self.host), "ssh connect (paramiko)")
            return original_open(self)

        self._patch(fabric.Connection, "run", run)
        self._patch(fabric.Connection, "open", open_)

    def record_events(self, events: Any) -> None:
        """Phase timings from a run's per-host events: what the user's --json shows."""
        with self.lock:
            for event in events:
                self.times[event.phase].append(event.seconds)

    def restore(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)


def instrumented_deploys(project: Project, stage: str, runs: int, names: dict[str, str]) -> Instruments:
    """Warm deploys in this process through plan_deploy + run_deploy, with the instruments installed."""
    from deploytool.flow import deploy as flow
    from deploytool.inventory import load_inventory

    instruments = Instruments(names)
    instruments.install()
    try:
        for _ in range(runs):
            project.commit()
            started = time.perf_counter()
            inventory = load_inventory(project.path / "hosts.yml")
            hosts = inventory.hosts(stage)
            plan = flow.plan_deploy(inventory, hosts, "HEAD")
            planned = time.perf_counter()
            report = flow.run_deploy(plan, inventory.project_root)
            done = time.perf_counter()
            instruments.record_events(report.log.events)
            instruments.times[PLAN].append(planned - started)
            instruments.times[TOTAL].append(done - started)
    finally:
        instruments.restore()
    return instruments


def phase_rows(instruments: Instruments, hosts: int | str) -> list[list[str]]:
    """Rows of phase | hosts | median | min | samples for the phases of the instrumented deploys."""
    rows = []
    for phase in [PLAN, "connect", *PHASES, TOTAL]:
        values = instruments.times.get(phase, [])
        if values:
            median, low = statistics.median(values), min(values)
            rows.append([phase, str(hosts), f"{median:.3f}", f"{low:.3f}", str(len(values))])
    return rows


PHASE_HEADERS = ["phase (per host)", "hosts", "median s", "min s", "samples"]
