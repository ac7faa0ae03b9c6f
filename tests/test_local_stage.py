"""The `local` stage: the same flow on this machine, without SSH, into the project's .deploy/local."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Project, make_project
from tests.wheelfactory import make_wheel

pytestmark = pytest.mark.integration  # real deploys (venvs, pip)


def deployed_version(project: Project) -> str:
    current = project.path / ".deploy/local/current"
    result = subprocess.run(
        [str(current / "venv/bin/python"), "-c", "import app; print(app.VERSION)"],
        cwd=current,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_local_stage_deploys_lists_and_rolls_back(local_project: Project) -> None:
    local_project.fab("deploy")
    first = os.readlink(local_project.path / ".deploy/local/current")
    assert deployed_version(local_project) == "1.0"
    local_project.commit("upgrade", {"requirements/prod.txt": "demo-lib==2.0\n"})
    local_project.fab("deploy")
    assert deployed_version(local_project) == "2.0"
    listing = local_project.fab("releases").stdout
    assert "localhost" in listing and "current" in listing and "previous" in listing

    result = local_project.fab("rollback")
    assert os.readlink(local_project.path / ".deploy/local/current") == first
    assert deployed_version(local_project) == "1.0"
    assert "Rolled back 1 host(s)" in result.stdout
    entries = [
        json.loads(line) for line in (local_project.path / ".deploy/local/journal.jsonl").read_text().splitlines()
    ]
    assert [entry["event"] for entry in entries] == ["deploy", "deploy", "rollback"]


def test_deploy_of_a_ref_that_is_not_a_commit_is_refused(local_project: Project) -> None:
    result = local_project.fab("deploy", "--ref", "no-such-branch", check=False)
    assert result.returncode == 1
    assert "'no-such-branch' is not a commit" in result.stderr and "Traceback" not in result.stderr
    assert not (local_project.path / ".deploy/local/releases").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the root refusal is about running as root")
def test_deploying_as_root_is_refused_unless_the_stage_allows_it(local_project: Project) -> None:
    del local_project.inventory["stages"]["local"]["allow_root"]
    local_project.write_inventory()
    local_project.commit("no root")
    result = local_project.fab("deploy", check=False)
    assert result.returncode == 1 and "logged in as root" in result.stderr and "allow_root" in result.stderr
    assert not (local_project.path / ".deploy/local/releases").exists()


def test_render_etc_and_config_install_work_for_the_local_stage(local_project: Project) -> None:
    local_project.inventory["stages"]["local"]["etc_root"] = ".deploy/etc"
    local_project.inventory["vars"] = {"port": 8001}
    local_project.write_inventory()
    local_project.commit("config", {"etc-mock/app/{{ app }}.conf.j2": "port={{ port }} current={{ current }}\n"})
    rendered = local_project.fab("render-etc")
    out = local_project.path / "build/etc/local/localhost/app/demo.conf"
    assert out.read_text() == f"port=8001 current={local_project.path}/.deploy/local/current\n"
    assert "localhost/app/demo.conf" in rendered.stdout
    assert "1 new" in local_project.fab("render-etc", "--diff").stdout
    local_project.fab("deploy")
    assert (local_project.path / ".deploy/etc/app/demo.conf").read_text() == out.read_text()
    assert "1 unchanged" in local_project.fab("render-etc", "--diff").stdout


def readme_hosts_yml() -> str:
    """The hosts.yml example of README.md, exactly as written there."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("\n## hosts.yml\n") :]
    return section[section.index("```yaml\n") + len("```yaml\n") : section.index("\n```\n")] + "\n"


def test_readme_local_stage_works_as_written(tmp_path: Path) -> None:
    """README's hosts.yml, unchanged, deploys its local stage; config lands under the deploy root's etc/."""
    project = make_project(tmp_path / "project", {"app": "placeholder"})
    (project.path / "hosts.yml").write_text(readme_hosts_yml())
    (project.path / ".gitignore").write_text(".deploy/\nwheels/\n")
    make_wheel(project.path / "wheels", "demo-lib", "1.0")
    project.commit(
        "the README's hosts.yml",
        {"etc-mock/nginx/sites-available/{{ app }}.conf.j2": "# {{ stage }} workers={{ workers }}\n"},
    )

    result = project.fab("deploy")
    assert "Deployed " in result.stdout
    installed = project.path / ".deploy/local/etc/nginx/sites-available/demo.conf"
    assert installed.read_text() == "# local workers=2\n"
    current = project.path / ".deploy/local/current"
    assert (current / "etc/nginx/sites-available/demo.conf").read_text() == "# local workers=2\n"
