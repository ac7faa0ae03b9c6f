"""Going live over real SSH: restart commands, health checks, batches, the revert of a failed batch, templated
commands, and rollback through the same checks.

The app server here is a real HTTP server (``serve.py``, standard library) that the ``restart`` command starts
from the release being made live and that answers with that release's id; the health check asks it over HTTP on
the host. (Real gunicorn and supervisord are in ``test_going_live.py``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import Project
from tests.isolation import free_port
from tests.test_deploy_ssh import current, journal, release_ids, root_of

SERVE = """\
import http.server, json, pathlib, sys

import app  # the app's own code and its pinned requirement: a broken release fails here

RELEASE = json.loads((pathlib.Path(__file__).resolve().parent / ".deploytool.json").read_text())["release"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (RELEASE + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

#: Stop the server the previous release started, start this release's, detached (its output to the log).
RESTART = (
    "kill $(cat {{ shared }}/app.pid 2>/dev/null) 2>/dev/null; sleep 0.2; cd {{ release_path }} && "
    "setsid {{ release_path }}/venv/bin/python serve.py {{ port }} </dev/null >>{{ shared }}/logs/app.log 2>&1 & "
    "echo $! > {{ shared }}/app.pid"
)


def answer(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return str(response.read().decode().strip())


def stop_servers(project: Project) -> None:
    for host in project.inventory["stages"]["test"]["hosts"]:
        pidfile = root_of(project, host) / "shared" / "app.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.fixture
def served(ssh_project: Project) -> Iterator[tuple[Project, int]]:
    """web1 serving the release ``current`` names through ``serve.py``, restarted at each switch and checked
    over HTTP for the release id."""
    port = free_port()
    stage = ssh_project.inventory["stages"]["test"]
    stage["vars"] = {"port": port}
    stage["restart"] = [RESTART]
    stage["health_check"] = {
        "url": "http://127.0.0.1:{{ port }}/",
        "contains": "{{ release_id }}",
        "deadline": 5,
        "interval": 0.2,
    }
    ssh_project.write_inventory()
    ssh_project.commit("serve", {"serve.py": SERVE})
    try:
        yield ssh_project, port
    finally:
        stop_servers(ssh_project)


def test_restart_serves_each_release_and_rollback_restarts_the_previous_one(served: tuple[Project, int]) -> None:
    project, port = served
    project.fab("deploy", "--hosts", "web1")
    first = current(project).removeprefix("releases/")
    assert answer(port) == first
    project.commit("second")
    project.fab("deploy", "--hosts", "web1")
    second = current(project).removeprefix("releases/")
    assert second != first and answer(port) == second
    result = project.fab("rollback", "--hosts", "web1")
    assert answer(port) == first == current(project).removeprefix("releases/")
    assert "web1  restart" in result.stdout and "web1  health" in result.stdout
    status = json.loads(project.fab("status", "--hosts", "web1", "--json").stdout)
    assert status["hosts"][0]["health"] == "ok", status  # the check, with the release web1 runs, tried once
    stop_servers(project)
    status = json.loads(project.fab("status", "--hosts", "web1", "--json").stdout)
    assert status["hosts"][0]["health"].startswith("failing: URLError"), status


def test_an_app_that_cannot_start_is_caught_by_the_health_check_and_reverted(served: tuple[Project, int]) -> None:
    project, port = served
    project.fab("deploy", "--hosts", "web1")
    good = current(project).removeprefix("releases/")
    project.commit("cannot start", {"app.py": "raise SystemExit('the app cannot start')\n"})
    result = project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "health check: http://127.0.0.1:" in result.stderr and "still failing after" in result.stderr
    assert f"back on {good}" in result.stderr
    assert answer(port) == good == current(project).removeprefix("releases/")  # restarted on the old release
    assert release_ids(project) == [good] and not (root_of(project) / "deploy.lock").exists()
    failed = journal(project)[-1]
    assert failed["event"] == "deploy" and failed["status"] == "failed" and "health check" in failed["reason"]
    back = journal(project)[-2]
    assert back["event"] == "rollback" and back["release"] == good and back["from"] == failed["release"]


def test_a_failing_second_batch_switches_the_first_back_and_marks_the_release_failed(ssh_project: Project) -> None:
    stage = ssh_project.inventory["stages"]["test"]
    stage["batch_size"] = 2
    stage["restart"] = ["echo {{ release_id }} > {{ shared }}/serving"]
    # Healthy unless the release lists the host in its file broken-on.
    stage["health_check"] = {"command": "! grep -qx {{ host }} {{ release_path }}/broken-on", "deadline": 1}
    ssh_project.write_inventory()
    ssh_project.commit("batches")
    hosts = ["web1", "web2", "web3", "web4"]
    ssh_project.fab("deploy")
    old = {host: current(ssh_project, host).removeprefix("releases/") for host in hosts}
    ssh_project.commit("broken on the second batch", {"broken-on": "web3\nweb4\n"})

    result = ssh_project.fab("deploy", "--json", check=False)

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    new = document["release"]
    assert "batch 2 of 2 failed (web3, web4)" in document["error"]
    outcomes = {row["host"]: row for row in document["hosts"]}
    assert [outcomes[host]["result"] for host in hosts] == ["reverted", "reverted", "failed", "failed"]
    events = document["events"]
    checked = [next(e for e in events if e["host"] == host and e["phase"] == "health") for host in ("web1", "web2")]
    first_batch_done = max(e["end"] for e in checked)  # their first check (their revert is checked again later)
    second_batch_start = min(e["start"] for e in events if e["host"] in ("web3", "web4") and e["phase"] == "publish")
    assert first_batch_done <= second_batch_start, "the second batch switches only after the first passed"
    for host in hosts:
        assert current(ssh_project, host).removeprefix("releases/") == old[host]
        assert (root_of(ssh_project, host) / "shared" / "serving").read_text().strip() == old[host], host
        assert new not in release_ids(ssh_project, host)
        assert not (root_of(ssh_project, host) / "deploy.lock").exists()
        last = journal(ssh_project, host)[-1]
        assert (last["event"], last["release"], last["status"]) == ("deploy", new, "failed"), last
    for host in ("web1", "web2"):
        back = journal(ssh_project, host)[-2]
        assert (back["event"], back["release"], back["from"]) == ("rollback", old[host], new)
        assert "batch 2 of 2 failed" in journal(ssh_project, host)[-1]["reason"]
    assert "health check" in journal(ssh_project, "web3")[-1]["reason"]
    refused = ssh_project.fab("rollback", "--to", new, check=False)
    assert refused.returncode == 1 and f"release {new} is not on" in refused.stderr


def test_batch_size_from_the_command_line_and_templated_commands(ssh_project: Project) -> None:
    stage = ssh_project.inventory["stages"]["test"]
    log = "{{ root }}/../switches"
    stage["after_switch"] = [
        f"echo {{{{ host }}}} {{{{ release_id }}}} {{{{ previous_release }}}} $DEPLOYTOOL_HOST >> {log}"
    ]
    stage["health_check"] = {"command": "test -e {{ release_path }}/venv", "deadline": 5}
    ssh_project.write_inventory()
    ssh_project.commit("templated")
    first = json.loads(ssh_project.fab("deploy", "--hosts", "web1,web2,web3", "--batch-size", "33%", "--json").stdout)
    publishes = sorted((e["start"], e["end"], e["host"]) for e in first["events"] if e["phase"] == "publish")
    assert [host for *_, host in publishes] == ["web1", "web2", "web3"]
    assert publishes[0][1] <= publishes[1][0] and publishes[1][1] <= publishes[2][0], "one host per batch"
    ssh_project.commit("again")
    second = json.loads(ssh_project.fab("deploy", "--hosts", "web1", "--json").stdout)
    lines = (root_of(ssh_project, "web1").parent / "switches").read_text().splitlines()
    # No previous release: {{ previous_release }} is an empty argument ('', quoted like every value), so echo
    # prints two spaces there.
    assert lines == [f"web1 {first['release']}  web1", f"web1 {second['release']} {first['release']} web1"]

    dry = ssh_project.fab("deploy", "--dry-run", "--hosts", "web1,web2", "--batch-size", "1").stdout
    assert "in 2 batches: web1; web2" in dry
    assert f"  health check: test -e {root_of(ssh_project, 'web1')}/releases/" in dry, dry
    bad = ssh_project.fab("deploy", "--batch-size", "0", check=False)
    assert bad.returncode == 1 and "--batch-size: expected a number of hosts" in bad.stderr
    stage["after_switch"] = ["echo {{ no_such_var }}"]
    ssh_project.write_inventory()
    ssh_project.commit("undefined")
    before = release_ids(ssh_project, "web1")
    undefined = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert undefined.returncode == 1 and "Traceback" not in undefined.stderr
    assert "after_switch[0] of host web1" in undefined.stderr and "no_such_var" in undefined.stderr
    assert release_ids(ssh_project, "web1") == before, "nothing was built: the error came before any host"
