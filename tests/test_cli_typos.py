"""The command line itself: a typo in a task or option name, or an option without its value, ends in deploytool's
one ``Error: ...`` line with a suggestion where one is close (not Invoke's raw message); shell completion is
Invoke's and completes deploytool's tasks and options; a ``confirm: true`` stage without a terminal refuses a
rollback before any host is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploytool.inventory import SETTINGS
from tests.test_cli_errors import HOSTS, fab_error, make_project


def fab(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``fab`` script itself (as a shell completes it; ``python -m fabric`` would call itself __main__.py)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "fab"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(project.parent)},
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["delpoy"], "Error: no task 'delpoy' (did you mean 'deploy'?); fab --list shows every task"),
        (["relases", "--json"], "Error: no task 'relases' (did you mean 'releases'?); fab --list shows every task"),
        (
            ["deploy", "--stage"],
            "Error: fab deploy: --stage needs a value (give it as --stage VALUE); fab deploy --help shows its options",
        ),
        (
            ["deploy", "--stgae", "production"],
            "Error: fab deploy: no option '--stgae' (did you mean '--stage'?); fab deploy --help shows its options",
        ),
        (
            ["rollback", "--too", "x"],
            "Error: fab rollback: no option '--too' (did you mean '--to'?); fab rollback --help shows its options",
        ),
        (
            ["releases", "--json=yes"],
            "Error: fab releases: 'yes' is neither a task nor an option of releases; fab --list shows every task",
        ),
        (["xyzzy"], "Error: no task 'xyzzy'; fab --list shows every task"),
    ],
)
def test_a_typo_on_the_command_line_is_one_error_line_with_a_suggestion(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    project = make_project(tmp_path)
    stderr = fab_error(project, *args)
    assert stderr == expected + "\n"
    assert "No idea what" not in stderr and "needed value" not in stderr
    assert not (project / ".deploy").exists()


def test_print_completion_script_prints_a_script_that_completes_deploytool(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    script = fab(project, "--print-completion-script", "bash")
    assert script.returncode == 0, script.stderr
    assert "complete -F _complete_fab" in script.stdout and "fab --complete --" in script.stdout
    # What that script asks fab for each time Tab is pressed: deploytool's tasks, and a task's options.
    tasks = fab(project, "--complete", "--", "fab", "dep")
    assert tasks.returncode == 0 and "deploy" in tasks.stdout.split() and "rollback" in tasks.stdout.split()
    options = fab(project, "--complete", "--", "fab", "deploy", "--")
    assert {"--stage", "--hosts", "--yes", "--dry-run"} <= set(options.stdout.split())


def test_rollback_of_a_confirm_stage_without_a_terminal_or_yes_is_refused_before_any_host(tmp_path: Path) -> None:
    confirming = HOSTS.replace("    allow_root: true\n", "    allow_root: true\n    confirm: true\n")
    project = make_project(tmp_path, confirming)
    stderr = fab_error(project, "rollback")
    assert stderr == (
        "Error: stage 'local' has confirm: true and there is no terminal to ask on: give --yes to roll back "
        "without asking (CI, scripts). Nothing was changed\n"
    )
    assert not (project / ".deploy").exists()


def test_confirm_and_notify_are_settings_of_a_stage_not_of_a_host(tmp_path: Path) -> None:
    project = make_project(tmp_path, HOSTS.replace("hosts: [localhost]", "hosts: {localhost: {confirm: true}}"))
    stderr = fab_error(project, "releases")
    assert "stages.local.hosts.localhost.confirm: confirm is a setting of the whole stage" in stderr
    (tmp_path / "other").mkdir()
    project = make_project(tmp_path / "other", HOSTS.replace("    transport: local\n", "    notify: curl x\n"))
    assert "stages.local.notify: expected a list of commands, got 'curl x'" in fab_error(project, "releases")


def test_every_setting_is_in_the_readme_settings_table() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| setting | default | meaning |") :]
    table = table[: table.index("\n\n")]
    rows = " ".join(line.split("|")[1] for line in table.splitlines()[2:])
    missing = [key for key in SETTINGS if f"`{key}`" not in rows]
    assert not missing, f"settings missing from the README's table: {missing}"
