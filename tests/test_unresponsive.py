"""Hosts that stop answering, connections that drop, and runs stopped by SIGTERM or Ctrl-C, over real SSH.

The faults are real: a host's own sshd is frozen with SIGSTOP (with every process below it) or has the sshd
processes serving the deploy killed; ``fab`` gets a real SIGTERM. To stop a deploy at a known point, the
host's ``python`` is a wrapper that, asked to make a virtualenv (in the build), leaves a marker and sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.errors import DeployError
from deploytool.flow.deploy import plan_deploy, run_deploy
from deploytool.inventory import load_inventory
from tests import sshd
from tests.conftest import HOST_PYTHON, Project
from tests.isolation import deadline
from tests.test_deploy_ssh import current, journal, release_ids, root_of

# The builds these tests stall are first deploys: the tools venv is the first virtualenv made.
pytestmark = pytest.mark.cold_hosts


@pytest.fixture
def own_sshd(ssh_server: sshd.SshServer) -> Iterator[sshd.SshServer]:
    """A second sshd serving only 127.0.0.5, so that freezing or killing it touches no other host."""
    base = Path(tempfile.mkdtemp(prefix="deploytool-sshd-own-"))
    server = sshd.start(base, addresses=("127.0.0.5",))
    try:
        yield server
    finally:
        server.stop()  # SIGCONT first: a frozen sshd cannot even die
        shutil.rmtree(base, ignore_errors=True)


def serve_from(project: Project, host: str, server: sshd.SshServer) -> None:
    """Point ``host`` of the project at ``server``."""
    entry = project.inventory["stages"]["test"]["hosts"][host]
    entry.update(
        address=server.addresses[0],
        port=server.port,
        known_hosts=str(server.known_hosts),
        identity_file=str(server.client_key),
    )


def stall_builds(project: Project, host: str) -> Path:
    """Make ``host``'s builds stop when they make a virtualenv (on a first deploy: the tools venv); return the
    marker that says they got there."""
    root = root_of(project, host).parent
    marker, wrapper = root / "building", root / "python"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *"-m venv"*) touch {marker}; sleep 20; exit 1;; esac\nexec {HOST_PYTHON} "$@"\n'
    )
    wrapper.chmod(0o755)
    project.inventory["stages"]["test"]["hosts"][host]["python"] = str(wrapper)
    return marker


def start_fab(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fabric", *args],
        cwd=project.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(*paths: Path, process: subprocess.Popen[str] | None = None) -> None:
    until = deadline(240)
    while not all(path.exists() for path in paths):
        if process is not None and process.poll() is not None:
            raise AssertionError(f"fab ended early:\n{process.communicate()}")
        assert time.monotonic() < until, f"never reached: {paths}"
        time.sleep(0.05)


def assert_cleaned_up(project: Project, host: str, before: list[str], reason: str) -> None:
    assert release_ids(project, host) == before, "the half-built release is removed"
    assert not (root_of(project, host) / "deploy.lock").exists()
    last = journal(project, host)[-1]
    assert last["status"] == "failed" and reason in last["reason"], last


def test_a_frozen_host_is_named_as_not_answering_and_the_others_are_cleaned_up(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    serve_from(ssh_project, "web4", own_sshd)
    marker = stall_builds(ssh_project, "web4")
    ssh_project.inventory["stages"]["test"]["hosts"]["web4"]["timeout"] = 6
    ssh_project.write_inventory()
    ssh_project.commit("frozen web4")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web4")
    try:
        wait_for(marker, process=fab)
        assert len(own_sshd.freeze()) > 1  # the whole host freezes mid-build, the sshd and all below it
        _, stderr = fab.communicate(timeout=240)
    finally:
        own_sshd.signal_all(signal.SIGCONT)
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    # The wrapper stalls the first venv it is asked to make: on a first deploy, the tools venv.
    assert "web4: not answering (no reply for" in stderr and "during build (preparing the installer (pip)" in stderr
    assert "No host was switched" in stderr
    assert "Still locked by this run (could not be reached to clean up): web4" in stderr
    assert_cleaned_up(ssh_project, "web1", [], "web4 failed")
    assert not (root_of(ssh_project, "web1") / "current").exists()


def test_sigterm_cleans_up_every_host_as_ctrl_c_does(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    before = {host: (current(ssh_project, host), release_ids(ssh_project, host)) for host in ("web1", "web2")}
    markers = [stall_builds(ssh_project, host) for host in ("web1", "web2")]
    ssh_project.write_inventory()
    ssh_project.commit("cancelled in CI")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2")
    try:
        wait_for(*markers, process=fab)
        assert all((root_of(ssh_project, host) / "deploy.lock").exists() for host in ("web1", "web2"))
        fab.send_signal(signal.SIGTERM)
        _, stderr = fab.communicate(timeout=120)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    assert "Error: terminated (SIGTERM): no host was switched; the half-built releases were removed" in stderr
    for host in ("web1", "web2"):
        assert current(ssh_project, host) == before[host][0]
        assert_cleaned_up(ssh_project, host, before[host][1], "terminated (SIGTERM) on the laptop")


def test_a_dropped_connection_is_reported_as_lost_and_the_host_still_cleaned_up(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    serve_from(ssh_project, "web2", own_sshd)
    marker = stall_builds(ssh_project, "web2")
    ssh_project.write_inventory()
    ssh_project.commit("web2 drops")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2")
    try:
        wait_for(marker, process=fab)
        own_sshd.signal_all(signal.SIGKILL, only_sshd=True)  # the sshd serving the deploy dies; the host lives
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    assert "web2: connection lost during build (preparing the installer (pip)" in stderr
    assert "failed:" not in stderr.split("web2: ")[1].splitlines()[0], "not reported as the step's failure"
    assert "Still locked" not in stderr, "web2 answers again: this run's lock there is released"
    assert_cleaned_up(ssh_project, "web2", [], "connection lost during build")
    assert_cleaned_up(ssh_project, "web1", [], "web2 failed")


def test_sigterm_during_the_switch_says_where_each_host_stands(ssh_project: Project) -> None:
    """One host switches at a time: the signal comes while web1 switches; web1 finishes, web2 never starts."""
    marker = root_of(ssh_project, "web1").parent / "switching"
    ssh_project.inventory["stages"]["test"]["hosts"]["web1"]["after_switch"] = [f"touch {marker}; sleep 2"]
    ssh_project.inventory["stages"]["test"]["parallel"] = 1
    ssh_project.write_inventory()
    ssh_project.commit("switch slowly")
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    plan = plan_deploy(inventory, inventory.hosts("test", "web1,web2"), "HEAD")

    def terminate_when_switching() -> None:
        wait_for(marker)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_switching, daemon=True).start()
    with pytest.raises(DeployError) as raised:
        run_deploy(plan, ssh_project.path)
    message = str(raised.value)
    assert message.startswith("terminated (SIGTERM) during the switch; where each host stands:")
    assert f"web1: live on {plan.release.id}" in message and "web2: still on no release (not switched)" in message
    assert current(ssh_project, "web1") == f"releases/{plan.release.id}"
    assert not (root_of(ssh_project, "web2") / "current").exists()
    assert_cleaned_up(ssh_project, "web2", [], "terminated (SIGTERM) on the laptop before this host switched")
    assert not (root_of(ssh_project, "web1") / "deploy.lock").exists()
    assert journal(ssh_project, "web1")[-1]["status"] == "ok"


def test_a_connection_lost_during_publish_keeps_the_lock_until_fab_unlock(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    """The host's publish step runs on to its end without the laptop (here a slow after-switch command): the run
    must not release a lock the host is still working under; fab unlock later journals what it completed."""
    serve_from(ssh_project, "web2", own_sshd)
    marker = root_of(ssh_project, "web2").parent / "switching"
    ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["after_switch"] = [f"touch {marker}; sleep 2"]
    ssh_project.write_inventory()
    ssh_project.commit("web2 drops while switching")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2")
    try:
        wait_for(marker, process=fab)
        own_sshd.signal_all(signal.SIGKILL, only_sshd=True)  # the connection drops; the host and its publish live
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    assert "web2: connection lost during switch" in stderr, stderr
    assert "its lock is kept" in stderr and "fab unlock --stage test --hosts web2" in stderr
    assert (root_of(ssh_project, "web2") / "deploy.lock").exists(), "the lock is kept"
    until = deadline(60)
    record = root_of(ssh_project, "web2") / "deploy.lock" / "switch.json"
    while '"published"' not in record.read_text() and time.monotonic() < until:
        time.sleep(0.1)  # the host finishes its publish on its own
    assert not (root_of(ssh_project, "web1") / "current").exists(), "web1 (same batch) was switched back"
    unlocked = ssh_project.fab("unlock", "--hosts", "web2")
    assert not (root_of(ssh_project, "web2") / "deploy.lock").exists(), unlocked.stdout
    last = journal(ssh_project, "web2")[-1]
    assert last["status"] == "ok" and current(ssh_project, "web2") == f"releases/{last['release']}"
