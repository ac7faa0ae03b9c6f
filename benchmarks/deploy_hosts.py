"""Time ``fab deploy`` and ``fab rollback`` end to end over the test sshd, to 1 and 4 hosts, and count the
SSH round trips of a warm deploy.

    python benchmarks/deploy_hosts.py [--runs N]

Everything stays on loopback: the sshd of tests/sshd.py on 127.0.0.2-5 (user ``deploy`` when run as root)
and a one-wheel mirror on 127.0.0.1. The temporary directory and the sshd are removed at exit.

Scenarios (each timed as a real ``python -m fabric ...`` subprocess, so Python and Fabric start-up count):
  cold deploy    first deploy to a fresh root: makes the layout, the bare repo and the tools venv (pip)
  warm deploy    a later deploy to the same root (new commit each time)
  rollback       right after a warm deploy, back to the previous release
Then, in this process, the same warm deploy through ``plan_deploy`` + ``run_deploy`` with counting wrappers
(this process only) around ``fabric.Connection.open``/``run`` and the phases, for round trips and the time
per phase, and a few micro-timings of one round trip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import (
    HOST_NAMES,
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


def round_trip_micro(project: benchlib.Project, server: Any, runs: int) -> list[Samples]:
    """One paramiko connect, one exec on an open connection, one OpenSSH connect, one no-op git push."""
    import shlex

    from deploytool import phases
    from deploytool.inventory import load_inventory
    from deploytool.transport import close, connect, git_remote

    host = load_inventory(project.path / "hosts.yml").hosts("one")[0]
    connect_s = Samples("paramiko connect + auth (Fabric)", 1)
    exec_s = Samples("one exec of `true` on an open connection", 1)
    ssh_s = Samples("OpenSSH `ssh host true` (git push's transport)", 1)
    push_s = Samples("git push, nothing new (phases.push)", 1)
    commit = benchlib.git(project.path, "rev-parse", "HEAD")
    _, ssh_command = git_remote(host, "/")
    ssh_argv = [*shlex.split(ssh_command or "ssh"), "-p", str(host.port), f"{host.user}@{host.address}", "true"]
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
        ssh_s.add(benchlib.run_timed(ssh_argv, timeout=60))
        target = phases.Target(host, None)  # type: ignore[arg-type]  # push needs no connection
        started = time.perf_counter()
        phases.push(target, str(project.path), commit)
        push_s.add(time.perf_counter() - started)
    return [connect_s, exec_s, ssh_s, push_s]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3; medians are reported)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))
    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-hosts-"))
    base.chmod(0o755)
    server = mirror_server = None
    stages = {"one": HOST_NAMES[:1], "four": HOST_NAMES}
    try:
        log(f"starting sshd under {base}")
        server = benchlib.start_sshd(base / "sshd")
        from tests.wheelfactory import make_wheel  # importable once benchlib put the repo on sys.path

        mirror = base / "mirror"
        make_wheel(mirror, "demo-lib", "1.0")
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        inventory: dict[str, Any] = {
            "app": "demo",
            "default_stage": "one",
            "mirror": mirror_url,
            "keep_releases": 3,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,  # the hosts' Python: deploys refuse any other
            "stages": {
                stage: benchlib.ssh_stage(server, benchlib.fresh_roots(server, stage, names))
                for stage, names in stages.items()
            },
        }
        project = benchlib.make_project(base / "project", inventory, "demo-lib==1.0\n", APP_SOURCE)
        names = dict(zip(server.addresses, HOST_NAMES, strict=True))

        startup = Samples("fab --list (Python + Fabric start-up only)", "-")
        cold = {1: Samples("deploy, cold (fresh root, makes tools venv)", 1), 4: Samples("deploy, cold", 4)}
        warm = {1: Samples("deploy, warm", 1), 4: Samples("deploy, warm", 4)}
        back = {1: Samples("rollback", 1), 4: Samples("rollback", 4)}
        for _ in range(runs):
            startup.add(benchlib.run_timed([sys.executable, "-m", "fabric", "--list"], cwd=project.path))
        for i in range(runs):
            for count, warm_stage in ((1, "one"), (4, "four")):
                log(f"cold deploy to {count} host(s), run {i + 1}/{runs}")
                stage = warm_stage  # the first cold deploy is the one that readies the warm roots
                if i > 0:
                    stage = f"cold{count}"
                    roots = benchlib.fresh_roots(server, f"{stage}-{i}", HOST_NAMES[:count])
                    project.inventory["stages"][stage] = benchlib.ssh_stage(server, roots)
                    project.write_inventory()
                project.commit()
                cold[count].add(project.fab("deploy", "--stage", stage))
        for i in range(runs):
            for count, stage in ((1, "one"), (4, "four")):
                log(f"warm deploy + rollback to {count} host(s), run {i + 1}/{runs}")
                project.commit()
                warm[count].add(project.fab("deploy", "--stage", stage))
                back[count].add(project.fab("rollback", "--stage", stage))

        log("in-process warm deploys with counting wrappers")
        per_stage = {stage: instrumented_deploys(project, stage, runs, names) for stage in ("one", "four")}
        log("round-trip micro-timings")
        micro = round_trip_micro(project, server, runs)
        log("build steps one by one")
        from deploytool.inventory import load_inventory

        readable = base / "requirements.txt"
        readable.write_text("demo-lib==1.0\n")
        readable.chmod(0o644)
        steps = benchlib.build_breakdown(
            server, load_inventory(project.path / "hosts.yml").hosts("one")[0], readable, runs, 1
        )
    finally:
        benchlib.tear_down(mirror_server, server, base)

    print(f"\n## fab end to end (medians over {runs} run(s); 2-core box, sshd on loopback)\n")
    print(samples_table([startup, cold[1], cold[4], warm[1], warm[4], back[1], back[4]]))

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
    rows = [row for stage, instruments in per_stage.items() for row in phase_rows(instruments, len(stages[stage]))]
    print(table(PHASE_HEADERS, rows))

    print(
        "\n## the build phase step by step (1 host, the one-wheel set; same commands as a deploy, as the deploy user)\n"
    )
    print(samples_table(steps))

    print("\n## one round trip (host web1)\n")
    print(table(["operation", "hosts", "median s", "min s", "samples"], [s.row() for s in micro]))
    print(f"\n{benchlib.machine_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
