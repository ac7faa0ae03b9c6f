"""Unpacking a commit's files on the laptop: safe on every Python we support (Debian 12's 3.11.2 has no
``extractall(filter=...)``), symlinks kept as symlinks, nothing written outside the target."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from deploytool.errors import DeployError
from deploytool.flow.snapshot import extract, unpack
from tests.conftest import git, make_project


def test_extract_keeps_files_modes_and_inner_symlinks(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"app": "demo"})
    (project.path / "etc-mock" / "nginx" / "sites-available").mkdir(parents=True)
    (project.path / "etc-mock" / "nginx" / "sites-available" / "demo.conf").write_text("server {}\n")
    (project.path / "etc-mock" / "run.sh").write_text("#!/bin/sh\n")
    (project.path / "etc-mock" / "run.sh").chmod(0o755)
    (project.path / "etc-mock" / "nginx" / "sites-enabled").symlink_to("sites-available")
    commit = project.commit("templates")
    (project.path / "etc-mock" / "run.sh").write_text("not committed\n")

    into = tmp_path / "out"
    into.mkdir()
    assert extract(project.path, commit, ["etc-mock"], into)
    assert (into / "etc-mock" / "nginx" / "sites-available" / "demo.conf").read_text() == "server {}\n"
    assert (into / "etc-mock" / "run.sh").read_text() == "#!/bin/sh\n"  # the commit, not the working tree
    assert os.access(into / "etc-mock" / "run.sh", os.X_OK)
    assert (into / "etc-mock" / "nginx" / "sites-enabled").is_symlink()
    assert os.readlink(into / "etc-mock" / "nginx" / "sites-enabled") == "sites-available"
    assert not extract(project.path, commit, ["no-such-dir"], into)


def test_extract_refuses_a_committed_symlink_leading_outside(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"app": "demo"})
    (project.path / "etc-mock").mkdir()
    (project.path / "etc-mock" / "linked").symlink_to("/etc", target_is_directory=True)
    commit = project.commit("escaping link")
    into = tmp_path / "out"
    into.mkdir()
    with pytest.raises(DeployError, match=r"etc-mock/linked: a symlink to /etc, leading outside"):
        extract(project.path, commit, ["etc-mock"], into)
    assert git(project.path, "status", "--porcelain") == ""


def _tar(*members: tuple[str, bytes | str, str]) -> tarfile.TarFile:
    """A tar of (name, content or link target, kind) members; kind is file, dir, sym or link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}[kind]
            info.linkname = str(data)
            tar.addfile(info)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("/tmp/evil", b"x", "file")], "absolute or '..' path"),
        ([("a/../../evil", b"x", "file")], "absolute or '..' path"),
        ([("up", "..", "sym"), ("up/evil", b"x", "file")], "passes through a symlink"),
        ([("d", "", "dir"), ("d/l", "/etc", "sym")], "a symlink to /etc"),
        ([("d/e", "", "dir"), ("d/e/b", "../..", "sym"), ("a", "d/e/b/..", "sym")], "a symlink to d/e/b/.."),
        ([("f", b"x", "file"), ("h", "/etc/passwd", "link")], "not a file, directory or symlink"),
        ([("f", b"x", "file"), ("f", b"y", "file")], "repeats"),
    ],
)
def test_unpack_refuses_what_would_escape(
    tmp_path: Path, members: list[tuple[str, bytes | str, str]], message: str
) -> None:
    into = tmp_path / "in"
    into.mkdir()
    with _tar(*members) as tar, pytest.raises(DeployError, match=message):
        unpack(tar, into, "commit abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert not Path("/tmp/evil").exists()
