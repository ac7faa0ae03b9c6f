"""A host is not trusted, and hosts break: a forged journal and release names, an unreadable journal, a full
disk, a release an interrupted run left. All over real SSH, against a real sshd."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploytool.connection.fleet import connected
from deploytool.flow import phases
from deploytool.flow.deploy import plan_deploy
from deploytool.flow.journal import shown
from deploytool.inventory import load_inventory
from tests.conftest import Project
from tests.sshd import DEPLOY_USER
from tests.test_deploy_ssh import current, journal, release_ids, root_of


def _as_deploy_user(path: Path) -> None:
    owner = path.parent.stat()
    os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def test_a_forged_journal_and_release_names_never_reach_git_on_the_laptop(ssh_project: Project, tmp_path: Path) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    live = current(ssh_project).removeprefix("releases/")
    root = root_of(ssh_project)
    pwned = tmp_path / "pwned"
    forged = {"event": "deploy", "release": live, "status": "ok", "from": None, "commit": f"--output={pwned}"}
    good_journal = (root / "journal.jsonl").read_text()
    (root / "journal.jsonl").write_text(good_journal + json.dumps(forged) + "\n")
    hostile = ["--output=x", f"{live}\nrelease 20261121T093000Z-1a2b3c4", "20261121T093000Z-zzzzzzz"]
    for name in hostile:
        (root / "releases" / name).mkdir()
        _as_deploy_user(root / "releases" / name)
    ssh_project.commit("next")

    for args in (("deploy", "--dry-run"), ("releases",), ("deploy",), ("rollback",)):
        result = ssh_project.fab(*args, "--hosts", "web1", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert (
            # shown(): quoted, and shortened past 80 characters, which tmp_path's length decides
            f"web1: {root}/journal.jsonl line 2: commit {shown(f'--output={pwned}')} is not a commit id; the journal "
            "is damaged or was tampered with (correct or remove that line)"
        ) in result.stderr
        assert not pwned.exists(), f"fab {' '.join(args)} let git write a file on the laptop"
    assert current(ssh_project) == f"releases/{live}" and not (root / "deploy.lock").exists()
    assert release_ids(ssh_project) == sorted([live, *hostile]), "nothing was built or removed"

    # Without the forged line: names under releases/ that are not release ids are not releases, and stay as they are.
    (root / "journal.jsonl").write_text(good_journal)
    listing = ssh_project.fab("releases", "--hosts", "web1").stdout
    assert listing.splitlines()[1:] == [line for line in listing.splitlines()[1:] if live in line]
    dry = ssh_project.fab("deploy", "--dry-run", "--hosts", "web1").stdout
    assert "commits:" in dry and "Nothing was changed." in dry and not pwned.exists()
    ssh_project.fab("deploy", "--hosts", "web1")
    assert set(hostile) <= set(release_ids(ssh_project)), "never pruned or removed: they are not releases"


def test_an_unreadable_journal_stops_the_deploy_before_anything_is_built(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    before = (current(ssh_project), release_ids(ssh_project))
    path = root_of(ssh_project) / "journal.jsonl"
    ssh_project.commit("next")
    for mode, said in ((0o000, "cannot read"), (0o444, "cannot append to")):
        path.chmod(mode)  # the SSH user is the deploy user, for whom this bites (the test runs as root)
        result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"web1: {said} {path}: " in result.stderr and "No host was switched" in result.stderr
        assert (current(ssh_project), release_ids(ssh_project)) == before
        assert not (root_of(ssh_project) / "deploy.lock").exists()
    path.chmod(0o644)
    with path.open("a") as torn:
        torn.write('{"event": "deploy", "rele')  # a write torn by a crash is tolerated
    ssh_project.fab("deploy", "--hosts", "web1")
    assert journal_lines(path)[-1]["status"] == "ok" and current(ssh_project) != before[0]


def journal_lines(path: Path) -> list[dict[str, str]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


@contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``, owned by the deploy user; unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    account = pwd.getpwnam(DEPLOY_USER) if os.geteuid() == 0 else None
    options = f"size={size},mode=0755" + (f",uid={account.pw_uid},gid={account.pw_gid}" if account else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs to fill up (needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(root: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={root / 'filler'}", "bs=64k"], capture_output=True)


@pytest.mark.cold_hosts
def test_a_full_disk_says_so_and_never_leaves_a_lock_behind(ssh_project: Project) -> None:
    root = root_of(ssh_project)
    with tiny_filesystem(root, "4m"):
        # A fresh host with 4 MB: the code fits, pip for the tools venv does not.
        result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        tools = root / "tools" / "venv"
        assert f"web1: no space left on {root} (preparing the installer (pip) in {tools} failed)" in result.stderr
        assert "ensurepip" not in result.stderr
        assert release_ids(ssh_project) == [] and not (root / "deploy.lock").exists()

        # Full to the last byte: the lock directory could still be made, its owner.json could not.
        fill(root)
        result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"web1: no space left on {root}: cannot take the lock; free some space on the host" in result.stderr
        assert not [name for name in os.listdir(root) if "lock" in name], "all or nothing: no lock left behind"

        (root / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,size=256m", str(root)], check=True)
        ssh_project.fab("deploy", "--hosts", "web1")
        assert journal(ssh_project)[-1]["status"] == "ok"


def test_a_release_an_interrupted_run_left_is_named_by_unlock_and_removed_by_the_next_deploy(
    ssh_project: Project,
) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    first = current(ssh_project).removeprefix("releases/")
    ssh_project.commit("second")
    ssh_project.fab("deploy", "--hosts", "web1")
    second = current(ssh_project).removeprefix("releases/")
    # A run killed after building its release: check, push and build ran, then nothing (no switch, no abort).
    ssh_project.commit("third")
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    plan = plan_deploy(inventory, inventory.hosts("test", "web1"), "HEAD")
    with connected(plan.hosts) as (target,):
        phases.check(target, {"action": "deploy", "release": plan.release.id, "user": "bob@laptop", "since": "now"})
        pack = phases.commit_pack(str(ssh_project.path), plan.release.commit, target.state.deploy_head)
        phases.build(target, plan.release, plan.install["web1"], None, pack)
    killed = plan.release.id
    assert release_ids(ssh_project) == sorted([first, second, killed])

    listing = ssh_project.fab("releases", "--hosts", "web1").stdout
    assert f"{killed}" in listing and "incomplete" in listing
    unlocked = ssh_project.fab("unlock", "--hosts", "web1").stdout
    assert unlocked.strip() == (
        f"web1: removed the lock of deploy {killed} by bob@laptop since now; release {killed} is incomplete "
        "(left by an interrupted run): the next deploy removes it"
    )
    ssh_project.commit("fourth")
    ssh_project.fab("deploy", "--hosts", "web1")
    newest = current(ssh_project).removeprefix("releases/")
    assert release_ids(ssh_project) == sorted([first, second, newest]), "only the incomplete one was removed"
    assert "incomplete" not in ssh_project.fab("unlock", "--hosts", "web1").stdout
