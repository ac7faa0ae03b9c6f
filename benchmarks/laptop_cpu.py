"""The laptop's own CPU for one warm ``fab deploy`` (and ``fab rollback``), by host count: how many hosts one
laptop core can drive.

    python benchmarks/laptop_cpu.py [--runs N] [--hosts 1,4,16,64]

Every loopback "host" builds on this machine's own cores, so wall time cannot show what the laptop itself
spends. This reads CPU instead: the user + system time of the ``fab`` process and its children (``git`` making
the commit's pack, the local ``ssh -G``), from ``getrusage(RUSAGE_CHILDREN)`` around each run; the
hosts' sshd, git and builds are not children of ``fab`` and are not counted. A one-package app (``demo-lib``
from a loopback mirror, uv from the mirror), the sshds of tests/sshd.py, one new commit per deploy. The table
gives medians and the CPU per extra host (the slope between the smallest and the largest count).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
from benchlib import HOST_PYTHON, HOST_PYTHON_VERSION, log, machine_note, table

APP_SOURCE = "import demo_lib\nVERSION = demo_lib.VERSION\n"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fab_cpu(project: benchlib.Project, *args: str) -> float:
    """CPU seconds (user + system) of one real ``fab`` command line and everything it started."""
    before = children_cpu()
    subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=project.path,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=benchlib.FAB_TIMEOUT,
    )
    return children_cpu() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="warm deploys per host count (default 3; medians)")
    parser.add_argument("--hosts", default="1,4,16,64", help="host counts, comma-separated, 1-64 (default %(default)s)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))
    counts = sorted({int(word) for word in args.hosts.split(",") if word.strip()})
    if not counts or counts[0] < 1 or counts[-1] > benchlib.MAX_HOSTS:
        raise SystemExit(f"--hosts: counts between 1 and {benchlib.MAX_HOSTS}")
    start_note = machine_note()
    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-cpu-"))
    base.chmod(0o755)
    fleet = mirror_server = None
    deploy: dict[int, list[float]] = {count: [] for count in counts}
    rollback: dict[int, list[float]] = {count: [] for count in counts}
    startup: list[float] = []
    try:
        log(f"starting sshd(s) for {counts[-1]} host(s) under {base}")
        fleet = benchlib.start_fleet(base / "sshd", counts[-1])
        from tests.wheelfactory import make_wheel  # importable once benchlib put the repo on sys.path

        mirror = base / "mirror"
        make_wheel(mirror, "demo-lib", "1.0")
        shutil.copy2(benchlib.ensure_uv_wheel(benchlib.CACHE), mirror)
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        inventory: dict[str, Any] = {
            "app": "demo",
            "default_stage": f"h{counts[0]}",
            "mirror": mirror_url,
            "keep_releases": 3,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,
            "stages": {
                f"h{count}": fleet.stage(fleet.fresh_roots(f"h{count}", count), parallel=count) for count in counts
            },
        }
        project = benchlib.make_project(base / "project", inventory, "demo-lib==1.0\n", APP_SOURCE)
        for count in counts:
            log(f"cold deploy to {count} host(s) (not measured: readies the roots)")
            project.commit()
            fab_cpu(project, "deploy", "--stage", f"h{count}")
        for _ in range(runs):
            startup.append(fab_cpu(project, "--list"))
        for i in range(runs):
            for count in counts:
                log(f"warm deploy + rollback to {count} host(s), run {i + 1}/{runs}")
                project.commit()
                deploy[count].append(fab_cpu(project, "deploy", "--stage", f"h{count}"))
                rollback[count].append(fab_cpu(project, "rollback", "--stage", f"h{count}"))
    finally:
        if mirror_server is not None:
            benchlib.stop_mirror(mirror_server)
        if fleet is not None:
            fleet.stop()
        benchlib.rmtree(base)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms"

    print(f"\n## The laptop's CPU (user + system of fab and its children), medians over {runs} run(s)\n")
    rows = [["fab --list (start-up only)", "-", ms(startup)]]
    rows += [["warm deploy", str(count), ms(deploy[count])] for count in counts]
    rows += [["rollback", str(count), ms(rollback[count])] for count in counts]
    print(table(["what", "hosts", "laptop CPU"], rows))
    if len(counts) > 1:
        low, high = counts[0], counts[-1]
        for name, series in (("warm deploy", deploy), ("rollback", rollback)):
            slope = (statistics.median(series[high]) - statistics.median(series[low])) / (high - low)
            print(f"\n{name}: {slope * 1000:.0f} ms of laptop CPU per extra host ({low} -> {high} hosts)", end="")
            if slope > 0:
                print(f"; one second of one laptop core carries about {1 / slope:.0f} more hosts", end="")
        print()
    print(f"\nat start: {start_note}\nat end:   {machine_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
