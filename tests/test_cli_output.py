"""The ``fab`` command line itself: output to a closed pipe, Fabric's own ``-H``, ``-h`` for help."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from fabric.connection import Connection
from invoke.collection import Collection
from invoke.exceptions import Exit

from deploytool import ns
from deploytool.errors import FABRIC_HOSTS_REFUSED
from tests.conftest import Project
from tests.sshd import SshServer


def test_releases_into_a_closed_pipe_ends_quietly(ssh_project: Project) -> None:
    """``fab releases | head -1``: the reader is gone before fab writes; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # like head -1 having exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fabric", "releases"],
            cwd=ssh_project.path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 0


def test_releases_piped_into_head(ssh_project: Project) -> None:
    """The real thing: a shell pipeline into ``head -1``, with pipefail, prints one line and no traceback."""
    command = f"set -o pipefail; {sys.executable} -m fabric releases 2>&1 | head -1"
    result = subprocess.run(["bash", "-c", command], cwd=ssh_project.path, capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("web1 (") and result.stdout.count("\n") == 1
    assert result.returncode == 0, result.stderr


def _task_names(collection: Collection, prefix: str = "") -> list[str]:
    names = [prefix + name for name in collection.tasks]
    for name, sub in collection.collections.items():
        names += _task_names(sub, f"{prefix}{name}.")
    return names


TASKS = _task_names(ns)


def _fab(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.mark.parametrize("task", TASKS)
def test_every_task_refuses_a_connection(task: str) -> None:
    """With Fabric's ``-H`` a task is called once per host with a Connection instead of a Context: refused."""
    with pytest.raises(Exit) as raised:
        ns[task](Connection("web1"))
    assert raised.value.message == FABRIC_HOSTS_REFUSED and raised.value.code == 1


def test_fabric_hosts_flag_is_refused_once(tmp_path: Path) -> None:
    (tmp_path / "fabfile.py").write_text("from deploytool import ns\n")
    result = _fab(tmp_path, "-H", "web1,web2", "mirror.index")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", FABRIC_HOSTS_REFUSED + "\n")


@pytest.mark.cold_hosts  # nothing at all on the hosts beforehand, so that anything made there shows
def test_fabric_hosts_flag_deploys_nothing(ssh_project: Project, ssh_server: SshServer) -> None:
    result = ssh_project.fab("--hosts", "web1", "deploy", check=False)
    assert result.returncode == 1 and "fab deploy --hosts web1,web2" in result.stderr
    assert "Traceback" not in result.stderr
    for host in ssh_project.inventory["stages"]["test"]["hosts"].values():
        assert not Path(host["root"]).exists()


def test_no_task_option_takes_dash_h() -> None:
    """Invoke gives ``hosts`` the short flag ``-h`` unless told not to; ``-h`` must stay help everywhere."""
    for name in TASKS:
        task = ns[name]
        for argument in task.get_arguments():
            assert "h" not in argument.names, (name, argument.names)


def test_dash_h_after_deploy_is_its_help(tmp_path: Path) -> None:
    (tmp_path / "fabfile.py").write_text("from deploytool import ns\n")
    result = _fab(tmp_path, "deploy", "-h")
    assert result.returncode == 0, result.stderr
    assert "[--core-opts] deploy [--options]" in result.stdout.splitlines()[0]
    assert "--hosts=STRING" in result.stdout and "-h" not in result.stdout.replace("--hosts", "")


def test_version_names_deploytool_fabric_and_python(tmp_path: Path) -> None:
    (tmp_path / "fabfile.py").write_text("from deploytool import ns\n")  # no hosts.yml needed
    result = subprocess.run(
        [sys.executable, "-m", "fabric", "version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"deploytool {importlib.metadata.version('deploytool')}"
    assert lines[1].startswith(f"Fabric {importlib.metadata.version('fabric')}, Invoke ")
    assert lines[2] == f"Python {platform.python_version()} ({sys.executable})"
