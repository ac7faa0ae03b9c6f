"""deploytool (uv and pip) against the same flow in Ansible: cold, warm, one requirement changed and rollback,
on 1, 4 and 16 loopback hosts, the 36-package app (+ async-timeout), alternated in one run; round trips per host.

    python benchmarks/vs_ansible.py [--runs N] [--hosts 1,4,16] [--heavy-runs N] [--flows uv,pip,ansible]

Set up by the script, once, under ~/.cache/deploytool-bench (outside the repository): a virtualenv with
ansible-core (ANSIBLE_PIN, from PyPI), the 36 pins' wheels (or /work/cache/wheels36 when present) and the pinned
uv wheel (deploytool.supply.installer.UV_VERSION). Per run, under a temporary directory removed at exit: the test sshds
(tests/sshd.py, one per 16 addresses on 127.0.0.2...), an HTTP mirror on 127.0.0.1 holding the wheels, the uv
wheel and a tiny ``bench-extra`` package in several versions, and an app project with two config templates.

The flows, each timed end to end as a subprocess (interpreter start-up included):
  deploytool uv   ``fab deploy`` with ``installer: uv`` (uv fetched from the mirror, sha256-checked, no tools venv)
  deploytool pip  ``fab deploy`` with ``installer: pip``
  Ansible         ``ansible-playbook``: pipelining, ControlPersist (masters closed before each run, so every run
                  connects like fab does), forks = hosts, no fact gathering, piped transfers; tasks: git archive
                  on the laptop, release dir, unarchive, ``pip`` module making a fresh venv (``python -m venv``)
                  and installing ``--no-deps --no-index --find-links <mirror> --only-binary=:all:``, pip check,
                  two templates into etc_root, symlink + ``mv -T`` (atomic switch), prune; rollback: the previous
                  release (sorted by id) switched in the same way.
Scenarios, per host count and run, each flow in turn (the order rotates every run): cold (fresh roots), warm (a new
commit), changed (``bench-extra`` bumped), rollback. Roots are removed after each host count. With pip and Ansible a
16-host deploy costs about a minute on 2 cores, so from 16 hosts on they run only ``--heavy-runs`` runs (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import benchlib
from benchlib import CACHE, HOST_PYTHON, HOST_PYTHON_VERSION, ensure_uv_wheel, log, table
from deploy_36 import EXTRA_PINS_BEFORE_3_11_3, REQUIREMENTS, ensure_wheels

ANSIBLE_PIN = "ansible-core==2.19.14"
SHARED_WHEELS = Path("/work/cache/wheels36")
FLOWS = ("deploytool uv", "deploytool pip", "Ansible")
SCENARIOS = ("cold", "warm", "changed", "rollback")
KEEP = 2
APP = "demo36"
APP_SOURCE = "import django\nimport celery\nVERSION = django.get_version()\n"
TEMPLATES = {
    "app.ini": "[app]\nname = {{ app }}\nhost = {{ host }}\nrelease = {{ release_id }}\ncode = {{ current }}\n",
    "gunicorn.conf.py": 'bind = "127.0.0.1:8000"\nchdir = "{{ current }}"\nworkers = 2\nproc_name = "{{ app }}"\n',
}
PLAYBOOK_DEPLOY = """\
- hosts: app
  gather_facts: false
  vars:
    release: "{{ root }}/releases/{{ release_id }}"
  tasks:
    - name: Export the commit (once, on the laptop)
      ansible.builtin.command: git -C {{ project }} archive -o {{ tarball }} HEAD
      delegate_to: localhost
      run_once: true
    - name: Release and config directories
      ansible.builtin.file:
        path: "{{ item }}"
        state: directory
      loop: ["{{ release }}", "{{ etc_root }}/{{ app }}"]
    - name: Code
      ansible.builtin.unarchive:
        src: "{{ tarball }}"
        dest: "{{ release }}"
    - name: Fresh virtualenv, pinned wheels from the mirror
      ansible.builtin.pip:
        requirements: "{{ release }}/requirements/prod.txt"
        virtualenv: "{{ release }}/venv"
        virtualenv_command: "{{ python }} -m venv"
        extra_args: "--no-deps --no-index --find-links {{ mirror }} --only-binary=:all: --disable-pip-version-check"
    - name: pip check
      ansible.builtin.command: "{{ release }}/venv/bin/python -m pip check"
      changed_when: false
    - name: Config
      ansible.builtin.template:
        src: "{{ templates }}/{{ item }}.j2"
        dest: "{{ etc_root }}/{{ app }}/{{ item }}"
      loop: ["app.ini", "gunicorn.conf.py"]
    - name: Switch (atomic rename of a new link over current)
      ansible.builtin.shell: ln -sfn releases/{{ release_id }} current.tmp && mv -T current.tmp current
      args:
        chdir: "{{ root }}"
    - name: Prune
      ansible.builtin.shell: ls -1 releases | sort | head -n -{{ keep }} | sed 's|^|releases/|' | xargs -r rm -rf
      args:
        chdir: "{{ root }}"
"""
PLAYBOOK_ROLLBACK = """\
- hosts: app
  gather_facts: false
  tasks:
    - name: Switch back to the release before the current one
      ansible.builtin.shell: |
        set -e
        cur=$(basename "$(readlink current)")
        prev=$(ls -1 releases | sort | grep -x -B1 "$cur" | head -n 1)
        test -n "$prev" && test "$prev" != "$cur"
        ln -sfn "releases/$prev" current.tmp && mv -T current.tmp current
      args:
        chdir: "{{ root }}"
"""


# ---------------------------------------------------------------- one-time set-up (cached)


def ensure_ansible(cache: Path) -> Path:
    """The ansible-playbook of a virtualenv made once under ``cache`` with ANSIBLE_PIN from PyPI."""
    venv = cache / ANSIBLE_PIN.replace("==", "-")
    ready = venv / ".ready"
    if not ready.exists():
        log(f"installing {ANSIBLE_PIN} into {venv} (once)")
        benchlib.rmtree(venv)
        benchlib.run([sys.executable, "-m", "venv", str(venv)], timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        benchlib.run([*pip, ANSIBLE_PIN], timeout=900)
        ready.touch()
    return venv / "bin" / "ansible-playbook"


# ---------------------------------------------------------------- the Ansible side


class Ansible:
    """ansible-playbook with expert settings, a counting ssh wrapper, its files under ``home``."""

    def __init__(self, playbook_bin: Path, home: Path, fleet: benchlib.Fleet, mirror_url: str, project: Path):
        self.bin, self.home, self.fleet, self.mirror, self.project = playbook_bin, home, fleet, mirror_url, project
        home.mkdir(parents=True)
        self.control = home / "cp"
        self.control.mkdir()
        self.log = home / "ssh.log"
        self.log.touch()
        wrapper = home / "ssh"
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {self.log}\nexec /usr/bin/ssh "$@"\n')
        wrapper.chmod(0o755)
        templates = home / "templates"
        templates.mkdir()
        for name, text in TEMPLATES.items():
            (templates / f"{name}.j2").write_text(text)
        (home / "deploy.yml").write_text(PLAYBOOK_DEPLOY)
        (home / "rollback.yml").write_text(PLAYBOOK_ROLLBACK)
        (home / "ansible.cfg").write_text(
            "[defaults]\ngathering = explicit\nhost_key_checking = True\nretry_files_enabled = False\n"
            f"interpreter_python = {HOST_PYTHON}\nlocal_tmp = {home / 'tmp'}\n"
            "[ssh_connection]\npipelining = True\ntransfer_method = piped\n"
            f"ssh_executable = {wrapper}\ncontrol_path_dir = {self.control}\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={fleet.known_hosts} -o IdentitiesOnly=yes\n"
        )
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
            "ANSIBLE_HOME": str(home / "home"),
            "ANSIBLE_NOCOLOR": "1",
        }
        self.releases = 0

    def inventory(self, label: str, roots: dict[str, str]) -> Path:
        hosts = {}
        for name, root in roots.items():
            server, address = self.fleet.hosts[name]
            hosts[name] = {
                "ansible_host": address,
                "ansible_port": server.port,
                "ansible_ssh_private_key_file": str(server.client_key),
                "root": root,
                "etc_root": f"{root}/etc",
            }
        group_vars = {
            "ansible_user": self.fleet.user,
            "app": APP,
            "host": "{{ inventory_hostname }}",
            "current": "{{ root }}/current",
            "mirror": self.mirror,
            "python": HOST_PYTHON,
            "keep": KEEP,
            "project": str(self.project),
            "tarball": str(self.home / f"code-{label}.tar"),
            "templates": str(self.home / "templates"),
        }
        path = self.home / f"inventory-{label}.yml"
        import yaml

        path.write_text(yaml.safe_dump({"app": {"hosts": hosts, "vars": group_vars}}, sort_keys=False))
        return path

    def close_masters(self) -> None:
        """End the ControlPersist masters of the previous run, so every run starts unconnected as fab does."""
        for socket_path in self.control.iterdir():
            subprocess.run(
                ["/usr/bin/ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "placeholder"],
                capture_output=True,
                timeout=30,
                check=False,
            )

    def ssh_calls(self) -> int:
        return len(self.log.read_text().splitlines())

    def play(self, inventory: Path, playbook: str, forks: int) -> float:
        self.close_masters()
        self.releases += 1
        release_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{self.releases:04d}"
        argv = [str(self.bin), "-i", str(inventory), "-f", str(forks), "-e", f"release_id={release_id}"]
        return benchlib.run_timed([*argv, str(self.home / playbook)], env=self.env, cwd=self.home)


# ---------------------------------------------------------------- the run


class Results:
    def __init__(self) -> None:
        self.times: dict[tuple[str, int, str], list[float]] = defaultdict(list)  # (scenario, hosts, flow)
        self.ansible_calls: dict[tuple[str, int], list[float]] = defaultdict(list)  # ssh calls per host
        # (scenario, hosts, flow) -> phase -> seconds (the slowest host's, per run)
        self.phases: dict[tuple[str, int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def median(self, scenario: str, hosts: int, flow: str) -> float | None:
        values = self.times.get((scenario, hosts, flow))
        return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    return "-" if numerator is None or not denominator else f"{numerator / denominator:.1f}x"


def requirements_text(base: str, extra_version: int) -> str:
    return base.rstrip("\n") + f"\nbench-extra==1.{extra_version}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per scenario (default 2; medians reported)")
    parser.add_argument("--hosts", default="1,4,16", help="host counts, comma-separated, 1-64 (default 1,4,16)")
    parser.add_argument("--heavy-runs", type=int, default=1, help="runs of pip and Ansible from 16 hosts on")
    parser.add_argument("--flows", default="uv,pip,ansible", help="which flows, comma-separated (default %(default)s)")
    parser.add_argument("--wheels", type=Path, default=None, help="the 36 pins' wheels (default: cached)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 10))
    counts = sorted({int(word) for word in args.hosts.split(",") if word.strip()})
    if not counts or counts[0] < 1 or counts[-1] > benchlib.MAX_HOSTS:
        raise SystemExit(f"--hosts: counts between 1 and {benchlib.MAX_HOSTS}")
    wheels = args.wheels or (SHARED_WHEELS if SHARED_WHEELS.is_dir() else CACHE / "wheels")
    ensure_wheels(REQUIREMENTS, wheels, EXTRA_PINS_BEFORE_3_11_3)
    uv_wheel = ensure_uv_wheel(CACHE)
    wanted = {word.strip().lower() for word in args.flows.split(",")}
    flows = [flow for flow in FLOWS if flow.split()[-1].lower() in wanted]
    if not flows:
        raise SystemExit(f"--flows: some of uv, pip, ansible (not {args.flows!r})")
    playbook_bin = ensure_ansible(CACHE) if "Ansible" in flows else None
    pins_text = REQUIREMENTS.read_text().rstrip("\n") + "\n" + "\n".join(EXTRA_PINS_BEFORE_3_11_3) + "\n"
    extra_versions = 1 + runs * len(counts)

    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-ansible-"))
    base.chmod(0o755)
    fleet = mirror_server = None
    results = Results()
    round_trips: dict[str, dict[str, float]] = {}
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    try:
        log(f"starting sshd(s) for {counts[-1]} host(s) under {base}")
        fleet = benchlib.start_fleet(base / "sshd", counts[-1])
        from tests.wheelfactory import make_wheel

        mirror = base / "mirror"
        mirror.mkdir()
        for wheel in [*wheels.glob("*.whl"), uv_wheel]:
            shutil.copy2(wheel, mirror / wheel.name)
        for version in range(extra_versions + 1):
            make_wheel(mirror, "bench-extra", f"1.{version}")
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        inventory: dict[str, Any] = {
            "app": APP,
            "mirror": mirror_url,
            "keep_releases": KEEP,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,
            "stages": {},
        }
        extra = 0
        files = {f"etc-mock/{APP}/{name}.j2": text for name, text in TEMPLATES.items()}
        project = benchlib.make_project(base / "project", inventory, requirements_text(pins_text, extra), APP_SOURCE)
        project.commit("templates", files)
        ansible = Ansible(playbook_bin, base / "ansible", fleet, mirror_url, project.path) if playbook_bin else None

        for i in range(runs):
            for count in counts:
                here = [f for f in flows if count < 16 or i < args.heavy_runs or f == "deploytool uv"]
                order = here[i % len(here) :] + here[: i % len(here)]
                label = f"{count}h-run{i}"
                targets: dict[str, Any] = {}
                for flow in here:
                    roots = fleet.fresh_roots(f"{flow.split()[-1]}-{label}", count)
                    if flow == "Ansible":
                        assert ansible is not None
                        targets[flow] = ansible.inventory(label, roots)
                    else:
                        stage = f"{flow.split()[-1]}-{label}"
                        installer = flow.split()[-1]
                        project.inventory["stages"][stage] = fleet.stage(roots, etc_in_root=True, installer=installer)
                        targets[flow] = stage
                project.write_inventory()
                for scenario in SCENARIOS:
                    if scenario == "changed":
                        extra += 1
                        project.commit(files={"requirements/prod.txt": requirements_text(pins_text, extra)})
                    elif scenario != "rollback":
                        project.commit()
                    for flow in order:
                        log(f"run {i + 1}/{runs}, {count} host(s), {scenario}: {flow}")
                        seconds = run_flow(project, ansible, flow, targets[flow], scenario, count, results)
                        log(f"    {seconds:.2f} s")
                        results.times[(scenario, count, flow)].append(seconds)
                for flow in here:
                    if flow != "Ansible":
                        del project.inventory["stages"][targets[flow]]
                for server in fleet.servers:  # this count's roots: pip releases are ~150 MB each
                    benchlib.rmtree(server.base / "hosts")
        log("round trips: one cold + one instrumented warm deploy per installer, 1 host")
        round_trips = deploytool_round_trips(project, fleet, flows)
    finally:
        if ansible is not None:
            ansible.close_masters()
        if mirror_server is not None:
            benchlib.stop_mirror(mirror_server)
        if fleet is not None:
            fleet.stop()
        benchlib.rmtree(base)

    report(results, flows, counts, runs, args.heavy_runs, round_trips, started_at, load_before)
    return 0


def run_flow(
    project: benchlib.Project,
    ansible: Ansible | None,
    flow: str,
    target: Any,
    scenario: str,
    count: int,
    results: Results,
) -> float:
    if flow != "Ansible":
        started_at, started = time.time(), time.perf_counter()
        command = "rollback" if scenario == "rollback" else "deploy"
        output = benchlib.run([sys.executable, "-m", "fabric", command, "--stage", target, "--json"], cwd=project.path)
        seconds = time.perf_counter() - started
        profile(results.phases[(scenario, count, flow)], json.loads(output)["events"], started_at, seconds)
        return seconds
    assert ansible is not None
    before = ansible.ssh_calls()
    seconds = ansible.play(target, "rollback.yml" if scenario == "rollback" else "deploy.yml", count)
    results.ansible_calls[(scenario, count)].append((ansible.ssh_calls() - before) / count)
    return seconds


def profile(phases: dict[str, list[float]], events: list[dict[str, Any]], started_at: float, wall: float) -> None:
    """Where one fab run's time went, from its --json events (wall-clock start/end per host and phase): the laptop
    before the first remote call (interpreter, imports, plan), each phase's slowest host, and what follows."""
    if not events:
        return
    first, last = min(event["start"] for event in events), max(event["end"] for event in events)
    phases["laptop: start-up + plan"].append(first - started_at)
    by_phase: dict[str, list[float]] = defaultdict(list)
    for event in events:
        by_phase[event["phase"]].append(event["seconds"])
    for phase, values in by_phase.items():
        phases[phase].append(max(values))
    phases["laptop: after the last host"].append(max(0.0, wall - (last - started_at)))


def deploytool_round_trips(
    project: benchlib.Project, fleet: benchlib.Fleet, flows: list[str]
) -> dict[str, dict[str, float]]:
    """SSH work per host of one warm deploy per installer (in-process, counting wrappers)."""
    found: dict[str, dict[str, float]] = {}
    names = {address: name for name, (_, address) in fleet.hosts.items()}
    for installer in [flow.split()[-1] for flow in flows if flow != "Ansible"]:
        stage = f"{installer}-round-trips"
        project.inventory["stages"][stage] = fleet.stage(
            fleet.fresh_roots(stage, 1), etc_in_root=True, installer=installer
        )
        project.write_inventory()
        project.commit()
        project.fab("deploy", "--stage", stage)
        instruments = benchlib.instrumented_deploys(project, stage, 1, names)
        counts = next(iter(instruments.counts.values()))
        found[f"deploytool {installer}"] = {kind: float(n) for kind, n in counts.items()}
    return found


def report(
    results: Results,
    flows: list[str],
    counts: list[int],
    runs: int,
    heavy_runs: int,
    round_trips: dict[str, dict[str, float]],
    started_at: str,
    load_before: tuple[float, float, float],
) -> None:
    print("\n## deploytool vs Ansible, 36-package app (+ async-timeout, bench-extra): medians, seconds\n")
    headers = ["scenario", "hosts", *flows]
    versus = [flow for flow in ("deploytool uv", "deploytool pip") if flow in flows and "Ansible" in flows]
    headers += [f"Ansible / {flow.split()[-1]}" for flow in versus]
    rows = []
    for count in counts:
        for scenario in SCENARIOS:
            values = {flow: results.median(scenario, count, flow) for flow in flows}
            row = [scenario, str(count), *(fmt(values[flow]) for flow in flows)]
            row += [ratio(values["Ansible"], values[flow]) for flow in versus]
            rows.append(row)
    print(table(headers, rows))

    print("\n## scaling and cold/warm (ratios of the medians above)\n")
    rows = []
    for flow in flows:
        one = results.median("warm", 1, flow)
        for count in counts:
            warm = results.median("warm", count, flow)
            cold = results.median("cold", count, flow)
            rows.append([flow, str(count), ratio(warm, one) if count > 1 else "1.0x", ratio(cold, warm)])
    print(table(["flow", "hosts", "warm / warm of 1 host", "cold / warm"], rows))

    print("\n## where deploytool's time goes (medians; per phase the slowest host; from fab --json events)\n")
    rows = []
    for (scenario, count, flow), phases in results.phases.items():
        cells = [f"{name} {statistics.median(values):.2f}" for name, values in phases.items()]
        rows.append([flow, scenario, str(count), ", ".join(cells)])
    print(table(["flow", "scenario", "hosts", "seconds"], rows))

    print("\n## round trips per host\n")
    rows = []
    for flow, kinds in round_trips.items():
        for kind, n in sorted(kinds.items()):
            rows.append([flow, "warm", kind, f"{n:g}"])
    for (scenario, count), values in sorted(results.ansible_calls.items(), key=lambda item: (item[0][1], item[0][0])):
        if count == counts[0]:
            per_host = f"{statistics.median(values):g}"
            rows.append(["Ansible", scenario, "ssh invocations (ControlMaster sessions)", per_host])
    print(table(["flow", "scenario", "what", "per host"], rows))

    print()
    print(
        f"- started {started_at}, {runs} run(s) (pip and Ansible from 16 hosts on: {heavy_runs}), flows alternated, "
        "the order rotating every run; compare ratios within this run"
    )
    print(f"- load average when it started: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}")
    print(f"- {benchlib.machine_note()}")
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    print(f"- CPU: {cpu}; hosts' Python {HOST_PYTHON_VERSION}; {ANSIBLE_PIN}")


if __name__ == "__main__":
    raise SystemExit(main())
