"""The host-side ``uv_fetch``: the pinned uv's binary from the host's own mirror, checked against the laptop's sha256.

Pages, directories and file: URLs here (the fast tier); over HTTP, a plain directory listing and a simple index
page, each from a real server on loopback (integration).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.hostside import build, uv_fetch
from deploytool.supply.mirror import write_indexes
from tests.conftest import _QuietHandler

WHEEL = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl"
SCRIPT = b"#!/bin/sh\necho 'uv 0.13.9 (fake)'\n"


def make_uv_wheel(directory: Path, name: str = WHEEL, script: bytes = SCRIPT) -> str:
    """A wheel shaped like uv's (its binary a shell script); the file's sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / name, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("uv-0.13.9.dist-info/METADATA", "Metadata-Version: 2.1\nName: uv\nVersion: 0.13.9\n")
        archive.writestr("uv-0.13.9.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-manylinux_2_17_x86_64\n")
        archive.writestr("uv-0.13.9.data/scripts/uvx", b"#!/bin/sh\necho uvx\n")
        archive.writestr("uv-0.13.9.data/scripts/uv", script)
        archive.writestr("uv-0.13.9.dist-info/RECORD", "")
    return hashlib.sha256((directory / name).read_bytes()).hexdigest()


def spec(tmp_path: Path, mirror: str, sha256: str, kind: str = "find-links", wheel: str = WHEEL) -> dict[str, str]:
    return {
        "path": str(tmp_path / "root" / "tools" / "uv-0.13.9" / "uv"),
        "wheel": wheel,
        "sha256": sha256,
        "mirror": mirror,
        "kind": kind,
    }


# --- the page: which link is the wheel -------------------------------------------------------------------------

LISTING = """<!DOCTYPE HTML><html><head><title>Directory listing for /</title></head><body><ul>
<li><a href="demo_lib-1.0-py3-none-any.whl">demo_lib-1.0-py3-none-any.whl</a></li>
<li><a href="uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl.metadata">uv-0.13.9-...whl.metadata</a></li>
<li><a href="uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl">uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl</a></li>
<li><a href="uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl">uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl</a></li>
</ul></body></html>
"""

INDEX_PAGE = """<html><head><title>Links for uv</title></head><body><h1>Links for uv</h1>
<a href="../../packages/uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl?token=1#sha256=abc" data-requires-python=">=3.8">
uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl</a><br>
</body></html>
"""


def test_the_link_is_the_one_whose_unquoted_basename_is_the_filename() -> None:
    base = "http://mirror.example/wheels/"
    assert uv_fetch.find_link(LISTING, base, WHEEL) == base + WHEEL  # not the .metadata, not another platform's
    found = uv_fetch.find_link(INDEX_PAGE, "http://pyrepo.example/simple/uv/", WHEEL)
    assert found == f"http://pyrepo.example/packages/{WHEEL}?token=1", "resolved against the page, fragment dropped"
    quoted = '<a href="https://cdn.example/f/uv-0.13.9-py3-none-manylinux_2_17_x86_64%2Ewhl">uv</a>'
    assert (
        uv_fetch.find_link(quoted, base, WHEEL)
        == "https://cdn.example/f/uv-0.13.9-py3-none-manylinux_2_17_x86_64%2Ewhl"
    )
    assert uv_fetch.find_link(LISTING, base, "uv-0.14.0-py3-none-manylinux_2_17_x86_64.whl") is None
    assert uv_fetch.find_link("<a name=x>no href</a><a href=''>empty</a>", base, WHEEL) is None
    assert uv_fetch.page_url("http://pyrepo.example/simple", "index") == "http://pyrepo.example/simple/uv/"
    assert uv_fetch.page_url("http://pyrepo.example/simple/", "index") == "http://pyrepo.example/simple/uv/"
    assert uv_fetch.page_url("http://mirror.example/wheels/", "find-links") == "http://mirror.example/wheels/"
    assert uv_fetch.member_name(WHEEL) == "uv-0.13.9.data/scripts/uv"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("wheel", "../uv-0.13.9-py3-none-any.whl", "not a plain wheel filename"),
        ("wheel", "sub/uv-0.13.9-py3-none-any.whl", "not a plain wheel filename"),
        ("wheel", "uv..whl", "not a plain wheel filename"),
        ("wheel", "uv-0.13.9.tar.gz", "not a plain wheel filename"),
        ("sha256", "ABC", "not a sha256"),
        ("path", "tools/uv", "not an absolute file path"),
        ("kind", "vendored", "no mirror"),
    ],
)
def test_arguments_that_are_not_what_the_laptop_sends_are_refused(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    bad = {**spec(tmp_path, str(tmp_path), "0" * 64), field: value}
    with pytest.raises(uv_fetch.Refused, match=message):
        uv_fetch.ensure(bad, 30)
    assert not (tmp_path / "root").exists()


# --- from a directory and from file: pages -----------------------------------------------------------------------


def test_from_a_directory_the_binary_alone_is_written_whole_and_once(tmp_path: Path) -> None:
    digest = make_uv_wheel(tmp_path / "wheels")
    args = spec(tmp_path, str(tmp_path / "wheels"), digest)
    said = uv_fetch.ensure(args, 30)
    uv = Path(args["path"])
    assert said == f"{tmp_path / 'wheels' / WHEEL} (sha256 {digest}): uv unpacked as {uv}"
    assert uv.read_bytes() == SCRIPT and (uv.stat().st_mode & 0o777) == 0o755
    assert os.listdir(uv.parent) == ["uv"], "no uvx, no temporary file left"
    inode = uv.stat().st_ino
    (tmp_path / "wheels" / WHEEL).unlink()  # a warm host does not look at the mirror at all
    assert uv_fetch.ensure(args, 30) == f"{uv} is there" and uv.stat().st_ino == inode
    assert uv_fetch.main({**args, "timeout": 30}) == {"ok": True, "said": f"{uv} is there", "error": None}


def test_a_file_url_directory_and_a_find_links_page_on_the_host_work(tmp_path: Path) -> None:
    digest = make_uv_wheel(tmp_path / "wheels")
    write_indexes(tmp_path / "wheels")  # index.html and simple/uv/index.html, as mirror.sync leaves them
    for n, mirror in enumerate(
        [
            (tmp_path / "wheels").as_uri(),
            (tmp_path / "wheels" / "index.html").as_uri(),
            str(tmp_path / "wheels" / "index.html"),
            (tmp_path / "wheels" / "simple" / "uv" / "index.html").as_uri(),
        ]
    ):
        args = {**spec(tmp_path, mirror, digest), "path": str(tmp_path / f"root{n}" / "uv-0.13.9" / "uv")}
        assert uv_fetch.ensure(args, 30).endswith(f"uv unpacked as {args['path']}"), mirror
        assert Path(args["path"]).read_bytes() == SCRIPT


def test_other_bytes_than_the_laptop_saw_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    genuine = make_uv_wheel(tmp_path / "genuine")
    make_uv_wheel(tmp_path / "wheels", script=b"#!/bin/sh\necho planted\n")
    write_indexes(tmp_path / "wheels")
    page = (tmp_path / "wheels" / "index.html").as_uri()
    for mirror in (str(tmp_path / "wheels"), page):
        args = spec(tmp_path, mirror, genuine)
        with pytest.raises(uv_fetch.Refused) as refused:
            uv_fetch.ensure(args, 30)
        served = hashlib.sha256((tmp_path / "wheels" / WHEEL).read_bytes()).hexdigest()
        where = str(tmp_path / "wheels" / WHEEL) if mirror == str(tmp_path / "wheels") else f"{page[:-10]}{WHEEL}"
        assert str(refused.value) == (
            f"{where} has sha256 {served}, expected {genuine} (the wheel the laptop checked): refusing it"
        )
        assert os.listdir(Path(args["path"]).parent) == [], "no uv, no temporary file"


def test_a_missing_wheel_a_missing_member_and_a_foreign_file_link_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(uv_fetch.Refused, match=re.escape(f"cannot open {WHEEL} in the mirror {tmp_path / 'empty'}")):
        uv_fetch.ensure(spec(tmp_path, str(tmp_path / "empty"), "0" * 64), 30)
    (tmp_path / "page.html").write_text(LISTING.replace(WHEEL, "other.whl"))
    with pytest.raises(uv_fetch.Refused, match=re.escape(f"links no {WHEEL}; run fab mirror.sync")):
        uv_fetch.ensure(spec(tmp_path, (tmp_path / "page.html").as_uri(), "0" * 64), 30)

    (tmp_path / "nouv").mkdir()
    with zipfile.ZipFile(tmp_path / "nouv" / WHEEL, "w") as archive:
        archive.writestr("uv-0.13.9.data/scripts/uvx", "x")
    digest = hashlib.sha256((tmp_path / "nouv" / WHEEL).read_bytes()).hexdigest()
    with pytest.raises(uv_fetch.Refused, match=re.escape("has no uv-0.13.9.data/scripts/uv")):
        uv_fetch.ensure(spec(tmp_path, str(tmp_path / "nouv"), digest), 30)

    with pytest.raises(uv_fetch.Refused, match="only http, https and file URLs"):
        uv_fetch.ensure(spec(tmp_path, "ftp://mirror.example/wheels/", "0" * 64), 30)


def test_build_reports_a_refused_uv_as_its_failed_step(tmp_path: Path) -> None:
    steps = build._common.Steps("build", 30)
    args = spec(tmp_path, str(tmp_path / "nowhere"), "0" * 64)
    with pytest.raises(build._common.StepFailed):
        build.prepare_installer(steps, {"tool": "uv", "uv": args})
    answer = steps.answer()
    assert answer["failed_step"] == f"preparing the installer (uv) in {Path(args['path']).parent}"
    assert answer["error"] == (
        f"{answer['failed_step']} failed: the mirror {tmp_path / 'nowhere'} is no directory or page on this host"
    )


# --- over HTTP -----------------------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    directory = tmp_path / "served"
    directory.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield directory, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_over_http_from_a_directory_listing_and_from_a_simple_index_page(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    directory, url = served
    digest = make_uv_wheel(directory / "wheels")  # http.server's listing of wheels/ is the find-links page
    listing = {**spec(tmp_path, url + "wheels/", digest), "path": str(tmp_path / "a" / "uv")}
    assert uv_fetch.ensure(listing, 30) == f"{url}wheels/{WHEEL} (sha256 {digest}): uv unpacked as {listing['path']}"
    assert Path(listing["path"]).read_bytes() == SCRIPT

    write_indexes(directory / "wheels")  # simple/uv/index.html links ../../<wheel>#sha256=...
    index = {**spec(tmp_path, url + "wheels/simple", digest, kind="index"), "path": str(tmp_path / "b" / "uv")}
    assert uv_fetch.ensure(index, 30).startswith(f"{url}wheels/{WHEEL} (sha256 {digest})")

    (directory / "wheels" / WHEEL).write_bytes(b"not the wheel")
    other = {**listing, "path": str(tmp_path / "c" / "uv")}
    with pytest.raises(
        uv_fetch.Refused, match=re.escape(f"{url}wheels/{WHEEL} has sha256 ") + f"[0-9a-f]{{64}}, expected {digest}"
    ):
        uv_fetch.ensure(other, 30)
    assert not Path(other["path"]).exists()
    missing = {**spec(tmp_path, url + "absent/simple/", digest, kind="index"), "path": str(tmp_path / "d" / "uv")}
    with pytest.raises(uv_fetch.Refused, match=re.escape(f"cannot read {url}absent/simple/uv/: HTTP 404")):
        uv_fetch.ensure(missing, 30)

    (directory / "evil.html").write_text(f'<a href="file://{tmp_path}/served/wheels/{WHEEL}">uv</a>')
    evil = {**spec(tmp_path, url + "evil.html", digest), "path": str(tmp_path / "e" / "uv")}
    with pytest.raises(uv_fetch.Refused, match="a page not on this host may not name a file on it"):
        uv_fetch.ensure(evil, 30)
