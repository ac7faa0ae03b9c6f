"""Mistakes a user can fix end in one ``Error: ...`` line naming the file or key, exit status 1, no traceback.

Each test runs the real ``fab`` command line in a fresh project: a git repository with ``fabfile.py`` and a
hosts.yml whose only stage is local.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploytool.connection.transport import connect
from deploytool.errors import DeployError, RemoteError
from deploytool.flow.release import check_release_id, resolve_commit
from deploytool.inventory import load_inventory
from deploytool.supply.mirror import serve, sync, upload, write_indexes
from deploytool.supply.wheelmeta import MirrorError, TargetPython

HOSTS = """\
app: demo
default_stage: local
mirror: wheels
stages:
  local:
    transport: local
    root: .deploy/local
    allow_root: true
    hosts: [localhost]
"""


def make_project(tmp_path: Path, hosts: str = HOSTS, *, repository: bool = True) -> Path:
    """A project directory with fabfile.py, hosts.yml and requirements/prod.txt, committed unless
    ``repository`` is false (then it is not a git repository at all)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "fabfile.py").write_text("from deploytool import ns\n")
    (project / "hosts.yml").write_text(textwrap.dedent(hosts))
    (project / "requirements").mkdir()
    (project / "requirements/prod.txt").write_text("demo-lib==1.0\n")
    if repository:
        git = ["git", "-C", str(project), "-c", "user.email=dev@example.com", "-c", "user.name=Dev"]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return project


def fab_error(project: Path, *args: str) -> str:
    """Run ``fab ARGS`` in ``project``, expect a one-line-style failure, and return stderr."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(project.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return result.stderr


def hosts_yml(project: Path) -> str:
    return str((project / "hosts.yml").resolve())


# --- hosts.yml mistakes reach the user as errors naming the file and key ------------------------------


def test_host_name_with_a_path_in_it_is_refused_before_render_etc(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS.replace("hosts: [localhost]", "hosts: ['../../src']"))
    (project / "etc-mock").mkdir()
    stderr = fab_error(project, "render-etc")
    assert hosts_yml(project) in stderr
    assert "stages.local.hosts.../../src: host name '../../src' is not allowed" in stderr
    assert "address:" in stderr
    assert not (tmp_path / "src").exists() and not (project / "build").exists()


@pytest.mark.parametrize("task", ["deploy", "rollback", "status"])
def test_empty_hosts_option_is_an_error_not_every_host(tmp_path: Path, task: str) -> None:
    project = make_project(tmp_path)
    error = fab_error(project, task, "--hosts", "")  # what `--hosts "$HOSTS"` passes when HOSTS is unset
    said = "--hosts '' names no host; leave --hosts out to act on every host of the stage"
    assert error == f"Error: {hosts_yml(project)}: {said}\n"
    assert not (project / ".deploy").exists()


def test_duplicate_key_names_key_and_line(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS + "mirror: other\n")
    stderr = fab_error(project, "deploy")
    assert f"{hosts_yml(project)}: line 10: " in stderr
    assert "duplicate key 'mirror' (first on line 3)" in stderr


def test_short_python_version_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS + 'python_version: "3.11"\n')
    stderr = fab_error(project, "deploy")
    assert f"{hosts_yml(project)}: python_version: " in stderr
    assert "host's full version" in stderr and '"3.11.2"' in stderr


def test_reserved_shared_dir_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS + "shared_dirs: [logs, venv]\n")
    stderr = fab_error(project, "deploy")
    assert f"{hosts_yml(project)}: shared_dirs: 'venv' is a directory every release has itself" in stderr


def test_requirements_directory_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS + "requirements: requirements\n")
    stderr = fab_error(project, "deploy")
    assert f"{hosts_yml(project)}: stages.local.hosts.localhost.requirements: expected a file" in stderr


def test_missing_etc_templates_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS + "etc_templates: templates/etc\n")
    stderr = fab_error(project, "render-etc")
    assert f"{hosts_yml(project)}: etc_templates: {project.resolve() / 'templates/etc'} does not exist" in stderr


def test_etc_mock_that_is_a_file_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "etc-mock").write_text("not templates\n")
    stderr = fab_error(project, "render-etc")
    assert f"{hosts_yml(project)}: etc-mock: {project.resolve() / 'etc-mock'} is not a directory" in stderr


# --- render-etc --out and the wheelhouse must be directories -----------------------------------------


def test_render_etc_out_an_existing_file(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "etc-mock/app").mkdir(parents=True)
    (project / "etc-mock/app/demo.conf.j2").write_text("app={{ app }}\n")
    (project / "out.txt").write_text("keep me\n")
    stderr = fab_error(project, "render-etc", "--out", "out.txt")
    assert "--out out.txt exists and is not a directory" in stderr
    assert (project / "out.txt").read_text() == "keep me\n"


def test_render_etc_out_whose_host_directory_is_a_file(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "etc-mock/app").mkdir(parents=True)
    (project / "etc-mock/app/demo.conf.j2").write_text("app={{ app }}\n")
    (project / "out").mkdir()
    (project / "out/localhost").write_text("in the way\n")
    stderr = fab_error(project, "render-etc", "--out", "out")
    assert "out/localhost" in stderr and "directory" in stderr


@pytest.mark.parametrize(
    "args",
    [("mirror.index",), ("mirror.sync",), ("mirror.upload", "--file", "demo_lib-1.0-py3-none-any.whl")],
    ids=["index", "sync", "upload"],
)
def test_wheelhouse_that_is_a_file(tmp_path: Path, args: tuple[str, ...]) -> None:
    project = make_project(tmp_path, HOSTS + "wheelhouse: wheels.txt\n")
    (project / "wheels.txt").write_text("not a wheelhouse\n")
    stderr = fab_error(project, *args)
    assert f"{hosts_yml(project)}: wheelhouse: {project.resolve() / 'wheels.txt'} exists and is not a directory" in (
        stderr
    )
    assert (project / "wheels.txt").read_text() == "not a wheelhouse\n"


# --- not a git repository, a missing identity file -------------------------------------------------------


@pytest.mark.parametrize("task", ["deploy", "render-etc"])
def test_outside_a_git_repository(tmp_path: Path, task: str) -> None:
    project = make_project(tmp_path, repository=False)
    (project / "etc-mock").mkdir()
    stderr = fab_error(project, task)
    assert f"{project.resolve()} is not a git repository" in stderr


def test_missing_identity_file_is_named_when_connecting(tmp_path: Path) -> None:
    hosts = HOSTS.replace(
        "stages:\n",
        "stages:\n  remote:\n    address: 127.0.0.1\n    port: 1\n    root: /srv/demo\n"
        "    identity_file: keys/deploy_ed25519\n    known_hosts: known_hosts\n    hosts: [web1]\n",
    )
    project = make_project(tmp_path, hosts)
    (project / "known_hosts").write_text("")
    stderr = fab_error(project, "releases", "--stage", "remote")
    assert "web1" in stderr
    assert f"identity_file {project.resolve() / 'keys/deploy_ed25519'} does not exist" in stderr


# --- the same checks, called directly ----------------------------------------------------------------


def test_release_id_with_a_trailing_newline_is_refused() -> None:
    assert check_release_id("20261121T093000Z-1a2b3c4") == "20261121T093000Z-1a2b3c4"
    arabic_indic = "\u0662\u0660\u0662\u0666\u0661\u0661\u0662\u0661"  # Unicode digits, which \d would take
    for bad in (
        "20261121T093000Z-1a2b3c4\n",
        "x20261121T093000Z-1a2b3c4",
        "20261121T093000Z-1a2b3c4/..",
        f"{arabic_indic}T093000Z-1a2b3c4",
    ):
        with pytest.raises(DeployError, match="is not a release id"):
            check_release_id(bad)


def test_resolve_commit_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    with pytest.raises(DeployError, match="is not a git repository"):
        resolve_commit(tmp_path, "HEAD")


def test_connect_refuses_a_missing_identity_file(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(
        "app: demo\nroot: /srv\nmirror: m\nidentity_file: nokey\nstages: {prod: {hosts: [web1]}}\n"
    )
    (web1,) = load_inventory(tmp_path / "hosts.yml").hosts("prod")
    with pytest.raises(RemoteError, match=r"web1: identity_file .*nokey does not exist"):
        connect(web1)


def test_mirror_functions_refuse_a_wheelhouse_that_is_a_file(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.write_text("")
    calls = [
        lambda: write_indexes(wheelhouse),
        lambda: upload([], wheelhouse, user="dev"),
        lambda: sync([], wheelhouse, TargetPython(python_version="3.11.2"), user="dev"),
        lambda: serve(wheelhouse),
    ]
    for call in calls:
        with pytest.raises(MirrorError, match=f"wheelhouse {wheelhouse} exists and is not a directory"):
            call()
