"""Re-download every file the wheelhouse took from upstream and compare it with MANIFEST.jsonl's sha256.

Meant to run on a schedule: upstream can remove a file, or replace it under the same name and version,
and someone can change the wheelhouse by hand. Uploaded wheels and wheels built from sdists have no
upstream file to compare with; only their wheelhouse copy is checked.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from deploytool.supply.simple_api import SHA256, download_sha256, project_wheels
from deploytool.supply.wheelmeta import MirrorError, sha256_file


@dataclass
class VerifyReport:
    """One line per file, by outcome; ``failed`` is True when anything but ``ok`` and ``local_only`` has lines."""

    ok: list[str] = field(default_factory=list)
    local_only: list[str] = field(default_factory=list)
    changed_upstream: list[str] = field(default_factory=list)
    vanished_upstream: list[str] = field(default_factory=list)
    changed_locally: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.changed_upstream or self.vanished_upstream or self.changed_locally)


def _records(manifest: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """The latest valid record per filename (a hand-edited manifest line with a bad hash is ignored)."""
    records: dict[str, dict[str, str]] = {}
    for record in manifest:
        name, sha = record.get("filename"), record.get("sha256")
        if isinstance(name, str) and isinstance(sha, str) and SHA256.fullmatch(sha) and "/" not in name:
            records[name] = record
    return records


def _from_upstream(record: dict[str, str]) -> bool:
    source = str(record.get("source", ""))
    return source != "upload" and not source.startswith("built from")


def _check_upstream(upstream: str, filename: str, expected: str) -> tuple[str, str]:
    """('ok' | 'changed' | 'vanished', detail) for one file."""
    try:
        name = parse_wheel_filename(filename)[0]
    except InvalidWheelFilename:
        return "vanished", f"{filename}: not a wheel name, cannot be found upstream"
    offered = {link.filename: link for link in project_wheels(upstream, name)}
    if filename not in offered:
        return "vanished", f"{filename}: no longer listed by {upstream}"
    actual = download_sha256(offered[filename].location)
    if actual is None:
        return "vanished", f"{filename}: listed by {upstream} but its download is gone"
    if actual != expected:
        return "changed", f"{filename}: upstream now serves sha256 {actual}, MANIFEST.jsonl has {expected}"
    return "ok", filename


def verify(wheelhouse: Path, manifest: list[dict[str, str]], upstream: str) -> VerifyReport:
    """Compare every manifest file with the wheelhouse copy and (if it came from upstream) with upstream."""
    report = VerifyReport()
    records = _records(manifest)
    upstream_files = []
    for filename, record in sorted(records.items()):
        path = wheelhouse / filename
        if not path.is_file():
            report.changed_locally.append(f"{filename}: in MANIFEST.jsonl but missing from {wheelhouse}")
        elif (local := sha256_file(path)) != record["sha256"]:
            report.changed_locally.append(
                f"{filename}: the wheelhouse copy has sha256 {local}, MANIFEST.jsonl has {record['sha256']}"
            )
        if _from_upstream(record):
            upstream_files.append(filename)
        else:
            report.local_only.append(f"{filename} ({record.get('source')})")
    if not upstream_files:
        return report
    with ThreadPoolExecutor(max_workers=min(8, len(upstream_files))) as pool:
        results = pool.map(lambda f: _check_upstream(upstream, f, records[f]["sha256"]), upstream_files)
        for outcome, detail in results:
            {"ok": report.ok, "changed": report.changed_upstream, "vanished": report.vanished_upstream}[outcome].append(
                detail
            )
    return report


__all__ = ["MirrorError", "VerifyReport", "verify"]
