"""Host-side module ``uv_fetch``: put the pinned uv on the host, from the host's own mirror, with no pip and no venv.

The laptop names the one wheel (``wheel``: its filename; ``sha256``: the digest of the file the laptop checked),
where the host's mirror is (``mirror``, ``kind``: ``find-links``, a directory or a page, or ``index``, whose
project page is ``<index>/uv/``) and where the binary goes (``path``: ``<root>/tools/uv-<version>/uv``). From a
directory the wheel is opened by its name; from a page (a find-links page, a plain directory listing, a simple
index page) it is the ``<a href>`` whose unquoted basename is the filename, resolved against the page's URL and
downloaded (http, https or file only). Either way it is copied into a temporary file while hashed, and a digest
other than ``sha256`` is refused, naming both and where the file came from. Only the member
``<dist>-<version>.data/scripts/uv`` is unpacked, into a temporary file beside ``path``, made 0755, synced and
renamed onto ``path``: a file there is always complete, so a later deploy asks only whether it is there and
executable (`present`), and starts no process.

``build`` calls `ensure`; run alone, the arguments are those fields and ``timeout``, the answer ``ok``, ``said``
and ``error``. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from html.parser import HTMLParser
from typing import IO, Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from . import _common

WHEEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]*\.whl\Z")  # a plain wheel filename: no path, no "/"
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
SCHEMES = ("http", "https", "file")
BLOCK = 1 << 20
WHEEL_LIMIT = 512 * 1024 * 1024  # bytes: a wheel (or its uv) larger than this is refused
PAGE_LIMIT = 16 * 1024 * 1024  # bytes of a find-links or index page read at most
SOCKET_TIMEOUT = 60.0  # seconds a connection may stay silent (the whole fetch has the step's timeout)


class Refused(Exception):
    """uv was not put in place; the message (one line) says why."""


def present(path: str) -> bool:
    """A complete uv is at ``path`` (only ever written whole): a regular file this user may run."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and os.access(path, os.X_OK)


def check_spec(spec: Any) -> None:
    """Refuse arguments that are not what the laptop sends: a plain wheel filename, a sha256, an absolute path."""
    if not isinstance(spec, dict):
        raise Refused("the uv arguments are not a mapping")
    wheel, digest, path = spec.get("wheel"), spec.get("sha256"), spec.get("path")
    if not isinstance(wheel, str) or not WHEEL_NAME.match(wheel) or ".." in wheel:
        raise Refused(f"not a plain wheel filename: {wheel!r:.200}")
    if not isinstance(digest, str) or not SHA256.match(digest):
        raise Refused(f"not a sha256: {digest!r:.100}")
    if not isinstance(path, str) or not os.path.isabs(path) or path.endswith("/"):
        raise Refused(f"not an absolute file path: {path!r:.200}")
    if spec.get("kind") not in ("find-links", "index") or not isinstance(spec.get("mirror"), str):
        raise Refused("no mirror (find-links or index) given")


def member_name(wheel: str) -> str:
    """The wheel's ``uv`` script: ``<dist>-<version>.data/scripts/uv`` (the wheel filename's first two fields)."""
    parts = wheel[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise Refused(f"not a wheel filename: {wheel}")
    return f"{parts[0]}-{parts[1]}.data/scripts/uv"


class _Links(HTMLParser):
    """The ``href`` of every ``<a>`` of a page, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def find_link(page: str, base: str, filename: str) -> str | None:
    """The URL (``base`` resolved, fragment dropped) of the first link of ``page`` whose unquoted basename, without
    query and fragment, is ``filename``; None when none is."""
    parser = _Links()
    parser.feed(page)
    parser.close()
    for href in parser.hrefs:
        url = urldefrag(urljoin(base, href.strip()))[0]
        if unquote(urlsplit(url).path.rsplit("/", 1)[-1]) == filename:
            return url
    return None


def page_url(mirror: str, kind: str) -> str:
    """The page that links the wheel: the find-links page itself, or an index's project page of uv."""
    return mirror.rstrip("/") + "/uv/" if kind == "index" else mirror


def local_directory(mirror: str, kind: str) -> str | None:
    """The mirror's directory when it is one on this host (a path or a ``file:`` URL of a directory)."""
    if kind != "find-links":
        return None
    if mirror.startswith("file:"):
        from urllib.request import url2pathname

        path = url2pathname(urlsplit(mirror).path)
    elif "://" in mirror:
        return None
    else:
        path = mirror
    return path if os.path.isdir(path) else None


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise Refused(f"refusing {url}: only http, https and file URLs are read")
    return scheme


def _open(url: str, timeout: float, accept: str = "") -> Any:
    import urllib.error
    import urllib.request

    _scheme(url)
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        response = urllib.request.urlopen(request, timeout=min(timeout, SOCKET_TIMEOUT))
    except urllib.error.HTTPError as error:
        raise Refused(f"cannot read {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise Refused(f"cannot read {url}: {getattr(error, 'reason', error)}") from None
    final = response.geturl()
    if final != url:
        try:
            _scheme(final)
        except Refused:
            response.close()
            raise
    return response


def read_page(url: str, timeout: float) -> tuple[str, str]:
    """The text of the page at ``url`` and the URL its links are relative to (after redirects)."""
    with _open(url, timeout, "text/html") as response:
        try:
            data = response.read(PAGE_LIMIT + 1)
        except OSError as error:
            raise Refused(f"cannot read {url}: {error}") from None
        base = response.geturl()
        charset = response.headers.get_content_charset() if response.headers else None
    if len(data) > PAGE_LIMIT:
        raise Refused(f"{url}: larger than {PAGE_LIMIT} bytes, not a find-links or index page")
    return data.decode(charset or "utf-8", "replace"), base


def copy_hashing(source: IO[bytes], into: IO[bytes], where: str, deadline: float) -> str:
    """Copy ``source`` into ``into``, at most `WHEEL_LIMIT` bytes, before ``deadline``; the hex sha256 copied."""
    digest, size = hashlib.sha256(), 0
    while True:
        try:
            block = source.read(BLOCK)
        except OSError as error:
            raise Refused(f"cannot read {where}: {error}") from None
        if not block:
            return digest.hexdigest()
        size += len(block)
        if size > WHEEL_LIMIT:
            raise Refused(f"{where}: larger than {WHEEL_LIMIT} bytes, refusing it")
        if time.monotonic() > deadline:
            raise Refused(f"{where}: not downloaded in time")
        digest.update(block)
        into.write(block)


def fetch(spec: dict[str, Any], into: IO[bytes], timeout: float, deadline: float) -> tuple[str, str]:
    """Copy the wheel from the host's mirror into ``into``: (where it came from, its sha256)."""
    mirror, kind, wheel = spec["mirror"], spec["kind"], spec["wheel"]
    directory = local_directory(mirror, kind)
    if directory is not None:
        where = os.path.join(directory, wheel)
        try:
            source = open(where, "rb")  # noqa: SIM115 (closed below: a failure to open is not one to copy)
        except OSError as error:
            raise Refused(f"cannot open {wheel} in the mirror {directory}: {error.strerror or error}") from None
        with source:
            return where, copy_hashing(source, into, where, deadline)
    url = page_url(mirror, kind)
    if "://" not in url and not url.startswith("file:"):  # a find-links page given as a path on the host
        from urllib.request import pathname2url

        if not os.path.isfile(url):
            raise Refused(f"the mirror {mirror} is no directory or page on this host")
        url = "file://" + pathname2url(os.path.abspath(url))
    page, base = read_page(url, timeout)
    link = find_link(page, base, wheel)
    if link is None:
        raise Refused(f"{url} links no {wheel}; run fab mirror.sync and fab mirror.publish")
    if _scheme(link) == "file" and _scheme(base) != "file":
        raise Refused(f"{url} links {wheel} as {link}: a page not on this host may not name a file on it")
    with _open(link, timeout) as response:
        return link, copy_hashing(response, into, link, deadline)


def unpack(wheel: IO[bytes], member: str, path: str, where: str) -> None:
    """Write the wheel's ``member`` as ``path``, whole or not at all (a temporary file, 0755, synced, renamed)."""
    import zipfile

    directory = os.path.dirname(path)
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise Refused(f"{where} has no {member}") from None
            if info.file_size > WHEEL_LIMIT:
                raise Refused(f"{where}: {member} is larger than {WHEEL_LIMIT} bytes")
            fd, temporary = tempfile.mkstemp(prefix=".uv-", suffix=".part", dir=directory)
            try:
                with os.fdopen(fd, "wb") as out, archive.open(info) as source:
                    shutil.copyfileobj(source, out, BLOCK)
                    out.flush()
                    os.fchmod(out.fileno(), 0o755)
                    os.fsync(out.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
    except zipfile.BadZipFile as error:  # a bad CRC-32 of the member too
        raise Refused(f"{where} is not a valid wheel: {error}") from None
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure(spec: Any, timeout: float) -> str:
    """Put uv at ``spec["path"]`` unless it is there; what was done, one line. Raises `Refused` (or OSError:
    the tools directory cannot be written)."""
    check_spec(spec)
    path = spec["path"]
    if present(path):
        return f"{path} is there"
    deadline = time.monotonic() + timeout
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory) as wheel:
        where, digest = fetch(spec, wheel, timeout, deadline)
        if digest != spec["sha256"]:
            raise Refused(
                "{} has sha256 {}, expected {} (the wheel the laptop checked): refusing it".format(
                    where, digest, spec["sha256"]
                )
            )
        wheel.seek(0)
        unpack(wheel, member_name(spec["wheel"]), path, where)
    return f"{where} (sha256 {digest}): uv unpacked as {path}"


def main(args: dict[str, Any]) -> dict[str, Any]:
    try:
        said = ensure(args, float(args.get("timeout") or 600))
    except (Refused, OSError) as error:
        return {"ok": False, "said": "", "error": str(error)}
    return {"ok": True, "said": said, "error": None}


if __name__ == "__main__":
    _common.serve(main)
