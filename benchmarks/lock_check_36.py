"""Time `fab requirements.lock` and `fab requirements.check` against a real index server, 36-package set.

The wheels of /work/shared/bench/requirements-36.txt (plus async-timeout and packaging, which it lacks)
are downloaded once with `pip download --no-deps --only-binary=:all:` into --wheels (outside the repository;
later runs reuse it) and served by pypiserver on 127.0.0.1 (tests/indexserver.py, no fallback to PyPI). The
project's requirements/prod.in names only the top-level packages; lock resolves it with uv for the hosts'
Python (python_version = the host interpreter's) and writes prod.txt; check then reads the index for every pin.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import HOST_PYTHON_VERSION, Samples, log, run_timed, samples_table

from tests.indexserver import index_server

PINS = Path("/work/shared/bench/requirements-36.txt")
WHEELS = Path.home() / ".cache" / "deploytool-bench" / "wheels36"
# The 36 pins are incomplete: redis==8.1.0 needs async-timeout when python_full_version < "3.11.3" (the hosts
# run 3.11.2), and kombu==5.7.0 needs packaging. uv finds both; their wheels are fetched into the same cache.
EXTRA = ["async-timeout==5.0.1", "packaging==26.3"]
TOP_LEVEL = """Django
djangorestframework
celery[redis]
boto3
gunicorn
pillow
psycopg2-binary
requests
sentry-sdk
Jinja2
PyYAML
tzlocal
"""


def fetch_wheels(wheels: Path) -> None:
    """Download the pinned wheels once (PyPI), for the hosts' platform."""
    if len(list(wheels.glob("*.whl"))) >= 38:
        return
    log(f"downloading the wheels once into {wheels}")
    wheels.mkdir(parents=True, exist_ok=True)
    target = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014"):
        target += ["--platform", f"{tag}_x86_64"]
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels)]
    subprocess.run([*base, *target, "-r", str(PINS), *EXTRA], check=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (at most 10)")
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="wheel cache directory (default: %(default)s)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 10))
    fetch_wheels(args.wheels)
    base = Path(tempfile.mkdtemp(prefix="deploytool-bench-lock-"))
    try:
        with index_server(base / "index") as index:
            for wheel in args.wheels.glob("*.whl"):
                shutil.copy2(wheel, index.packages / wheel.name)
            inventory = {
                "app": "bench", "default_stage": "local", "upstream": index.simple, "mirror": index.simple,
                "mirror_kind": "index", "python_version": HOST_PYTHON_VERSION, "wheelhouse": str(base / "none"),
                "stages": {"local": {"transport": "local", "root": ".deploy", "hosts": ["localhost"]}},
            }  # fmt: skip
            inventory["stages"]["local"]["allow_root"] = True
            project = benchlib.make_project(base / "project", inventory, "", "VERSION = '1'\n")
            requirements = project.path / "requirements"
            (requirements / "prod.in").write_text(TOP_LEVEL)
            fab = [sys.executable, "-m", "fabric"]
            cold = Samples("requirements.lock, empty uv cache", "-")
            warm = Samples("requirements.lock, warm uv cache", "-")
            check = Samples("requirements.check (index, no PEP 658: wheels downloaded)", "-")
            for number in range(runs):
                log(f"run {number + 1}/{runs}")
                (requirements / "prod.txt").unlink(missing_ok=True)
                env = {**os.environ, "UV_CACHE_DIR": str(base / f"uv-cache-{number}")}
                cold.add(run_timed([*fab, "requirements.lock"], cwd=project.path, env=env))
                (requirements / "prod.txt").unlink()
                warm.add(run_timed([*fab, "requirements.lock"], cwd=project.path, env=env))
                check.add(run_timed([*fab, "requirements.check"], cwd=project.path))
            pins = [line for line in (requirements / "prod.txt").read_text().splitlines() if "==" in line]
            print(f"\n#### lock and check against pypiserver, {len(pins)} pins (medians over {runs} run(s))\n")
            print(samples_table([cold, warm, check], second="-"))
            print(f"\n{benchlib.machine_note()}")
    finally:
        benchlib.rmtree(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
