"""Requests served while a deploy and a rollback restart gunicorn: the graceful re-exec (USR2) against a plain
``supervisorctl restart``, in the same run.

    python benchmarks/graceful.py [--runs N]

Two one-host stages on the test sshd (loopback only): ``graceful`` (restart: gunicorn_pidfile, the daemon started
by ``start`` the first time) and ``plain`` (gunicorn under a supervisord of the deploy user, restart:
``supervisorctl update`` + ``supervisorctl restart demo``). Both run the example app (2 sync workers) from gunicorn
and supervisor wheels repacked from this environment (the test extra). Each run: a deploy of a new commit, then a
rollback, each with one thread doing GETs against the host's app, one at a time, from just before ``fab`` starts
until it returns (at most 20,000 requests); and, as a baseline, the same loop for 3 s with no fab running.
Printed per recipe and action: requests, failed requests, and the latency percentiles of the answered ones, each
the median over ``--runs``. The temporary directory, the sshd, the supervisord and every gunicorn are stopped at
exit.
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
from benchlib import HOST_NAMES, HOST_PYTHON, HOST_PYTHON_VERSION, log, table

RECIPES = ("graceful", "plain")
ACTIONS = ("idle", "deploy", "rollback")
IDLE_SECONDS = 3.0
COLUMNS = ("requests", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms")


def figures(loop: Any) -> dict[str, float]:
    """One loop's request count, failures and latency percentiles (ms)."""
    latencies = sorted(seconds * 1000 for seconds in loop.latencies) or [0.0]
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": loop.requests,
        "failed": len(loop.failures),
        "p50 ms": statistics.median(latencies),
        "p90 ms": cuts[89],
        "p99 ms": cuts[98],
        "max ms": latencies[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="deploy + rollback rounds per recipe (default 3)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 20))
    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-graceful-"))
    base.chmod(0o755)
    server = mirror_server = supervisor = None
    hosts: dict[str, Any] = {}
    results: dict[tuple[str, str], list[dict[str, float]]] = {(r, a): [] for r in RECIPES for a in ACTIONS}
    from tests.gunicornhost import (  # importable once benchlib put the repo on sys.path
        AppHost,
        RequestLoop,
        app_files,
        free_port,
        kill_mentioning,
        serve_app_server,
        start_supervisord,
        supervisor_restart,
        wait_for,
    )

    try:
        log(f"starting sshd under {base}")
        server = benchlib.start_sshd(base / "sshd")
        mirror = base / "mirror"
        pins = serve_app_server(mirror)
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        names = dict(zip(RECIPES, HOST_NAMES, strict=False))
        stages = {}
        for recipe, name in names.items():
            roots = benchlib.fresh_roots(server, recipe, [name])
            stage = benchlib.ssh_stage(server, roots)
            settings = stage["hosts"][name]
            host = hosts[recipe] = AppHost(name, Path(roots[name]), free_port())
            host.prepare(settings)
            settings["health_check"] = {"url": host.url, "contains": "{{ release_id }}"}
            if recipe == "graceful":
                settings["restart"] = host.graceful_restart()
            else:
                include = host.base / "etc" / "supervisor" / "conf.d"
                supervisor = start_supervisord(host.base / "supervisor", mirror, include, server.user)
                settings["restart"] = supervisor_restart(supervisor.ctl)
            stages[recipe] = stage
        inventory = {
            "app": "demo",
            "default_stage": "graceful",
            "mirror": mirror_url,
            "keep_releases": 3,
            "python": HOST_PYTHON,
            "python_version": HOST_PYTHON_VERSION,
            "stages": stages,
        }
        project = benchlib.make_project(base / "project", inventory, "", "")
        project.commit("the example app under gunicorn", app_files(pins))
        for recipe in RECIPES:
            log(f"{recipe}: first deploy (starts gunicorn)")
            project.fab("deploy", "--stage", recipe)
            wait_for(lambda recipe=recipe: hosts[recipe].current(), 60, "the first release")
        for i in range(runs):
            for recipe in RECIPES:
                for action in ACTIONS:
                    log(f"{recipe}: {action} under load, run {i + 1}/{runs}")
                    if action == "deploy":
                        project.commit()
                    with RequestLoop(hosts[recipe].url) as loop:
                        wait_for(lambda loop=loop: loop.requests > 10, 30, "requests before fab starts")
                        if action == "idle":
                            time.sleep(IDLE_SECONDS)
                        else:
                            project.fab(action, "--stage", recipe)
                    results[recipe, action].append(figures(loop))
                    time.sleep(0.5)
    finally:
        if supervisor is not None:
            supervisor.stop()
        for host in hosts.values():
            kill_mentioning(str(host.base))
        benchlib.tear_down(mirror_server, server, base)

    print(f"\n## requests during a deploy and a rollback to one host (medians over {runs} run(s))\n")
    rows = []
    for recipe in RECIPES:
        for action in ACTIONS:
            samples = results[recipe, action]
            medians = [statistics.median(sample[column] for sample in samples) for column in COLUMNS]
            rows.append(
                [
                    "graceful (USR2 re-exec)" if recipe == "graceful" else "plain (supervisorctl restart)",
                    action,
                    *(
                        f"{value:g}" if column in ("requests", "failed") else f"{value:.1f}"
                        for column, value in zip(COLUMNS, medians, strict=True)
                    ),
                    str(sum(int(sample["failed"]) for sample in samples)),
                ]
            )
    print(table(["recipe", "action", *COLUMNS, "failed, all runs"], rows))
    print(f"\n{benchlib.machine_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
