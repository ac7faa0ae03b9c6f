"""Ask hosts what they run (host-side module ``survey``, one round trip each) and validate every field used.

A host is not trusted: release ids must be release ids, commits 40 hex digits, distribution names and
versions well-formed, paths relative and inside the release; text shown to the user is stripped of control
characters. Anything refused is noted in the host's ``problems`` instead of being used. An unreachable host
(or one whose module failed) comes back with ``error`` set, never as an exception.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..connection.fleet import on_each
from ..connection.hostrun import run_module
from ..connection.transport import close, connect
from ..errors import DeployError
from ..flow import journal
from ..flow.publish import health_args
from ..flow.release import RELEASE_ID
from ..hostside.survey import RELEASE_MARK
from ..inventory import HostConfig
from ..rendering.config import render_commands
from ..reporting.terminal import escape_controls
from ..supply.requirements import Pin, parse_requirement_texts, requirements_digest
from ..supply.wheelmeta import TargetPython

DIST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}")
COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def printable(value: Any, limit: int = 200) -> str | None:
    """``value`` as text fit for a terminal (control characters and newlines shown escaped, at most ``limit``
    characters), or None."""
    if not isinstance(value, str):
        return None
    text = escape_controls(value[: limit * 6]).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def matching(pattern: re.Pattern[str], value: Any) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def same_version(a: str, b: str) -> bool:
    """PEP 440 equality (``1.0`` == ``1.0.0``), plain string equality for anything else."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


@dataclass(frozen=True)
class Dist:
    """One installed distribution of a release's venv (from its ``.dist-info``)."""

    key: str  # canonical name
    name: str
    version: str
    record: bool = True  # it has a RECORD (only known when verified)
    modified: tuple[str, ...] = ()  # files named (at most a few)
    missing: tuple[str, ...] = ()
    modified_count: int = 0
    missing_count: int = 0


@dataclass(frozen=True)
class Manifest:
    """The fields of a release's ``.deploytool.json`` that are used, validated."""

    commit: str | None
    user: str | None
    time: str | None
    requirements_sha256: str | None


@dataclass(frozen=True)
class ReleaseDetail:
    """What a host said about one of its releases."""

    id: str
    manifest: Manifest | None
    requirements: Mapping[str, str]  # path inside the release -> text
    has_venv: bool
    dists: tuple[Dist, ...]


@dataclass(frozen=True)
class Lock:
    """The deploy lock: held or not, and what its ``owner.json`` says."""

    held: bool
    action: str | None = None
    release: str | None = None
    user: str | None = None
    since: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"held": self.held, "action": self.action, "release": self.release, "user": self.user,
                "since": self.since}  # fmt: skip

    def describe(self) -> str:
        if not self.held:
            return "-"
        what = " ".join(part for part in (self.action, self.release) if part)
        return f"{what or 'locked'} by {self.user or '?'} since {self.since or '?'}"


@dataclass
class HostSurvey:
    """One host's answer, validated; ``error`` set when it could not be asked."""

    host: HostConfig
    error: str | None = None
    root_exists: bool = False
    current: str | None = None
    current_link: str = ""
    releases: tuple[str, ...] = ()
    entries: list[journal.Entry] = field(default_factory=list)
    lock: Lock = field(default_factory=lambda: Lock(False))
    details: dict[str, ReleaseDetail] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # data the host sent that was refused
    health: str | None = None  # "ok" or "failing: ..." when a health check is configured and a release is current

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def rollback_target(self) -> str | None:
        return journal.rollback_target(self.entries, self.current, self.releases)

    def went_live(self, release: str) -> journal.Entry | None:
        """The last journal entry that made ``release`` current (a deploy or a rollback that succeeded)."""
        live = [e for e in self.entries if e.release == release and e.status == "ok" and e.event != "unlock"]
        return live[-1] if live else None


def _dist(raw: Any, problems: list[str], where: str) -> Dist | None:
    if not isinstance(raw, dict):
        return None
    name, version = matching(DIST_NAME, raw.get("name")), matching(VERSION, raw.get("version"))
    if name is None or version is None:
        shown = printable(raw.get("dist_info"), 80)
        problems.append(f"{where}: {shown or 'a .dist-info'} has no valid Name/Version in METADATA (ignored)")
        return None

    def paths(key: str) -> tuple[str, ...]:
        return tuple(p for p in (printable(item) for item in as_list(raw.get(key))) if p)

    counts = as_dict(raw.get("counts"))
    modified, missing = paths("modified"), paths("missing")

    def count(key: str, named: tuple[str, ...]) -> int:
        value = counts.get(key)
        return max(value, len(named)) if isinstance(value, int) and not isinstance(value, bool) else len(named)

    return Dist(
        key=canonicalize_name(name),
        name=name,
        version=version,
        record=raw.get("record") is not False,
        modified=modified,
        missing=missing,
        modified_count=count("modified", modified),
        missing_count=count("missing", missing),
    )


def _manifest(raw: Any) -> Manifest | None:
    if not isinstance(raw, dict):
        return None
    return Manifest(
        commit=matching(COMMIT, raw.get("commit")),
        user=printable(raw.get("user"), 100),
        time=printable(raw.get("time"), 40),
        requirements_sha256=matching(SHA256, raw.get("requirements_sha256")),
    )


def _requirement_files(raw: Any, problems: list[str], where: str) -> dict[str, str]:
    files: dict[str, str] = {}
    for path, text in as_dict(raw).items():
        clean = posixpath.normpath(path) if isinstance(path, str) else ""
        if not isinstance(text, str) or not clean or clean.startswith(("/", "..")) or clean == ".":
            problems.append(f"{where}: refused a requirements file outside the release: {printable(path, 80)!r}")
            continue
        files[clean] = text
    return files


def _detail(raw: Any, releases: Sequence[str], problems: list[str]) -> ReleaseDetail | None:
    if not isinstance(raw, dict):
        return None
    release_id = matching(RELEASE_ID, raw.get("id"))
    if release_id is None or release_id not in releases:
        return None
    where = f"release {release_id}"
    dists = (_dist(item, problems, where) for item in as_list(raw.get("dists")))
    return ReleaseDetail(
        id=release_id,
        manifest=_manifest(raw.get("manifest")),
        requirements=_requirement_files(raw.get("requirements"), problems, where),
        has_venv=raw.get("venv") is True,
        dists=tuple(dist for dist in dists if dist is not None),
    )


def _lock(raw: Any) -> Lock:
    if not isinstance(raw, dict) or raw.get("held") is not True:
        return Lock(False)
    owner: Any = None
    try:
        owner = json.loads(raw["owner"]) if isinstance(raw.get("owner"), str) else None
    except ValueError:
        owner = None
    if not isinstance(owner, dict):
        return Lock(True)
    return Lock(
        True,
        action=printable(owner.get("action"), 20),
        release=matching(RELEASE_ID, owner.get("release")),
        user=printable(owner.get("user"), 100),
        since=printable(owner.get("since"), 40),
    )


def parse_survey(host: HostConfig, answer: Mapping[str, Any]) -> HostSurvey:
    """Validate a survey answer into a `HostSurvey` (refused data noted in ``problems``)."""
    survey = HostSurvey(host, root_exists=answer.get("root_exists") is True)
    listed = as_list(answer.get("releases"))
    releases = [name for name in listed if matching(RELEASE_ID, name)]
    if len(releases) != len(listed):
        survey.problems.append(f"{len(listed) - len(releases)} entries of releases/ are not release ids (ignored)")
    survey.releases = tuple(sorted(releases))
    survey.current_link = printable(answer.get("current_link"), 300) or ""
    current = matching(RELEASE_ID, answer.get("current"))
    survey.current = current if current in survey.releases else None
    lines = as_list(answer.get("journal"))
    entries = journal.parse(line for line in lines if isinstance(line, str))
    survey.entries = [entry for entry in entries if RELEASE_ID.fullmatch(entry.release)]
    survey.lock = _lock(answer.get("lock"))
    survey.health = _health(answer.get("health"))
    for raw in as_list(answer.get("details")):
        detail = _detail(raw, survey.releases, survey.problems)
        if detail is not None:
            survey.details[detail.id] = detail
    return survey


def health_request(host: HostConfig) -> dict[str, Any] | None:
    """The host's health check for the survey to try once, rendered with a mark the host replaces by the id of
    the release it runs (the laptop does not know it before asking)."""
    if host.health_check is None:
        return None
    check = render_commands(host, RELEASE_MARK, None).health_check
    return health_args(check) if check is not None else None


def _health(value: Any) -> str | None:
    """``ok`` or ``failing: <what the check said>`` (validated: it comes from the host)."""
    if not isinstance(value, dict):
        return None
    if value.get("ok") is True:
        return "ok"
    return "failing: " + (printable(value.get("last"), 200) or "no answer")


def survey_host(host: HostConfig, requirements: str, *, all_releases: bool, verify: bool) -> HostSurvey:
    """Ask one host (one connection, one call) about its current release, or all its releases."""
    args = {"root": host.root, "requirements": requirements, "releases": "all" if all_releases else "current",
            "verify": verify, "health": health_request(host)}  # fmt: skip
    c = connect(host)
    try:
        answer = run_module(c, host.name, host.python, "survey", args, phase="status")
    finally:
        close(c)
    return parse_survey(host, answer)


def survey_hosts(
    hosts: Sequence[HostConfig], requirements: Callable[[HostConfig], str], *, all_releases: bool, verify: bool
) -> list[HostSurvey]:
    """Survey every host in parallel, in the order given; a host that fails comes back with ``error`` set."""

    def one(item: tuple[int, HostConfig]) -> HostSurvey:
        return survey_host(item[1], requirements(item[1]), all_releases=all_releases, verify=verify)

    results = on_each(list(enumerate(hosts)), one, lambda item: item[1].name)
    found: dict[int, HostSurvey] = {index: survey for (index, _), survey in results.done}
    for (index, host), error in results.failed:
        found[index] = HostSurvey(host, error=str(error).removeprefix(f"{host.name}: "))
    return [found[index] for index in range(len(hosts))]


@dataclass(frozen=True)
class ReleasePins:
    """A release's pinned requirements as it has them, parsed on the laptop; ``problem`` if they cannot be."""

    pins: Mapping[str, Pin]
    digest: str | None
    problem: str | None = None


_PINS_CACHE: dict[tuple[str, tuple[tuple[str, str], ...], TargetPython], ReleasePins] = {}


def release_pins(detail: ReleaseDetail, relative: str, target: TargetPython) -> ReleasePins:
    """Parse ``detail``'s requirements (``relative`` inside the release) with the laptop's parser, for ``target``
    (markers evaluated). Identical files on many hosts are parsed once."""
    key = (relative, tuple(sorted(detail.requirements.items())), target)
    if key not in _PINS_CACHE:
        _PINS_CACHE[key] = _parse_pins(detail.requirements, relative, target)
    return _PINS_CACHE[key]


def _parse_pins(files: Mapping[str, str], relative: str, target: TargetPython) -> ReleasePins:
    """Text from a host is data: parsed in memory (`parse_requirement_texts`), an include followed only to
    another file the host sent, never to a file of the laptop."""
    if posixpath.normpath(relative) not in files:
        return ReleasePins({}, None, f"{relative} is not in the release")
    try:
        reqs = parse_requirement_texts(files, relative)
        pins: dict[str, Pin] = {pin.key: pin for pin in reqs.active(target)}
        digest = requirements_digest(reqs)
    except DeployError as error:
        return ReleasePins({}, None, str(error))
    except (ValueError, LookupError, TypeError, RecursionError) as error:  # e.g. a marker that cannot be evaluated
        return ReleasePins({}, None, f"{relative}: cannot be read: {type(error).__name__}: {printable(str(error))}")
    return ReleasePins(pins, digest)
