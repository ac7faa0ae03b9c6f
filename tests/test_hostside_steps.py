"""The host-side check, build and unlock modules and the shared sudo responder, run locally (no SSH)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from deploytool.connection.hostrun import progress
from deploytool.hostside import _common, build, check, unlock

OWNER = {"action": "deploy", "release": "r", "user": "bob@laptop", "since": "now", "run": "0123456789abcdef"}


def check_args(root: Path, **extra: object) -> dict[str, object]:
    args: dict[str, object] = {"root": str(root), "etc_root": str(root / "etc"), "allow_root": True}
    args.update(sudo=False, password=None, lock=OWNER, timeout=30)
    args.update(extra)
    return args


def test_check_makes_the_layout_takes_the_lock_and_reports_each_step(tmp_path: Path) -> None:
    answer = check.main(check_args(tmp_path))
    assert answer["ok"] and answer["releases"] == [] and answer["current_link"] == ""
    assert [step["step"] for step in answer["steps"]] == [
        "checking for git and python",
        f"making the deploy root {tmp_path}",
        "taking the lock and reading the state",
    ]
    assert {step["phase"] for step in answer["steps"]} == {"check"}
    assert (tmp_path / "repo.git/HEAD").is_file() and (tmp_path / "releases").is_dir()
    assert json.loads((tmp_path / "deploy.lock/owner.json").read_text()) == OWNER


def test_check_refuses_root_unless_allowed_and_says_why(tmp_path: Path) -> None:
    if os.getuid() != 0:
        return  # the refusal is about root; as another user the step passes (covered by the ssh tests)
    answer = check.main(check_args(tmp_path, allow_root=False))
    assert not answer["ok"] and answer["failed_step"] == "checking the deploy user"
    assert answer["error"].startswith("checking the deploy user failed: logged in as root;")
    assert not (tmp_path / "deploy.lock").exists(), "nothing was made"


def test_check_refuses_a_current_that_is_not_a_link_and_a_held_lock(tmp_path: Path) -> None:
    (tmp_path / "current").mkdir()
    answer = check.main(check_args(tmp_path))
    assert answer["failed_step"] == f"making the deploy root {tmp_path}" and "is not a symlink" in answer["error"]
    (tmp_path / "current").rmdir()
    assert check.main(check_args(tmp_path))["ok"]
    held = check.main(check_args(tmp_path, lock={**OWNER, "run": "other"}))
    assert (held["ok"], held["reason"]) == (False, "locked") and json.loads(held["owner"]) == OWNER


def test_build_stops_at_the_first_failed_step_and_says_which(tmp_path: Path) -> None:
    release = tmp_path / "releases/R1"
    release.mkdir(parents=True)
    stale = tmp_path / "releases/R0"
    stale.mkdir()
    args = {
        "root": str(tmp_path),
        "release": "R1",
        "commit": "a" * 40,
        "path": str(release),
        "repo": str(tmp_path / "repo.git"),
        "stale": [[str(stale), str(tmp_path / "trash/R0")]],
        "trash": str(tmp_path / "trash"),
        "timeout": 30,
    }
    answer = build.main(args)
    assert not answer["ok"] and not answer["no_space"] and answer["removed"] == ["R0"]
    assert answer["error"] == f"checking out {'a' * 12} failed: release R1 already exists on the host"
    assert [step["step"] for step in answer["steps"]] == ["removing incomplete releases R0", f"checking out {'a' * 12}"]
    assert not stale.exists()


def test_unlock_removes_a_lock_without_a_run_token_and_leaves_one_with_it(tmp_path: Path) -> None:
    assert unlock.main({"root": str(tmp_path)}) == {"ok": True, "locked": False}
    lock = tmp_path / "deploy.lock"
    lock.mkdir()
    (lock / "owner.json").write_text(json.dumps({"user": "bob"}) + "\n")
    (tmp_path / "current").symlink_to("releases/X")
    answer = unlock.main({"root": str(tmp_path), "only_if_owner": None})
    assert answer["locked"] and answer["removed"] and answer["current_link"] == "releases/X"
    assert not lock.exists()
    lock.mkdir()
    (lock / "owner.json").write_text(json.dumps(OWNER))
    (lock / "switch.json").write_text('{"state": "published"}\n')
    assert unlock.main({"root": str(tmp_path), "only_if_owner": "something else"}) == {"ok": True, "locked": False}
    answer = unlock.main({"root": str(tmp_path), "only_if_owner": json.dumps(OWNER)})
    assert (answer["removed"], answer["record"]) == (False, '{"state": "published"}') and lock.exists()


PROMPTER = """
import select, sys
for _ in range(int(sys.argv[1])):
    sys.stderr.write(sys.argv[2]); sys.stderr.flush()
    print("got " + sys.stdin.readline().strip(), flush=True)
more = select.select([sys.stdin], [], [], 0.5)[0]
print("then stdin holds: " + (repr(sys.stdin.readline()) if more else "nothing"), flush=True)
"""


def test_sudo_is_given_the_password_only_when_it_prompts() -> None:
    """The responder writes the password once per prompt it sees, and never otherwise: a program that reads its
    stdin without prompting gets nothing (issue 17: ``after_switch: ["... || cat"]`` printed it)."""
    sudo = _common.Sudo("s3cret 'x")
    ok, said = sudo.respond([sys.executable, "-c", PROMPTER, "2", sudo.prompt], 30)
    assert ok and said.splitlines() == ["got s3cret 'x", "got s3cret 'x", "then stdin holds: nothing"]
    ok, said = sudo.respond([sys.executable, "-c", PROMPTER, "0", sudo.prompt], 30)
    assert ok and said.strip() == "then stdin holds: nothing"
    assert sudo.argv(["true"]) == ["sudo", "-n", "--", "true"], "commands never read a password"


def test_each_step_is_announced_on_stderr_as_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """So that a host that stops answering, or a dropped connection, can be reported with the step it was in."""
    check.main(check_args(tmp_path))
    said = capsys.readouterr().err
    assert progress(said) == " (taking the lock and reading the state)"
    assert progress(said.rsplit("\n", 2)[0] + "\n") == f" (making the deploy root {tmp_path})"
    assert progress("Traceback ...\n") == ""


def test_a_counted_step_announces_each_package_and_keeps_the_run_semantics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = _common.Steps("build", timeout=30)
    steps.begin("installing requirements")
    printer = "import sys; print('Looking in links'); print('Collecting a==1'); print('Processing ./b.whl'); "
    done = steps.run([sys.executable, "-c", printer + "print(sys.stdin.read())"], "fed", count=build.PACKAGE_LINES)
    assert done.returncode == 0 and done.stdout.endswith("fed\n") and "Collecting a==1" in steps.current["output"]
    said = [json.loads(line)["progress"] for line in capsys.readouterr().err.splitlines()]
    assert said == ["installing requirements", "installing requirements (1 done)", "installing requirements (2 done)"]

    with pytest.raises(_common.StepFailed):
        steps.run([sys.executable, "-c", "print('Collecting x'); raise SystemExit(4)"], count=("Collecting ",))
    assert steps.current["ok"] is False and "Collecting x" in steps.current["output"]

    late = _common.run_lines([sys.executable, "-c", "import time; time.sleep(5)"], "", 0.5, lambda line: None)
    assert late.returncode == 124 and "timed out after 0.5s" in late.stdout
    missing = _common.run_lines(["/no/such/program"], "", 5, lambda line: None)
    assert missing.returncode == 127
