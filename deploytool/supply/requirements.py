"""Read pinned role requirement files, enforce the pinning rules and check them against a mirror."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urldefrag, urlparse, urlsplit

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from deploytool.errors import DeployError
from deploytool.supply.mirror_index import WheelLink, choose_wheel, fetch_metadata
from deploytool.supply.simple_api import mirror_wheels
from deploytool.supply.wheelmeta import TargetPython

__all__ = [
    "LogicalLine",
    "Pin",
    "RequirementSet",
    "RequirementsError",
    "TargetPython",
    "check_nested",
    "logical_lines",
    "parse_requirement_texts",
    "pip_install_args",
    "read_requirements",
    "requirements_digest",
    "uv_install_args",
]

INDEX_OPTIONS = frozenset(
    [
        "-i",
        "--index-url",
        "--extra-index-url",
        "-f",
        "--find-links",
        "--no-index",
        "--trusted-host",
        "--pre",
        "--prefer-binary",
        "--only-binary",
        "--no-binary",
        "--use-feature",
    ]
)
#: uv reads these from the environment even with UV_NO_CONFIG=1; any of them could add a package source.
UV_SOURCE_VARIABLES = ("UV_INDEX", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS")
HASH_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_COMMENT = re.compile(r"(^|\s+)#.*$")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_LOOKS_LIKE_PATH = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2")


class RequirementsError(DeployError):
    """Requirement files break the pinning rules or do not match the mirror; lists every problem."""

    def __init__(self, headline: str, problems: list[str]) -> None:
        super().__init__(headline + "".join(f"\n  {problem}" for problem in problems))
        self.problems = problems


@dataclass(frozen=True)
class LogicalLine:
    """One requirement-file line after pip's ``\\`` joining, without its comment."""

    file: Path
    number: int
    last: int
    text: str
    comment: str


@dataclass(frozen=True)
class Pin:
    """One pinned requirement (``name==version`` or an editable git commit) and where it was written."""

    name: str
    key: NormalizedName
    version: str | None
    file: Path
    line: int
    extras: frozenset[str] = frozenset()
    marker: Marker | None = None
    hashes: tuple[str, ...] = ()
    vcs_url: str | None = None

    @property
    def location(self) -> str:
        """Return ``file:line``."""
        return f"{self.file}:{self.line}"

    @property
    def display(self) -> str:
        """Return the pin as written, e.g. ``celery[redis]==5.7.0``."""
        extras = f"[{','.join(sorted(self.extras))}]" if self.extras else ""
        return f"{self.name}{extras}==" + self.version if self.version else f"{self.name} @ {self.vcs_url}"

    def applies_to(self, target: TargetPython) -> bool:
        """Return True if the pin's environment marker holds for the target."""
        return self.marker is None or self.marker.evaluate(target.marker_environment())


@dataclass(frozen=True)
class RequirementSet:
    """The pins of a role file and everything it includes, in file order."""

    root: Path
    files: tuple[Path, ...]
    pins: tuple[Pin, ...]

    def active(self, target: TargetPython) -> list[Pin]:
        """Return the pins whose markers hold for the target; conflicting active pins are an error."""
        chosen: dict[str, Pin] = {}
        problems = []
        for pin in self.pins:
            if not pin.applies_to(target):
                continue
            other = chosen.setdefault(pin.key, pin)
            if (other.version, other.vcs_url) != (pin.version, pin.vcs_url):
                problems.append(f"{pin.location}: {pin.display} conflicts with {other.display} at {other.location}")
        if problems:
            raise RequirementsError(f"{self.root}: conflicting pins for {target.describe()}:", problems)
        return list(chosen.values())


def logical_lines(path: Path, text: str | None = None) -> list[LogicalLine]:
    """Split a requirement file (or ``text``, said to be ``path``'s) into logical lines the way pip does (joins,
    then comments)."""
    lines: list[LogicalLine] = []
    pending: list[str] = []
    start = 0
    text = path.read_text(encoding="utf-8") if text is None else text
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.endswith("\\") and not _COMMENT.search(raw):
            start = start or number
            pending.append(raw[:-1])
            continue
        match = _COMMENT.search(raw)
        comment = match.group(0) if match else ""
        text = " ".join(part.strip() for part in [*pending, raw[: len(raw) - len(comment)]]).strip()
        lines.append(LogicalLine(path, start or number, number, text, comment.strip()))
        pending, start = [], 0
    if pending:
        lines.append(LogicalLine(path, start, start + len(pending) - 1, " ".join(p.strip() for p in pending), ""))
    return lines


@dataclass
class _Reader:
    pins: list[Pin] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)
    require_hashes: bool = False
    #: Data only (text a host sent): relative POSIX path -> text. Includes are looked up here, never on disk.
    texts: Mapping[str, str] | None = None

    def read(self, path: Path, stack: tuple[Path, ...]) -> None:
        resolved = path.resolve() if self.texts is None else path
        if resolved in self.seen:
            return
        self.seen.add(resolved)
        self.files.append(path)
        text = None if self.texts is None else self.texts[path.as_posix()]
        for line in logical_lines(path, text):
            if line.text:
                self.line(line, (*stack, resolved))

    def line(self, line: LogicalLine, stack: tuple[Path, ...]) -> None:
        where = f"{line.file}:{line.number}"
        if not line.text.startswith("-"):
            return self.requirement(line, where)
        try:
            tokens = shlex.split(line.text)
        except ValueError as error:
            return self.problems.append(f"{where}: cannot parse {line.text!r}: {error}")
        option, value = tokens[0], " ".join(tokens[1:])
        if "=" in option and option.startswith("--"):
            option, value = option.split("=", 1)
        elif option[:2] in ("-r", "-e", "-c", "-i", "-f") and len(option) > 2:
            option, value = option[:2], option[2:]
        if option in ("-r", "--requirement"):
            self.include(line, where, value, stack)
        elif option in ("-e", "--editable"):
            self.editable(line, where, value)
        elif option == "--require-hashes":
            self.require_hashes = True
        elif option in ("-c", "--constraint"):
            self.problems.append(
                f"{where}: constraints files are not supported: pin in a role file, include it with -r"
            )
        elif option in INDEX_OPTIONS:
            self.problems.append(
                f"{where}: {option} is not allowed in requirement files: hosts install only from the mirror "
                "(remove this line)"
            )
        else:
            self.problems.append(f"{where}: unsupported option {option} (remove it)")

    def include(self, line: LogicalLine, where: str, value: str, stack: tuple[Path, ...]) -> None:
        if self.texts is not None:
            return self.include_text(where, line.file, value, stack)
        target = Path(os.path.normpath(line.file.parent / value))
        if target.resolve() in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(target.resolve()) :], target))
            self.problems.append(f"{where}: -r {value} makes an include cycle: {chain}")
        elif not target.is_file():
            self.problems.append(f"{where}: included file {target} does not exist")
        else:
            self.read(target, stack)

    def include_text(self, where: str, file: Path, value: str, stack: tuple[Path, ...]) -> None:
        """``-r value`` among `texts` only: a path leaving them (absolute, ``..``) is a problem, not a read."""
        assert self.texts is not None
        name = posixpath.normpath(posixpath.join(posixpath.dirname(file.as_posix()), value)) if value else ""
        if not name or value.startswith(("/", "~")) or name == ".." or name.startswith("../") or "\0" in value:
            self.problems.append(f"{where}: -r {value} is not followed: an include must name a file of the release")
        elif Path(name) in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(Path(name)) :], Path(name)))
            self.problems.append(f"{where}: -r {value} makes an include cycle: {chain}")
        elif name not in self.texts:
            self.problems.append(f"{where}: included file {name} is not in the release")
        else:
            self.read(Path(name), stack)

    def editable(self, line: LogicalLine, where: str, url: str) -> None:
        base, fragment = urldefrag(url)
        path = urlparse(base[4:]).path if base.startswith("git+https://") else ""
        commit = path.rsplit("@", 1)[1] if "@" in path else ""
        egg = parse_qs(fragment).get("egg", [""])[0]
        if not (_COMMIT.fullmatch(commit) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", egg)):
            self.problems.append(
                f"{where}: -e {url} must be -e git+https://HOST/REPO@<full 40-hex commit>#egg=NAME "
                "(a branch, tag or short commit can move)"
            )
            return
        self.pins.append(Pin(egg, canonicalize_name(egg), None, line.file, line.number, vcs_url=url))

    def requirement(self, line: LogicalLine, where: str) -> None:
        words = line.text.split()
        split = next((i for i, word in enumerate(words) if word.startswith("-")), len(words))
        spec, options = " ".join(words[:split]), words[split:]
        if "://" in spec or spec.startswith((".", "/", "~")) or spec.endswith(_LOOKS_LIKE_PATH):
            self.problems.append(
                f"{where}: {spec} is a URL or path: pin NAME==VERSION and put the wheel in the mirror instead"
            )
            return
        try:
            req = Requirement(spec)
        except InvalidRequirement as error:
            self.problems.append(f"{where}: cannot parse {spec!r}: {error}")
            return
        specs = list(req.specifier)
        if req.url or len(specs) != 1 or specs[0].operator != "==" or specs[0].version.endswith("*"):
            self.problems.append(f"{where}: {spec} is not pinned: write exactly {req.name}==VERSION")
            return
        hashes = self.hashes(where, options)
        self.pins.append(
            Pin(
                req.name,
                canonicalize_name(req.name),
                specs[0].version,
                line.file,
                line.number,
                frozenset(req.extras),
                req.marker,
                hashes,
            )
        )

    def hashes(self, where: str, options: list[str]) -> tuple[str, ...]:
        found = []
        words = iter(options)
        for word in words:
            name, _, value = word.partition("=")
            if name != "--hash":
                self.problems.append(f"{where}: option {name} is not allowed on a requirement line (only --hash)")
                continue
            value = value or next(words, "")
            algorithm, _, digest = value.partition(":")
            if HASH_ALGORITHMS.get(algorithm) != len(digest) or not re.fullmatch(r"[0-9a-f]+", digest):
                self.problems.append(f"{where}: --hash={value} is not a valid sha256:<64 hex digits> hash")
            found.append(value)
        return tuple(found)

    def finish(self, check_hashes: bool) -> list[Pin]:
        kept: dict[tuple[str, str], Pin] = {}
        for pin in self.pins:
            first = kept.setdefault((pin.key, str(pin.marker)), pin)
            if (first.version, first.vcs_url) != (pin.version, pin.vcs_url):
                self.problems.append(
                    f"{pin.location}: {pin.display} conflicts with {first.display} at {first.location}"
                )
        pins = list(kept.values())
        if check_hashes and (self.require_hashes or any(pin.hashes for pin in pins)):
            for pin in pins:
                if pin.vcs_url:
                    self.problems.append(f"{pin.location}: editable requirements cannot be installed with --hash")
                elif not pin.hashes:
                    self.problems.append(
                        f"{pin.location}: {pin.display} has no --hash but hash-checking mode needs one "
                        "on every line (run hash_requirements)"
                    )
        return pins


def read_requirements(path: Path, *, check_hashes: bool = True) -> RequirementSet:
    """Parse a role file and its ``-r`` includes; raise RequirementsError listing every rule broken.

    ``check_hashes=False`` skips the all-or-none ``--hash`` rule (for rewriting hashes).
    """
    if not path.is_file():
        raise RequirementsError(f"{path}: requirements file not found", [])
    reader = _Reader()
    reader.read(path, ())
    pins = reader.finish(check_hashes)
    if reader.problems:
        count = len(reader.problems)
        raise RequirementsError(f"{path}: {count} problem{'s' * (count > 1)} in requirements:", reader.problems)
    return RequirementSet(path, tuple(reader.files), tuple(pins))


def parse_requirement_texts(files: Mapping[str, str], relative: str, *, check_hashes: bool = True) -> RequirementSet:
    """Parse ``files[relative]`` and its ``-r`` includes as data: ``files`` maps relative POSIX paths to their
    text (as a host sent them), an include is looked up among them and nowhere else (an absolute path or one
    leaving them with ``..`` is a problem, never read), and nothing touches the laptop's file system. Raise
    RequirementsError listing every rule broken, as `read_requirements` does."""
    texts = {posixpath.normpath(name): text for name, text in files.items()}
    root = posixpath.normpath(relative)
    if root not in texts:
        raise RequirementsError(f"{relative}: requirements file not found", [])
    reader = _Reader(texts=texts)
    reader.read(Path(root), ())
    pins = reader.finish(check_hashes)
    if reader.problems:
        count = len(reader.problems)
        raise RequirementsError(f"{root}: {count} problem{'s' * (count > 1)} in requirements:", reader.problems)
    return RequirementSet(Path(root), tuple(reader.files), tuple(pins))


def _show(req: Requirement) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def check_nested(
    reqs: RequirementSet, mirror: str, target: TargetPython, *, cache_dir: Path | None = None, kind: str = "find-links"
) -> None:
    """Check that every pin has a target wheel in the mirror and its dependencies are pinned compatibly.

    ``kind`` ``index`` reads the pins' project pages of a PEP 503/691 index; otherwise ``mirror`` is a
    directory or find-links page listing every wheel.

    Dependencies come from each wheel's METADATA ``Requires-Dist``, with markers evaluated for the
    target and extras requested by the pin line or by dependents. Editable git pins are trusted.
    Raise RequirementsError listing every problem and who needs what.
    """
    pins: dict[str, Pin] = {pin.key: pin for pin in reqs.active(target)}
    offered: dict[str, list[WheelLink]] = {}
    for link in mirror_wheels(mirror, kind, [pin.key for pin in pins.values() if pin.version]):
        offered.setdefault(link.name, []).append(link)
    problems: dict[str, None] = {}
    chosen: dict[str, WheelLink] = {}
    for pin in pins.values():
        if pin.version is None:
            continue
        same = [link for link in offered.get(pin.key, []) if link.version == Version(pin.version)]
        best = choose_wheel(same, target)
        if best:
            chosen[pin.key] = best
        elif same:
            found = ", ".join(link.filename for link in same)
            problems[f"{pin.location}: {pin.display} has no wheel for {target.describe()} (mirror has {found})"] = None
        else:
            problems[f"{pin.location}: {pin.display} is not in the mirror {mirror}"] = None
    metadata = fetch_metadata(list(chosen.values()), cache_dir)
    extras: dict[str, set[str]] = {key: set(pin.extras) for key, pin in pins.items()}
    done: dict[str, set[str]] = {}
    queue = list(chosen)
    while queue:
        key = queue.pop(0)
        if done.get(key) == extras[key]:
            continue
        done[key] = set(extras[key])
        pin, meta = pins[key], metadata[chosen[key].filename]
        environments = [target.marker_environment(extra) for extra in ("", *sorted(extras[key]))]
        python = environments[0]["python_full_version"]
        try:
            if meta.requires_python and not SpecifierSet(meta.requires_python).contains(python, prereleases=True):
                problems[f"{pin.location}: {pin.display} requires Python {meta.requires_python}, not {python}"] = None
        except InvalidSpecifier:
            pass
        for req in meta.requires_dist:
            if req.marker and not any(req.marker.evaluate(env) for env in environments):
                continue
            dep = pins.get(canonicalize_name(req.name))
            if dep is None:
                needs = f"{pin.location}: {pin.display} needs {_show(req)}"
                problems[f"{needs} but {req.name} is not pinned in {pin.file}"] = None
            elif dep.version and not req.specifier.contains(dep.version, prereleases=True):
                problems[f"{pin.location}: {pin.display} needs {_show(req)} but {dep.location} pins {dep.display}"] = (
                    None
                )
            elif not req.extras <= extras[dep.key]:
                extras[dep.key] |= req.extras
                queue += [dep.key] if dep.key in chosen else []
    if problems:
        headline = f"{reqs.root}: {len(problems)} dependency problem(s) against {mirror} for {target.describe()}:"
        raise RequirementsError(headline, list(problems))


def requirements_digest(reqs: RequirementSet) -> str:
    """Return a hex sha256 over the pins (name, version, extras, marker, hashes), independent of layout."""
    rows = sorted(
        json.dumps([pin.key, pin.version, sorted(pin.extras), str(pin.marker or ""), sorted(pin.hashes), pin.vcs_url])
        for pin in reqs.pins
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _sources(mirror: str, kind: str, index_option: str = "--index-url") -> list[str]:
    """The only place the installer may look: the index (``mirror_kind: index``) or the find-links location."""
    if kind == "index":
        return [index_option, mirror]
    return ["--no-index", "--find-links", mirror]


def pip_source_args(mirror: str, kind: str = "find-links") -> list[str]:
    """The arguments after ``pip install`` that make the mirror the only source, with the seed flow's flags.

    pip ignores plain-HTTP find-links on any host but loopback unless it is trusted; an internal mirror is
    commonly plain HTTP (its files are checked with ``--require-hashes`` when hashes are pinned), so its host
    is trusted explicitly, here, since pip's own configuration is ignored on the hosts."""
    args = ["--no-deps", "--exists-action=w", *_sources(mirror, kind)]
    if mirror.startswith("http://") and urlsplit(mirror).hostname:
        args += ["--trusted-host", str(urlsplit(mirror).netloc)]
    return [*args, "--only-binary=:all:", "--no-input"]


def pip_install_args(
    requirements_file_on_host: str, mirror: str, require_hashes: bool, kind: str = "find-links", compile: bool = True
) -> list[str]:
    """Return the arguments after ``pip`` that install exactly the pinned wheels from the mirror only.

    ``kind`` is ``find-links`` (a directory or flat page; vendored wheels are a directory too) or ``index``
    (a PEP 503 index, then the only index: no ``--extra-index-url``, and pip's configuration is ignored)."""
    args = ["install", *pip_source_args(mirror, kind), *([] if compile else ["--no-compile"])]
    return [*args, *(["--require-hashes"] if require_hashes else []), "-r", requirements_file_on_host]


def uv_install_args(
    requirements_file_on_host: str,
    mirror: str,
    require_hashes: bool,
    python: str | None = None,
    kind: str = "find-links",
) -> list[str]:
    """Return the arguments after ``uv`` for the same install with ``uv pip install``."""
    args = ["pip", "install", "--no-deps", *_sources(mirror, kind, "--default-index"), "--only-binary", ":all:"]
    args += ["--python", python] if python else []
    return [*args, *(["--require-hashes"] if require_hashes else []), "-r", requirements_file_on_host]
