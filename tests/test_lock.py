"""``fab lock --message``: a lock with a reason, held over real SSH until ``fab unlock`` lifts it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deploytool.flow import deploylock
from tests.conftest import Project

pytestmark = pytest.mark.integration  # real sshd, real deploys

WHY = "db maintenance until 14:00"


def root_of(project: Project, host: str) -> Path:
    return Path(project.inventory["stages"]["test"]["hosts"][host]["root"])


def lock_of(project: Project, host: str) -> Path:
    return root_of(project, host) / "deploy.lock"


def test_a_held_lock_refuses_deploys_and_rollbacks_saying_who_why_and_since_when(ssh_project: Project) -> None:
    held = ssh_project.fab("lock", "--hosts", "web1,web2", "--message", WHY)
    assert held.stdout.count(f': "{WHY}"') == 2 and "until: fab unlock --stage test" in held.stdout
    owner = json.loads((lock_of(ssh_project, "web1") / "owner.json").read_text())
    assert owner["action"] == "hold" and owner["message"] == WHY and "pid" not in owner and "run" not in owner
    assert not lock_of(ssh_project, "web3").exists(), "--hosts limits the lock"

    # The `fab lock` process is gone, on this machine: the lock must still not be taken over as a dead run's.
    refused = ssh_project.fab("deploy", "--hosts", "web1,web2", check=False)
    assert refused.returncode == 1, refused.stdout
    for host in ("web1", "web2"):
        assert f'{host}: locked: held by {owner["user"]} since {owner["since"]}: "{WHY}"' in refused.stderr
        assert lock_of(ssh_project, host).exists()
        assert not os.listdir(root_of(ssh_project, host) / "releases"), "nothing was built"
    assert "when that is over: fab unlock --stage test" in refused.stderr
    assert "took over" not in refused.stdout + refused.stderr

    rollback = ssh_project.fab("rollback", "--hosts", "web1", check=False)
    assert rollback.returncode == 1 and f': "{WHY}"' in rollback.stderr and "since" in rollback.stderr

    status = ssh_project.fab("status", "--hosts", "web1,web3", check=False)
    assert f'held by {owner["user"]} since {owner["since"]}: "{WHY}"' in status.stdout
    document = json.loads(ssh_project.fab("status", "--hosts", "web1", "--json", check=False).stdout)
    lock = document["hosts"][0]["lock"]
    assert (lock["held"], lock["action"], lock["message"], lock["user"]) == (True, "hold", WHY, owner["user"])

    # A second lock on a held host: refused, naming the first.
    again = ssh_project.fab("lock", "--hosts", "web1", "--message", "other", check=False)
    assert again.returncode == 1 and WHY in again.stderr
    assert json.loads((lock_of(ssh_project, "web1") / "owner.json").read_text())["message"] == WHY

    lifted = ssh_project.fab("unlock", "--hosts", "web1,web2")
    assert f'web1: lifted the lock held by {owner["user"]} since {owner["since"]}: "{WHY}"' in lifted.stdout
    assert not lock_of(ssh_project, "web1").exists() and not lock_of(ssh_project, "web2").exists()
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    assert not lock_of(ssh_project, "web1").exists()


def test_lock_is_all_or_nothing_and_its_message_is_data(ssh_project: Project) -> None:
    busy = lock_of(ssh_project, "web2")
    busy.parent.mkdir(parents=True, exist_ok=True)
    busy.mkdir()
    (busy / "owner.json").write_text('{"action": "deploy", "user": "alice@laptop", "since": "2026-11-21T10:00"}\n')
    owner = busy.parent.parent.stat()
    for path in (busy.parent, busy, busy / "owner.json"):
        os.chown(path, owner.st_uid, owner.st_gid)
    result = ssh_project.fab("lock", "--hosts", "web1,web2", "--message", WHY, check=False)
    assert result.returncode == 1
    assert "web2: locked: deploy by alice@laptop" in result.stderr
    assert "Nothing is held (the lock just taken on web1 was lifted again)" in result.stderr
    assert not lock_of(ssh_project, "web1").exists(), "web1's hold was lifted again"
    assert busy.exists(), "the other run's lock is left alone"
    busy.joinpath("owner.json").unlink()
    busy.rmdir()

    # Control characters and an escape sequence travel as data (JSON on stdin) and are shown escaped.
    hostile = "\x1b[31mred\x1b[0m\nsecond line; rm -rf / $(id)"
    ssh_project.fab("lock", "--hosts", "web3", "--message", hostile)
    assert json.loads((lock_of(ssh_project, "web3") / "owner.json").read_text())["message"] == hostile.strip()
    refused = ssh_project.fab("deploy", "--hosts", "web3", check=False)
    assert refused.returncode == 1 and "\x1b" not in refused.stderr
    (said,) = [line for line in refused.stderr.splitlines() if "web3: locked" in line]
    assert '"?[31mred?[0m?second line; rm -rf / $(id)"; when that is over' in said

    for bad, said in (("", "--message is empty"), ("x" * 201, "keep it to 200")):
        out = ssh_project.fab("lock", "--hosts", "web4", "--message", bad, check=False)
        assert out.returncode == 1 and said in out.stderr and not lock_of(ssh_project, "web4").exists()
    missing = ssh_project.fab("lock", "--hosts", "web4", check=False)
    assert missing.returncode == 1 and "needs --message" in missing.stderr


def test_a_hold_is_never_taken_over_as_a_dead_run() -> None:
    owner = deploylock.hold_owner(WHY)
    text = json.dumps({**owner, "pid": 2**22 + 12345}, sort_keys=True)  # even with a pid that no process has
    assert not deploylock.holder_is_gone(text)
    assert deploylock.is_hold(text) and WHY in deploylock.holder(text, deploylock.Layout("/srv/x"))
