"""Around a production deploy, on the local stage with real ``fab`` processes: ``confirm: true`` asks on a
terminal (a pseudo-terminal here) and refuses without one, ``notify`` commands hear of every deploy and rollback
without changing its outcome, and ``export-ignore`` keeps paths out of a release."""

from __future__ import annotations

import http.server
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Project
from tests.isolation import free_port, wait_for

pytestmark = pytest.mark.integration  # real deploys (venvs, pip)


def fab_on_terminal(project: Project, answer: bytes | None, *args: str) -> tuple[int, str]:
    """Run ``fab ARGS`` with a pseudo-terminal as its stdin, stdout and stderr; type ``answer`` and Enter once it
    asks ``[y/N]``; return its exit status and everything it wrote."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fabric", *args],
        cwd=project.path,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output = bytearray()

    def read() -> None:
        while select.select([master], [], [], 0.05)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has gone
                return
            if not data:
                return
            output.extend(data)

    try:
        if answer is not None:

            def asked() -> bool:
                read()
                return b"[y/N]" in output or process.poll() is not None

            wait_for(asked, 120, "the question")
            assert b"[y/N]" in output, output.decode(errors="replace")
            os.write(master, answer + b"\n")

        def ended() -> bool:
            read()
            return process.poll() is not None

        wait_for(ended, 300, "fab to end")
        read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return process.returncode, output.decode(errors="replace").replace("\r\n", "\n")


def confirming(project: Project) -> None:
    project.inventory["stages"]["local"]["confirm"] = True
    project.write_inventory()
    project.commit("confirm: true")


def test_a_confirm_stage_asks_on_a_terminal_and_answering_n_touches_nothing(local_project: Project) -> None:
    confirming(local_project)
    commit = local_project.commit("the change to ship", {"app.py": "import demo_lib\nVERSION = 'new'\n"})
    (local_project.path / "app.py").write_text("# not committed\n")

    status, output = fab_on_terminal(local_project, b"n", "deploy")
    assert status == 1, output
    assert "About to deploy stage local (confirm: true):" in output
    assert f"commit       {commit[:12]} the change to ship" in output
    assert "hosts        localhost (1)" in output
    assert "uncommitted  app.py (not deployed)" in output
    release = output.split("release      ")[1].split()[0]
    assert release.endswith(commit[:7])
    assert "Error: deploy not confirmed (answered 'n'): nothing was changed" in output
    assert not (local_project.path / ".deploy").exists()


def test_a_confirm_stage_deploys_and_rolls_back_when_answered_y(local_project: Project) -> None:
    confirming(local_project)
    status, output = fab_on_terminal(local_project, b"y", "deploy")
    assert status == 0, output
    assert "uncommitted  none" in output and "Deployed " in output
    first = os.readlink(local_project.path / ".deploy/local/current")
    local_project.fab("deploy", "--yes")  # no terminal: --yes answers
    assert os.readlink(local_project.path / ".deploy/local/current") != first

    status, output = fab_on_terminal(local_project, b"y", "rollback")
    assert status == 0, output
    assert "to           the previous good release of each host (from its journal)" in output
    assert os.readlink(local_project.path / ".deploy/local/current") == first


def test_the_question_shows_what_each_host_runs_and_the_commit_range_over_ssh(ssh_project: Project) -> None:
    stage = ssh_project.inventory["stages"]["test"]
    stage["confirm"] = True
    ssh_project.write_inventory()
    first = ssh_project.commit("first shipped")
    ssh_project.fab("deploy", "--hosts", "web1,web2", "--yes")
    second = ssh_project.commit("second shipped")
    ssh_project.fab("deploy", "--hosts", "web1,web2", "--yes")
    live = os.readlink(Path(stage["hosts"]["web1"]["root"]) / "current").removeprefix("releases/")
    subjects = [f"change {number}" for number in range(12)]
    for subject in subjects:
        new = ssh_project.commit(subject)

    status, output = fab_on_terminal(ssh_project, b"n", "deploy", "--hosts", "web1,web2,web3")
    assert status == 1 and "Error: deploy not confirmed (answered 'n'): nothing was changed" in output
    assert f"now          web1, web2: {live} ({second[:12]})" in output
    assert f"commits      {second[:12]}..{new[:12]}" in output
    for subject in subjects[2:]:  # newest first, bounded
        assert f" {subject}\n" in output
    assert " change 1\n" not in output and "... and 2 more" in output
    assert "now          web3: no release yet" in output and "(no earlier commit known" in output
    assert not (Path(stage["hosts"]["web3"]["root"]) / "releases").exists(), "declining touched nothing"
    assert os.readlink(Path(stage["hosts"]["web1"]["root"]) / "current") == f"releases/{live}"

    status, output = fab_on_terminal(ssh_project, b"n", "rollback", "--hosts", "web1,web2")
    assert status == 1 and "roll back not confirmed" in output
    assert f"now          web1, web2: {live} ({second[:12]})" in output
    assert "back to      " in output and f"({first[:12]})" in output
    assert "  leaving    " in output and " second shipped\n" in output


def test_a_confirm_stage_without_a_terminal_or_yes_refuses_before_any_host(local_project: Project) -> None:
    confirming(local_project)
    result = local_project.fab("deploy", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "Error: stage 'local' has confirm: true and there is no terminal to ask on: give --yes to deploy without "
        "asking (CI, scripts). Nothing was changed\n"
    )
    assert not (local_project.path / ".deploy").exists()
    # a dry run changes nothing: it does not ask
    status, output = fab_on_terminal(local_project, None, "deploy", "--dry-run")
    assert status == 0 and "[y/N]" not in output


def recorder(out: Path) -> str:
    """A notify command writing its stdin and its DEPLOYTOOL_* variables under ``out``, one pair per call."""
    path = shlex.quote(str(out))
    return f"n=$(ls {path} | wc -l); cat > {path}/$n.json; env | grep ^DEPLOYTOOL_ | sort > {path}/$n.env"


def recorded(out: Path, number: int) -> tuple[dict[str, object], dict[str, str]]:
    document = json.loads((out / f"{number * 2}.json").read_text())
    env = dict(line.split("=", 1) for line in (out / f"{number * 2}.env").read_text().splitlines())
    return document, env


def test_notify_commands_get_the_json_document_and_variables_of_ok_and_failed_runs(
    local_project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "notified"
    out.mkdir()
    local_project.inventory["notify"] = [recorder(out)]
    local_project.write_inventory()
    local_project.commit("notify")

    result = local_project.fab("deploy")
    assert result.stderr == ""
    document, env = recorded(out, 0)
    release = os.path.basename(os.readlink(local_project.path / ".deploy/local/current"))
    assert document["command"] == "deploy" and document["ok"] is True and document["release"] == release
    assert [host["host"] for host in document["hosts"]] == ["localhost"]  # type: ignore[index]
    assert env["DEPLOYTOOL_RESULT"] == "ok" and env["DEPLOYTOOL_TASK"] == "deploy"
    assert env["DEPLOYTOOL_STAGE"] == "local" and env["DEPLOYTOOL_RELEASE"] == release
    assert env["DEPLOYTOOL_HOSTS"] == "localhost" and env["DEPLOYTOOL_APP"] == "demo"
    assert env["DEPLOYTOOL_COMMIT"] == document["commit"]

    local_project.inventory["stages"]["local"]["after_switch"] = ["echo reload refused; exit 3"]
    local_project.write_inventory()
    failed = local_project.fab("deploy", check=False)
    assert failed.returncode == 1 and "Error: deploy failed" in failed.stderr
    document, env = recorded(out, 1)
    assert document["ok"] is False and "reload refused" in str(document["error"])
    assert env["DEPLOYTOOL_RESULT"] == "failed"
    assert env["DEPLOYTOOL_ERROR"].startswith("deploy failed: batch 1 of 1 failed (localhost)")  # its first line

    del local_project.inventory["stages"]["local"]["after_switch"]
    local_project.write_inventory()
    local_project.fab("deploy")
    local_project.fab("rollback")
    document, env = recorded(out, 3)
    assert document["command"] == "rollback" and document["ok"] is True
    assert env["DEPLOYTOOL_TASK"] == "rollback" and env["DEPLOYTOOL_RELEASE"] == release


def test_a_failing_or_hanging_notify_command_is_reported_and_changes_nothing(
    local_project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "notified"
    out.mkdir()
    local_project.inventory["stages"]["local"]["notify"] = [
        "echo webhook said 500 >&2; exit 22",
        "sleep 6017 & wait",  # its child keeps the output pipe open: the whole group is stopped
        recorder(out),  # the ones after still run
    ]
    local_project.inventory["stages"]["local"]["notify_timeout"] = 2
    local_project.write_inventory()
    local_project.commit("notify")

    started = time.monotonic()
    result = local_project.fab("deploy", "--json")
    assert time.monotonic() - started < 300
    assert result.returncode == 0
    assert json.loads(result.stdout)["ok"] is True  # stdout is still the document alone
    lines = result.stderr.splitlines()
    assert lines == [
        "Warning: notify[0] (echo webhook said 500 >&2; exit 22) exited with status 22 (the deploy is not affected):",
        "  | webhook said 500",
        "Warning: notify[1] (sleep 6017 & wait) still running after 2 s (notify_timeout): stopped "
        "(the deploy is not affected)",
    ]
    assert recorded(out, 0)[1]["DEPLOYTOOL_RESULT"] == "ok"
    assert subprocess.run(["pgrep", "-f", "^sleep 6017$"], capture_output=True).returncode != 0


def test_export_ignore_paths_are_not_in_the_release(local_project: Project) -> None:
    local_project.commit(
        "tests and docs stay out of releases",
        {
            ".gitattributes": "tests/ export-ignore\ndocs/ export-ignore\nbenchmarks/ export-ignore\n",
            "tests/test_app.py": "def test(): pass\n",
            "docs/index.md": "# docs\n",
            "benchmarks/bench.py": "print(1)\n",
        },
    )
    local_project.fab("deploy")
    current = local_project.path / ".deploy/local/current"
    assert (current / "app.py").is_file() and (current / "requirements/prod.txt").is_file()
    for ignored in ("tests", "docs", "benchmarks"):
        assert not (current / ignored).exists(), ignored


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_notify_example() -> dict[str, object]:
    """The stage settings of the README's "Confirmation and notifications" example, exactly as written there."""
    section = README.read_text().split("\n## Confirmation and notifications\n")[1]
    block = section[section.index("```yaml\n") + len("```yaml\n") : section.index("\n```\n")]
    stage: dict[str, object] = yaml.safe_load(block)["stages"]["production"]
    return stage


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's webhook example runs curl")
def test_the_readme_webhook_example_posts_the_json_document(local_project: Project) -> None:
    received: list[tuple[str, bytes]] = []

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Content-Type"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port()), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        example = readme_notify_example()
        assert isinstance(example["notify"], list) and all(isinstance(command, str) for command in example["notify"])
        local_project.inventory["stages"]["local"]["notify"] = example["notify"][:1]  # the curl line
        local_project.write_inventory()
        local_project.commit("notify a webhook")
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        result = local_project.fab("deploy", env={"WEBHOOK_URL": url})
        assert "Warning" not in result.stderr, result.stderr
    finally:
        server.shutdown()
        server.server_close()
    [(content_type, body)] = received
    document = json.loads(body)
    assert content_type == "application/json"
    assert document["command"] == "deploy" and document["ok"] is True and document["stage"] == "local"
