"""Keep the internal wheelhouse: fill it from upstream, accept uploads, serve, publish and hash it."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from deploytool.connection.hostrun import ModuleFailed, run_module
from deploytool.connection.transport import Runner
from deploytool.errors import RemoteError
from deploytool.supply import mirror_index
from deploytool.supply.mirror_index import WheelLink, choose_wheel, list_wheels
from deploytool.supply.requirements import HASH_ALGORITHMS, Pin, RequirementsError, logical_lines, read_requirements
from deploytool.supply.wheelmeta import MirrorError, TargetPython, parse_metadata, read_wheel_metadata, sha256_file

__all__ = [
    "MirrorError",
    "SyncReport",
    "check_wheelhouse",
    "hash_requirements",
    "publish",
    "read_manifest",
    "serve",
    "sync",
    "upload",
    "write_indexes",
]

MANIFEST = "MANIFEST.jsonl"
PYPI = "https://pypi.org/simple/"


@dataclass
class SyncReport:
    """What sync did: wheels added (and built from sdists), pins already present, pins skipped."""

    added: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def check_wheelhouse(wheelhouse: Path) -> Path:
    """Refuse a wheelhouse path that exists but is not a directory (it would end in NotADirectoryError)."""
    if wheelhouse.exists() and not wheelhouse.is_dir():
        raise MirrorError(f"wheelhouse {wheelhouse} exists and is not a directory; point wheelhouse at a directory")
    return wheelhouse


def write_indexes(wheelhouse: Path) -> None:
    """Regenerate the wheelhouse's ``index.html`` and PEP 503 ``simple/`` tree (see `mirror_index`)."""
    mirror_index.write_indexes(check_wheelhouse(wheelhouse))


def read_manifest(wheelhouse: Path) -> list[dict[str, str]]:
    """Return the records of ``MANIFEST.jsonl``, oldest first."""
    path = wheelhouse / MANIFEST
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _conflict(source: Path, wheelhouse: Path) -> str | None:
    dest = wheelhouse / source.name
    if dest.exists() and (old := sha256_file(dest)) != (new := sha256_file(source)):
        return (
            f"{dest} already exists with sha256 {old}; refusing to replace it with sha256 {new} "
            "(wheels are write-once: bump the version or build tag)"
        )
    return None


def _add(source: Path, wheelhouse: Path, origin: str, user: str) -> bool:
    """Copy one file into the wheelhouse unless present; refuse different content; log it."""
    problem = _conflict(source, wheelhouse)
    if problem:
        raise MirrorError(problem)
    dest = wheelhouse / source.name
    if dest.exists():
        return False
    partial = wheelhouse / f".{source.name}.{os.getpid()}.part"
    shutil.copyfile(source, partial)
    try:
        os.link(partial, dest)  # fails instead of overwriting if another writer won the race
    except FileExistsError:
        return _add(source, wheelhouse, origin, user)
    finally:
        partial.unlink()
    record = {
        "filename": source.name,
        "sha256": sha256_file(dest),
        "source": origin,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "user": user,
    }
    with (wheelhouse / MANIFEST).open("a", encoding="utf-8") as manifest:
        manifest.write(json.dumps(record, sort_keys=True) + "\n")
    return True


def _upload_problem(path: Path) -> str | None:
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
    except InvalidWheelFilename as error:
        return f"{path}: not a valid wheel filename ({error})"
    normal = name.replace("-", "_")
    if path.name.split("-")[0] != normal or path.name.split("-")[1] != str(version):
        return f"{path}: wheel filename is not normalised: expected it to start with {normal}-{version}-"
    if not path.is_file():
        return f"{path}: no such file"
    try:
        meta = parse_metadata(read_wheel_metadata(path, path.name), path.name)
    except MirrorError as error:
        return str(error)
    if canonicalize_name(meta.name) != name or Version(meta.version) != version:
        return f"{path}: METADATA says {meta.name} {meta.version}, the filename says {name} {version}"
    return None


def upload(files: list[Path], wheelhouse: Path, *, user: str) -> list[str]:
    """Add locally built wheels to the wheelhouse (write-once) and return the filenames added.

    Every file is checked first (valid normalised wheel name, METADATA matching it, no different
    file of that name in the wheelhouse); any problem refuses the whole upload.
    """
    check_wheelhouse(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    problems = [p for f in files for p in (_upload_problem(f) or _conflict(f, wheelhouse),) if p]
    if problems:
        raise MirrorError("upload refused:\n  " + "\n  ".join(problems))
    added = [path.name for path in files if _add(path, wheelhouse, "upload", user)]
    write_indexes(wheelhouse)
    return added


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    """pip with its own configuration ignored: ``--isolated`` (no user config, no ``PIP_*`` variables), no
    config file at all, and the ``PIP_*`` variables removed from its environment, so that only the sources
    given in ``args`` (``--index-url <upstream>``) are asked. A CA bundle (``PIP_CERT``) is kept: it adds no
    source, and a TLS-intercepting proxy may need it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    cert = os.environ.get("PIP_CERT")
    command = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "--no-input"]
    command += ["--cert", cert] if cert else []
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False, env=env)


def _source_url(upstream: str, filename: str) -> str:
    """Where ``filename`` came from: its link on the upstream's PEP 503 project page (pip's own log does not
    name it reliably across versions), else the index URL itself."""
    project = canonicalize_name(parse_wheel_filename(filename)[0])
    page_url = urljoin(upstream.rstrip("/") + "/", f"{project}/")
    try:
        with urllib.request.urlopen(page_url, timeout=30) as response:
            page = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return upstream
    for href in re.findall(r'href="([^"]+)"', page):
        url = urljoin(page_url, html.unescape(href)).split("#", 1)[0]
        if unquote(urlparse(url).path.rsplit("/", 1)[-1]) == filename:
            return url
    return upstream


def _download(pins: list[Pin], dest: Path, target: TargetPython, index: list[str]) -> list[Pin]:
    """Download target wheels for the pins with one pip call (one per pin on failure); return the misses."""
    args = ["download", "--no-deps", "--only-binary=:all:", *target.pip_download_args(), "-d", str(dest), *index]
    result = _pip([*args, *(f"{pin.name}=={pin.version}" for pin in pins)])
    if result.returncode == 0:
        return []
    if len(pins) == 1:
        return pins
    return [miss for pin in pins for miss in _download([pin], dest, target, index)]


def _build(pin: Pin, work: Path, target: TargetPython, index: list[str]) -> Path:
    """Download the pin's sdist and build one wheel from it (hosts never build)."""
    spec = f"{pin.name}=={pin.version}"
    result = _pip(["download", "--no-deps", "--no-binary=:all:", "-d", str(work / "sdist"), *index, spec])
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise MirrorError(f"{pin.location}: {spec}: no wheel for {target.describe()} and no sdist upstream ({tail})")
    sdist = next((work / "sdist").iterdir())
    result = _pip(["wheel", "--no-deps", "-w", str(work / "built"), *index, str(sdist)])
    built = list((work / "built").glob("*.whl")) if result.returncode == 0 else []
    if not built:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise MirrorError(f"{pin.location}: building a wheel from {sdist.name} failed: {tail}")
    if target.wheel_rank(parse_wheel_filename(built[0].name)[3]) is None:
        raise MirrorError(
            f"{pin.location}: the wheel built from {sdist.name} ({built[0].name}) does not fit "
            f"{target.describe()}: build it on a machine like the hosts and upload it"
        )
    return built[0]


def _wanted(
    requirement_files: Iterable[Path], target: TargetPython, report: SyncReport
) -> tuple[list[Pin], dict[tuple[str, Version], list[Pin]]]:
    """The pins to mirror (one per name and version), and every pin of each that lists ``--hash`` values."""
    wanted: dict[tuple[str, str], Pin] = {}
    hashed: dict[tuple[str, Version], list[Pin]] = {}
    for path in requirement_files:
        for pin in read_requirements(path).active(target):
            if pin.version is None:
                report.skipped.append(f"{pin.location}: {pin.display} (editable, not mirrored)")
                continue
            wanted.setdefault((pin.key, pin.version), pin)
            if pin.hashes:
                hashed.setdefault((pin.key, Version(pin.version)), []).append(pin)
    return list(wanted.values()), hashed


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_problem(path: Path, pins: Sequence[Pin]) -> str | None:
    """Why ``path`` (a downloaded file) is not what ``pins`` allow: each pin listing ``--hash`` values must list
    the file's (as pip's ``--require-hashes``); None when it matches them all."""
    for pin in pins:
        algorithms = {value.partition(":")[0] for value in pin.hashes}
        actual = {f"{algorithm}:{_digest(path, algorithm)}" for algorithm in algorithms if algorithm in HASH_ALGORITHMS}
        if not actual & set(pin.hashes):
            got = _digest(path, "sha256")
            return (
                f"{pin.location}: {pin.display}: {path.name} from upstream has sha256 {got}, which its --hash "
                "values do not list: not added (the upstream file is not the one pinned)"
            )
    return None


def _name_version(filename: str) -> tuple[str, Version]:
    name, version, _, _ = parse_wheel_filename(filename)
    return str(name), version


def sync(
    requirement_files: list[Path],
    wheelhouse: Path,
    target: TargetPython,
    upstream: str | None = None,
    *,
    user: str,
    tools: Iterable[Pin] = (),
) -> SyncReport:
    """Fill the wheelhouse with exactly the pinned wheels of the role files for the target, and ``tools``.

    Pins already in the wheelhouse are not fetched again; missing ones come from ``upstream`` (a
    PEP 503 index URL; PyPI when None) and from nowhere else (pip's configuration is ignored) in one ``pip
    download``; a file whose pins list ``--hash`` values must match one of them, or nothing is added; pins
    with only an sdist are built into a wheel once. New files are added write-once and logged in
    MANIFEST.jsonl with the URL they came from.
    ``tools`` (deploytool's own pinned uv) are wheels or nothing: one upstream lacks is reported as skipped.
    """
    check_wheelhouse(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    report = SyncReport()
    offered: dict[tuple[str, Version], list[WheelLink]] = {}
    for link in list_wheels(str(wheelhouse)):
        offered.setdefault((link.name, link.version), []).append(link)
    missing = []
    tool_keys = {pin.key for pin in tools}
    wanted, hashed = _wanted(requirement_files, target, report)
    for pin in [*wanted, *tools]:
        assert pin.version is not None
        if choose_wheel(offered.get((pin.key, Version(pin.version)), []), target):
            report.present.append(pin.display)
        else:
            missing.append(pin)
    upstream = upstream or PYPI
    index = ["--index-url", upstream]
    if missing:
        with tempfile.TemporaryDirectory(prefix="deploytool-sync-") as tmp:
            work = Path(tmp)
            misses = _download(missing, work / "wheels", target, index)
            downloaded = sorted((work / "wheels").glob("*.whl")) if (work / "wheels").is_dir() else []
            problems = [
                problem
                for wheel in downloaded
                if (problem := hash_problem(wheel, hashed.get(_name_version(wheel.name), [])))
            ]
            if problems:
                headline = f"{upstream}: refusing files that do not match their pins (nothing added):"
                raise MirrorError(headline + "".join(f"\n  {problem}" for problem in problems))
            for wheel in downloaded:
                if _add(wheel, wheelhouse, _source_url(upstream, wheel.name), user):
                    report.added.append(wheel.name)
            for pin in [miss for miss in misses if miss.key in tool_keys]:
                report.skipped.append(f"{pin.display}: no wheel for {target.describe()} upstream")
            for number, pin in enumerate(miss for miss in misses if miss.key not in tool_keys):
                built = _build(pin, work / f"build-{number}", target, index)
                sdist_path = next((work / f"build-{number}" / "sdist").iterdir())
                sdist = sdist_path.name
                pinned = hashed.get((pin.key, Version(str(pin.version))), [])
                if pinned and hash_problem(sdist_path, pinned) and hash_problem(built, pinned):
                    raise MirrorError(str(hash_problem(sdist_path, pinned)))
                if _add(built, wheelhouse, f"built from sdist {sdist}", user):
                    report.added.append(built.name)
                    report.built.append(built.name)
    write_indexes(wheelhouse)
    return report


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # parallel metadata fetches would overflow the default backlog of 5
    daemon_threads = True


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test and task output clean."""


def serve(wheelhouse: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve the wheelhouse over HTTP in a daemon thread; return the server and its base URL.

    Stop it with ``server.shutdown(); server.server_close()``.
    """
    check_wheelhouse(wheelhouse)
    handler = functools.partial(_QuietHandler, directory=str(wheelhouse))
    server = _Server((host, port), handler)
    threading.Thread(target=server.serve_forever, name=f"mirror-{server.server_address[1]}", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"


def publish(c: Runner, wheelhouse: Path, remote_dir: str, python: str = "python3") -> None:
    """Copy the wheelhouse to ``remote_dir`` on a host in one call of the host-side module ``mirror_receive``
    (the archive travels on its stdin, so only an exec channel is needed, no SFTP).

    Wheels and their ``.metadata`` files are only added, each checked against its sha256 on the host; if any
    existing remote file differs, nothing is written (indexes included) and MirrorError names the files.
    ``remote_dir`` should be absolute.
    """
    write_indexes(wheelhouse)
    files = sorted(p for p in wheelhouse.iterdir() if p.name.endswith((".whl", ".whl.metadata")))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in files:
            archive.add(path, arcname=path.name)
        for name in ("index.html", "simple", MANIFEST):
            if (wheelhouse / name).exists():
                archive.add(wheelhouse / name, arcname=f"index/{name}")
    args = {
        "dir": remote_dir,
        "archive": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "sums": {path.name: sha256_file(path) for path in files},
    }
    host = str(getattr(c, "host", None) or "localhost")
    try:
        run_module(c, host, python, "mirror_receive", args, phase="mirror")
    except ModuleFailed as failed:
        raise MirrorError(f"{remote_dir}: {failed.result.get('error') or failed}") from None
    except RemoteError as error:
        raise MirrorError(f"publishing the wheelhouse to {remote_dir} failed: {error}") from None


def _spec(text: str) -> tuple[str, list[str]]:
    words = text.split()
    split = next((i for i, word in enumerate(words) if word.startswith("-")), len(words))
    return " ".join(words[:split]), words[split:]


def _pinned_sha256(options: list[str]) -> set[str]:
    """The sha256 digests a requirement line's ``--hash`` options pin (``--hash=sha256:X`` or ``--hash sha256:X``)."""
    values = [word.partition("=")[2] or (options[i + 1] if i + 1 < len(options) else "")
              for i, word in enumerate(options) if word.partition("=")[0] == "--hash"]  # fmt: skip
    return {value.partition(":")[2] for value in values if value.startswith("sha256:")}


def hash_requirements(path: Path, wheelhouse: Path, target: TargetPython) -> list[Path]:
    """Rewrite the role file and its includes so each pin carries ``--hash`` for its wheels.

    Hashes of every wheel of that version in the wheelhouse are listed (at least one must fit the
    target), so hosts can install with ``--require-hashes``. Comments and includes are kept. A pin that
    already lists sha256 hashes must list every such wheel's (but a wheel built here from an sdist, which has no
    upstream hash): a wheelhouse file that differs from what was pinned is an error naming the pin, and nothing
    is rewritten. Return the files that changed.
    """
    reqs = read_requirements(path, check_hashes=False)
    built = {str(record.get("filename")): str(record.get("source", "")) for record in read_manifest(wheelhouse)}
    offered: dict[tuple[str, Version], list[WheelLink]] = {}
    for link in list_wheels(str(wheelhouse)):
        offered.setdefault((link.name, link.version), []).append(link)
    problems: list[str] = []
    edits: dict[Path, dict[int, tuple[int, str]]] = {}
    for file in reqs.files:
        for line in logical_lines(file):
            if not line.text or line.text.startswith("-"):
                if line.text.startswith(("-e", "--editable")):
                    problems.append(f"{file}:{line.number}: editable requirements cannot be installed with --hash")
                continue
            spec, options = _spec(line.text)
            req = Requirement(spec)
            version = Version(next(iter(req.specifier)).version)
            wheels = offered.get((canonicalize_name(req.name), version), [])
            if not choose_wheel(wheels, target):
                problems.append(
                    f"{file}:{line.number}: {spec} has no wheel for {target.describe()} in {wheelhouse} "
                    "(run mirror sync or upload it)"
                )
                continue
            hashes = sorted({sha256_file(Path(link.location)) for link in wheels})
            pinned = _pinned_sha256(options)
            differing = [
                link.filename
                for link in wheels
                if pinned
                and sha256_file(Path(link.location)) not in pinned
                and not built.get(link.filename, "").startswith("built from sdist")
            ]
            if differing:
                problems.append(
                    f"{file}:{line.number}: {spec}: its --hash values do not match {', '.join(differing)} in "
                    f"{wheelhouse} (sha256 {', '.join(sha256_file(wheelhouse / name) for name in differing)}); "
                    "not rewritten: find out which file is right (fab mirror.verify) before changing the pin"
                )
                continue
            new = " \\\n".join([spec, *(f"    --hash=sha256:{digest}" for digest in hashes)])
            edits.setdefault(file, {})[line.number] = (
                line.last,
                new + (f"  {line.comment}" if line.comment else ""),
            )
    if problems:
        raise RequirementsError(f"{path}: cannot add hashes:", problems)
    changed = []
    for file, file_edits in edits.items():
        old_lines = file.read_text(encoding="utf-8").splitlines()
        lines, number = [], 1
        while number <= len(old_lines):
            last, text = file_edits.get(number, (number, old_lines[number - 1]))
            lines.append(text)
            number = last + 1
        text = "\n".join(lines) + "\n"
        if text != file.read_text(encoding="utf-8"):
            partial = file.with_name(f".{file.name}.tmp")
            partial.write_text(text, encoding="utf-8")
            partial.replace(file)
            changed.append(file)
    return changed
