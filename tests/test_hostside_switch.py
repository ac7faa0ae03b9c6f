"""The host-side publish and finish modules, run locally as functions (no SSH): every failure path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from deploytool.hostside import etc_install, finish, publish, switch_wait

A, B = "20260101T000000Z-aaaaaaa", "20260102T000000Z-bbbbbbb"
RUN = "0123456789abcdef"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A deploy root with releases A (current) and B, each with config, A's config installed, and our lock."""
    for rid, text in ((A, "a\n"), (B, "b\n")):
        (tmp_path / "releases" / rid / "etc/demo").mkdir(parents=True)
        (tmp_path / "releases" / rid / "etc/demo/app.conf").write_text(text)
    (tmp_path / "etc-root/demo").mkdir(parents=True)
    (tmp_path / "etc-root/demo/app.conf").write_text("a\n")
    (tmp_path / "current").symlink_to(f"releases/{A}")
    (tmp_path / "deploy.lock").mkdir()
    (tmp_path / "deploy.lock/owner.json").write_text(json.dumps({"run": RUN}))
    # A went live through the installer, which kept the record of its config (etc_install.Records)
    etc_install.Records(str(tmp_path / "etc-root"), str(tmp_path)).save(A, {"files": sums(tmp_path, A), "replaced": {}})
    return tmp_path


def sums(root: Path, rid: str) -> dict[str, dict[str, Any]]:
    """The sha256s of a release's config, as the laptop sends them for what it rendered."""
    top = root / "releases" / rid / "etc"
    found = {}
    for path in sorted(top.rglob("*")):
        if path.is_file():
            found[path.relative_to(top).as_posix()] = {
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "mode": path.stat().st_mode & 0o777,
            }
    return found


def publish_args(root: Path, release: str | None, previous: str | None, **extra: Any) -> dict[str, Any]:
    def etc(rid: str | None) -> str:
        return str(root / "releases" / rid / "etc") if rid else str(root / "tools/empty-etc")

    args = {
        "run": RUN,
        "lock_owner": str(root / "deploy.lock/owner.json"),
        "record": str(root / "deploy.lock/switch.json"),
        "current": str(root / "current"),
        "release": release,
        "link": f"releases/{release}" if release else None,
        "previous": previous,
        "etc": {
            "install": [etc(release), str(root / "etc-root"), etc(previous) if previous else ""],
            "restore": [etc(previous), str(root / "etc-root"), etc(release) if release else ""],
            "check": {  # a deploy of release: its files as rendered; the restore: the records
                "install": {
                    "root": str(root),
                    "release": release,
                    "previous": previous,
                    "expected": sums(root, release) if release else None,
                },
                "restore": {"root": str(root), "release": previous, "previous": release, "expected": None},
            },
        },
        "sudo": False,
        "password": None,
        "validate": [],
        "after_switch": [],
        "env": {"DEPLOYTOOL_RELEASE": release or ""},
    }
    args.update(extra)
    return args


def state(root: Path) -> tuple[str, str, str]:
    record = json.loads((root / "deploy.lock/switch.json").read_text())["state"]
    return os.readlink(root / "current"), (root / "etc-root/demo/app.conf").read_text(), record


def test_publish_installs_config_validates_swaps_and_runs_after_switch(root: Path) -> None:
    marker = root / "after"
    answer = publish.main(
        publish_args(
            root,
            B,
            A,
            validate=[f"grep -q b {root}/etc-root/demo/app.conf"],
            after_switch=[f'echo "$DEPLOYTOOL_RELEASE" > {marker}'],
        )
    )
    assert answer["ok"] and answer["switched"] and answer["current"] == B
    assert [step["step"].split(":")[0] for step in answer["steps"]] == [
        "installing config",
        "validating config",
        f"switching current to {B}",
        "after-switch command",
    ]
    assert state(root) == (f"releases/{B}", "b\n", "published")
    assert marker.read_text() == f"{B}\n", "commands get the release in their environment"


def test_rejected_config_is_put_back_and_current_stays(root: Path) -> None:
    answer = publish.main(publish_args(root, B, A, validate=["echo nope >&2; false"]))
    assert not answer["ok"] and not answer["switched"] and answer["current"] == A
    assert answer["failed_step"] == "validating config: echo nope >&2; false"
    assert "nope" in answer["steps"][1]["output"]
    assert state(root) == (f"releases/{A}", "a\n", "not switched")


def test_a_failed_after_switch_command_leaves_the_host_wholly_on_the_new_release(root: Path) -> None:
    answer = publish.main(publish_args(root, B, A, after_switch=["exit 7"]))
    assert not answer["ok"] and answer["switched"] and answer["current"] == B
    assert state(root) == (f"releases/{B}", "b\n", "switched")


def test_switch_wait_gives_the_answer_a_publish_recorded_once_done(root: Path) -> None:
    """What a run whose connection dropped mid-publish reads on reconnecting (soak, session_kill, seed 2127)."""
    answer = publish.main(publish_args(root, B, A, after_switch=["exit 7"]))
    found = switch_wait.main({"root": str(root), "run": RUN, "wait": 5})
    assert found["ours"] and found["done"] and not found["running"] and found["state"] == "switched"
    assert found["answer"] == json.loads(json.dumps(answer)) and found["current_link"] == f"releases/{B}"


def test_switch_wait_says_when_the_publish_was_killed_or_still_runs_or_the_lock_is_gone(root: Path) -> None:
    record = root / "deploy.lock/switch.json"
    gone = _exited_pid()
    record.write_text(json.dumps({"run": RUN, "state": "publishing", "pid": gone}))
    found = switch_wait.main({"root": str(root), "run": RUN, "wait": 5})
    assert found["ours"] and not found["done"] and not found["running"] and found["state"] == "publishing"
    record.write_text(json.dumps({"run": RUN, "state": "switched", "pid": os.getpid()}))
    started = time.monotonic()
    found = switch_wait.main({"root": str(root), "run": RUN, "wait": 0.5, "interval": 0.1})
    assert not found["done"] and found["running"] and time.monotonic() - started >= 0.5
    (root / "deploy.lock/owner.json").write_text(json.dumps({"run": "another"}))
    assert switch_wait.main({"root": str(root), "run": RUN, "wait": 5})["ours"] is False


def _exited_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_switching_to_no_release_removes_current_and_its_config(root: Path) -> None:
    answer = publish.main(publish_args(root, None, A))
    assert answer["ok"] and answer["current"] is None
    assert not os.path.lexists(root / "current") and not (root / "etc-root/demo/app.conf").exists()


def test_a_refused_config_changes_nothing(root: Path) -> None:
    (root / "etc-root/demo/app.conf").unlink()
    (root / "etc-root/demo/app.conf").mkdir()  # a directory where a file must go: refused up front
    answer = publish.main(publish_args(root, B, A))
    assert not answer["ok"] and not answer["switched"]
    assert [step["step"] for step in answer["steps"]] == ["installing config"], "nothing to restore after a refusal"
    assert os.readlink(root / "current") == f"releases/{A}"


def test_publish_refuses_a_lock_that_is_not_this_runs(root: Path) -> None:
    (root / "deploy.lock/owner.json").write_text(json.dumps({"run": "someone-else"}))
    answer = publish.main(publish_args(root, B, A))
    assert not answer["ok"] and "not this run's" in answer["error"] and answer["steps"] == []
    assert os.readlink(root / "current") == f"releases/{A}"


def test_a_hung_command_is_cut_off(root: Path) -> None:
    answer = publish.main(publish_args(root, B, A, validate=["sleep 30"], command_timeout=0.5))
    assert not answer["ok"] and "timed out" in answer["steps"][1]["output"]
    assert os.readlink(root / "current") == f"releases/{A}"


def finish_args(root: Path, **extra: Any) -> dict[str, Any]:
    args = {
        "journal": str(root / "journal.jsonl"),
        "entries": [],
        "prune": [],
        "remove": [],
        "record": str(root / "deploy.lock/switch.json"),
        "lock": str(root / "deploy.lock"),
        "lock_owner": str(root / "deploy.lock/owner.json"),
        "run": RUN,
        "unlock": True,
        "trash": str(root / "trash"),
    }
    args.update(extra)
    return args


def test_finish_journals_prunes_and_unlocks(root: Path) -> None:
    (root / "journal.jsonl").write_text('{"torn": ')  # a crash mid-write
    answer = finish.main(
        finish_args(root, entries=['{"release": "x"}'], prune=[[str(root / "releases" / A), str(root / "trash" / A)]])
    )
    assert answer["ok"] and answer["journaled"] and answer["unlocked"] and answer["pruned"] == [A]
    assert (root / "journal.jsonl").read_text() == '{"torn": \n{"release": "x"}\n', "a torn line damages only itself"
    assert not (root / "deploy.lock").exists() and not (root / "releases" / A).exists()


def test_finish_keeps_the_lock_when_the_journal_cannot_be_written(root: Path) -> None:
    (root / "journal.jsonl").mkdir()  # cannot be appended to
    answer = finish.main(finish_args(root, entries=['{"release": "x"}']))
    assert not answer["ok"] and "journal.jsonl" in answer["error"]
    assert (root / "deploy.lock").is_dir() and not answer["unlocked"]
    assert finish.main(finish_args(root, entries=['{"release": "x"}'], unlock="always"))["unlocked"]


def test_finish_never_releases_another_runs_lock(root: Path) -> None:
    (root / "deploy.lock/owner.json").write_text(json.dumps({"run": "someone-else"}))
    answer = finish.main(finish_args(root, entries=['{"release": "x"}'], unlock="always"))
    assert not answer["ok"] and (root / "deploy.lock").is_dir()
    assert not (root / "journal.jsonl").exists()


def test_a_swap_that_cannot_rename_puts_the_config_back_and_leaves_what_it_did_not_make(root: Path) -> None:
    blocker = root / f"current.{B}.tmp"
    blocker.mkdir()  # a directory where the new link must be made
    answer = publish.main(publish_args(root, B, A))
    assert not answer["ok"] and not answer["switched"] and answer["failed_step"] == f"switching current to {B}"
    assert state(root) == (f"releases/{A}", "a\n", "not switched")
    assert blocker.is_dir(), "what publish did not create is left alone"
