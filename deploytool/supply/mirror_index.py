"""Read a wheel mirror (directory, file:// or find-links page) and write its HTML indexes."""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urldefrag, urljoin, urlparse
from urllib.request import url2pathname

from packaging.tags import Tag
from packaging.utils import BuildTag, InvalidWheelFilename, NormalizedName, parse_wheel_filename
from packaging.version import Version

from deploytool.supply.wheelmeta import (
    MirrorError,
    TargetPython,
    WheelMetadata,
    parse_metadata,
    read_wheel_metadata,
    sha256_file,
)

TIMEOUT = 30.0


@dataclass(frozen=True)
class WheelLink:
    """One wheel offered by a mirror: where it is and what its filename and index say."""

    filename: str
    location: str
    name: NormalizedName
    version: Version
    build: BuildTag
    tags: frozenset[Tag]
    sha256: str | None = None
    metadata_location: str | None = None
    metadata_sha256: str | None = None

    @property
    def remote(self) -> bool:
        """Return True if the wheel is fetched over http(s)."""
        return self.location.startswith(("http://", "https://"))


def local_directory(mirror: str) -> Path | None:
    """Return the directory of a local or ``file://`` mirror, None for http(s)."""
    if mirror.startswith(("http://", "https://")):
        return None
    if mirror.startswith("file:"):
        return Path(url2pathname(urlparse(mirror).path))
    return Path(mirror)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append({key: value or "" for key, value in attrs})


def _get(url: str) -> tuple[bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.read(), response.geturl()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise MirrorError(f"cannot read {url}: {reason}") from None


def hash_value(value: str | None) -> str | None:
    if value and value.startswith("sha256="):
        return value.removeprefix("sha256=")
    return None


def make_link(
    filename: str,
    location: str,
    sha256: str | None = None,
    metadata_location: str | None = None,
    metadata_sha256: str | None = None,
) -> WheelLink | None:
    try:
        name, version, build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    return WheelLink(filename, location, name, version, build, tags, sha256, metadata_location, metadata_sha256)


def list_wheels(mirror: str) -> list[WheelLink]:
    """Return every wheel a mirror offers; files with invalid wheel names are ignored."""
    directory = local_directory(mirror)
    links: list[WheelLink | None] = []
    if directory is not None:
        if not directory.is_dir():
            raise MirrorError(f"mirror directory {directory} does not exist")
        for path in sorted(directory.glob("*.whl")):
            links.append(make_link(path.name, str(path)))
        return [link for link in links if link]
    page, base = _get(mirror)
    return parse_html_links(page, base)


def parse_html_links(page: bytes, base: str) -> list[WheelLink]:
    """Return the wheels linked from a find-links or PEP 503 page, with their hashes and PEP 658/714 metadata."""
    links: list[WheelLink | None] = []
    parser = _Anchors()
    parser.feed(page.decode("utf-8", "replace"))
    for anchor in parser.anchors:
        url, fragment = urldefrag(urljoin(base, anchor.get("href", "")))
        filename = unquote(url.rsplit("/", 1)[-1])
        metadata = anchor.get("data-core-metadata") or anchor.get("data-dist-info-metadata")
        links.append(
            make_link(
                filename,
                url,
                sha256=hash_value(fragment),
                metadata_location=url + ".metadata" if metadata else None,
                metadata_sha256=hash_value(metadata),
            )
        )
    return [link for link in links if link]


def choose_wheel(links: Iterable[WheelLink], target: TargetPython) -> WheelLink | None:
    """Return the wheel pip would prefer for the target among same-version links, or None."""
    ranked = [(target.wheel_rank(link.tags), link) for link in links]
    usable = [(rank, link) for rank, link in ranked if rank is not None]
    if not usable:
        return None
    return min(usable, key=lambda item: (item[0], -item[1].build[0] if item[1].build else 0))[1]


def _cached_fetch(link: WheelLink, cache_dir: Path | None) -> bytes:
    cache = cache_dir / f"{link.sha256}.metadata" if cache_dir and link.sha256 else None
    if cache and cache.is_file():
        return cache.read_bytes()
    if link.metadata_location:
        data, _ = _get(link.metadata_location)
        if link.metadata_sha256 and hashlib.sha256(data).hexdigest() != link.metadata_sha256:
            raise MirrorError(f"{link.metadata_location}: sha256 does not match the index")
    else:
        with tempfile.TemporaryFile() as spool:
            try:
                with urllib.request.urlopen(link.location, timeout=TIMEOUT) as response:
                    shutil.copyfileobj(response, spool, 1 << 20)
            except (urllib.error.URLError, OSError) as error:
                raise MirrorError(f"cannot download {link.location}: {error}") from None
            spool.seek(0)
            hasher = hashlib.sha256()
            for block in iter(lambda: spool.read(1 << 20), b""):
                hasher.update(block)
            digest = hasher.hexdigest()
            if link.sha256 and digest != link.sha256:
                raise MirrorError(f"{link.location}: sha256 {digest} does not match the index {link.sha256}")
            spool.seek(0)
            data = read_wheel_metadata(spool, link.filename)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(cache)
    return data


def fetch_metadata(links: Sequence[WheelLink], cache_dir: Path | None = None) -> dict[str, WheelMetadata]:
    """Return METADATA by filename for the given wheels, fetching http ones in parallel.

    Remote wheels use PEP 658 ``.metadata`` files when the index offers them, otherwise the
    wheel is downloaded once; with ``cache_dir`` metadata is cached by the wheel's sha256.
    """

    def one(link: WheelLink) -> tuple[str, WheelMetadata]:
        if link.remote:
            data = _cached_fetch(link, cache_dir)
        else:
            data = read_wheel_metadata(Path(link.location), link.filename)
        return link.filename, parse_metadata(data, link.filename)

    remote = [link for link in links if link.remote]
    result = dict(one(link) for link in links if not link.remote)
    if remote:
        with ThreadPoolExecutor(max_workers=min(16, len(remote))) as pool:
            result.update(pool.map(one, remote))
    return result


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _page(title: str, anchors: list[str]) -> str:
    body = "\n".join(f"    {anchor}<br>" for anchor in anchors)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"{body}\n  </body>\n</html>\n"
    )


def write_indexes(wheelhouse: Path) -> None:
    """Regenerate ``index.html`` (flat, for --find-links) and the PEP 503 ``simple/`` tree.

    Links carry ``#sha256=`` fragments, ``data-requires-python`` and PEP 658 metadata
    attributes; each wheel's METADATA is written beside it as ``<wheel>.metadata``.
    """
    projects: dict[str, list[str]] = {}
    flat: list[str] = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name = parse_wheel_filename(wheel.name)[0]
        metadata = read_wheel_metadata(wheel, wheel.name)
        sidecar = wheelhouse / f"{wheel.name}.metadata"
        if not sidecar.is_file() or sidecar.read_bytes() != metadata:
            sidecar.write_bytes(metadata)
        requires_python = parse_metadata(metadata, wheel.name).requires_python
        attributes = f'#sha256={sha256_file(wheel)}"'
        meta_hash = hashlib.sha256(metadata).hexdigest()
        attributes += f' data-dist-info-metadata="sha256={meta_hash}" data-core-metadata="sha256={meta_hash}"'
        if requires_python:
            attributes += f' data-requires-python="{html.escape(requires_python, quote=True)}"'
        text = html.escape(wheel.name)
        flat.append(f'<a href="{quote(wheel.name)}{attributes}>{text}</a>')
        projects.setdefault(name, []).append(f'<a href="../../{quote(wheel.name)}{attributes}>{text}</a>')
    _write(wheelhouse / "index.html", _page("Links for wheelhouse", flat))
    simple = wheelhouse / "simple"
    _write(simple / "index.html", _page("Simple index", [f'<a href="{n}/">{n}</a>' for n in sorted(projects)]))
    for project, anchors in projects.items():
        _write(simple / project / "index.html", _page(f"Links for {project}", anchors))
    for stale in simple.iterdir():
        if stale.is_dir() and stale.name not in projects:
            shutil.rmtree(stale)
