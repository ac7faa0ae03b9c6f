"""The host-side ``state`` module, run locally as a function: the lock is all-or-nothing, state reads are honest."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from deploytool.hostside import state

OWNER = {"action": "deploy", "release": "20261121T093000Z-1a2b3c4", "user": "alice@laptop", "run": "ab12"}


def leftovers(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(root) if name.startswith(".deploy.lock"))


def test_taking_the_lock_writes_the_owner_and_reads_the_state(tmp_path: Path) -> None:
    (tmp_path / "releases" / "20261121T093000Z-1a2b3c4").mkdir(parents=True)
    (tmp_path / "releases" / "a-file").write_text("")
    (tmp_path / "releases" / "a-link").symlink_to("/etc")
    (tmp_path / "current").symlink_to("releases/20261121T093000Z-1a2b3c4")
    (tmp_path / "journal.jsonl").write_text('{"a": 1}\n{"torn')
    answer = state.main({"root": str(tmp_path), "lock": OWNER})
    assert answer["ok"] is True
    assert answer["releases"] == ["20261121T093000Z-1a2b3c4"], "only directories, never symlinks or files"
    assert answer["current_link"] == "releases/20261121T093000Z-1a2b3c4"
    assert answer["journal"] == ['{"a": 1}', '{"torn']
    assert json.loads((tmp_path / "deploy.lock" / "owner.json").read_text()) == OWNER
    assert leftovers(tmp_path) == []


def test_a_taken_lock_is_never_replaced_even_an_empty_one(tmp_path: Path) -> None:
    assert state.main({"root": str(tmp_path), "lock": OWNER})["ok"]
    answer = state.main({"root": str(tmp_path), "lock": {**OWNER, "run": "other"}})
    assert answer["ok"] is False and answer["reason"] == "locked" and json.loads(answer["owner"]) == OWNER
    (tmp_path / "deploy.lock" / "owner.json").unlink()  # a hand-made or half-made lock: an empty directory
    answer = state.main({"root": str(tmp_path), "lock": OWNER})
    assert answer["reason"] == "locked" and answer["owner"] == ""
    assert os.listdir(tmp_path / "deploy.lock") == [] and leftovers(tmp_path) == []


def test_a_full_disk_while_writing_the_owner_leaves_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state.os, "fsync", full)
    answer = state.main({"root": str(tmp_path), "lock": OWNER})
    assert answer == {
        "ok": False,
        "reason": "no_space",
        "error": f"no space left on {tmp_path}: cannot take the lock; free some space on the host",
    }
    assert not (tmp_path / "deploy.lock").exists() and leftovers(tmp_path) == []


def test_an_unreadable_journal_is_an_error_and_gives_the_lock_back(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").mkdir()  # reading it fails (as root, chmod 000 would not: see the SSH test)
    answer = state.main({"root": str(tmp_path), "lock": OWNER})
    assert answer["ok"] is False and answer["reason"] == "unreadable"
    assert answer["error"].startswith(f"cannot read {tmp_path}/journal.jsonl: Is a directory")
    assert not (tmp_path / "deploy.lock").exists()


def test_no_journal_and_no_releases_yet_is_a_first_deploy(tmp_path: Path) -> None:
    answer = state.main({"root": str(tmp_path)})
    assert (answer["releases"], answer["journal"], answer["current_link"]) == ([], [], "")
    assert not (tmp_path / "deploy.lock").exists(), "reading takes no lock"
