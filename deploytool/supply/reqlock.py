"""Resolve a role's short input file (``requirements/<role>.in``) into its complete pinned role file.

The resolver is uv's ``pip compile``, not one of our own: deploytool's pinned uv (`installer.UV_VERSION`) from
the wheelhouse, where ``fab mirror.sync`` puts its wheel (the wheel's sha256 checked against ``MANIFEST.jsonl``,
its ``uv`` binary unpacked once into ``$XDG_CACHE_HOME/deploytool/uv/<sha256>/`` and checked against the wheel's
``RECORD`` on every use), else a ``uv`` on PATH or beside this Python. It runs for the hosts' Python and
platform with ``--generate-hashes``, against ``upstream`` (the mirror may not have new
packages yet; ``mirror.sync`` fills it from the result). The output is checked by the same rules as any
role file before it replaces the old one, so a failure changes nothing.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from deploytool.errors import DeployError
from deploytool.supply.installer import UV_VERSION
from deploytool.supply.mirror import PYPI, read_manifest
from deploytool.supply.requirements import UV_SOURCE_VARIABLES, read_requirements
from deploytool.supply.wheelmeta import ARCH_ALIASES, TargetPython, sha256_file

COMPILE_COMMAND = "fab requirements.lock"


def find_uv(wheelhouse: Path | None = None) -> str:
    """The uv to run: deploytool's pinned one from the wheelhouse (`pinned_uv`), else one on PATH, else one
    beside the running Python (a venv's bin/), else a DeployError saying how to get it."""
    found = pinned_uv(wheelhouse) if wheelhouse is not None else None
    found = found or shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if not found:
        raise DeployError(
            f"uv not found: fab mirror.sync adds deploytool's pinned uv {UV_VERSION} to the wheelhouse "
            "(requirements.lock then runs it from there), or put uv on PATH"
        )
    return found


def cache_home() -> Path:
    value = os.environ.get("XDG_CACHE_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".cache"


def _laptop_wheels(wheelhouse: Path) -> list[Path]:
    """The pinned uv's wheels in the wheelhouse that run on this machine."""
    tags, found = set(sys_tags()), []
    for wheel in sorted(wheelhouse.glob(f"uv-{UV_VERSION}-*.whl")):
        try:
            if parse_wheel_filename(wheel.name)[3] & tags:
                found.append(wheel)
        except InvalidWheelFilename:
            continue
    return found


def _record_hash(archive: zipfile.ZipFile, member: str) -> str | None:
    """The hex sha256 the wheel's RECORD gives ``member``."""
    records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        return None
    for row in csv.reader(io.StringIO(archive.read(records[0]).decode("utf-8", "replace"))):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            digest = row[1].removeprefix("sha256=")
            return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return None


def pinned_uv(wheelhouse: Path) -> str | None:
    """deploytool's pinned uv, run from the wheelhouse's wheel for this machine (None when there is none): the
    wheel must have the sha256 ``MANIFEST.jsonl`` recorded when it was added; its ``uv`` is unpacked once into
    the cache and must match the wheel's ``RECORD`` on every use (else it is unpacked again)."""
    wheels = _laptop_wheels(wheelhouse) if wheelhouse.is_dir() else []
    if not wheels:
        return None
    wheel = wheels[0]
    recorded = {str(r.get("filename")): str(r.get("sha256")) for r in read_manifest(wheelhouse) if isinstance(r, dict)}
    digest = sha256_file(wheel)
    if recorded.get(wheel.name) != digest:
        said = f"records {recorded[wheel.name]}" if wheel.name in recorded else "has no record of it"
        raise DeployError(
            f"{wheel}: sha256 {digest}, but {wheelhouse}/MANIFEST.jsonl {said}; not running it "
            "(fab mirror.verify compares the wheelhouse with upstream)"
        )
    member = f"uv-{UV_VERSION}.data/scripts/uv"
    binary = cache_home() / "deploytool" / "uv" / digest / "uv"
    try:
        with zipfile.ZipFile(wheel) as archive:
            expected = _record_hash(archive, member)
            if expected is None:
                raise DeployError(f"{wheel}: no {member} with a sha256 in its RECORD; not a uv wheel to run")
            if not binary.is_file() or sha256_file(binary) != expected:
                binary.parent.mkdir(parents=True, exist_ok=True)
                partial = binary.with_name(f".uv.{os.getpid()}.part")
                with archive.open(member) as source, partial.open("wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
                if sha256_file(partial) != expected:
                    partial.unlink()
                    raise DeployError(f"{wheel}: {member} does not match the sha256 its RECORD gives")
                partial.chmod(0o755)
                partial.replace(binary)
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise DeployError(f"cannot unpack uv from {wheel}: {error}") from None
    return str(binary)


def uv_platform(target: TargetPython) -> str:
    """uv's ``--python-platform`` for the target, e.g. ``x86_64-manylinux_2_28``."""
    arch = ARCH_ALIASES.get(target.platform_machine, target.platform_machine)
    if target.sys_platform != "linux":
        raise DeployError(f"requirements.lock resolves for Linux hosts only, not {target.describe()}")
    if arch in ("x86_64", "aarch64"):
        return f"{arch}-manylinux_{target.glibc.replace('.', '_')}"
    return f"{arch}-unknown-linux-gnu"


def compile_args(
    source: Path, output: Path, target: TargetPython, upstream: str | None, uv: str | None = None
) -> list[str]:
    """The ``uv pip compile`` command line (run in the requirements directory, so paths in comments are short)."""
    return [
        uv or find_uv(), "pip", "compile", source.name, "--output-file", str(output), "--quiet", "--no-config",
        "--generate-hashes", "--python-version", target.python_version, "--python-platform", uv_platform(target),
        "--default-index", upstream or PYPI, "--custom-compile-command", COMPILE_COMMAND,
    ]  # fmt: skip


def lock(source: Path, target: TargetPython, upstream: str | None, uv: str | None = None) -> Path:
    """Write ``<role>.txt`` beside ``source`` (``<role>.in``) with every dependency pinned and hashed, with ``uv``
    (default: `find_uv` without a wheelhouse)."""
    destination = source.with_suffix(".txt")
    partial = source.with_name(f".{destination.name}.lock-{os.getpid()}")
    if destination.exists():
        shutil.copyfile(destination, partial)  # uv keeps the pins of an existing output where it can
    env = {key: value for key, value in os.environ.items() if key not in UV_SOURCE_VARIABLES}
    try:
        result = subprocess.run(
            compile_args(source, partial, target, upstream, uv),
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
