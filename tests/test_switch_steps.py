"""The switch as host-side steps over real SSH: progress lines, the summary, --json, and a laptop killed mid-publish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import HOST_NAMES, Project
from tests.isolation import deadline
from tests.test_deploy_ssh import current, journal, root_of

TEMPLATE = "release={{ release_id }}\n"
HOST_KEYS = {"host", "result", "current", "seconds", "reason"}
EVENT_KEYS = {"host", "phase", "result", "start", "end", "seconds", "reason"}
DOCUMENT_KEYS = {
    "version",
    "command",
    "stage",
    "release",
    "commit",
    "ok",
    "error",
    "hosts",
    "events",
    "run",
    "log",
    "notes",
}


@pytest.fixture
def etc_project(ssh_project: Project) -> Project:
    """Every host with its own etc_root and a template naming the release."""
    for host in ssh_project.inventory["stages"]["test"]["hosts"].values():
        etc_root = Path(host["root"]).parent / "etc-root"
        etc_root.mkdir()
        parent = Path(host["root"]).parent.stat()
        os.chown(etc_root, parent.st_uid, parent.st_gid)
        host["etc_root"] = str(etc_root)
    ssh_project.write_inventory()
    ssh_project.commit("config", {"etc-mock/demo/app.conf.j2": TEMPLATE})
    return ssh_project


def installed_release(project: Project, host: str) -> str:
    """The release named by the config installed under the host's etc_root."""
    etc_root = Path(project.inventory["stages"]["test"]["hosts"][host]["etc_root"])
    lines = (etc_root / "demo/app.conf").read_text().splitlines()
    return next(line for line in lines if line.startswith("release=")).removeprefix("release=")


def assert_wholly_on_one_release(project: Project) -> dict[str, str]:
    """Every host's ``current`` and installed config name the same release (per host); returns them."""
    where = {}
    for host in HOST_NAMES:
        release = current(project, host).removeprefix("releases/")
        assert installed_release(project, host) == release, f"{host}: code on {release}, config elsewhere"
        where[host] = release
    return where


def test_json_document_has_its_documented_keys_and_every_phase(etc_project: Project) -> None:
    result = etc_project.fab("deploy", "--json")
    document = json.loads(result.stdout)
    assert set(document) == DOCUMENT_KEYS
    assert document["command"] == "deploy" and document["ok"] is True and document["error"] is None
    assert document["version"] == 1 and document["stage"] == "test" and len(document["commit"]) == 40
    assert [host["host"] for host in document["hosts"]] == list(HOST_NAMES)
    for host in document["hosts"]:
        assert set(host) == HOST_KEYS
        assert host["result"] == "ok" and host["current"] == document["release"] and host["reason"] is None
    for event in document["events"]:
        assert set(event) == EVENT_KEYS and event["result"] == "ok" and event["end"] >= event["start"]
    phases = [event["phase"] for event in document["events"] if event["host"] == "web1"]
    assert phases == ["connect", "check", "push", "build", "publish", "finish"]

    listing = json.loads(etc_project.fab("releases", "--json").stdout)
    assert set(listing) == {"version", "stage", "hosts"} and [h["host"] for h in listing["hosts"]] == list(HOST_NAMES)
    web1 = listing["hosts"][0]
    assert set(web1) == {"host", "root", "current", "previous", "releases"}
    assert web1["current"] == document["release"] and web1["previous"] is None
    assert web1["releases"] == [
        {"id": document["release"], "commit": document["commit"], "time": web1["releases"][0]["time"],
         "user": web1["releases"][0]["user"], "mark": "current"}
    ]  # fmt: skip

    rollback = json.loads(etc_project.fab("rollback", "--json", check=False).stdout)
    assert set(rollback) == DOCUMENT_KEYS and rollback["command"] == "rollback" and rollback["ok"] is False
    assert "no earlier good release" in rollback["error"]


def test_progress_lines_and_summary_for_four_hosts_one_failing(etc_project: Project) -> None:
    hosts = etc_project.inventory["stages"]["test"]["hosts"]
    hosts["web3"]["validate"] = ["echo 'config test failed: bad directive' >&2; exit 1"]
    etc_project.write_inventory()
    result = etc_project.fab("deploy", check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for host in HOST_NAMES:
        for phase in ("connect", "check", "push", "build"):
            assert any(line.split()[:3] == [host, phase, "ok"] for line in lines), (host, phase, result.stdout)
    failed = next(line for line in lines if line.split()[:3] == ["web3", "publish", "failed"])
    assert "validating config" in failed
    assert any("| config test failed: bad directive" in line for line in lines), "a failed step's output is shown"
    table = lines[lines.index(next(line for line in lines if line.startswith("host "))) :]
    assert table[0].split() == ["host", "release", "result", "time", "reason"]
    rows = {row.split()[0]: row.split() for row in table[1:5]}
    # One batch (the default): the hosts that went live are switched back, here to no release (a first deploy).
    assert rows["web1"][1:3] == ["-", "reverted"] and rows["web3"][1:3] == ["-", "failed"]
    assert any(line.split()[:3] == ["web1", "revert", "ok"] for line in lines)
    assert not (root_of(etc_project, "web1") / "current").exists()
    assert "Error: deploy failed: batch 1 of 1 failed (web3)" in result.stderr
    assert "web3: validating config" in result.stderr and "web3 is still on no release" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_laptop_killed_mid_publish_leaves_every_host_wholly_on_one_release(etc_project: Project) -> None:
    etc_project.fab("deploy")
    first = assert_wholly_on_one_release(etc_project)
    hosts = etc_project.inventory["stages"]["test"]["hosts"]
    validating = root_of(etc_project, "web2").parent / "validating"
    hosts["web2"]["validate"] = [f"touch {validating} && sleep 3"]
    etc_project.write_inventory()
    etc_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    record = root_of(etc_project, "web2") / "deploy.lock/switch.json"
    fab = subprocess.Popen(
        [sys.executable, "-m", "fabric", "deploy"],
        cwd=etc_project.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        until = deadline(120)
        while not validating.exists() and time.monotonic() < until and fab.poll() is None:
            time.sleep(0.05)
        assert record.exists() and validating.exists(), "web2 never started publishing"
        os.killpg(fab.pid, signal.SIGKILL)
    finally:
        fab.wait(timeout=30)
    until = deadline(30)
    # "switched" comes between "publishing" and "published": under load the poll may see it
    while json.loads(record.read_text())["state"] in ("publishing", "switched") and time.monotonic() < until:
        time.sleep(0.1)
    assert json.loads(record.read_text())["state"] == "published", "the host-side step ran to its end"
    after = assert_wholly_on_one_release(etc_project)
    assert after["web2"] != first["web2"], "web2 finished its switch although the laptop was gone"

    etc_project.commit("v3")
    again = etc_project.fab("deploy")
    takeover = next(line for line in again.stdout.splitlines() if line.split()[:2] == ["web2", "takeover"])
    assert "took over the lock of deploy" in takeover and "(that process is gone)" in takeover
    assert f"not been recorded: the host is on {after['web2']} (recorded in the journal now)" in takeover
    recorded = [entry for entry in journal(etc_project, "web2") if entry["release"] == after["web2"]]
    assert [entry["status"] for entry in recorded] == ["ok"], "the lost run's switch is journaled once"
    last = assert_wholly_on_one_release(etc_project)
    assert len(set(last.values())) == 1 and last["web2"] != after["web2"]
