"""The mock /etc over real SSH: config follows deploys and rollbacks, and a rejected config changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from deploytool.errors import DeployError
from deploytool.flow.deploy import plan_deploy, run_deploy
from deploytool.inventory import load_inventory
from tests.conftest import Project
from tests.sshd import SshServer
from tests.test_deploy_ssh import current, release_ids, root_of

TEMPLATE = "workers={{ workers }}\nrelease={{ release_id }}\nvenv={{ venv }}\n"


@pytest.fixture
def config_project(ssh_project: Project, ssh_server: SshServer) -> Project:
    """web1 and web2 with their own etc_root, different workers, a validate and an after-switch command."""
    stage = ssh_project.inventory["stages"]["test"]
    stage["vars"] = {"workers": 2}
    for name in ("web1", "web2"):
        host = stage["hosts"][name]
        etc_root = Path(host["root"]).parent / "etc-root"
        etc_root.mkdir()
        os.chown(etc_root, Path(host["root"]).parent.stat().st_uid, Path(host["root"]).parent.stat().st_gid)
        host["etc_root"] = str(etc_root)
        host["validate"] = [f"! grep -q broken {etc_root}/demo/app.conf"]
        host["after_switch"] = [f"echo reloaded >> {etc_root}/reloads"]
    stage["hosts"]["web2"]["vars"] = {"workers": 8}
    ssh_project.write_inventory()
    ssh_project.commit(
        "config", {"etc-mock/demo/app.conf.j2": TEMPLATE, "etc-mock/cron.d/{{ app }}.j2": "* * * * * {{ user }} true\n"}
    )
    return ssh_project


def assert_kept(project: Project, live: str, config: str) -> None:
    """web1 kept the release ``live`` (what ``current`` read before), its config, no other release, no lock."""
    assert current(project) == live
    assert (etc_root(project, "web1") / "demo/app.conf").read_text() == config
    assert release_ids(project) == [live.removeprefix("releases/")]
    assert not (root_of(project) / "deploy.lock").exists()


def etc_root(project: Project, host: str) -> Path:
    return Path(project.inventory["stages"]["test"]["hosts"][host]["etc_root"])


def test_config_is_rendered_per_host_installed_at_switch_and_follows_rollback(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1,web2")
    first = current(config_project).removeprefix("releases/")
    web1, web2 = etc_root(config_project, "web1"), etc_root(config_project, "web2")
    assert (web1 / "demo/app.conf").read_text().startswith("workers=2\n")
    assert (web2 / "demo/app.conf").read_text().startswith("workers=8\n")
    assert f"venv={root_of(config_project)}/current/venv" in (web1 / "demo/app.conf").read_text()
    assert (root_of(config_project) / "releases" / first / "etc/demo/app.conf").is_file(), "release keeps its config"
    assert (web1 / "reloads").read_text() == "reloaded\n"

    config_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    (config_project.path / "etc-mock/cron.d/{{ app }}.j2").unlink()
    config_project.commit("drop cron")
    config_project.fab("deploy", "--hosts", "web1,web2")
    assert (web1 / "demo/app.conf").read_text().startswith("v2\n")
    assert not (web1 / "cron.d/demo").exists(), "a file the new release no longer has is removed"

    config_project.fab("rollback", "--hosts", "web1,web2")
    assert current(config_project) == f"releases/{first}"
    assert (web1 / "demo/app.conf").read_text() == (
        root_of(config_project) / "releases" / first / "etc/demo/app.conf"
    ).read_text()
    assert (web1 / "cron.d/demo").is_file(), "rollback restores the config of the release it returns to"
    assert (web1 / "reloads").read_text().count("reloaded") == 3


def test_failing_validation_keeps_old_config_and_old_release(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    good = current(config_project)
    before = (etc_root(config_project, "web1") / "demo/app.conf").read_text()
    config_project.commit("broken", {"etc-mock/demo/app.conf.j2": "broken\n" + TEMPLATE})
    result = config_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "validating config" in result.stderr and "Traceback" not in result.stderr
    assert current(config_project) == good
    assert (etc_root(config_project, "web1") / "demo/app.conf").read_text() == before
    assert release_ids(config_project) == [good.removeprefix("releases/")]
    assert not (root_of(config_project) / "deploy.lock").exists()


def test_undefined_template_variable_stops_before_any_host_is_touched(config_project: Project) -> None:
    config_project.commit("typo", {"etc-mock/demo/app.conf.j2": "workers={{ worker }}\n"})
    result = config_project.fab("deploy", "--hosts", "web1,web2", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'worker'" in result.stderr and "etc-mock/demo/app.conf.j2" in result.stderr and "web1" in result.stderr
    assert not (root_of(config_project) / "releases").exists()


def test_render_etc_writes_each_hosts_files_and_diffs_against_the_host(config_project: Project) -> None:
    result = config_project.fab("render-etc", "--hosts", "web1,web2")
    out = config_project.path / "build/etc/test"
    assert (out / "web1/demo/app.conf").read_text().startswith("workers=2\n")
    assert (out / "web2/demo/app.conf").read_text().startswith("workers=8\n")
    assert "web2/demo/app.conf" in result.stdout
    assert not (root_of(config_project) / "releases").exists(), "render-etc changes nothing on hosts"

    diff = config_project.fab("render-etc", "--hosts", "web1", "--diff")
    assert "new" in diff.stdout and "workers=2" in diff.stdout
    config_project.fab("deploy", "--hosts", "web1")
    config_project.inventory["stages"]["test"]["vars"] = {"workers": 3}
    config_project.write_inventory()
    diff = config_project.fab("render-etc", "--hosts", "web1", "--diff")
    assert "-workers=2" in diff.stdout and "+workers=3" in diff.stdout


def test_dry_run_prints_commits_requirement_changes_and_config_diff_and_changes_nothing(
    config_project: Project,
) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    before = (
        current(config_project),
        release_ids(config_project),
        (root_of(config_project) / "journal.jsonl").read_text(),
    )
    config_project.commit(
        "upgrade lib, add helper, more workers",
        {"requirements/prod.txt": "demo-lib==2.0\ndemo-helper==1.0\n", "etc-mock/demo/app.conf.j2": "v3\n" + TEMPLATE},
    )
    result = config_project.fab("deploy", "--hosts", "web1", "--dry-run")
    out = result.stdout
    assert "Dry run: would deploy" in out and "upgrade lib, add helper, more workers" in out
    assert "~ demo-lib 1.0 -> 2.0" in out and "+ demo-helper==1.0" in out
    assert "+v3" in out and "Nothing was changed." in out
    after = (
        current(config_project),
        release_ids(config_project),
        (root_of(config_project) / "journal.jsonl").read_text(),
    )
    assert after == before
    assert not (etc_root(config_project, "web1") / "demo/app.conf").read_text().startswith("v3")


def test_failing_after_switch_command_switches_the_host_back(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    good = current(config_project)
    config_before = (etc_root(config_project, "web1") / "demo/app.conf").read_text()
    stage = config_project.inventory["stages"]["test"]
    flag = etc_root(config_project, "web1") / "fail-reload"
    stage["hosts"]["web1"]["after_switch"] = [f"test ! -e {flag}"]
    config_project.write_inventory()
    config_project.commit("new config", {"etc-mock/demo/app.conf.j2": "v4\n" + TEMPLATE})
    flag.touch()
    result = config_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "after-switch command" in result.stderr
    assert f"back on {good.removeprefix('releases/')}" in result.stderr
    assert_kept(config_project, good, config_before)


def test_rollback_whose_config_fails_validation_keeps_the_current_release(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    config_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    config_project.fab("deploy", "--hosts", "web1")
    live = current(config_project)
    config_now = (etc_root(config_project, "web1") / "demo/app.conf").read_text()
    flag = etc_root(config_project, "web1") / "refuse"
    config_project.inventory["stages"]["test"]["hosts"]["web1"]["validate"] = [f"test ! -e {flag}"]
    config_project.write_inventory()
    flag.touch()
    result = config_project.fab("rollback", "--hosts", "web1", check=False)
    assert (
        result.returncode == 1
        and "validating config" in result.stderr
        and f"current is still {live.removeprefix('releases/')}" in result.stderr
    )
    assert current(config_project) == live
    assert (etc_root(config_project, "web1") / "demo/app.conf").read_text() == config_now
    assert not (root_of(config_project) / "deploy.lock").exists()
    last = (root_of(config_project) / "journal.jsonl").read_text().splitlines()[-1]
    assert '"event": "rollback"' in last and '"status": "failed"' in last


def test_config_is_taken_from_the_commit_not_the_working_tree(config_project: Project) -> None:
    (config_project.path / "etc-mock/demo/app.conf.j2").write_text("uncommitted\n")
    (config_project.path / "etc-mock/stray.conf").write_text("untracked\n")
    result = config_project.fab("deploy", "--hosts", "web1")
    assert "uncommitted changes are not deployed: etc-mock/demo/app.conf.j2\n" in result.stdout
    assert "hosts.yml" not in result.stdout  # it is as committed: nothing to say about it
    installed = etc_root(config_project, "web1")
    assert (installed / "demo/app.conf").read_text().startswith("workers=2\n")
    assert not (installed / "stray.conf").exists()


def test_uncommitted_hosts_yml_is_used_and_the_deploy_says_so(config_project: Project) -> None:
    """hosts.yml is the laptop's inventory, read from the working tree: its uncommitted vars render the config,
    the note says so (instead of claiming nothing uncommitted is deployed), and the manifest records its hash."""
    config_project.inventory["stages"]["test"]["vars"] = {"workers": 5}
    config_project.write_inventory()
    (config_project.path / "app.py").write_text("VERSION = 'not committed'\n")
    result = config_project.fab("deploy", "--hosts", "web1")
    notes = [line for line in result.stdout.splitlines() if line.startswith("Note: ")]
    assert len(notes) == 2, result.stdout
    assert notes[0].endswith("uncommitted changes are not deployed: app.py")  # hosts.yml is, as notes[1] says
    assert notes[1].startswith("Note: hosts.yml differs from commit ") and "read it from the working tree" in notes[1]
    assert (etc_root(config_project, "web1") / "demo/app.conf").read_text().startswith("workers=5\n")
    release = current(config_project)
    manifest = json.loads((root_of(config_project) / release / ".deploytool.json").read_text())
    expected = hashlib.sha256((config_project.path / "hosts.yml").read_bytes()).hexdigest()
    assert manifest["hosts_yml_sha256"] == expected
    assert "not committed" not in (root_of(config_project) / release / "app.py").read_text()


def test_a_failing_switch_back_leaves_current_on_an_existing_release_and_says_so(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    first = current(config_project).removeprefix("releases/")
    flag = etc_root(config_project, "web1") / "reloaded-once"
    host = config_project.inventory["stages"]["test"]["hosts"]["web1"]
    host["validate"] = [f"test ! -e {flag}"]  # passes going forward, fails on the way back
    host["after_switch"] = [f"touch {flag}; false"]
    config_project.write_inventory()
    config_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    result = config_project.fab("deploy", "--hosts", "web1", check=False)
    second = current(config_project).removeprefix("releases/")
    assert result.returncode == 1 and f"switching back to {first} failed too" in result.stderr
    assert second != first and f"web1 is on {second}" in result.stderr
    assert (root_of(config_project) / "releases" / second).is_dir(), "current never points at a deleted release"
    assert (etc_root(config_project, "web1") / "demo/app.conf").read_text().startswith("v2\n")
    assert not (root_of(config_project) / "deploy.lock").exists()


def test_rollback_to_a_release_without_config_removes_the_newer_config(ssh_project: Project) -> None:
    stage = ssh_project.inventory["stages"]["test"]
    root = Path(stage["hosts"]["web1"]["root"])
    stage["hosts"]["web1"]["etc_root"] = str(root.parent / "etc-root")
    ssh_project.write_inventory()
    ssh_project.commit("no templates yet")
    ssh_project.fab("deploy", "--hosts", "web1")
    first = current(ssh_project)
    ssh_project.commit("templates", {"etc-mock/cron.d/{{ app }}.j2": "* * * * * {{ user }} true\n"})
    ssh_project.fab("deploy", "--hosts", "web1")
    assert (root.parent / "etc-root/cron.d/demo").is_file()
    ssh_project.fab("rollback", "--hosts", "web1")
    assert current(ssh_project) == first
    assert not (root.parent / "etc-root/cron.d/demo").exists(), "the release rolled back to had no config"


def fail_a_first_deploy_after_switching(project: Project) -> None:
    """Deploy to web1 for the first time with an after-switch command that fails: it must end with no release."""
    project.inventory["stages"]["test"]["hosts"]["web1"]["after_switch"] = ["false"]
    project.write_inventory()
    project.commit("reload fails")
    result = project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "back on no release" in result.stderr
    assert not (root_of(project) / "current").exists()


def test_a_failed_first_deploy_takes_its_config_away_again(config_project: Project) -> None:
    fail_a_first_deploy_after_switching(config_project)
    installed = etc_root(config_project, "web1")
    assert [path for path in installed.rglob("*") if path.is_file()] == []


def test_rollback_whose_after_switch_command_fails_is_journaled_where_current_is(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    first = current(config_project).removeprefix("releases/")
    config_project.commit("v2")
    config_project.fab("deploy", "--hosts", "web1")
    config_project.inventory["stages"]["test"]["hosts"]["web1"]["after_switch"] = ["false"]
    config_project.write_inventory()
    result = config_project.fab("rollback", "--hosts", "web1", check=False)
    assert result.returncode == 1 and f"current is now {first}" in result.stderr
    assert current(config_project) == f"releases/{first}"
    last = json.loads((root_of(config_project) / "journal.jsonl").read_text().splitlines()[-1])
    assert (last["event"], last["status"], last["release"]) == ("rollback", "ok", first) and "failed" in last["reason"]


def test_a_failed_first_deploy_puts_a_hand_made_config_file_back(config_project: Project) -> None:
    installed = etc_root(config_project, "web1")
    owner = installed.stat()
    original = b"# made by hand before deploytool\nworkers=1\n"
    (installed / "demo").mkdir()
    (installed / "demo/app.conf").write_bytes(original)
    (installed / "demo/app.conf").chmod(0o640)
    for path in (installed / "demo", installed / "demo/app.conf"):
        os.chown(path, owner.st_uid, owner.st_gid)
    fail_a_first_deploy_after_switching(config_project)
    assert (installed / "demo/app.conf").read_bytes() == original
    assert (installed / "demo/app.conf").stat().st_mode & 0o777 == 0o640
    assert not (installed / "cron.d/demo").exists()


def test_a_failed_swap_of_current_puts_the_previous_config_back(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    live = current(config_project)
    config_before = (etc_root(config_project, "web1") / "demo/app.conf").read_text()
    config_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    inventory = load_inventory(config_project.path / "hosts.yml")
    plan = plan_deploy(inventory, inventory.hosts("test", "web1"), "HEAD")
    # A directory the deploy user cannot write where the temporary link must go: `ln` fails.
    (root_of(config_project) / f"current.{plan.release.id}.tmp").mkdir()
    with pytest.raises(DeployError, match="switching current") as failure:
        run_deploy(plan, config_project.path)
    assert "web1 is still on" in str(failure.value)
    assert_kept(config_project, live, config_before)


def test_a_refused_config_install_touches_nothing_not_even_to_restore(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    etc = etc_root(config_project, "web1")
    (etc / "extra").mkdir()
    (etc / "extra/hand.conf").write_text("made by hand\n")
    (etc / "blocker/x.conf").mkdir(parents=True)  # where the new release wants a file: the installer refuses
    config_project.commit(
        "more config", {"etc-mock/extra/hand.conf.j2": "managed\n", "etc-mock/blocker/x.conf.j2": "x\n"}
    )
    result = config_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "refusing, nothing changed" in result.stderr
    assert (etc / "extra/hand.conf").read_text() == "made by hand\n", "a refused install restores nothing"
    assert "restoring the previous config failed" not in result.stderr


def test_an_absolute_current_link_is_understood_and_a_foreign_one_refused(config_project: Project) -> None:
    config_project.fab("deploy", "--hosts", "web1")
    root = root_of(config_project)
    release = current(config_project).removeprefix("releases/")
    link = root / "current"
    link.unlink()
    link.symlink_to(root / "releases" / release)  # as an operator might have made it by hand
    config_project.commit("next")
    config_project.fab("deploy", "--hosts", "web1")
    assert [e["event"] for e in json_lines(root / "journal.jsonl")][-1] == "deploy"
    link.unlink()
    link.symlink_to("/srv/elsewhere")
    result = config_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "points at /srv/elsewhere, not at a release" in result.stderr
    assert not (root / "deploy.lock").exists()


def json_lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hook_commands_find_sbin_tools(config_project: Project) -> None:
    """validate/after-switch run in a non-login ssh shell whose PATH lacks /usr/sbin (nginx, sshd live there):
    the sbin directories are appended, after what the host's PATH already has."""
    host = config_project.inventory["stages"]["test"]["hosts"]["web1"]
    etc = etc_root(config_project, "web1")
    host["validate"] = ["command -v sshd"]
    host["after_switch"] = [f'printf "%s\\n" "$PATH" > {etc}/path']
    config_project.write_inventory()
    config_project.commit("sbin hooks")
    config_project.fab("deploy", "--hosts", "web1")
    path = (etc / "path").read_text().strip().split(":")
    assert {"/usr/local/sbin", "/usr/sbin", "/sbin"} <= set(path)
    assert path.index("/usr/bin") < path.index("/usr/sbin")
