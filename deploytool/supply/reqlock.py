"""Resolve a role's short input file (``requirements/<role>.in``) into its complete pinned role file.

The resolver is uv's ``pip compile`` (found on PATH or beside this Python; not one of our own), run for the
hosts' Python and platform with ``--generate-hashes``, against ``upstream`` (the mirror may not have new
packages yet; ``mirror.sync`` fills it from the result). The output is checked by the same rules as any
role file before it replaces the old one, so a failure changes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from deploytool.errors import DeployError
from deploytool.supply.mirror import PYPI
from deploytool.supply.requirements import UV_SOURCE_VARIABLES, read_requirements
from deploytool.supply.wheelmeta import ARCH_ALIASES, TargetPython

COMPILE_COMMAND = "fab requirements.lock"


def find_uv() -> str:
    """The uv executable: on PATH, else beside the running Python (a venv's bin/), else a DeployError."""
    found = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if not found:
        raise DeployError("uv not found on PATH: install it (pip install uv) to use requirements.lock")
    return found


def uv_platform(target: TargetPython) -> str:
    """uv's ``--python-platform`` for the target, e.g. ``x86_64-manylinux_2_28``."""
    arch = ARCH_ALIASES.get(target.platform_machine, target.platform_machine)
    if target.sys_platform != "linux":
        raise DeployError(f"requirements.lock resolves for Linux hosts only, not {target.describe()}")
    if arch in ("x86_64", "aarch64"):
        return f"{arch}-manylinux_{target.glibc.replace('.', '_')}"
    return f"{arch}-unknown-linux-gnu"


def compile_args(source: Path, output: Path, target: TargetPython, upstream: str | None) -> list[str]:
    """The ``uv pip compile`` command line (run in the requirements directory, so paths in comments are short)."""
    return [
        find_uv(), "pip", "compile", source.name, "--output-file", str(output), "--quiet", "--no-config",
        "--generate-hashes", "--python-version", target.python_version, "--python-platform", uv_platform(target),
        "--default-index", upstream or PYPI, "--custom-compile-command", COMPILE_COMMAND,
    ]  # fmt: skip


def lock(source: Path, target: TargetPython, upstream: str | None) -> Path:
    """Write ``<role>.txt`` beside ``source`` (``<role>.in``) with every dependency pinned and hashed."""
    destination = source.with_suffix(".txt")
    partial = source.with_name(f".{destination.name}.lock-{os.getpid()}")
    if destination.exists():
        shutil.copyfile(destination, partial)  # uv keeps the pins of an existing output where it can
    env = {key: value for key, value in os.environ.items() if key not in UV_SOURCE_VARIABLES}
    try:
        result = subprocess.run(
            compile_args(source, partial, target, upstream),
            cwd=source.parent, capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["no output"]
            raise DeployError(f"{source}: cannot resolve for {target.describe()}:\n  " + "\n  ".join(lines[-12:]))
        text = partial.read_text(encoding="utf-8").replace(partial.name, destination.name)
        partial.write_text(text, encoding="utf-8")
        read_requirements(partial)  # the pinning rules every role file must meet
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination
