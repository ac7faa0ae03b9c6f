"""Live progress: on a terminal each host's current step shows while it runs, redrawn in place; a pipe and
``--json`` get whole lines only, never a cursor movement."""

from __future__ import annotations

import io
import json
import time

import pytest

from deploytool.reporting.events import OK, Event
from deploytool.reporting.live import Live
from deploytool.reporting.report import Progress
from tests.conftest import Project
from tests.test_operator import fab_on_terminal

pytestmark = pytest.mark.integration  # real sshd, real deploys


def test_a_terminal_shows_each_hosts_step_live_and_a_pipe_gets_whole_lines(ssh_project: Project) -> None:
    ssh_project.inventory["stages"]["test"]["after_switch"] = ["sleep 2.5"]
    ssh_project.write_inventory()

    status, output = fab_on_terminal(ssh_project, None, "deploy", "--hosts", "web1,web2")
    assert status == 0, output
    for host in ("web1", "web2"):
        assert f"{host}  publish   ... after-switch command: sleep 2.5  " in output  # live, with its seconds
        assert f"{host}  build     ... installing requirements  " in output
        assert f"{host}  build     ... installing requirements (1 done)  " in output  # pip, per package
    assert "\x1b[1F\x1b[J" in output or "\x1b[2F\x1b[J" in output  # erased in place, not scrolled
    assert "Deployed " in output.splitlines()[-1]

    ssh_project.commit("again")
    piped = ssh_project.fab("deploy", "--hosts", "web1,web2")
    assert "\x1b" not in piped.stdout and "..." not in piped.stdout
    assert all(line.startswith(("web1  ", "web2  ", "Deploying", "Deployed", "host ", "")) for line in
               piped.stdout.splitlines()[:9])  # fmt: skip

    ssh_project.commit("json")
    status, output = fab_on_terminal(ssh_project, None, "deploy", "--hosts", "web1", "--json")
    assert status == 0 and "\x1b" not in output and json.loads(output)["ok"] is True


def test_progress_lines_go_above_the_live_block_which_is_erased_at_the_end() -> None:
    out = io.StringIO()
    live = Live(["web1", "web2"], out)
    progress = Progress(["web1", "web2"], out=out, live=live)
    live.step("web1", "build", "installing requirements \x1b[31m")
    live.step("web2", "build", "creating the virtualenv")
    progress(Event("web2", "build", OK, time.time() - 1, time.time()))
    live.close()
    text = out.getvalue()
    assert "web1  build     ... installing requirements \\x1b[31m  0 s\n" in text  # a host's title, escaped
    assert text.count("\x1b[") == 2 * (text.count("\x1b[2F\x1b[J") + text.count("\x1b[1F\x1b[J"))  # nothing else
    # the event line was written with the block erased, then web1's step alone was drawn again
    after = text.split("web2  build     ok")[1]
    assert "web2  build     ..." not in after and "web1  build     ... installing" in after
    assert text.endswith("\x1b[1F\x1b[J")
