"""``fab audit``: which version of each package every host's current release runs, which kept releases carry
other versions (the ``previous`` one is a plain ``fab rollback`` away, the others ``--to ID``), and the sha256
of the wheel each version came from, checked against the wheelhouse's ``MANIFEST.jsonl``.

Which wheel file a venv was filled from is not recorded on the host (pip and uv write no ``direct_url.json``
for ``--find-links`` installs). So the sha256 is, in order of trust:

- ``pinned-hash``: the release's requirements pin ``--hash=sha256:...`` for it, so the installer refused any
  other file; the hash is looked up in the manifest (the wheel best for the host's Python and platform when
  several are pinned);
- ``mirror-manifest``: derived from the manifest by name and version (the wheel best for the host's Python and
  platform): what the mirror holds now, not proof of what was installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..errors import DeployError
from ..inventory import HostConfig
from ..reporting.tables import columns
from ..supply.mirror import MANIFEST
from ..supply.requirements import Pin
from ..supply.wheelmeta import TargetPython
from .survey import DIST_NAME, SHA256, HostSurvey, release_pins, same_version

PINNED_HASH, MIRROR_MANIFEST = "pinned-hash", "mirror-manifest"


@dataclass(frozen=True)
class MirrorWheel:
    """One wheel recorded in ``MANIFEST.jsonl``."""

    filename: str
    sha256: str
    tags: frozenset[Tag]


#: The wheels of ``MANIFEST.jsonl`` by (canonical name, version).
Wheels = Mapping[tuple[str, "Version | str"], list[MirrorWheel]]


def _version_key(version: str) -> Version | str:
    """PEP 440 versions compare as such (``1`` is ``1.0``); anything else as written."""
    try:
        return Version(version)
    except InvalidVersion:
        return version


def mirror_wheels(wheelhouse: Path) -> dict[tuple[str, Version | str], list[MirrorWheel]]:
    """The wheels ``MANIFEST.jsonl`` records, by (canonical name, version); none without a manifest."""
    path = wheelhouse / MANIFEST
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as error:
        raise DeployError(f"cannot read {path}: {error}") from None
    wheels: dict[tuple[str, Version | str], list[MirrorWheel]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            name, version, _, tags = parse_wheel_filename(record["filename"])
        except (ValueError, KeyError, TypeError, InvalidWheelFilename):
            raise DeployError(f"{path}:{number}: not a wheel record; fix or remove the line") from None
        if not isinstance(record.get("sha256"), str) or not SHA256.fullmatch(record["sha256"]):
            raise DeployError(f"{path}:{number}: sha256 is not 64 hex digits; fix or remove the line")
        key: tuple[str, Version | str] = (str(name), version)
        wheels.setdefault(key, []).append(MirrorWheel(record["filename"], record["sha256"], frozenset(tags)))
    return wheels


def wheel_of(key: str, version: str, pin: Pin | None, target: TargetPython, wheels: Wheels) -> dict[str, Any]:
    """The wheel an installed (name, version) came from: ``sha256``, ``filename``, ``source``,
    ``in_mirror_manifest``."""
    ranked = sorted(
        ((rank, wheel) for wheel in wheels.get((key, _version_key(version)), [])
         if (rank := target.wheel_rank(wheel.tags)) is not None),
        key=lambda item: item[0],
    )  # fmt: skip
    candidates = [wheel for _, wheel in ranked]
    pinned = [h.partition(":")[2] for h in (pin.hashes if pin else ()) if h.startswith("sha256:")]
    if pinned:
        known = [wheel for wheel in candidates if wheel.sha256 in pinned]
        chosen = known[0] if known else None
        sha256 = chosen.sha256 if chosen else (pinned[0] if len(pinned) == 1 else None)
        source: str | None = PINNED_HASH
    else:
        chosen = candidates[0] if candidates else None
        sha256, source = (chosen.sha256, MIRROR_MANIFEST) if chosen else (None, None)
    return {"sha256": sha256, "filename": chosen.filename if chosen else None, "source": source,
            "in_mirror_manifest": chosen is not None}  # fmt: skip


def check_package(name: str | None) -> str | None:
    """The canonical form of ``--package``, or a `DeployError` for something that is not a distribution name."""
    if name is None:
        return None
    if not DIST_NAME.fullmatch(name):
        raise DeployError(f"--package {name!r} is not a distribution name (like Django or demo-lib)")
    return canonicalize_name(name)


def _host_json(survey: HostSurvey) -> dict[str, Any]:
    return {
        "stage": survey.host.stage,
        "host": survey.host.name,
        "reachable": survey.reachable,
        "error": survey.error,
        "current": survey.current,
        "previous": survey.rollback_target if survey.reachable else None,
        "releases": list(survey.releases),
        "problems": list(survey.problems),
    }


def audit_document(
    surveys: Sequence[HostSurvey],
    relative: Callable[[HostConfig], str],
    target: Callable[[HostConfig], TargetPython],
    wheels: Wheels,
    package: str | None = None,
) -> dict[str, Any]:
    """The ``fab audit --json`` document (keys documented in the README): per package, per version, where it
    runs (``current_on``), which kept releases carry it while their host's current runs another version
    (``kept_on``), and the wheels it came from."""
    packages: dict[str, dict[str, Any]] = {}
    for survey in surveys:
        if not survey.reachable:
            continue
        host = survey.host
        current = survey.details.get(survey.current or "")
        running = {dist.key: dist.version for dist in current.dists} if current else {}
        previous = survey.rollback_target
        for release_id, detail in sorted(survey.details.items()):
            role = "current" if release_id == survey.current else "previous" if release_id == previous else "kept"
            pins = release_pins(detail, relative(host), target(host)).pins
            for dist in detail.dists:
                if package and dist.key != package:
                    continue
                if role != "current" and dist.key in running and same_version(running[dist.key], dist.version):
                    continue
                entry = packages.setdefault(dist.key, {"name": dist.name, "versions": {}})
                version = entry["versions"].setdefault(
                    _version_key(dist.version),
                    {"version": dist.version, "current_on": [], "kept_on": [], "wheels": []},
                )
                wheel = wheel_of(dist.key, dist.version, pins.get(dist.key), target(host), wheels)
                if wheel not in version["wheels"]:
                    version["wheels"].append(wheel)
                usage = {"stage": host.stage, "host": host.name, "release": release_id, "role": role,
                         "sha256": wheel["sha256"]}  # fmt: skip
                version["current_on" if role == "current" else "kept_on"].append(usage)
    return {
        "package": package,
        "hosts": [_host_json(survey) for survey in surveys],
        "packages": [
            {"name": entry["name"], "versions": _newest_first(list(entry["versions"].values()))}
            for _, entry in sorted(packages.items())
        ],
        "unreachable": [f"{s.host.stage}/{s.host.name}" for s in surveys if not s.reachable],
    }


def _newest_first(versions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """PEP 440 versions newest first, then any others as they are."""

    def valid(version: dict[str, Any]) -> bool:
        try:
            Version(version["version"])
        except InvalidVersion:
            return False
        return True

    ordered = sorted((v for v in versions if valid(v)), key=lambda v: Version(v["version"]), reverse=True)
    return ordered + [v for v in versions if not valid(v)]


def audit_lines(document: Mapping[str, Any]) -> list[str]:
    """The readable table of an audit document: one row per package, version, role, release and wheel."""
    rows: list[list[str]] = []
    for package in document["packages"]:
        for version in package["versions"]:
            wheels = {wheel["sha256"]: wheel for wheel in version["wheels"]}
            groups: dict[tuple[str, str, str | None], list[str]] = {}
            for usage in [*version["current_on"], *version["kept_on"]]:
                key = (usage["role"], usage["release"], usage["sha256"])
                groups.setdefault(key, []).append(f"{usage['stage']}/{usage['host']}")
            for (role, release, sha256), hosts in groups.items():
                wheel = wheels[sha256]
                mirror = "yes" if wheel["in_mirror_manifest"] else "NO"
                rows.append([package["name"], version["version"], role, release, ", ".join(hosts),
                             (sha256 or "unknown")[:16], wheel["source"] or "-", mirror])  # fmt: skip
    headers = ["PACKAGE", "VERSION", "ROLE", "RELEASE", "HOSTS", "WHEEL SHA256", "FROM", "IN MIRROR"]
    lines = columns(headers, rows) if rows else [f"no host runs {document['package'] or 'any package'}"]
    notes = [f"{h['stage']}/{h['host']}: unreachable: {h['error']}" for h in document["hosts"] if not h["reachable"]]
    notes += [f"{h['stage']}/{h['host']}: refused from the host: {p}" for h in document["hosts"] for p in h["problems"]]
    return lines + (["", "warnings:", *(f"  {note}" for note in notes)] if notes else [])
