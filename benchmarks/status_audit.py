"""Time ``fab status`` and ``fab audit`` for a stage of 16 hosts with 5 releases each, over the test sshd.

    python benchmarks/status_audit.py [--runs N] [--packages N]

The test sshd serves 4 addresses (127.0.0.2-5), so the 16 hosts are 16 deploy roots, four per address, each
its own SSH connection. One real deploy (``--packages`` tiny pinned wheels, default 20) goes to four roots;
each is then copied (as the deploy user) to make the 16 roots, and its release copied to make 5 releases per
root, with journal lines saying they were deployed in turn. Then, each timed ``--runs`` times:

  fab status / fab audit   the real command lines as subprocesses (Python + Fabric start-up included)
  in-process               ``survey_hosts`` for the same hosts (what each command waits for on the hosts)

plus the SSH work counted in-process (connections and exec calls per host). Everything is removed at exit.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import HOST_PYTHON, HOST_PYTHON_VERSION, Samples, log, samples_table, table

HOSTS, RELEASES = 16, 5
APP_SOURCE = "import demo_lib\nVERSION = demo_lib.VERSION\n"


def multiply(server: Any, source: str, target: str) -> None:
    """Copy the deployed root ``source`` to ``target`` and give it RELEASES releases, journaled oldest first."""
    releases = sorted(path.name for path in (Path(source) / "releases").iterdir())  # this machine's files
    [deployed] = releases
    older = [f"2020010{n}T000000Z-{deployed[-7:]}" for n in range(1, RELEASES)]
    lines, previous = [], None
    for release in [*older, deployed]:
        entry = {"event": "deploy", "release": release, "status": "ok", "from": previous, "commit": None,
                 "user": "bench@laptop", "time": "2020-01-01T00:00:00+00:00"}  # fmt: skip
        lines.append(json.dumps(entry, sort_keys=True))
        previous = release
    script = [f"cp -a {shlex.quote(source)} {shlex.quote(target)}"]
    script += [f"cp -a {shlex.quote(target)}/releases/{deployed} {shlex.quote(target)}/releases/{rid}" for rid in older]
    script.append(
        f"printf '%s\\n' {' '.join(shlex.quote(line) for line in lines)} > {shlex.quote(target)}/journal.jsonl"
    )
    benchlib.run(benchlib.as_deploy_user(server, " && ".join(script)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5; medians are reported)")
    parser.add_argument("--packages", type=int, default=20, help="pinned packages per venv (default 20)")
    args = parser.parse_args()
    runs, packages = max(1, min(args.runs, 50)), max(1, min(args.packages, 200))
    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-status-"))
    base.chmod(0o755)
    server = mirror_server = None
    try:
        log(f"starting sshd under {base}")
        server = benchlib.start_sshd(base / "sshd")
        from tests.wheelfactory import make_wheel

        mirror = base / "mirror"
        names = ["demo-lib", *(f"bench-pkg-{n:03}" for n in range(1, packages))]
        for name in names:
            make_wheel(mirror, name, "1.0")
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        seeds = {f"seed{n}": str(server.host_root(f"seed{n}") / "app") for n in range(len(server.addresses))}
        seed_addresses = dict(zip(seeds, server.addresses, strict=True))
        hosts = {f"h{n:02}": str(server.host_root(f"h{n:02}") / "app") for n in range(1, HOSTS + 1)}
        addresses = {name: server.addresses[n % len(server.addresses)] for n, name in enumerate(hosts)}
        inventory: dict[str, Any] = {
            "app": "demo",
            "default_stage": "seed",
            "mirror": mirror_url,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,
            "stages": {
                "seed": benchlib.ssh_stage(server, seeds, seed_addresses),
                "sixteen": benchlib.ssh_stage(server, hosts, addresses),
            },
        }
        requirements = "".join(f"{name}==1.0\n" for name in names)
        project = benchlib.make_project(base / "project", inventory, requirements, APP_SOURCE)
        log(f"deploying {packages} pinned packages to {len(seeds)} seed roots")
        project.fab("deploy", "--stage", "seed")
        log(f"copying them to {HOSTS} roots with {RELEASES} releases each")
        seed_of = {name: seeds[f"seed{n % len(seeds)}"] for n, name in enumerate(hosts)}
        for name, root in hosts.items():
            multiply(server, seed_of[name], root)

        status = Samples("fab status (end to end)", HOSTS)
        audit = Samples("fab audit (end to end)", HOSTS)
        status_in = Samples("status: survey_hosts in-process (current, RECORD verified)", HOSTS)
        audit_in = Samples(f"audit: survey_hosts in-process (all {RELEASES} releases)", HOSTS)
        startup = Samples("fab --list (Python + Fabric start-up only)", "-")
        from deploytool.inspection.survey import survey_hosts
        from deploytool.inventory import load_inventory

        selected = load_inventory(project.path / "hosts.yml").hosts("sixteen")
        for i in range(runs):
            log(f"run {i + 1}/{runs}")
            startup.add(benchlib.run_timed([sys.executable, "-m", "fabric", "--list"], cwd=project.path))
            status.add(project.fab("status", "--stage", "sixteen"))
            audit.add(project.fab("audit", "--stage", "sixteen"))
            for samples, every in ((status_in, False), (audit_in, True)):
                started = time.perf_counter()
                surveys = survey_hosts(
                    selected, lambda _: "requirements/prod.txt", all_releases=every, verify=not every
                )
                samples.add(time.perf_counter() - started)
                assert all(s.reachable and len(s.releases) == RELEASES for s in surveys), [s.error for s in surveys]
        counts = count_round_trips(selected)
    finally:
        benchlib.tear_down(mirror_server, server, base)

    print(f"\n## fab status / fab audit, {HOSTS} hosts x {RELEASES} releases, {packages} packages per venv "
          f"(medians over {runs} run(s))\n")  # fmt: skip
    print(samples_table([startup, status, audit, status_in, audit_in]))
    print("\n## SSH work per host (counted in-process, one status + one audit)\n")
    print(table(["operation", "hosts", "per host"], counts))
    print(f"\n{benchlib.machine_note()}")
    return 0


def count_round_trips(selected: Any) -> list[list[str]]:
    """Connections and exec calls of one status survey and one audit survey, per host."""
    import fabric

    from deploytool.inspection.survey import survey_hosts

    calls = {"ssh connect (paramiko)": 0, "ssh exec (Connection.run)": 0}
    original_open, original_run = fabric.Connection.open, fabric.Connection.run

    def open_(self: Any) -> Any:
        if not self.is_connected:
            calls["ssh connect (paramiko)"] += 1
        return original_open(self)

    def run(self: Any, command: str, **kwargs: Any) -> Any:
        calls["ssh exec (Connection.run)"] += 1
        return original_run(self, command, **kwargs)

    fabric.Connection.open, fabric.Connection.run = open_, run  # type: ignore[method-assign]
    try:
        for every in (False, True):
            survey_hosts(selected, lambda _: "requirements/prod.txt", all_releases=every, verify=not every)
    finally:
        fabric.Connection.open, fabric.Connection.run = original_open, original_run  # type: ignore[method-assign]
    return [[kind, str(len(selected)), f"{count / (2 * len(selected)):g}"] for kind, count in calls.items()]


if __name__ == "__main__":
    raise SystemExit(main())
