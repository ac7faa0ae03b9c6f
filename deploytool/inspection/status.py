"""``fab status``: one row per host (current release, commit, who and when, previous good release, lock,
health) and the warnings that matter: hosts of a stage disagreeing on current, and drift.

Drift is the current venv differing from what its release pins: a distribution installed that the pins do not
list, or at another version; a pinned one missing; a file of an installed distribution whose content no longer
matches its ``RECORD`` sha256 (edited in place), or gone. Release venvs hold exactly the pins (they are made
without pip, and installed ``--no-deps``), so pip, setuptools or wheel found there unpinned are drift too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..inventory import HostConfig
from ..reporting.tables import columns
from ..supply.wheelmeta import TargetPython
from .survey import HostSurvey, Lock, ReleaseDetail, ReleasePins, release_pins, same_version

#: Kinds of drift, as they appear in ``--json`` (``drift[].kind``).
NOT_PINNED, OTHER_VERSION, NOT_INSTALLED, MODIFIED, FILES_MISSING = (
    "not-pinned", "other-version", "not-installed", "modified", "files-missing",
)  # fmt: skip


@dataclass(frozen=True)
class Drift:
    """One way the current venv differs from its release's pins."""

    package: str
    kind: str
    detail: str


@dataclass
class HostStatus:
    """One row of ``fab status``."""

    stage: str
    host: str
    error: str | None = None
    current: str | None = None
    commit: str | None = None
    deployed_by: str | None = None
    deployed_at: str | None = None
    previous: str | None = None
    lock: Lock | None = None
    health: str | None = None
    drift: list[Drift] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "host": self.host,
            "reachable": self.error is None,
            "error": self.error,
            "current": self.current,
            "commit": self.commit,
            "deployed_by": self.deployed_by,
            "deployed_at": self.deployed_at,
            "previous": self.previous,
            "lock": self.lock.to_json() if self.lock else None,
            "health": self.health,
            "drift": [{"package": d.package, "kind": d.kind, "detail": d.detail} for d in self.drift],
            "warnings": self.warnings,
        }


def health_of(host: HostConfig, survey: HostSurvey) -> str | None:
    """The app's health as its ``health_check`` says, tried once in the survey's round trip: ``"ok"`` or
    ``"failing: ..."``; None when no check is configured (or no release is current)."""
    return survey.health if host.health_check is not None else None


def drift_of(detail: ReleaseDetail, pins: ReleasePins, relative: str) -> list[Drift]:
    """How the installed distributions of ``detail`` differ from ``pins`` (the release's own requirements)."""
    found: list[Drift] = []
    installed = {dist.key for dist in detail.dists}
    for dist in detail.dists:
        pin = pins.pins.get(dist.key)
        if pin is None:
            found.append(Drift(dist.name, NOT_PINNED, f"{dist.name} {dist.version} is installed but not pinned in "
                                                      f"{relative} (installed by hand?)"))  # fmt: skip
        elif pin.version is not None and not same_version(dist.version, pin.version):
            found.append(Drift(dist.name, OTHER_VERSION, f"{dist.name} {dist.version} is installed, {relative} "
                                                         f"pins {pin.version}"))  # fmt: skip
        if dist.modified_count:
            named = ", ".join(dist.modified) + (" ..." if dist.modified_count > len(dist.modified) else "")
            found.append(Drift(dist.name, MODIFIED, f"{dist.name} {dist.version}: {dist.modified_count} file(s) "
                                                    f"differ from RECORD (edited in place?): {named}"))  # fmt: skip
        if dist.missing_count:
            named = ", ".join(dist.missing) + (" ..." if dist.missing_count > len(dist.missing) else "")
            found.append(Drift(dist.name, FILES_MISSING, f"{dist.name} {dist.version}: {dist.missing_count} "
                                                         f"file(s) of RECORD are gone: {named}"))  # fmt: skip
    for key, pin in sorted(pins.pins.items()):
        if key not in installed:
            found.append(Drift(pin.name, NOT_INSTALLED, f"{pin.display} is pinned in {relative} but not installed"))
    return found


def host_status(survey: HostSurvey, relative: str, target: TargetPython) -> HostStatus:
    """The status row of one surveyed host (``relative``: its requirements path inside a release)."""
    host = survey.host
    status = HostStatus(host.stage, host.name, error=survey.error)
    if survey.error is not None:
        return status
    status.lock = survey.lock
    status.health = health_of(host, survey)
    status.warnings += [f"refused from the host: {problem}" for problem in survey.problems]
    if not survey.root_exists:
        status.warnings.append(f"no deploy root {host.root}: nothing deployed yet")
        return status
    status.previous = survey.rollback_target
    if survey.current is None:
        link = survey.current_link
        status.warnings.append(f"current points at {link}, not at a release" if link else "no current release")
        return status
    status.current = survey.current
    detail = survey.details.get(survey.current)
    live = survey.went_live(survey.current)
    manifest = detail.manifest if detail else None
    status.commit = (manifest.commit if manifest else None) or (live.commit if live else None)
    status.deployed_by = (live.user if live else None) or (manifest.user if manifest else None)
    status.deployed_at = (live.time if live else None) or (manifest.time if manifest else None)
    if detail is None:
        return status
    pins = release_pins(detail, relative, target)
    if pins.problem:
        status.warnings.append(f"cannot check drift: requirements of {detail.id}: {pins.problem}")
        return status
    if manifest and manifest.requirements_sha256 and pins.digest != manifest.requirements_sha256:
        status.warnings.append(f"{relative} of {detail.id} changed since it was deployed (requirements_sha256)")
    if not detail.has_venv:
        status.warnings.append(f"release {detail.id} has no venv")
    status.drift = drift_of(detail, pins, relative)
    return status


def stage_warnings(statuses: Sequence[HostStatus]) -> list[str]:
    """One warning per stage whose reachable hosts do not all run the same current release."""
    warnings = []
    for stage in dict.fromkeys(status.stage for status in statuses):
        by_release: dict[str, list[str]] = {}
        for status in statuses:
            if status.stage == stage and status.error is None:
                by_release.setdefault(status.current or "(none)", []).append(status.host)
        if len(by_release) > 1:
            groups = "; ".join(f"{release} on {', '.join(hosts)}" for release, hosts in by_release.items())
            warnings.append(f"stage {stage}: hosts disagree on current: {groups}")
    return warnings


def status_document(statuses: Sequence[HostStatus]) -> dict[str, Any]:
    """The ``fab status --json`` document (keys documented in the README)."""
    return {
        "hosts": [status.to_json() for status in statuses],
        "warnings": stage_warnings(statuses),
        "unreachable": [f"{s.stage}/{s.host}" for s in statuses if s.error is not None],
    }


def status_lines(statuses: Sequence[HostStatus]) -> list[str]:
    """The readable table, then the warnings (per host: drift first)."""
    with_health = any(status.health is not None for status in statuses)
    headers = ["HOST", "CURRENT", "COMMIT", "DEPLOYED BY", "AT", "PREVIOUS", "LOCK", *(["HEALTH"] * with_health)]
    rows = []
    for s in statuses:
        if s.error is not None:
            rows.append([s.host, "unreachable", "", "", "", "", "", *([""] * with_health)])
            continue
        held = s.lock.describe() if s.lock else "-"
        rows.append([
            s.host, s.current or "-", (s.commit or "")[:12] or "-", s.deployed_by or "-", s.deployed_at or "-",
            s.previous or "-", held, *([s.health or "-"] * with_health),
        ])  # fmt: skip
    lines = columns(headers, rows)
    notes = [f"{s.host}: unreachable: {s.error}" for s in statuses if s.error is not None]
    for s in statuses:
        notes += [f"{s.host}: drift: {d.detail}" for d in s.drift]
        notes += [f"{s.host}: {warning}" for warning in s.warnings]
    notes += stage_warnings(statuses)
    return lines + (["", "warnings:", *(f"  {note}" for note in notes)] if notes else [])
