"""Time a warm deploy of an app pinning a realistic 36-package set to 1 host, with pip and with uv, and
break the build phase down (venv, install, pip check); also ``fab requirements.check`` on that set.

    python benchmarks/deploy_36.py [--runs N] [--requirements FILE] [--wheels DIR]

The pins are /work/shared/bench/requirements-36.txt. Their wheels are downloaded ONCE (PyPI, through pip)
into ~/.cache/deploytool-bench/wheels, outside the repository; later runs use that directory as it is.
A copy is indexed (deploytool.supply.mirror.write_indexes) and served over HTTP on 127.0.0.1
(deploytool.supply.mirror.serve); the host is the test sshd on 127.0.0.2. Everything is removed at exit.

uv comes from the mirror, as for a user: deploytool's pinned uv wheel (downloaded once into
~/.cache/deploytool-bench/uv-<version>) is served with the pins, and the first deploy fetches it from there
(sha256-checked, only its binary unpacked; no tools venv).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
from benchlib import HOST_NAMES, HOST_PYTHON, Samples, log, samples_table

REQUIREMENTS = Path("/work/shared/bench/requirements-36.txt")
WHEELS = benchlib.CACHE / "wheels"
APP_SOURCE = "import django\nimport celery\nVERSION = django.get_version()\n"
# The 36 pins are complete for Python >= 3.11.3 only: redis 8.1.0 requires async-timeout on older Pythons
# (``python_full_version < '3.11.3'``), and Debian 12's /usr/bin/python3 is 3.11.2. On such a host the pin
# is added (and its wheel fetched once into the same cache), and the report says so.
EXTRA_PINS_BEFORE_3_11_3 = ["async-timeout==5.0.1"]


def pins_of(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def pins(requirements: Path) -> list[str]:
    return pins_of(requirements.read_text())


def _download(what: list[str], into: Path) -> None:
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    benchlib.run([*pip, *what, "-d", str(into)], timeout=900)


def ensure_wheels(requirements: Path, wheels: Path, extra: list[str]) -> None:
    """Download the pinned wheels once (binary only, no dependencies: the file pins them all)."""
    if not wheels.is_dir():
        partial = wheels.with_name(f"{wheels.name}.partial-{os.getpid()}")
        log(f"downloading the wheels of {requirements} into {wheels} (once)")
        try:
            _download(["-r", str(requirements)], partial)
            partial.rename(wheels)
        finally:
            benchlib.rmtree(partial)
    present = {path.name.split("-")[0].lower() for path in wheels.glob("*.whl")}
    missing = [pin for pin in extra if pin.split("==")[0].replace("-", "_").lower() not in present]
    if missing:
        log(f"downloading {', '.join(missing)} into {wheels} (once)")
        _download(missing, wheels)


def host_python_version(server: Any) -> str:
    command = f"{HOST_PYTHON} -c 'import platform; print(platform.python_version())'"
    return benchlib.run(benchlib.as_deploy_user(server, command), timeout=60).strip()


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def fab_outcome(project: benchlib.Project, *args: str) -> tuple[int, str]:
    """Exit code and the last lines of a fab command that may fail."""
    result = subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=project.path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=benchlib.FAB_TIMEOUT,
        check=False,
    )
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, " | ".join(lines[-3:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="warm runs per scenario (default 2; medians reported)")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS, help="the pin set (default: %(default)s)")
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="wheel cache directory (default: %(default)s)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 20))
    wanted = pins(args.requirements)
    ensure_wheels(args.requirements, args.wheels, EXTRA_PINS_BEFORE_3_11_3)
    wheel_files = sorted(args.wheels.glob("*.whl"))
    if len(wheel_files) < len(wanted):
        raise SystemExit(f"{args.wheels} has {len(wheel_files)} wheels for {len(wanted)} pins; delete it to refetch")

    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-36-"))
    base.chmod(0o755)
    server = mirror_server = None
    results: dict[str, list[Samples]] = {}
    phases: dict[str, benchlib.Instruments] = {}
    notes: list[str] = []
    try:
        log(f"starting sshd under {base}")
        server = benchlib.start_sshd(base / "sshd")
        mirror = base / "mirror"
        mirror.mkdir()
        for wheel in [*wheel_files, benchlib.ensure_uv_wheel(benchlib.CACHE)]:
            shutil.copy2(wheel, mirror / wheel.name)
        mirror_server, mirror_url = benchlib.serve_mirror(mirror)
        installers = ["pip", "uv"]
        stages = {
            name: benchlib.ssh_stage(server, benchlib.fresh_roots(server, name, HOST_NAMES[:1]), installer=name)
            for name in installers
        }
        host_version = host_python_version(server)
        inventory = {
            "app": "demo36",
            "default_stage": "pip",
            "mirror": mirror_url,
            "keep_releases": 3,
            "python": HOST_PYTHON,
            "python_version": host_version,  # check the pins for the hosts' Python, not this laptop's
            "stages": stages,
        }
        requirements_text = args.requirements.read_text()
        project = benchlib.make_project(base / "project", inventory, requirements_text, APP_SOURCE)
        code, said = fab_outcome(project, "requirements.check", "--stage", "pip")
        notes.append(
            f"`fab requirements.check` of the {len(wanted)} pins for the host's Python {host_version}: "
            + ("ok" if code == 0 else f"FAILS (exit {code}): {said}")
        )
        if version_tuple(host_version) < (3, 11, 3):
            requirements_text = requirements_text.rstrip("\n") + "\n" + "\n".join(EXTRA_PINS_BEFORE_3_11_3) + "\n"
            project.commit("pin what redis needs on Python < 3.11.3", {"requirements/prod.txt": requirements_text})
            notes.append(
                f"host Python {host_version} < 3.11.3: added {', '.join(EXTRA_PINS_BEFORE_3_11_3)} "
                f"(redis 8.1.0 requires it there), so {len(pins_of(requirements_text))} packages are deployed"
            )
        readable = base / "requirements.txt"  # the deployed pins, readable by the deploy user
        readable.write_text(requirements_text)
        readable.chmod(0o644)

        check = Samples(f"fab requirements.check ({len(pins_of(requirements_text))} pins, HTTP mirror)", "-")
        dry = Samples("fab deploy --dry-run (plan only: pins checked)", "-")
        for i in range(runs):
            log(f"requirements.check + dry run, run {i + 1}/{runs}")
            check.add(project.fab("requirements.check", "--stage", "pip"))
            dry.add(project.fab("deploy", "--stage", "pip", "--dry-run"))
        results["laptop"] = [check, dry]

        for name in installers:
            cold, warm = Samples("deploy, cold (first, fresh root)", name), Samples("deploy, warm", name)
            log(f"{name}: cold deploy")
            project.commit()
            cold.add(project.fab("deploy", "--stage", name))
            for i in range(runs):
                log(f"{name}: warm deploy, run {i + 1}/{runs}")
                project.commit()
                warm.add(project.fab("deploy", "--stage", name))
            log(f"{name}: warm deploys in-process, timing each phase")
            phases[name] = benchlib.instrumented_deploys(project, name, runs, {server.addresses[0]: HOST_NAMES[0]})
            log(f"{name}: build steps one by one")
            from deploytool.inventory import load_inventory

            host = load_inventory(project.path / "hosts.yml").hosts(name)[0]
            steps = benchlib.build_breakdown(server, host, readable, runs, name)
            results[name] = [cold, warm, *steps]
    finally:
        benchlib.tear_down(mirror_server, server, base)

    print(f"\n## 36 pinned packages, 1 host over the test sshd (medians over {runs} run(s); 2-core box)\n")
    rows = [s for group in results.values() for s in group]
    print(samples_table(rows, second="installer"))
    for name in ("pip", "uv"):
        if name in results:
            warm = results[name][1]
            steps = results[name][3:6]
            if warm.values and all(s.values for s in steps):
                inside = sum(statistics.median(s.values) for s in steps)
                share = inside / statistics.median(warm.values)
                notes.append(f"{name}: venv + install + pip check = {inside:.2f}s, {share:.0%} of a warm deploy")
    print("\n## where a warm deploy's time goes, per installer (in-process, same deploys)\n")
    rows = [[*row[:1], name, *row[2:]] for name, found in phases.items() for row in benchlib.phase_rows(found, 1)]
    print(benchlib.table(["phase", "installer", *benchlib.PHASE_HEADERS[2:]], rows))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"\n{benchlib.machine_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
