"""Deploy logs that stay: each host keeps every step of every run in ``<root>/deploy-logs/<release>.jsonl`` (written
by the host-side modules as they run), the laptop keeps the run's log, and ``fab log`` reads a host's back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deploytool.hostside import finish
from tests.conftest import Project

pytestmark = pytest.mark.integration  # real sshd, real deploys


def root_of(project: Project, host: str = "web1") -> Path:
    return Path(project.inventory["stages"]["test"]["hosts"][host]["root"])


def host_log(project: Project, release: str, host: str = "web1") -> list[dict[str, object]]:
    path = root_of(project, host) / "deploy-logs" / f"{release}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_step_is_logged_on_the_host_and_the_laptop_and_fab_log_shows_it(
    ssh_project: Project, tmp_path: Path
) -> None:
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    ssh_project.inventory["stages"]["test"]["after_switch"] = ["echo hook-said-$DEPLOYTOOL_RELEASE"]
    ssh_project.write_inventory()
    done = ssh_project.fab("deploy", "--hosts", "web1,web2", env=state)
    (good,) = re.findall(r"Deployed (\S+) ", done.stdout)

    lines = host_log(ssh_project, good)
    steps = [(line["phase"], line["step"], line["ok"]) for line in lines]
    assert ("build", "installing requirements", True) in steps
    assert ("publish", "after-switch command: echo hook-said-$DEPLOYTOOL_RELEASE", True) in steps
    assert steps[-1] == ("finish", f"journal: deploy ok: {good}", True)
    assert {line["action"] for line in lines} == {"deploy"} and len({line["run"] for line in lines}) == 1
    hook = next(line for line in lines if str(line["step"]).startswith("after-switch"))
    assert hook["output"] == f"hook-said-{good}\n"
    install = next(line for line in lines if line["step"] == "installing requirements")
    assert "demo-lib" in str(install["output"]).lower() or "demo_lib" in str(install["output"]).lower()

    (laptop,) = (tmp_path / "state" / "deploytool" / "demo" / "test").glob("*-deploy.log")
    text = laptop.read_text()
    assert text.startswith(f"# deploytool deploy of {good} to stage test (web1, web2)")
    assert re.search(r"web1  build  ok  ", text) and re.search(r"web2  publish  ok  ", text)
    assert f"    | hook-said-{good}" in text  # the hosts' output, per phase

    shown = ssh_project.fab("log", "--hosts", "web1").stdout
    assert f"web1: release {good} ({root_of(ssh_project)}/deploy-logs/{good}.jsonl)" in shown
    assert "installing requirements" in shown and f"      | hook-said-{good}" in shown

    # A failing hook: the error says where the whole log is; the host's log of the failed release stays.
    ssh_project.inventory["stages"]["test"]["after_switch"] = ["echo broken-hook-output; exit 3"]
    ssh_project.write_inventory()
    ssh_project.commit("next")
    failed = ssh_project.fab("deploy", "--hosts", "web1,web2", env=state, check=False)
    assert failed.returncode == 1
    (bad,) = re.findall(r"Deploying (\S+) ", failed.stdout)
    (second,) = sorted(set((tmp_path / "state" / "deploytool" / "demo" / "test").glob("*-deploy.log")) - {laptop})
    assert f"The whole log: {second}; each host's: fab log --stage test --release {bad}" in failed.stderr
    assert "broken-hook-output" in second.read_text()
    assert "\nError: deploy failed: batch 1 of 1 failed" in second.read_text()  # the outcome ends it
    steps = [(line["phase"], line["step"], line["ok"]) for line in host_log(ssh_project, bad)]
    assert ("publish", "after-switch command: echo broken-hook-output; exit 3", False) in steps
    assert ("publish", f"switching current to {good}", True) in steps, "the revert is in the same log"
    assert steps[-1][0] == "finish" and steps[-1][1] == f"journal: deploy failed: {bad}"
    shown = ssh_project.fab("log", "--hosts", "web2", "--release", bad).stdout
    assert "FAILED" in shown and "      | broken-hook-output" in shown
    brief = ssh_project.fab("log", "--hosts", "web2", "--release", bad, "--brief").stdout
    assert "broken-hook-output" not in brief.replace("echo broken-hook-output", "")

    # A rollback logs into the log of the release it returns to.
    ssh_project.inventory["stages"]["test"]["after_switch"] = []
    ssh_project.write_inventory()
    ssh_project.fab("deploy", "--hosts", "web1", env=state)
    ssh_project.fab("rollback", "--hosts", "web1", env=state)
    assert [line["action"] for line in host_log(ssh_project, good)][-1] == "rollback"


def test_fab_log_reads_a_hostile_log_as_data_and_bounded(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    logs = root_of(ssh_project) / "deploy-logs"
    fake = "20990101T000000Z-abcdef1"
    good_line = {"time": "t", "run": "r", "action": "deploy", "phase": "build", "step": "s\x1b[2J", "ok": True,
                 "seconds": 1.0, "output": "evil\x1b]0;title\x07 \u202e text"}  # fmt: skip
    filler = json.dumps({**good_line, "step": "filler", "output": "x" * 5000}) + "\n"
    (logs / f"{fake}.jsonl").write_text(
        filler * 300 + "not json\n" + '{"ok": "yes"}\n' + json.dumps(good_line) + "\n" + "[1, 2]\n"
    )
    shown = ssh_project.fab("log", "--hosts", "web1", "--release", fake)
    assert f"web1: release {fake} (" in shown.stdout and "its end only" in shown.stdout
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout and "\x07" not in shown.stdout
    assert "s\\x1b[2J" in shown.stdout and "evil\\x1b]0;title\\x07" in shown.stdout
    assert "(3 line(s) of" in shown.stdout
    assert shown.stdout.count("filler") < 300, "bounded: only the end of the file is read"
    # the newest log is the default; an unknown release is said, not an error; a bad id is refused on the laptop
    assert f"release {fake}" in ssh_project.fab("log", "--hosts", "web1").stdout
    missing = ssh_project.fab("log", "--hosts", "web1", "--release", "20000101T000000Z-abcdef1").stdout
    assert "no deploy log for release 20000101T000000Z-abcdef1" in missing
    bad = ssh_project.fab("log", "--hosts", "web1", "--release", "../../etc/passwd", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ")
    assert "no deploy log in" in ssh_project.fab("log", "--hosts", "web2").stdout


def test_finish_deletes_the_logs_of_releases_older_than_the_oldest_kept(tmp_path: Path) -> None:
    names = ["20260101T000000Z-aaaaaaa", "20260102T000000Z-bbbbbbb", "20260103T000000Z-ccccccc"]
    for name in names:
        (tmp_path / f"{name}.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("kept: not a release log")
    finish.prune_logs({"dir": str(tmp_path), "keep_from": names[1]})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", *(f"{n}.jsonl" for n in names[1:])])
