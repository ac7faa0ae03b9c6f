"""Check a deploy's requirements on the laptop, before any host is touched, and choose each host's installer.

The files checked are the ones *in the commit being deployed* (``git archive`` of the requirement files),
so what is checked is exactly what the hosts will install. Each distinct (file, mirror, target Python) is
checked once: every pin with ``==``, every dependency of a dependency pinned compatibly, every pin present in
the mirror as a wheel for the hosts' Python and platform.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import DeployError
from ..flow.phases import InstallPlan
from ..flow.release import is_commit_id
from ..flow.snapshot import extract, relative_to_project
from ..inventory import HostConfig, Inventory
from . import installer
from .requirements import check_nested, read_requirements, requirements_digest
from .wheelmeta import TargetPython


def target_python(host: HostConfig) -> TargetPython:
    """The interpreter and platform the host runs, as hosts.yml declares them (default: this machine's)."""
    return TargetPython(
        python_version=host.python_version or platform.python_version(), platform_machine=host.platform_machine
    )


def laptop_mirror(inventory: Inventory, host: HostConfig, tree: Path | None = None) -> tuple[str, str]:
    """Where the laptop reads the mirror, and as what (``find-links`` or ``index``).

    An index server is read as it is (the hosts install from it); vendored wheels from ``tree`` (a commit's
    files) or the working tree; otherwise the local wheelhouse when there is one, else the hosts' mirror.
    """
    if host.mirror_kind == "index":
        return host.mirror, "index"
    if host.mirror_kind == "vendored":
        return str((tree or inventory.project_root) / host.mirror), "find-links"
    if inventory.wheelhouse.is_dir() and any(inventory.wheelhouse.glob("*.whl")):
        return str(inventory.wheelhouse), "find-links"
    return host.mirror, "find-links"


@dataclass(frozen=True)
class CheckedPins:
    """The outcome for one host: what to install and the digest recorded in the release manifest."""

    install: InstallPlan
    digest: str


def _relative(inventory: Inventory, host: HostConfig) -> str:
    return relative_to_project(inventory.project_root, host.requirements, f"{inventory.path}: requirements")


def extract_requirement_files(project_root: Path, commit: str, into: Path) -> None:
    """Write the ``*.txt`` files of ``commit`` (a full commit id) under ``into``, as committed."""
    if not is_commit_id(commit):
        raise DeployError(f"{commit!r} is not a commit id")
    extract(project_root, commit, [":(glob)**/*.txt"], into)


def _extract_vendored(inventory: Inventory, host: HostConfig, commit: str, into: Path) -> None:
    """Write the commit's vendored wheels under ``into`` (what the release will carry)."""
    if not extract(inventory.project_root, commit, [host.mirror], into):
        raise DeployError(
            f"{inventory.path}: mirror: {host.mirror} (vendored) is not in commit {commit[:12]}; commit the wheels"
        )


def check_pins(inventory: Inventory, hosts: tuple[HostConfig, ...], commit: str) -> dict[str, CheckedPins]:
    """Check every host's requirements as committed in ``commit``; raise one error listing every problem."""
    results: dict[str, CheckedPins] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deploytool-pins-") as tmp:
        extract_requirement_files(inventory.project_root, commit, Path(tmp))
        done: dict[tuple[str, tuple[str, str], TargetPython], CheckedPins | None] = {}
        # -> the installer chosen, and for uv its wheel (filename, sha256)
        tools: dict[tuple[tuple[str, str], TargetPython, str | None], tuple[str, tuple[str, str] | None]] = {}
        for host in hosts:
            relative = _relative(inventory, host)
            key = (relative, laptop_mirror(inventory, host, Path(tmp)), target_python(host))
            if key not in done:
                done[key] = None
                try:
                    if not (Path(tmp) / relative).is_file():
                        raise DeployError(f"{relative}: not in commit {commit[:12]}; commit it")
                    reqs = read_requirements(Path(tmp) / relative)
                    if host.mirror_kind == "vendored":
                        _extract_vendored(inventory, host, commit, Path(tmp))
                    check_nested(reqs, key[1][0], key[2], kind=key[1][1])
                    hashes = any(pin.hashes for pin in reqs.pins)
                    digest = requirements_digest(reqs)
                    done[key] = CheckedPins(InstallPlan(relative, hashes, digest), digest)
                except DeployError as error:
                    problems.append(str(error).replace(f"{tmp}/", ""))
            checked = done[key]
            try:
                chosen = tools.get((key[1], key[2], host.installer))
                if chosen is None:
                    where = f"{inventory.path}: stage {host.stage}, host {host.name}"
                    tool = installer.choose(host, *key[1], key[2], where)
                    uv = installer.uv_wheel(*key[1], key[2], where) if tool == "uv" else None
                    chosen = tools[key[1], key[2], host.installer] = (tool, uv)
            except DeployError as error:
                problems.append(str(error).replace(f"{tmp}/", ""))
                continue
            if checked is not None:
                install = replace(checked.install, installer=chosen[0], uv_wheel=chosen[1])
                results[host.name] = replace(checked, install=install)
    if problems:
        raise DeployError(
            f"requirements of {commit[:12]} failed the checks; no host was touched:\n" + "\n".join(problems)
        )
    return results
