"""Hosts that stop answering, connections that drop, and runs stopped by SIGTERM or Ctrl-C, over real SSH.

The faults are real: a host's own sshd is frozen with SIGSTOP (with every process below it) or has the sshd
processes serving the deploy killed; ``fab`` gets a real SIGTERM. To stop a deploy at a known point, the
host's ``python`` is a wrapper that, asked to make a virtualenv (in the build), leaves a marker and sleeps.
"""

from __future__ import annotations

import contextlib
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


def _is_sshd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd")
    except OSError:
        return False


def _drop_during_publish(
    project: Project, server: sshd.SshServer, after_switch: str, *, listener_too: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """Deploy web1 and web2 (web2 served by ``server``) and, while web2's after-switch command runs (``touch
    marker; <after_switch>``), kill the sshd processes serving it (and with ``listener_too`` the listening sshd,
    so that it cannot be reached again); the host and its publish step live on. Returns fab and its stderr."""
    serve_from(project, "web2", server)
    marker = root_of(project, "web2").parent / "switching"
    project.inventory["stages"]["test"]["hosts"]["web2"]["after_switch"] = [f"touch {marker}; {after_switch}"]
    project.write_inventory()
    project.commit("web2 drops while switching")
    fab = start_fab(project, "deploy", "--hosts", "web1,web2")
    try:
        wait_for(marker, process=fab)
        sessions = [pid for pid in server.children() if _is_sshd(pid)]  # listed before the listener goes
        if listener_too:
            server.process.kill()
        for pid in sessions:  # the connection drops; the host and its publish live
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert "Traceback" not in stderr, stderr
    return fab, stderr


def test_a_connection_dropped_during_publish_is_reconnected_and_the_deploy_finishes(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    """Soak violation (issue 21): ``session_kill`` during publish, seed 2127 run 8, left the lock on a host that
    answered again. The run now reconnects, waits for the host's publish to end (``switch_wait``) and goes on
    with what it answered: here it passed, so the deploy ends everywhere on the new release, every lock released."""
    fab, stderr = _drop_during_publish(ssh_project, own_sshd, "sleep 2")
    assert fab.returncode == 0, stderr
    releases = {current(ssh_project, host) for host in ("web1", "web2")}
    assert len(releases) == 1 and None not in releases
    for host in ("web1", "web2"):
        assert not (root_of(ssh_project, host) / "deploy.lock").exists(), f"{host}: lock released"
        last = journal(ssh_project, host)[-1]
        assert last["status"] == "ok" and current(ssh_project, host) == f"releases/{last['release']}"


def test_a_publish_that_fails_after_the_connection_dropped_is_reverted_and_unlocked(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    """Soak violation (issue 21): ``session_kill`` during publish, seed 2127 run 8. The host's publish ends after the
    connection dropped, and fails (its after-switch command): the run learns that on reconnecting and switches
    every host back as for any failed publish, releasing web2's lock instead of keeping it."""
    fab, stderr = _drop_during_publish(ssh_project, own_sshd, "sleep 2; exit 3")
    assert fab.returncode == 1, stderr
    assert "Error: deploy failed: batch 1 of 1 failed (web2)" in stderr, stderr
    assert "web2: after-switch command" in stderr and "back on no release" in stderr, stderr
    for host in ("web1", "web2"):
        assert not (root_of(ssh_project, host) / "current").exists(), f"{host} was switched back"
        assert not (root_of(ssh_project, host) / "deploy.lock").exists(), f"{host}: lock released"
        assert journal(ssh_project, host)[-1]["status"] == "failed"


def test_a_host_unreachable_after_the_connection_dropped_during_publish_keeps_its_lock(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    """The host's publish step runs on to its end without the laptop (here a slow after-switch command) and the
    host cannot be reached again (its sshd is gone): the run must not release a lock the host is still working
    under, and its error says how it is cleared."""
    fab, stderr = _drop_during_publish(ssh_project, own_sshd, "sleep 2", listener_too=True)
    assert fab.returncode == 1, stderr
    assert "web2: connection lost during switch" in stderr and "it could not be reached again" in stderr, stderr
    assert "its lock is kept" in stderr and "fab unlock --stage test --hosts web2" in stderr
    assert "the next fab deploy from this machine takes its lock over" in stderr
    assert (root_of(ssh_project, "web2") / "deploy.lock").exists(), "the lock is kept"
    until = deadline(60)
    record = root_of(ssh_project, "web2") / "deploy.lock" / "switch.json"
    while '"published"' not in record.read_text() and time.monotonic() < until:
        time.sleep(0.1)  # the host finishes its publish on its own
    assert '"published"' in record.read_text()
    assert not (root_of(ssh_project, "web1") / "current").exists(), "web1 (same batch) was switched back"


def test_a_publish_killed_after_current_moved_is_journaled_and_no_good_release_is_pruned(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    """Soak violation (issue 21): ``sshd_kill`` during publish, seed 8 runs 1-2. The host's sshd died with every
    session, its publish step included, after ``current`` moved: no journal entry said so, and the next deploy
    pruned a good release to keep the unknown one. The takeover now journals the cut-short switch (failed, for a
    deploy) and pruning counts the releases that went live."""
    serve_from(ssh_project, "web2", own_sshd)
    ssh_project.write_inventory()
    for number in range(2):
        ssh_project.commit(f"good {number}")
        ssh_project.fab("deploy", "--hosts", "web2")
    good = release_ids(ssh_project, "web2")
    marker = root_of(ssh_project, "web2").parent / "switched"
    ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["after_switch"] = [f"touch {marker}; sleep 60"]
    ssh_project.write_inventory()
    ssh_project.commit("killed mid-publish")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web2")
    try:
        wait_for(marker, process=fab)
        own_sshd.signal_all(signal.SIGKILL)  # the host's sshd and every session below it, its publish included
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    assert "web2: connection lost during switch" in stderr and "its lock is kept" in stderr, stderr
    killed = current(ssh_project, "web2").removeprefix("releases/")
    assert killed not in good, "current had moved when the publish step was killed"

    own_sshd.restart()
    del ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["after_switch"]
    ssh_project.write_inventory()
    ssh_project.commit("after the kill")
    again = ssh_project.fab("deploy", "--hosts", "web2")
    takeover = next(line for line in again.stdout.splitlines() if line.split()[:2] == ["web2", "takeover"])
    assert f"cut short after the switch: the host is on {killed} (recorded in the journal now as failed)" in takeover
    recorded = [entry for entry in journal(ssh_project, "web2") if entry["release"] == killed]
    assert [entry["status"] for entry in recorded] == ["failed"] and "cut short" in recorded[0]["reason"]
    now = current(ssh_project, "web2").removeprefix("releases/")
    assert release_ids(ssh_project, "web2") == [*good, now], "keep_releases 3: both good ones kept, the killed gone"


def test_ctrl_c_between_batches_says_the_fleet_is_split_and_rollback_brings_it_together(ssh_project: Project) -> None:
    """Soak design question (issue 21, fab_sigint with --batch-size): Ctrl-C between batches leaves batch 1 live
    on the new release and the rest where they were, and ``fab rollback`` then refused ("hosts disagree on the
    previous release"). The error now says the fleet is split and what to type; the rollback brings every host
    back to the release the others are on."""
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    old = current(ssh_project, "web1")
    marker = root_of(ssh_project, "web1").parent / "switching"
    ssh_project.inventory["stages"]["test"]["hosts"]["web1"]["after_switch"] = [f"touch {marker}; sleep 2"]
    ssh_project.write_inventory()
    ssh_project.commit("interrupted between batches")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2", "--batch-size", "1")
    try:
        wait_for(marker, process=fab)
        fab.send_signal(signal.SIGINT)
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    new = current(ssh_project, "web1")
    assert new != old and current(ssh_project, "web2") == old, "batch 1 went live, batch 2 was never switched"
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: interrupted (Ctrl-C) during the switch; where each host stands:"], stderr
    new_id = new.removeprefix("releases/")
    assert f"The fleet is split: web1 on {new_id}, web2 not. To bring every host to one release: " in stderr
    assert "fab deploy --stage test" in stderr and "fab rollback --stage test" in stderr

    rolled = ssh_project.fab("rollback", "--hosts", "web1,web2", check=False)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert current(ssh_project, "web1") == current(ssh_project, "web2") == old
    for host in ("web1", "web2"):
        assert not (root_of(ssh_project, host) / "deploy.lock").exists()
    assert journal(ssh_project, "web1")[-1]["event"] == "rollback"


def test_a_connection_dropped_after_the_check_took_the_lock_leaves_no_lock(
    ssh_project: Project, own_sshd: sshd.SshServer
) -> None:
    """Soak violation (issue 21): ``session_kill`` during check, seed 2127 run 2 (``--faults session_kill``): the
    host's check took the lock, the connection dropped before its answer came back, and the run, not knowing it
    held the lock, left it. The clean-up now reconnects and releases a lock that carries this run's token."""
    serve_from(ssh_project, "web2", own_sshd)
    root = root_of(ssh_project, "web2").parent
    marker, wrapper = root / "checked", root / "python"
    wrapper.write_text(  # the check runs (and locks) to its end; its answer is held back until the drop
        "#!/bin/sh\n"
        f'case "$2" in *\'"check"\'*) out=$({HOST_PYTHON} "$@"); touch {marker}; '
        'sleep 30; echo "$out"; exit 0;; esac\n'
        f'exec {HOST_PYTHON} "$@"\n'
    )
    wrapper.chmod(0o755)
    ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["python"] = str(wrapper)
    ssh_project.write_inventory()
    ssh_project.commit("web2 drops after its check")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2")
    try:
        wait_for(marker, process=fab)
        assert (root_of(ssh_project, "web2") / "deploy.lock").exists(), "the check took the lock"
        own_sshd.signal_all(signal.SIGKILL, only_sshd=True)  # the connection drops; the host lives
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    assert "web2: connection lost during check" in stderr and "Still locked" not in stderr, stderr
    assert not (root_of(ssh_project, "web2") / "deploy.lock").exists(), "this run's lock was released"
    assert journal(ssh_project, "web2")[-1]["status"] == "failed"
    assert_cleaned_up(ssh_project, "web1", [], "web2 failed")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _sleep_after(marker: Path) -> int:
    """The ``sleep 31`` of the after-switch command that touched ``marker`` (its shell's command line names it)."""
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or Path(f"/proc/{entry}/cmdline").read_bytes() != b"sleep\x0031\x00":
                continue
            if str(marker).encode() in Path(f"/proc/{_parent(int(entry))}/cmdline").read_bytes():
                return int(entry)
        except OSError:
            continue
    raise AssertionError("the after-switch command's sleep was not found")


def test_a_publish_killed_on_a_live_connection_is_switched_back_not_removed(ssh_project: Project) -> None:
    """Found while fixing the soak's session_kill violation (issue 21): a publish process killed on the host (the
    connection still up) after ``current`` moved gave no answer, and the run dropped the new release as if it had
    never been switched to, leaving ``current`` pointing at nothing. The run now reads how far the publish got
    (``switch_wait``) and switches the host back."""
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    old = current(ssh_project, "web2")
    marker = root_of(ssh_project, "web2").parent / "after-switch"
    ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["after_switch"] = [f"touch {marker}; sleep 31"]
    ssh_project.write_inventory()
    ssh_project.commit("web2's publish is killed")
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2")
    try:
        wait_for(marker, process=fab)
        sleeper = _sleep_after(marker)
        shell = _parent(sleeper)
        os.kill(_parent(shell), signal.SIGKILL)  # the publish module's process; the connection stays up
        for pid in (shell, sleeper):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
    assert fab.returncode == 1 and "Traceback" not in stderr, stderr
    assert "web2: publish failed" in stderr and "its publish step was killed on the host (switched)" in stderr, stderr
    for host in ("web1", "web2"):
        assert current(ssh_project, host) == old, f"{host} is back on the release it had"
        assert (root_of(ssh_project, host) / "current").resolve().is_dir()
        assert not (root_of(ssh_project, host) / "deploy.lock").exists()
