"""A fault soak (issue 21): random deploys, rollbacks, batched runs and unlocks against 4 loopback hosts over real
SSH, one injected fault per run, and the invariants checked after every run.

    python benchmarks/soak.py [--seed S] [--runs N] [--minutes M] [--per-kind K] [--keep-going]

Hosts web1-web4 each have their own sshd (127.0.0.2-5, so one host's sshd can be killed or frozen alone) and run
the example app under gunicorn: web1 with the graceful re-exec recipe (``restart: {gunicorn_pidfile, start}``),
web2-web4 under a supervisord of the deploy user each. web4's directory is a small tmpfs (the disk-full fault).
gunicorn, supervisor and uv wheels are repacked from this environment into a mirror served on 127.0.0.1.

Each run is one random action (``fab deploy`` of a new commit, with or without ``--batch-size``, ``fab rollback``
with or without ``--batch-size``, ``fab unlock``) with one fault drawn from ``FAULTS`` (at random among the kinds
that have landed least so far, so every kind is exercised about equally; ``--per-kind K`` ends the soak once each
has landed K times, a timed fault landing only when fab still ran at its moment); then the
invariants of issue 21 are checked (after a plain recovery run when a host was left locked), and the soak stops at
the first violation (``--keep-going``: records it and goes on) printing the seed, the run's output and each host's
state. A request loop against web1 runs during the whole soak (invariant 7). Everything started here (sshds,
supervisords, gunicorns, the tmpfs, the temporary directory, fab processes) is stopped or removed at exit, Ctrl-C
and SIGTERM included; every subprocess and wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
from benchlib import HOST_NAMES, HOST_PYTHON, HOST_PYTHON_VERSION, log, table

FAULTS = (
    "fab_sigkill",
    "fab_sigterm",
    "fab_sigint",
    "sshd_kill",
    "sshd_freeze",
    "session_kill",
    "app_fail",
    "health_fail",
    "journal_unreadable",
    "journal_torn",
    "concurrent_deploy",
    "disk_full",
)
HOST_FAULTS = set(FAULTS) - {"fab_sigkill", "fab_sigterm", "fab_sigint", "concurrent_deploy"}  # one host faulted
#: faults injected at a random moment of the run: they land only if fab still runs then
TIMED_FAULTS = {"fab_sigkill", "fab_sigterm", "fab_sigint", "sshd_kill", "sshd_freeze", "session_kill", "disk_full"}
#: where a lock may be left behind (invariant 5): the laptop was killed, or the host was unreachable.
LOCK_ALLOWED = {"fab_sigkill", "sshd_kill", "sshd_freeze"}
FAB_TIMEOUT = 240.0  # seconds: one fab command is killed (and that is a violation) after this long
KEEP = 3
GRACEFUL, DISK_HOST = "web1", "web4"
TMPFS_SIZE = "400m"
TRACEBACK = "Traceback (most recent call last)"


class Violation(Exception):
    pass


# ---------------------------------------------------------------- the stage


@dataclass
class Host:
    name: str
    server: Any  # tests.sshd.SshServer of its own
    app: Any  # tests.gunicornhost.AppHost
    settings: dict[str, Any]
    supervisor: Any = None
    tmpfs: bool = False

    @property
    def root(self) -> Path:
        return self.app.root

    def current(self) -> str | None:
        try:
            return os.readlink(self.root / "current").removeprefix("releases/")
        except OSError:
            return None

    def releases(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root / "releases"))
        except OSError:
            return []

    def lock(self) -> str | None:
        owner = self.root / "deploy.lock" / "owner.json"
        if not (self.root / "deploy.lock").exists():
            return None
        try:
            return owner.read_text()
        except OSError as error:
            return f"<unreadable owner.json: {error}>"

    def journal(self) -> list[dict[str, Any]]:
        """The journal's entries (a torn or damaged line skipped)."""
        entries = []
        try:
            lines = (self.root / "journal.jsonl").read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    entries.append(data)
        return entries

    def served(self) -> str:
        try:
            with urllib.request.urlopen(self.app.url, timeout=5) as answer:
                return str(json.loads(answer.read()).get("release"))
        except Exception as error:
            return f"<{type(error).__name__}: {error}>"

    def restart_sshd(self) -> None:
        """Start this host's sshd again (same config, keys and port) after it was killed."""
        from tests.sshd import SSHD

        server = self.server
        with contextlib.suppress(OSError):
            server.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=5)
        log_file = open(server.base / "sshd.log", "ab")  # noqa: SIM115 - owned by the process's lifetime
        server.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(server.base / "sshd_config")], stdout=log_file, stderr=subprocess.STDOUT
        )
        until = time.monotonic() + 20
        while time.monotonic() < until:
            with contextlib.suppress(OSError), socket.create_connection((server.addresses[0], server.port), 0.3):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: sshd did not listen again within 20 s")

    def state(self) -> str:
        journal = self.journal()[-4:]
        return (
            f"  {self.name}: current={self.current()} served={self.served()} lock={self.lock()!r}\n"
            f"    releases={self.releases()}\n"
            + "".join(f"    journal: {json.dumps(entry, sort_keys=True)}\n" for entry in journal)
        )


@dataclass
class FabRun:
    argv: list[str]
    process: subprocess.Popen[str]
    started: float
    out: str = ""
    err: str = ""
    rc: int | None = None
    signalled: int | None = None
    timed_out: bool = False

    def wait(self) -> None:
        try:
            self.out, self.err = self.process.communicate(timeout=FAB_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.out, self.err = self.process.communicate(timeout=30)
        self.rc = self.process.returncode
        # what the laptop's fab left behind (a git or ssh -G child after a SIGKILL) goes with it
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)

    @property
    def output(self) -> str:
        return f"$ {' '.join(self.argv)}  (exit {self.rc})\n{self.out}{self.err}"


class RequestLoop:
    """GETs against web1's app, one every 50 ms, each failure kept with its time (invariant 7)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests = 0
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    json.loads(answer.read())
            except Exception as error:
                self.failures.append((started, f"{type(error).__name__}: {error}"))
            self.requests += 1
            self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@dataclass
class Stats:
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    landed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    actions: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    checks: int = 0
    recoveries: int = 0
    violations: list[str] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)


class Soak:
    def __init__(self, base: Path, rng: random.Random, seed: int, keep_going: bool) -> None:
        self.base, self.rng, self.seed, self.keep_going = base, rng, seed, keep_going
        self.hosts: dict[str, Host] = {}
        self.stats = Stats()
        self.project: Any = None
        self.mirror_server: Any = None
        self.loop: RequestLoop | None = None
        self.fabs: list[FabRun] = []
        self.timers: list[threading.Timer] = []
        self.live: dict[str, list[str]] = {name: [] for name in HOST_NAMES}  # releases seen live, in order
        self.failed: dict[str, set[str]] = {name: set() for name in HOST_NAMES}
        self.web1_windows: list[tuple[float, float]] = []  # when web1 was the faulted host
        self.durations: dict[str, list[float]] = {}
        self.inventory: dict[str, Any] = {}
        self.notes: list[str] = []
        self.landed = False
        self.can_rollback = False  # a deploy went live since the last rollback
        self.kinds: tuple[str, ...] = FAULTS

    # ------------------------------------------------------------ setup and teardown

    def setup(self) -> None:
        from tests import sshd
        from tests.gunicornhost import (
            AppHost,
            app_files,
            free_port,
            serve_app_server,
            start_supervisord,
            supervisor_restart,
        )
        from tests.wheelfactory import repack_installed

        os.environ["DEPLOYTOOL_TEST_SHARED"] = str(self.base / "shared")
        mirror = self.base / "mirror"
        mirror.mkdir()
        pins = serve_app_server(mirror)
        repack_installed("uv", mirror)
        self.mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        known = []
        stage_hosts = {}
        for name, address in zip(HOST_NAMES, sshd.ADDRESSES, strict=True):
            server = sshd.start(self.base / f"sshd-{name}", (address,))
            known.append(server.known_hosts.read_text())
            hostdir = server.host_root(f"soak-{name}")
            host = Host(name, server, None, {})
            self.hosts[name] = host  # before anything else, so that teardown finds it
            if name == DISK_HOST:
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(hostdir)],
                    check=True,
                    timeout=30,
                )
                host.tmpfs = True
                owner = (self.base / f"sshd-{name}" / "hosts").stat()
                os.chown(hostdir, owner.st_uid, owner.st_gid)
            app = host.app = AppHost(name, hostdir / "app", free_port())
            settings: dict[str, Any] = {
                "address": address,
                "port": server.port,
                "identity_file": str(server.client_key),
                "root": str(app.root),
            }
            app.prepare(settings)
            settings["health_check"] = {"url": app.url, "contains": "{{ release_id }}", "deadline": 15, "interval": 0.5}
            if name == GRACEFUL:
                settings["restart"] = app.graceful_restart()
            else:
                include = app.base / "etc" / "supervisor" / "conf.d"
                host.supervisor = start_supervisord(app.base / "supervisor", mirror, include, server.user)
                settings["restart"] = supervisor_restart(host.supervisor.ctl)
            host.settings = settings
            stage_hosts[name] = settings
        known_hosts = self.base / "known_hosts"
        known_hosts.write_text("".join(known))
        self.inventory = {
            "app": "demo",
            "default_stage": "soak",
            "mirror": mirror_url,
            "keep_releases": KEEP,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,
            "stages": {
                "soak": {
                    "user": self.hosts["web1"].server.user,
                    "known_hosts": str(known_hosts),
                    "timeout": 60,
                    "connect_timeout": 5,
                    "hosts": stage_hosts,
                }
            },
        }
        self.project = benchlib.make_project(self.base / "project", self.inventory, "", "")
        self.project.commit("the example app under gunicorn", app_files(pins))
        log("first deploy (cold hosts: uv fetched, gunicorn and supervisord programs started)")
        run = self.fab("deploy")
        run.wait()
        if run.rc != 0:
            raise SystemExit(f"the first deploy failed:\n{run.output}")
        for host in self.hosts.values():
            self.live[host.name].append(str(host.current()))
        self.wait_serving()
        self.loop = RequestLoop(self.hosts[GRACEFUL].app.url)
        self.loop.start()

    def teardown(self) -> None:
        from tests.gunicornhost import kill_mentioning

        for timer in self.timers:
            timer.cancel()
        for run in self.fabs:
            with contextlib.suppress(OSError):
                os.killpg(run.process.pid, signal.SIGKILL)
        if self.loop is not None:
            self.loop.stop()
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.server.signal_all(signal.SIGCONT)
            if host.supervisor is not None:
                with contextlib.suppress(Exception):
                    host.supervisor.stop()
            if host.app is not None:
                with contextlib.suppress(Exception):
                    kill_mentioning(str(host.app.base))
            with contextlib.suppress(Exception):
                host.server.stop()
            if host.tmpfs:
                done = subprocess.run(["umount", str(host.app.base)], capture_output=True, timeout=30)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", str(host.app.base)], capture_output=True, timeout=30)
        if self.mirror_server is not None:
            benchlib.stop_mirror(self.mirror_server)
        benchlib.rmtree(self.base)

    # ------------------------------------------------------------ running fab

    def fab(self, *args: str) -> FabRun:
        argv = [sys.executable, "-m", "fabric", *args]
        process = subprocess.Popen(
            argv,
            cwd=self.project.path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        run = FabRun(["fab", *args], process, time.monotonic())
        self.fabs.append(run)
        return run

    def later(self, seconds: float, action: Any, run: FabRun | None = None) -> None:
        """Call ``action`` in ``seconds``; when it fires while ``run`` still runs, the fault counts as landed."""

        def fire() -> None:
            if run is not None and run.process.poll() is None:
                self.landed = True
            action()

        timer = threading.Timer(seconds, fire)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def wait_serving(self) -> None:
        for host in self.hosts.values():
            until = time.monotonic() + 60
            while host.served() != host.current() and time.monotonic() < until:
                time.sleep(0.2)

    # ------------------------------------------------------------ one run

    def choose_action(self) -> list[str]:
        roll = self.rng.random()
        if roll < 0.45:
            return ["deploy"]
        if roll < 0.65:
            return ["deploy", "--batch-size", self.rng.choice(["1", "2", "50%"])]
        if roll < 0.93 and not self.can_rollback:  # no rollback target yet: a deploy instead
            return ["deploy"]
        if roll < 0.8:
            return ["rollback"]
        if roll < 0.93:
            return ["rollback", "--batch-size", self.rng.choice(["1", "2"])]
        return ["unlock"]

    def draw_fault(self) -> str:
        """A fault kind at random among those that have landed the fewest times so far."""
        fewest = min(self.stats.landed[kind] for kind in self.kinds)
        return self.rng.choice([kind for kind in self.kinds if self.stats.landed[kind] == fewest])

    def one_run(self, number: int) -> None:
        fault = self.draw_fault()
        action = self.choose_action()
        if fault in ("concurrent_deploy", "disk_full", "app_fail"):
            action = ["deploy"] if self.rng.random() < 0.6 else ["deploy", "--batch-size", "2"]
        target = DISK_HOST if fault == "disk_full" else self.rng.choice(HOST_NAMES)
        if fault == "app_fail" and target == GRACEFUL:
            target = self.rng.choice(HOST_NAMES[1:])
        kind = action[0]
        expected = self.durations.get(kind) or [8.0]
        at = self.rng.uniform(1.0, max(1.5, statistics.median(expected) * 1.1))
        if fault.startswith("fab_"):  # any moment of fab's life once deploytool is loaded (~0.15-0.3 s in): the
            # fabfile, planning, connecting, every phase. Earlier, only Python and Fabric run: a signal ends fab as
            # Python does (SIGTERM: status -15, silently), before any of deploytool's code could say anything.
            at = self.rng.uniform(0.4, max(0.8, statistics.median(expected)))
        if fault == "session_kill":  # dropped mid-transfer: the build call (with the pack) is in the first half
            at = self.rng.uniform(0.8, max(1.2, statistics.median(expected) * 0.6))
        head = self.project.commit(f"soak run {number}") if kind == "deploy" else None
        before = {name: host.current() for name, host in self.hosts.items()}
        log(
            f"run {number}: fab {' '.join(action)}, fault {fault} on {target if fault in HOST_FAULTS else 'fab'}"
            f" at {at:.1f}s"
        )
        self.stats.faults[fault] += 1
        self.stats.actions[" ".join(action[:2])] = self.stats.actions.get(" ".join(action[:2]), 0) + 1
        started = time.monotonic()
        cleanup: list[Any] = []
        runs: list[FabRun] = []
        host = self.hosts[target]

        # faults set up before the run
        if fault == "health_fail":
            host.settings["health_check"]["contains"] = "never-in-any-answer"
            self.project.write_inventory()
            cleanup.append(self.restore_inventory)
        elif fault == "app_fail":
            original = host.settings["vars"]["port"]
            host.settings["vars"]["port"] = self.hosts[GRACEFUL].app.port  # taken: gunicorn cannot bind
            self.project.write_inventory()

            def restore_port(original: int = original) -> None:
                host.settings["vars"]["port"] = original
                self.restore_inventory()

            cleanup.append(restore_port)
        elif fault == "journal_unreadable":
            journal = host.root / "journal.jsonl"
            journal.touch()
            mode = journal.stat().st_mode & 0o777
            journal.chmod(0)
            cleanup.append(lambda: journal.chmod(mode))
        elif fault == "journal_torn":
            journal = host.root / "journal.jsonl"
            lines = journal.read_bytes() if journal.exists() else b""
            last = lines.rstrip(b"\n").rpartition(b"\n")[2] or b'{"event": "deploy", "release": "x"}'
            with open(journal, "ab") as handle:  # a copy of the last line cut in the middle, no newline
                handle.write(last[: max(1, len(last) // 2)])
        if fault == "disk_full" and self.rng.random() < 0.5:
            self.fill_disk(host, cleanup)
            at = -1.0

        self.landed = fault not in TIMED_FAULTS or at < 0
        window_start = time.monotonic()
        runs.append(self.fab(*action))
        if fault == "concurrent_deploy":
            runs.append(self.fab(*action))
        main = runs[0]

        # faults during the run
        if fault.startswith("fab_"):
            signum = {"fab_sigkill": signal.SIGKILL, "fab_sigterm": signal.SIGTERM, "fab_sigint": signal.SIGINT}[fault]

            def send(signum: int = signum) -> None:
                if main.process.poll() is None:
                    main.signalled = signum
                    with contextlib.suppress(OSError):
                        main.process.send_signal(signum)

            self.later(at, send, main)
        elif fault == "sshd_kill":
            if kind == "deploy" and self.rng.random() < 0.5:  # mid-build: once the host's build step runs
                threading.Thread(target=self.kill_in_build, args=(host, main), daemon=True).start()
            else:
                self.later(at, lambda: host.server.signal_all(signal.SIGKILL), main)
            cleanup.append(host.restart_sshd)
        elif fault == "sshd_freeze":
            thaw_after = self.rng.uniform(2, 12)
            self.later(at, lambda: host.server.freeze(), main)
            self.later(at + thaw_after, lambda: host.server.signal_all(signal.SIGCONT))
            cleanup.append(lambda: host.server.signal_all(signal.SIGCONT))
        elif fault == "session_kill":
            self.later(at, lambda: host.server.signal_all(signal.SIGKILL, only_sshd=True), main)
        elif fault == "disk_full" and at >= 0:
            self.later(at, lambda: self.fill_disk(host, cleanup), main)

        for run in runs:
            run.wait()
            error = next((line for line in (run.out + run.err).splitlines() if line.startswith("Error:")), "")
            log(f"   exit {run.rc} after {time.monotonic() - run.started:.1f}s {error[:400]}")
        for timer in self.timers:
            timer.cancel()
        time.sleep(0.3)  # a timer already firing finishes (a freeze, a fill)
        self.timers.clear()
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception as error:
                self.notes.append(f"run {number}: clean-up after {fault} failed: {error}")
        took = time.monotonic() - started
        if self.landed:
            self.stats.landed[fault] += 1
        if main.rc == 0 and not main.signalled and not main.timed_out:
            self.durations.setdefault(kind, []).append(took)
        self.stats.runs += 1
        self.stats.run_seconds.append(took)

        context = RunContext(number, fault, target, action, runs, before, head)
        self.check(context, recovered=False)
        if any(h.lock() for h in self.hosts.values()):
            self.recover(context)
        after = {name: host.current() for name, host in self.hosts.items()}
        if after != before:
            self.can_rollback = kind == "deploy" or bool(context.recovery)
        if fault in HOST_FAULTS and target == GRACEFUL:
            self.web1_windows.append((window_start - 0.5, time.monotonic() + 0.5))
        self.check_requests(context)

    def kill_in_build(self, host: Host, run: FabRun) -> None:
        """Kill the host's sshd (and its sessions) once a session runs a build step (git archive, venv, install)."""
        until = time.monotonic() + 60
        while time.monotonic() < until and run.process.poll() is None:
            for pid in host.server.children():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                words = set(cmdline.split(b"\0"))
                if words & {b"archive", b"venv", b"install"}:  # the build's git archive, uv venv, pip install
                    self.landed = True
                    self.notes.append(f"sshd of {host.name} killed mid-build")
                    host.server.signal_all(signal.SIGKILL)
                    return
            time.sleep(0.02)

    def restore_inventory(self) -> None:
        for host in self.hosts.values():
            host.settings["health_check"]["contains"] = "{{ release_id }}"
        self.project.write_inventory()

    def fill_disk(self, host: Host, cleanup: list[Any]) -> None:
        filler = host.app.base / "filler"
        stat = os.statvfs(host.app.base)
        free = stat.f_bavail * stat.f_frsize
        subprocess.run(["fallocate", "-l", str(max(0, free - 64 * 1024)), str(filler)], capture_output=True, timeout=30)
        cleanup.append(lambda: filler.unlink(missing_ok=True))

    def recover(self, context: RunContext) -> None:
        """A plain ``fab deploy`` (and ``fab unlock`` first where its output says so), then the checks again."""
        self.stats.recoveries += 1
        locked = {name: host.lock() for name, host in self.hosts.items() if host.lock()}
        log(f"run {context.number}: recovery (locked: {', '.join(locked)})")
        for name, owner in locked.items():
            self.count()
            try:
                data = json.loads(owner or "")
                if not isinstance(data, dict) or not data.get("user"):
                    raise ValueError("no user")
            except ValueError:
                self.violate(context, 5, f"{name}: the lock left does not say whose it is: {owner!r}")
        context.recovery = []
        run = self.fab("deploy")
        run.wait()
        context.recovery.append(run)
        text = run.out + run.err
        if run.rc != 0 and "fab unlock" in text:
            unlock = self.fab("unlock")
            unlock.wait()
            context.recovery.append(unlock)
            run = self.fab("deploy")
            run.wait()
            context.recovery.append(run)
        if any(h.lock() for h in self.hosts.values()):
            self.count()
            self.violate(
                context,
                5,
                "locks remain after the recovery run(s): " + ", ".join(n for n, h in self.hosts.items() if h.lock()),
            )
        if run.rc != 0:
            self.violate(context, 5, "the plain recovery deploy failed")
        context.recovery_head = context.head = benchlib.git(self.project.path, "rev-parse", "HEAD")
        self.check(context, recovered=True)

    # ------------------------------------------------------------ invariants

    def count(self, n: int = 1) -> None:
        self.stats.checks += n

    def violate(self, context: RunContext, invariant: int, what: str) -> None:
        message = f"run {context.number} (seed {self.seed}), fault {context.fault}"
        if context.fault in HOST_FAULTS:
            message += f" on {context.target}"
        message += f", fab {' '.join(context.action)}: invariant {invariant}: {what}"
        report = [message, "", "output:"]
        for run in context.runs + context.recovery:
            report.append(run.output[-6000:])
        report.append("hosts:")
        report += [host.state() for host in self.hosts.values()]
        text = "\n".join(report)
        self.stats.violations.append(text)
        print(f"\nVIOLATION {text}\n", file=sys.stderr, flush=True)
        if not self.keep_going:
            raise Violation(message)

    def check(self, context: RunContext, recovered: bool) -> None:
        self.wait_serving()
        currents: dict[str, str | None] = {}
        for name, host in self.hosts.items():
            current = currents[name] = host.current()
            if not recovered and host.lock() and self.lock_allowed(context, name):
                # where a killed run or a lost host left a lock, the host is checked after the recovery run
                continue
            # 1: code, venv, installed config and the running app server name one complete release
            self.count(4)
            if current is None or current not in host.releases():
                self.violate(context, 1, f"{name}: current names {current!r}, not a release directory")
                continue
            release = host.root / "releases" / current
            manifest = release / ".deploytool.json"
            try:
                named = json.loads(manifest.read_text()).get("release")
            except (OSError, ValueError) as error:
                named = f"<{error}>"
            if named != current:
                self.violate(context, 1, f"{name}: release {current} is incomplete: its manifest names {named}")
            venv = release / "venv"
            if not (venv / "bin" / "gunicorn").exists() or not (venv / "pyvenv.cfg").exists():
                self.violate(context, 1, f"{name}: release {current} has no complete venv")
            config = Path(host.settings["etc_root"]) / "gunicorn" / "demo.conf.py"
            try:
                text = config.read_text()
            except OSError as error:
                text = f"<{error}>"
            if f"release {current}," not in text:
                found = re.search(r"release (\S+),", text)
                self.violate(
                    context,
                    1,
                    f"{name}: installed config is release {found and found.group(1)}'s, current is {current}",
                )
            # 2: it serves the release current names
            served = host.served()
            if served != current:
                self.violate(context, 2, f"{name}: serves {served}, current is {current}")
            # 3: the journal names it as the last release that went live; a failed release is never current
            self.count(2)
            journal = host.journal()
            live = [e for e in journal if e.get("event") in ("deploy", "rollback") and e.get("status") == "ok"]
            failed = {e.get("release") for e in journal if e.get("event") == "deploy" and e.get("status") == "failed"}
            self.failed[name] |= {str(r) for r in failed}
            if host.lock() is None and (not live or live[-1].get("release") != current):
                last = live[-1].get("release") if live else None
                self.violate(context, 3, f"{name}: the journal's last live release is {last}, current is {current}")
            if current in self.failed[name]:
                self.violate(context, 3, f"{name}: current {current} is a release the journal marks failed")
            # 4: no release that went live and is within keep_releases disappears
            self.count()
            # a release counts as gone live on a host once current named it and the host served it (also in a
            # run that did not finish there)
            if served == current and (not self.live[name] or self.live[name][-1] != current):
                self.live[name] = [r for r in self.live[name] if r != current] + [current]
            # keep_releases counts the newest releases by id (= by deploy time) that went live and did not fail:
            # seen live at a check, or recorded live by the journal (an ok entry, or the release an entry left:
            # `from`), which also knows of one a killed run made live between two checks (seed 2128, run 11)
            present = set(host.releases())
            ok = {e.get("release") for e in journal if e.get("status") == "ok"}
            left = {e.get("from") for e in journal if e.get("from")}
            went_live = set(self.live[name]) | {str(r) for r in (ok | left) if r}
            good = sorted(r for r in went_live if r not in self.failed[name] or r in ok)
            missing = [r for r in good[-KEEP:] if r not in present]
            self.live[name] = [r for r in self.live[name] if r not in missing]  # each loss reported once
            if missing:
                self.violate(context, 4, f"{name}: releases that went live within keep_releases vanished: {missing}")
            # 5: a lock only where the run was killed or the host could not be reached
            self.count()
            lock = host.lock()
            if lock and not recovered and not self.lock_allowed(context, name):
                self.violate(
                    context,
                    5,
                    f"{name}: a lock was left ({lock.strip()}) by a run whose fault"
                    f" ({context.fault} on {context.target}) does not explain it",
                )
        # a deploy is all-or-nothing: one that failed (not interrupted, no lock left) left every host where it was
        main = context.runs[0]
        if (
            not recovered
            and context.action[0] == "deploy"
            and main.rc != 0
            and main.signalled is None
            and not any(h.lock() for h in self.hosts.values())
        ):
            self.count()
            moved = {n: (context.before[n], currents[n]) for n in currents if currents[n] != context.before[n]}
            if moved and context.fault != "concurrent_deploy":
                self.violate(context, 1, f"a failed deploy left hosts on another release (before, now): {moved}")
        if recovered and len(set(currents.values())) != 1:
            self.count()
            self.violate(context, 1, f"hosts disagree after the recovery deploy: {currents}")
        elif not recovered and main.signalled in (signal.SIGINT, signal.SIGTERM) and len(set(currents.values())) > 1:
            # README: an interrupt between batches keeps the hosts already finished on the new release
            self.notes.append(f"run {context.number} ({context.fault}): fleet split {currents}")
        # 6: the exit status and the Error: line
        for run in context.recovery if recovered else context.runs:
            self.check_output(context, run, currents, recovered)

    @staticmethod
    def lock_allowed(context: RunContext, name: str) -> bool:
        return context.fault == "fab_sigkill" or (
            context.fault in ("sshd_kill", "sshd_freeze") and name == context.target
        )

    def check_output(self, context: RunContext, run: FabRun, currents: dict[str, str | None], recovered: bool) -> None:
        self.count(2)
        text = run.out + run.err
        if run.timed_out:
            self.violate(context, 6, f"`{' '.join(run.argv)}` still ran after {FAB_TIMEOUT:.0f} s")
        if TRACEBACK in text or "Error reading SSH protocol banner" in text:
            self.violate(context, 6, f"`{' '.join(run.argv)}` printed a traceback")
        if run.signalled == signal.SIGKILL:
            return
        command = run.argv[1]
        everywhere = False
        if command == "deploy" and context.head:
            commits = set()
            for name, host in self.hosts.items():
                current = currents.get(name)
                with contextlib.suppress(OSError, ValueError):
                    commits.add(
                        json.loads((host.root / "releases" / str(current) / ".deploytool.json").read_text()).get(
                            "commit"
                        )
                    )
            everywhere = commits == {context.head}
        elif command == "rollback":
            everywhere = all(currents[n] != context.before[n] for n in currents)
        elif command == "unlock":
            everywhere = True
        errors = [line for line in text.splitlines() if line.startswith("Error:")]
        if run.rc == 0:
            if not everywhere and command == "deploy":
                self.violate(
                    context,
                    6,
                    f"`{' '.join(run.argv)}` exited 0 but hosts are on {currents}, not on"
                    f" commit {context.head[:7] if context.head else None} everywhere",
                )
            return
        if len(errors) != 1:
            self.violate(context, 6, f"`{' '.join(run.argv)}` exited {run.rc} with {len(errors)} `Error:` lines")
            return
        lines = text.splitlines()
        at = lines.index(errors[0])
        message = "\n".join([errors[0], *(line for line in lines[at + 1 :] if line.startswith("  "))])
        if context.fault in HOST_FAULTS and not recovered and context.target not in message:
            # the run failed while a host was faulted: its Error: line names that host (or another, for a run
            # that failed for a reason of its own, e.g. no rollback target: recorded as a note, not a violation)
            if "no previous" in message or "nothing to roll back" in message or "locked" in message:
                return
            self.violate(context, 6, f"the Error: line does not name the faulted host {context.target}: {errors[0]}")

    def check_requests(self, context: RunContext) -> None:
        """7: the request loop against web1 saw no failure outside the windows where web1 was the faulted host."""
        assert self.loop is not None
        self.count()
        bad = [
            (at, error)
            for at, error in self.loop.failures
            if not any(start <= at <= end for start, end in self.web1_windows) and at > self.checked_until
        ]
        self.checked_until = time.monotonic()
        if bad:
            self.violate(
                context, 7, f"{len(bad)} failed request(s) to web1 while it was not faulted, first: {bad[0][1]}"
            )

    checked_until = 0.0


@dataclass
class RunContext:
    number: int
    fault: str
    target: str
    action: list[str]
    runs: list[FabRun]
    before: dict[str, str | None]
    head: str | None
    recovery: list[FabRun] = field(default_factory=list)
    recovery_head: str | None = None


# ---------------------------------------------------------------- issue 21's two findings, checked once


def glob_root_check(soak: Soak) -> str:
    """A deploy root whose path holds glob characters: does the first deploy there pass the bytecode step?"""
    host = soak.hosts["web3"]
    parent = host.server.host_root("gl*b?[x] $HOME")
    root = parent / "app"
    for name in ("etc", "logs"):
        (parent / name).mkdir(exist_ok=True)
        os.chown(parent / name, parent.stat().st_uid, parent.stat().st_gid)
    stage = {
        "user": host.server.user,
        "known_hosts": str(soak.base / "known_hosts"),
        "hosts": {
            "web3": {k: v for k, v in host.settings.items() if k in ("address", "port", "identity_file")}
            | {"root": str(root), "etc_root": str(parent / "etc")}
            | {"vars": {**host.settings["vars"], "log_dir": str(parent / "logs")}}
        },
    }
    soak.inventory["stages"]["globroot"] = stage
    soak.project.write_inventory()
    try:
        run = soak.fab("deploy", "--stage", "globroot")
        run.wait()
    finally:
        del soak.inventory["stages"]["globroot"]
        soak.project.write_inventory()
    text = (run.out + run.err).strip().splitlines()
    verdict = "deploys" if run.rc == 0 else f"FAILS (exit {run.rc})"
    detail = next((line for line in text if line.startswith("Error:")), text[-1] if text else "")
    return f"root {str(root)!r}: {verdict}; {detail[:300]}"


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--runs", type=int, default=20, help="runs at most (default 20)")
    parser.add_argument("--minutes", type=float, default=30.0, help="stop starting runs after this (default 30)")
    parser.add_argument("--keep-going", action="store_true", help="record violations and go on")
    parser.add_argument(
        "--per-kind", type=int, default=0, help="stop once every fault kind has landed this many times (default: no)"
    )
    parser.add_argument("--faults", default="", help="comma-separated fault kinds to draw from (default: all)")
    parser.add_argument("--no-glob-check", action="store_true", help="skip the glob-root deploy check")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("soak.py needs root (a tmpfs for the disk-full fault, the deploy account)")
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = random.Random(seed)
    load_start = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="deploytool-soak-"))
    base.chmod(0o755)
    soak = Soak(base, rng, seed, args.keep_going)
    if args.faults:
        unknown = set(args.faults.split(",")) - set(FAULTS)
        if unknown:
            raise SystemExit(f"unknown fault kind(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}")
        soak.kinds = tuple(args.faults.split(","))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    stopped = ""
    glob_note = ""
    started = time.monotonic()
    try:
        log(f"seed {seed}; setting up 4 hosts under {base}")
        soak.setup()
        if not args.no_glob_check:
            glob_note = glob_root_check(soak)
            log(f"glob root: {glob_note}")
        for number in range(1, args.runs + 1):
            if time.monotonic() - started > args.minutes * 60:
                stopped = f"stopped after {args.minutes:g} minutes"
                break
            if args.per_kind and min(soak.stats.landed[kind] for kind in soak.kinds) >= args.per_kind:
                stopped = f"every fault kind landed at least {args.per_kind} times"
                break
            soak.one_run(number)
    except Violation as violation:
        stopped = f"stopped at the first violation: {violation}"
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        log("cleaning up")
        requests = soak.loop.requests if soak.loop else 0
        failures = len(soak.loop.failures) if soak.loop else 0
        soak.teardown()
    stats = soak.stats
    load_end = os.getloadavg()
    print(f"\n## soak, seed {seed}: {stats.runs} run(s), 4 hosts{' (' + stopped + ')' if stopped else ''}\n")
    rows = [[f"fault: {kind}", f"{count} ({stats.landed[kind]})"] for kind, count in stats.faults.items()]
    rows += [[f"action: fab {action}", str(count)] for action, count in sorted(stats.actions.items())]
    median = statistics.median(stats.run_seconds) if stats.run_seconds else 0.0
    rows += [
        ["runs", str(stats.runs)],
        ["recovery runs", str(stats.recoveries)],
        ["invariant checks", str(stats.checks)],
        ["violations", str(len(stats.violations))],
        ["time per run, median s", f"{median:.1f}"],
        ["requests to web1 (failed)", f"{requests} ({failures})"],
        ["load average at start", f"{load_start[0]:.2f}"],
        ["load average at end", f"{load_end[0]:.2f}"],
    ]
    print(table(["what", "count (faults: landed while fab ran)"], rows))
    if glob_note:
        print(f"\n- glob characters in the root: {glob_note}")
    for note in soak.notes:
        print(f"- {note}")
    for violation in stats.violations:
        print(f"\n### violation\n\n{violation.splitlines()[0]}")
    print(f"\n{benchlib.machine_note()}")
    return 1 if stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())
