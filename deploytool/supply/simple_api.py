"""Read a package index's project pages: PEP 691 JSON when the server offers it, else PEP 503 HTML.

Used for an index-server mirror (``mirror_kind: index``), for the upstream that ``mirror.verify`` re-reads
and for what an index serves after ``mirror.publish`` uploads to it. What an index says is validated before
use: only wheel files with valid names, only http(s) URLs, only well-formed sha256 hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urldefrag, urljoin

from packaging.utils import canonicalize_name

from deploytool.supply.mirror_index import TIMEOUT, WheelLink, list_wheels, make_link, parse_html_links
from deploytool.supply.wheelmeta import MirrorError

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
SHA256 = re.compile(r"[0-9a-f]{64}")


def project_url(index: str, name: str) -> str:
    """The PEP 503 page of project ``name`` under ``index``."""
    return urljoin(index.rstrip("/") + "/", f"{canonicalize_name(name)}/")


def _sha256(hashes: Any) -> str | None:
    value = hashes.get("sha256") if isinstance(hashes, dict) else None
    return value if isinstance(value, str) and SHA256.fullmatch(value) else None


def parse_json_links(data: bytes, base: str) -> list[WheelLink]:
    """Return the wheels of a PEP 691 project page; anything malformed is a MirrorError naming the page."""
    try:
        page = json.loads(data)
        files = page["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
    except (ValueError, KeyError, TypeError) as error:
        raise MirrorError(f"{base}: not a PEP 691 project page ({error})") from None
    links = []
    for entry in files:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("filename"), str)
            or not isinstance(entry.get("url"), str)
        ):
            raise MirrorError(f"{base}: a file entry without filename and url: {str(entry)[:200]}")
        url = urldefrag(urljoin(base, entry["url"]))[0]
        if not url.startswith(("http://", "https://")) or "/" in entry["filename"]:
            raise MirrorError(f"{base}: refusing file entry {entry['filename']!r} at {url!r}")
        metadata = entry.get("core-metadata", entry.get("dist-info-metadata", False))
        link = make_link(
            entry["filename"],
            url,
            sha256=_sha256(entry.get("hashes")),
            metadata_location=url + ".metadata" if metadata else None,
            metadata_sha256=_sha256(metadata),
        )
        if link:
            links.append(link)
    return links


def project_wheels(index: str, name: str) -> list[WheelLink]:
    """Return the wheels the index offers for one project ([] when it has no such project)."""
    url = project_url(index, name)
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            data, base = response.read(), response.geturl()
            content_type = response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise MirrorError(f"cannot read {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise MirrorError(f"cannot read {url}: {getattr(error, 'reason', error)}") from None
    if content_type == JSON_TYPE:
        return parse_json_links(data, base)
    return [link for link in parse_html_links(data, base) if link.name == canonicalize_name(name)]


def index_wheels(index: str, names: Iterable[str]) -> list[WheelLink]:
    """Return the wheels of the given projects, reading their pages in parallel."""
    unique = sorted({canonicalize_name(name) for name in names})
    if not unique:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(unique))) as pool:
        return [link for links in pool.map(lambda n: project_wheels(index, n), unique) for link in links]


def mirror_wheels(mirror: str, kind: str, names: Iterable[str]) -> list[WheelLink]:
    """The wheels a mirror offers for ``names``: per project for an index, the whole listing otherwise."""
    return index_wheels(mirror, names) if kind == "index" else list_wheels(mirror)


def download_sha256(url: str) -> str | None:
    """Download ``url`` and return its hex sha256, or None when the server says 404 (it is gone)."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            return None
        raise MirrorError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise MirrorError(f"cannot download {url}: {getattr(error, 'reason', error)}") from None
    return digest.hexdigest()
