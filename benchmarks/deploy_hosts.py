"""Time ``fab deploy`` and ``fab rollback`` end to end over the test sshd, to 1, 4, 16 and 64 hosts, and count
the SSH round trips of a warm deploy.

    python benchmarks/deploy_hosts.py [--runs N] [--hosts 1,4,16,64] [--pip]

Everything stays on loopback: the sshds of tests/sshd.py (one per 16 addresses: 127.0.0.2, .3, ...; user
``deploy`` when run as root) and a mirror on 127.0.0.1 holding one tiny wheel and deploytool's pinned uv (so the
default installer is uv, from the mirror; ``--pip`` for pip). The temporary directory and the sshds are removed
at exit.

Scenarios (each timed as a real ``python -m fabric ...`` subprocess, so Python and Fabric start-up count):
  cold deploy    first deploy to a fresh root: makes the layout, the bare repo and the tools venv or uv (once per run
                 for up to 4 hosts; once in all from 16 hosts on)
  warm deploy    a later deploy to the same roots (new commit each time)
  rollback       right after a warm deploy, back to the previous release
  parallel       when the largest count is above hosts.yml's default ``parallel`` (16), its warm deploy and
                 rollback again with ``parallel`` = the host count
Then, in this process, the same warm deploy (1 and 4 hosts) through ``plan_deploy`` + ``run_deploy`` with
counting wrappers (this process only) around ``fabric.Connection.open``/``run`` and the phases, for round trips
and the time per phase, and a few micro-timings of one round trip.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import (
    HOST_PYTHON,
    HOST_PYTHON_VERSION,
    PHASE_HEADERS,
    Samples,
    instrumented_deploys,
    log,
    phase_rows,
    samples_table,
    table,
)

APP_SOURCE = "import demo_lib\nVERSION = demo_lib.VERSION\n"
PARALLEL_DEFAULT = 16  # hosts.yml's default ``parallel``


def round_trip_micro(project: benchlib.Project, stage: str, runs: int) -> list[Samples]:
    """One paramiko connect, one exec on an open connection, one pack of a commit's history (the laptop's part
    of moving a commit to a host that has none of it)."""
    from deploytool.connection.transport import close, connect
    from deploytool.flow import phases
    from deploytool.inventory import load_inventory

    host = load_inventory(project.path / "hosts.yml").hosts(stage)[0]
    connect_s = Samples("paramiko connect + auth (Fabric)", 1)
    exec_s = Samples("one exec of `true` on an open connection", 1)
    pack_s = Samples("git pack of the whole history (phases._make_pack)", 1)
    commit = benchlib.git(project.path, "rev-parse", "HEAD")
    for _ in range(max(runs, 5)):
        started = time.perf_counter()
        c = connect(host)
        connect_s.add(time.perf_counter() - started)
        try:
            for _ in range(5):
                started = time.perf_counter()
                c.run("true", hide=True, warn=True, in_stream=False)
                exec_s.add(time.perf_counter() - started)
        finally:
            close(c)
        started = time.perf_counter()
        phases._make_pack(str(project.path), commit, None)
        pack_s.add(time.perf_counter() - started)
    return [connect_s, exec_s, pack_s]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3; medians are reported)")
    parser.add_argument("--hosts", default="1,4,16,64", help="host counts, comma-separated, 1-64 (default %(default)s)")
    parser.add_argument("--pip", action="store_true", help="installer: pip (default: uv from the mirror)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))
    counts = sorted({int(word) for word in args.hosts.split(",") if word.strip()})
    if not counts or counts[0] < 1 or counts[-1] > benchlib.MAX_HOSTS:
        raise SystemExit(f"--hosts: counts between 1 and {benchlib.MAX_HOSTS}")
    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-hosts-"))
    base.chmod(0o755)
    fleet = mirror_server = None
    stages = {f"h{count}": count for count in counts}
    wide = counts[-1] if counts[-1] > PARALLEL_DEFAULT else None  # also measured with parallel = host count
    try:
        log(f"starting sshd(s) for {counts[-1]} host(s) under {base}")
        fleet = benchlib.start_fleet(base / "sshd", counts[-1])
        from tests.wheelfactory import make_wheel  # importable once benchlib put the repo on sys.path

        mirror = base / "mirror"
        make_wheel(mirror, "demo-lib", "1.0")
        installer_name = "pip" if args.pip else "uv"
        if not args.pip:
            shutil.copy2(benchlib.ensure_uv_wheel(benchlib.CACHE), mirror)
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        roots = {stage: fleet.fresh_roots(stage, count) for stage, count in stages.items()}
        inventory: dict[str, Any] = {
            "app": "demo",
            "default_stage": f"h{counts[0]}",
            "mirror": mirror_url,
            "keep_releases": 3,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,  # the hosts' Python: deploys refuse any other
            "installer": installer_name,
            "stages": {stage: fleet.stage(roots[stage]) for stage in stages},
        }
        if wide:
            inventory["stages"][f"h{wide}-parallel{wide}"] = fleet.stage(roots[f"h{wide}"], parallel=wide)
        project = benchlib.make_project(base / "project", inventory, "demo-lib==1.0\n", APP_SOURCE)
        names = {address: name for name, (_, address) in fleet.hosts.items()}

        startup = Samples("fab --list (Python + Fabric start-up only)", "-")
        cold = {count: Samples("deploy, cold (fresh root)", count) for count in counts}
        warm = {count: Samples("deploy, warm", count) for count in counts}
        back = {count: Samples("rollback", count) for count in counts}
        if wide:
            warm[-wide] = Samples(f"deploy, warm, parallel: {wide}", wide)
            back[-wide] = Samples(f"rollback, parallel: {wide}", wide)
        for _ in range(runs):
            startup.add(benchlib.run_timed([sys.executable, "-m", "fabric", "--list"], cwd=project.path))
        for i in range(runs):
            for count in counts:
                if i > 0 and count >= 16:
                    continue  # a 16/64-host cold deploy is long: once is enough
                log(f"cold deploy to {count} host(s), run {i + 1}/{runs}")
                stage = f"h{count}"  # the first cold deploy is the one that readies the warm roots
                if i > 0:
                    stage = f"cold{count}"
                    project.inventory["stages"][stage] = fleet.stage(fleet.fresh_roots(f"{stage}-{i}", count))
                    project.write_inventory()
                project.commit()
                cold[count].add(project.fab("deploy", "--stage", stage))
        for i in range(runs):
            for count in counts:
                log(f"warm deploy + rollback to {count} host(s), run {i + 1}/{runs}")
                project.commit()
                warm[count].add(project.fab("deploy", "--stage", f"h{count}"))
                back[count].add(project.fab("rollback", "--stage", f"h{count}"))
            if wide:
                log(f"warm deploy + rollback to {wide} host(s) with parallel: {wide}, run {i + 1}/{runs}")
                project.commit()
                warm[-wide].add(project.fab("deploy", "--stage", f"h{wide}-parallel{wide}"))
                back[-wide].add(project.fab("rollback", "--stage", f"h{wide}-parallel{wide}"))

        log("in-process warm deploys with counting wrappers")
        per_stage = {stage: instrumented_deploys(project, stage, runs, names) for stage in stages if stages[stage] <= 4}
        log("round-trip micro-timings")
        micro = round_trip_micro(project, f"h{counts[0]}", runs)
        log("build steps one by one")
        from deploytool.inventory import load_inventory

        readable = base / "requirements.txt"
        readable.write_text("demo-lib==1.0\n")
        readable.chmod(0o644)
        host = load_inventory(project.path / "hosts.yml").hosts(f"h{counts[0]}")[0]
        steps = benchlib.build_breakdown(fleet.servers[0], host, readable, runs, 1)
    finally:
        if mirror_server is not None:
            benchlib.stop_mirror(mirror_server)
        if fleet is not None:
            fleet.stop()
        benchlib.rmtree(base)

    print(f"\n## fab end to end, installer {installer_name} (medians over {runs} run(s); 2-core box, loopback sshd)\n")
    print(samples_table([startup, *cold.values(), *warm.values(), *back.values()]))
    one = statistics.median(warm[counts[0]].values)
    ratios = ", ".join(f"{count} hosts {statistics.median(warm[count].values) / one:.2f}x" for count in counts[1:])
    print(f"\nwarm deploy against {counts[0]} host(s): {ratios or '-'}")

    print(f"\n## SSH work per host for one warm deploy (counted in-process over {runs} deploy(s))\n")
    kinds = sorted({kind for instruments in per_stage.values() for c in instruments.counts.values() for kind in c})
    rows = []
    for instruments in per_stage.values():
        hosts = sorted(instruments.counts)
        for kind in kinds:
            per_host = [instruments.counts[name][kind] / runs for name in hosts]
            rows.append([kind, str(len(hosts)), f"{statistics.median(per_host):g}", f"{sum(per_host):g}"])
    print(table(["per warm deploy", "hosts", "per host", "all hosts"], rows))

    print("\n## where a warm deploy's time goes (in-process; phases run in parallel across hosts)\n")
    rows = [row for stage, instruments in per_stage.items() for row in phase_rows(instruments, stages[stage])]
    print(table(PHASE_HEADERS, rows))

    print(
        f"\n## the build phase step by step (1 host, the one-wheel set, {installer_name}; "
        "same commands as a deploy, as the deploy user)\n"
    )
    print(samples_table(steps))

    print("\n## one round trip (host web1)\n")
    print(table(["operation", "hosts", "median s", "min s", "samples"], [s.row() for s in micro]))
    print(f"\n{benchlib.machine_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
