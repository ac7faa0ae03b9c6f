"""Deploy, rollback, releases and unlock against a real sshd, real git, real venvs and a real HTTP mirror."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from deploytool.errors import DeployError
from deploytool.flow import phases
from deploytool.flow.deploy import plan_deploy, run_deploy
from deploytool.inventory import load_inventory
from tests.conftest import Project
from tests.isolation import wait_for
from tests.sshd import SshServer
from tests.wheelfactory import make_wheel


def root_of(project: Project, host: str = "web1") -> Path:
    return Path(project.inventory["stages"]["test"]["hosts"][host]["root"])


def current(project: Project, host: str = "web1") -> str:
    return os.readlink(root_of(project, host) / "current")


def journal(project: Project, host: str = "web1") -> list[dict[str, str]]:
    return [json.loads(line) for line in (root_of(project, host) / "journal.jsonl").read_text().splitlines()]


def app_version(project: Project, host: str = "web1") -> str:
    """Import the deployed app with the release's own venv, as the app server would."""
    release = root_of(project, host) / "current"
    result = subprocess.run(
        [str(release / "venv" / "bin" / "python"), "-c", "import app; print(app.VERSION)"],
        cwd=release,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def release_ids(project: Project, host: str = "web1") -> list[str]:
    return sorted(os.listdir(root_of(project, host) / "releases"))


@pytest.mark.cold_hosts  # a host's very first deploy, tools venv and all
def test_first_deploy_builds_a_release_and_switches(ssh_project: Project) -> None:
    commit = ssh_project.commit("app")
    result = ssh_project.fab("deploy", "--hosts", "web1")
    (release,) = release_ids(ssh_project)
    assert release.endswith(commit[:7])
    assert current(ssh_project) == f"releases/{release}"
    assert app_version(ssh_project) == "1.0"
    manifest = json.loads((root_of(ssh_project) / "current" / ".deploytool.json").read_text())
    assert manifest["commit"] == commit and manifest["host"] == "web1"
    assert (root_of(ssh_project) / "current" / "logs").resolve() == root_of(ssh_project) / "shared" / "logs"
    assert [(e["event"], e["status"], e["release"]) for e in journal(ssh_project)] == [("deploy", "ok", release)]
    assert not (root_of(ssh_project) / "deploy.lock").exists()
    assert not (root_of(ssh_project, "web2") / "releases").exists(), "--hosts must limit the deploy"
    assert f"Deployed {release}" in result.stdout


def test_second_deploy_then_rollback_and_rollback_to(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    first = current(ssh_project).removeprefix("releases/")
    ssh_project.commit("upgrade", {"requirements/prod.txt": "demo-lib==2.0\ndemo-helper==1.0\n"})
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    second = current(ssh_project).removeprefix("releases/")
    assert second != first and app_version(ssh_project, "web2") == "2.0"

    listing = ssh_project.fab("releases", "--hosts", "web1").stdout
    assert f"* {second}" in listing and first in listing and "previous" in listing

    ssh_project.fab("rollback", "--hosts", "web1,web2")
    for host in ("web1", "web2"):
        assert current(ssh_project, host) == f"releases/{first}"
        assert app_version(ssh_project, host) == "1.0"
        assert journal(ssh_project, host)[-1] | {"time": None} == journal(ssh_project, host)[-1] | {
            "event": "rollback", "release": first, "from": second, "status": "ok", "time": None,
        }  # fmt: skip

    # A second plain rollback does not bounce back to the release we just left: there is nothing earlier.
    refused = ssh_project.fab("rollback", "--hosts", "web1", check=False)
    assert refused.returncode == 1 and "no earlier good release" in refused.stderr
    assert current(ssh_project) == f"releases/{first}"

    ssh_project.fab("rollback", "--hosts", "web1,web2", "--to", second)
    assert current(ssh_project, "web2") == f"releases/{second}" and app_version(ssh_project, "web2") == "2.0"


def test_rollback_to_a_release_one_host_lacks_switches_nothing(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    ssh_project.commit("second")
    ssh_project.fab("deploy", "--hosts", "web1")
    only_on_web1 = current(ssh_project).removeprefix("releases/")
    before = {host: current(ssh_project, host) for host in ("web1", "web2")}
    result = ssh_project.fab("rollback", "--hosts", "web1,web2", "--to", only_on_web1, check=False)
    assert result.returncode == 1
    assert f"release {only_on_web1} is not on web2" in result.stderr and "Traceback" not in result.stderr
    assert {host: current(ssh_project, host) for host in ("web1", "web2")} == before
    assert not (root_of(ssh_project, "web1") / "deploy.lock").exists()


def test_keep_releases_prunes_oldest_but_never_current_or_rollback_target(ssh_project: Project) -> None:
    for number in range(5):
        ssh_project.commit(f"change {number}")
        ssh_project.fab("deploy", "--hosts", "web3")
    kept = release_ids(ssh_project, "web3")
    assert len(kept) == 3  # keep_releases: 3
    assert current(ssh_project, "web3") == f"releases/{kept[-1]}"
    deployed = [e["release"] for e in journal(ssh_project, "web3") if e["event"] == "deploy"]
    assert kept == deployed[-3:]
    trash = root_of(ssh_project, "web3") / "trash"
    # Pruned releases are deleted in the background, after the lock is released.
    wait_for(lambda: not trash.exists() or not any(trash.iterdir()), 10, "the pruned releases to be deleted")


def test_a_host_running_another_python_than_the_one_checked_is_refused(ssh_project: Project) -> None:
    ssh_project.inventory["python_version"] = "3.9.0"
    ssh_project.write_inventory()
    ssh_project.commit("wrong python")
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is Python 3.11" in result.stderr and "hosts.yml says python_version 3.9.0" in result.stderr
    assert not (root_of(ssh_project) / "current").exists() and release_ids(ssh_project) == []
    assert not (root_of(ssh_project) / "deploy.lock").exists()


def test_pin_missing_from_the_mirror_stops_the_deploy_before_any_host_is_touched(ssh_project: Project) -> None:
    ssh_project.commit("bad pin", {"requirements/prod.txt": "demo-lib==9.9\ndemo-helper==1.0\n"})
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no host was touched" in result.stderr
    assert "requirements/prod.txt:1: demo-lib==9.9 is not in the mirror" in result.stderr
    assert not (root_of(ssh_project) / "releases").exists()


def test_failing_install_leaves_current_and_releases_the_lock(ssh_project: Project, tmp_path: Path) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    good = current(ssh_project)
    # The laptop's wheelhouse has a wheel the hosts' mirror lacks (an unpublished mirror): the laptop check
    # passes and pip on the hosts fails.
    make_wheel(tmp_path / "wheels", "demo-lib", "9.9")
    ssh_project.inventory["wheelhouse"] = str(tmp_path / "wheels")
    ssh_project.write_inventory()
    ssh_project.commit("bad pin", {"requirements/prod.txt": "demo-lib==9.9\n"})
    result = ssh_project.fab("deploy", "--hosts", "web1,web2", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "installing requirements failed" in result.stderr and "demo-lib==9.9" in result.stderr
    assert "web1:" in result.stderr and "web2:" in result.stderr
    for host in ("web1", "web2"):
        assert current(ssh_project, host) == good
        assert release_ids(ssh_project, host) == [good.removeprefix("releases/")], "half-built release removed"
        assert not (root_of(ssh_project, host) / "deploy.lock").exists()
        last = journal(ssh_project, host)[-1]
        assert last["status"] == "failed" and "installing requirements failed" in last["reason"]
    assert app_version(ssh_project) == "1.0"


def test_concurrent_deploy_is_blocked_by_the_lock_and_unlock_clears_it(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web4")
    lock = root_of(ssh_project, "web4") / "deploy.lock"
    # Hold the lock the way a running deploy does, then race two deploys: exactly one may pass.
    lock.mkdir()
    (lock / "owner.json").write_text(
        '{"action": "deploy", "user": "alice@laptop", "since": "2026-11-21T10:00:00+00:00"}\n'
    )
    owner = lock.parent.stat()
    for path in (lock, lock / "owner.json"):
        os.chown(path, owner.st_uid, owner.st_gid)  # as if the deploy user's crashed run had left it
    result = ssh_project.fab("deploy", "--hosts", "web4", check=False)
    assert result.returncode == 1
    assert (
        "locked: deploy" in result.stderr and "alice@laptop" in result.stderr and "2026-11-21T10:00:00" in result.stderr
    )
    assert lock.exists(), "the loser must not remove someone else's lock"
    unlocked = ssh_project.fab("unlock", "--hosts", "web4")
    assert "removed the lock of deploy by alice@laptop since 2026-11-21T10:00:00" in unlocked.stdout
    assert not lock.exists()

    ssh_project.commit("race")
    outcomes: list[subprocess.CompletedProcess[str]] = []
    racers = [
        threading.Thread(target=lambda: outcomes.append(ssh_project.fab("deploy", "--hosts", "web4", check=False)))
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    codes = sorted(outcome.returncode for outcome in outcomes)
    assert codes == [0, 1], [outcome.stderr for outcome in outcomes]
    loser = next(outcome for outcome in outcomes if outcome.returncode == 1)
    assert "locked: deploy" in loser.stderr
    assert not lock.exists()


def test_unknown_and_changed_host_keys_are_refused(ssh_project: Project, tmp_path: Path) -> None:
    stage = ssh_project.inventory["stages"]["test"]
    real = Path(stage["known_hosts"]).read_text().splitlines()
    unknown = tmp_path / "known_hosts_without_web1"
    unknown.write_text("\n".join(line for line in real if "127.0.0.2" not in line) + "\n")
    stage["known_hosts"] = str(unknown)
    ssh_project.write_inventory()
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "host key of 127.0.0.2" in result.stderr and "is unknown" in result.stderr
    assert not (root_of(ssh_project) / "releases").exists(), "nothing may happen on an unverified host"
    # The offered key's fingerprint as OpenSSH prints it (ssh-keygen -l), never MD5 hex.
    listing = subprocess.run(["ssh-keygen", "-lf", "/dev/stdin"], input=real[0], capture_output=True, text=True)
    fingerprint = listing.stdout.split()[1]
    assert fingerprint.startswith("SHA256:") and f"ssh-ed25519 {fingerprint})" in result.stderr
    assert not re.search(r"\b[0-9a-f]{32}\b", result.stderr)

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other_key = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    changed = tmp_path / "known_hosts_changed"
    changed.write_text(
        "\n".join(line if "127.0.0.2" not in line else line.split()[0] + " " + other_key for line in real) + "\n"
    )
    stage["known_hosts"] = str(changed)
    ssh_project.write_inventory()
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "does not match" in result.stderr and "Traceback" not in result.stderr
    assert f"(got ssh-ed25519 {fingerprint})" in result.stderr
    assert not (root_of(ssh_project) / "releases").exists()


def test_a_root_with_glob_and_shell_characters_deploys_and_reports_no_drift(ssh_project: Project) -> None:
    """Issue 21 (found by the fault checks): host modules globbed patterns built from the root unescaped, so a root
    like this failed in the bytecode step ("no site-packages under ...") and survey looked in the wrong places."""
    parent = root_of(ssh_project).parent
    odd = parent / "gl*b?[x] $HOME"
    odd.mkdir()
    owner = parent.stat()
    os.chown(odd, owner.st_uid, owner.st_gid)
    ssh_project.inventory["stages"]["test"]["hosts"]["web1"]["root"] = str(odd / "app")
    ssh_project.write_inventory()
    ssh_project.commit("odd root")
    ssh_project.fab("deploy", "--hosts", "web1")
    assert app_version(ssh_project) == "1.0"
    status = ssh_project.fab("status", "--hosts", "web1", "--json")
    host = json.loads(status.stdout)["hosts"][0]
    assert host["current"] == current(ssh_project).removeprefix("releases/"), host
    assert host["drift"] == [] and host["warnings"] == [], host


def test_without_known_hosts_in_hosts_yml_ssh_configs_user_known_hosts_file_is_read(
    ssh_project: Project, ssh_server: SshServer, tmp_path: Path
) -> None:
    stage = ssh_project.inventory["stages"]["test"]
    del stage["known_hosts"]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host 127.0.0.2\n  UserKnownHostsFile {empty}\nHost *\n  UserKnownHostsFile {ssh_server.known_hosts}\n"
    )
    stage["ssh_config"] = str(config)
    ssh_project.write_inventory()
    ssh_project.fab("deploy", "--hosts", "web2")  # the connection and git's push both checked the key there
    assert current(ssh_project, "web2")
    refused = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"host key of 127.0.0.2:{ssh_server.port} is unknown: it is not in {empty}" in refused.stderr
    assert not (root_of(ssh_project) / "current").exists()


def test_deploy_to_four_hosts_and_one_unreachable_host_stops_all(ssh_project: Project) -> None:
    ssh_project.fab("deploy")
    releases = {current(ssh_project, host) for host in ("web1", "web2", "web3", "web4")}
    assert len(releases) == 1
    ssh_project.inventory["stages"]["test"]["hosts"]["web4"]["port"] = 1  # nothing listens there
    ssh_project.write_inventory()
    ssh_project.commit("next")
    result = ssh_project.fab("deploy", check=False)
    assert result.returncode == 1 and "web4: cannot connect to 127.0.0.5:1" in result.stderr
    assert {current(ssh_project, host) for host in ("web1", "web2", "web3")} == releases
    assert all(len(release_ids(ssh_project, host)) == 1 for host in ("web1", "web2", "web3"))


def test_one_host_failing_to_prepare_stops_the_switch_on_every_host(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    before = {host: (current(ssh_project, host), release_ids(ssh_project, host)) for host in ("web1", "web2")}
    lock = root_of(ssh_project, "web2") / "deploy.lock"
    lock.mkdir()
    owner = lock.parent.stat()
    os.chown(lock, owner.st_uid, owner.st_gid)  # someone else's deploy holds web2
    ssh_project.commit("next")
    result = ssh_project.fab("deploy", "--hosts", "web1,web2", check=False)
    assert result.returncode == 1 and "web2: locked" in result.stderr and "No host was switched" in result.stderr
    assert {host: (current(ssh_project, host), release_ids(ssh_project, host)) for host in ("web1", "web2")} == before
    assert not (root_of(ssh_project, "web1") / "deploy.lock").exists(), "web1's own lock is released"
    assert lock.exists(), "the other run's lock on web2 is left alone"
    assert (
        journal(ssh_project, "web1")[-1]["status"] == "failed"
        and "web2 failed" in journal(ssh_project, "web1")[-1]["reason"]
    )


def test_an_interrupted_deploy_cleans_up_every_host_it_locked(
    ssh_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while hosts are being prepared: no host switches, every lock this run took is released."""
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    before = {host: (current(ssh_project, host), release_ids(ssh_project, host)) for host in ("web1", "web2")}
    ssh_project.commit("next")
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    hosts = inventory.hosts("test", "web1,web2")
    real_build = phases.build

    def build_then_interrupt(target: phases.Target, *args: Any) -> None:
        real_build(target, *args)  # the release is really built on the host...
        raise KeyboardInterrupt  # ...and then the user presses Ctrl-C

    monkeypatch.setattr(phases, "build", build_then_interrupt)
    with pytest.raises(DeployError, match=r"interrupted \(Ctrl-C\): no host was switched"):
        run_deploy(plan_deploy(inventory, hosts, "HEAD"), ssh_project.path)
    for host in ("web1", "web2"):
        assert (current(ssh_project, host), release_ids(ssh_project, host)) == before[host]
        assert not (root_of(ssh_project, host) / "deploy.lock").exists()
        assert journal(ssh_project, host)[-1]["reason"] == "interrupted (Ctrl-C) on the laptop"


def test_a_second_run_of_the_same_release_never_deletes_the_first(ssh_project: Project) -> None:
    """Same commit, same second: the second run fails on "already exists" and must not remove that release."""
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    plan = plan_deploy(inventory, inventory.hosts("test", "web1"), "HEAD")
    run_deploy(plan, ssh_project.path)
    with pytest.raises(DeployError, match="already exists"):
        run_deploy(plan, ssh_project.path)
    assert current(ssh_project) == f"releases/{plan.release.id}"
    assert release_ids(ssh_project) == [plan.release.id]
    assert app_version(ssh_project) == "1.0"


def test_pruning_never_fails_a_good_switch(ssh_project: Project) -> None:
    for number in range(3):
        ssh_project.commit(f"change {number}")
        ssh_project.fab("deploy", "--hosts", "web3")
    trash = root_of(ssh_project, "web3") / "trash"
    wait_for(lambda: not trash.exists() or not any(trash.iterdir()), 10, "the previous run's background deletion")
    shutil.rmtree(trash, ignore_errors=True)
    trash.write_text("not a directory\n")  # pruning cannot move anything there now
    ssh_project.commit("change 4")
    ssh_project.fab("deploy", "--hosts", "web3")
    assert len(release_ids(ssh_project, "web3")) == 4, "the release to prune stays until next time"
    assert journal(ssh_project, "web3")[-1]["status"] == "ok"
    assert current(ssh_project, "web3").endswith(journal(ssh_project, "web3")[-1]["release"])
