"""The host-side module gunicorn_reexec against a real gunicorn started here (its edge cases, by import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.connection import hostrun
from deploytool.hostside import gunicorn_reexec
from tests.gunicornhost import LocalApp, RequestLoop, children, free_port, get, kill_mentioning, serves, wait_for

pytestmark = pytest.mark.integration  # real gunicorn masters on loopback ports

BROKEN_APP = "raise ImportError('this release cannot start')\n"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LocalApp]:
    """An app root with release r1 current and its gunicorn running the graceful recipe (daemon + pid file)."""
    local = LocalApp(tmp_path / "app", free_port(), Path(sys.prefix))
    local.release("r1")
    local.switch("r1")
    subprocess.run(local.start_argv(), check=True, cwd=tmp_path)
    wait_for(lambda: serves(local.url, "r1"), what="gunicorn to serve r1")
    yield local
    kill_mentioning(str(local.root))


def reexec(app: LocalApp, timeout: float = 30) -> dict[str, object]:
    return gunicorn_reexec.main({"pidfile": str(app.pidfile), "timeout": timeout})


def alive(pid: int) -> bool:
    return gunicorn_reexec.alive(pid)


def test_no_pidfile_means_not_running_and_nothing_changes(tmp_path: Path) -> None:
    answer = gunicorn_reexec.main({"pidfile": str(tmp_path / "gunicorn.pid"), "timeout": 5})
    assert answer["ok"] is True and answer["running"] is False
    assert answer["old_pid"] is None and answer["new_pid"] is None and answer["error"] is None
    assert "missing" in str(answer["output"])


@pytest.mark.parametrize("content", ["", "garbage\n", "-1\n", "0\n", "1e3\n", "99999999999\n", "12 34\n", "\x00\xff"])
def test_garbage_pidfile_is_not_a_master(tmp_path: Path, content: str) -> None:
    (tmp_path / "gunicorn.pid").write_bytes(content.encode("latin-1"))
    answer = gunicorn_reexec.main({"pidfile": str(tmp_path / "gunicorn.pid"), "timeout": 5})
    assert (answer["ok"], answer["running"], answer["old_pid"]) == (True, False, None)


def test_stale_pidfile_and_a_pid_that_is_not_gunicorn(tmp_path: Path) -> None:
    done = subprocess.Popen(["true"])
    done.wait()
    (tmp_path / "gunicorn.pid").write_text(f"{done.pid}\n")
    answer = gunicorn_reexec.main({"pidfile": str(tmp_path / "gunicorn.pid"), "timeout": 5})
    assert (answer["ok"], answer["running"]) == (True, False)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "gunicorn.pid").write_text(f"{sleeper.pid}\n")
        answer = gunicorn_reexec.main({"pidfile": str(tmp_path / "gunicorn.pid"), "timeout": 5})
        assert (answer["ok"], answer["running"]) == (True, False)
        assert "not a running gunicorn" in str(answer["output"])
        assert sleeper.poll() is None, "a pid that is not gunicorn must not be signalled"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("args", [{}, {"pidfile": "relative.pid", "timeout": 5}, {"pidfile": "/x.pid", "timeout": -1}])
def test_bad_arguments_are_refused(args: dict[str, object]) -> None:
    answer = gunicorn_reexec.main(args)
    assert answer["ok"] is False and answer["error"]


def test_reexec_runs_the_release_current_names_with_no_failed_request(app: LocalApp) -> None:
    old = int(app.pidfile.read_text())
    old_workers = children(old)
    app.release("r2")
    app.switch("r2")
    with RequestLoop(app.url) as loop:
        wait_for(lambda: loop.requests > 20, what="requests before the re-exec")
        answer = reexec(app)
        wait_for(lambda: "r2" in loop.releases and loop.requests > len(loop.releases) + 50, what="requests after")
    assert answer["ok"] is True and answer["running"] is True, answer
    new = answer["new_pid"]
    assert answer["old_pid"] == old and isinstance(new, int) and new != old
    assert not alive(old) and not any(alive(pid) for pid in old_workers)
    assert int(app.pidfile.read_text()) == new and not Path(f"{app.pidfile}.2").exists()
    assert get(app.url)["release"] == "r2"
    master = Path(f"/proc/{new}/cmdline").read_bytes().split(b"\0")
    assert master[0] == str(app.root / "releases" / "r2" / "venv" / "bin" / "python").encode(), master
    assert loop.failures == [] and loop.releases[0] == "r1" and loop.releases[-1] == "r2"
    assert sorted(p.name for p in app.root.glob("gunicorn.pid.ready.*")) == [f"gunicorn.pid.ready.{new}"]

    app.switch("r1")  # a rollback re-execs the same way, from the new master
    again = reexec(app)
    assert again["ok"] is True and again["old_pid"] == new, again
    assert get(app.url)["release"] == "r1" and not alive(new)


def test_new_master_that_cannot_boot_leaves_the_old_one_serving(app: LocalApp) -> None:
    old = int(app.pidfile.read_text())
    app.release("r2", BROKEN_APP)
    app.switch("r2")
    line = hostrun.stdin_line({"pidfile": str(app.pidfile), "timeout": 30})
    done = subprocess.run(
        hostrun.argv(sys.executable, "gunicorn_reexec"),
        input=line,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == hostrun.EXIT_FAILED, done.stderr
    (answer_line,) = done.stdout.splitlines()
    answer = json.loads(answer_line)
    assert answer["ok"] is False and answer["running"] is True and answer["old_pid"] == old
    assert "the new gunicorn master" in answer["error"] and "exited" in answer["error"], answer
    assert "old master still serves" in answer["error"]
    assert isinstance(answer["new_pid"], int) and not alive(answer["new_pid"])
    assert alive(old) and int(app.pidfile.read_text()) == old
    assert get(app.url)["release"] == "r1"


def test_new_master_never_ready_is_stopped_on_timeout(app: LocalApp) -> None:
    """A config without the readiness hook: the new master is killed at the deadline, the old one serves on."""
    old = int(app.pidfile.read_text())
    app.release("r2")
    app.switch("r2")
    text = app.config.read_text().replace("def post_worker_init(", "def not_a_hook(")
    app.config.write_text(text)
    answer = reexec(app, timeout=3)
    assert answer["ok"] is False and "reported loading the app" in str(answer["error"]), answer
    new = answer["new_pid"]
    assert isinstance(new, int)
    wait_for(lambda: not alive(new), 10, "the new master to be gone")
    assert alive(old) and int(app.pidfile.read_text()) == old
    assert get(app.url)["release"] == "r1"
    assert os.path.exists(app.pidfile)
