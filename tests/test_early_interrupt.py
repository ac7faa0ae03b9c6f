"""Ctrl-C and SIGTERM: while fab loads the fabfile, while the deploy plans, while a host's check takes the lock,
and while a task acts on each host in turn (issue 21's soak found each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from deploytool.flow import release_claim
from deploytool.flow.release import Release
from tests.conftest import HOST_PYTHON, Project
from tests.isolation import deadline
from tests.sshd import SshServer


def interrupt_when(
    project: Project,
    marker: Path,
    *args: str,
    env: dict[str, str] | None = None,
    signum: int = signal.SIGINT,
) -> tuple[int, str]:
    """Run ``fab`` in the project, send it ``signum`` (SIGINT: as Ctrl-C does) once ``marker`` exists; its status
    and output."""
    fab = subprocess.Popen(
        [sys.executable, "-m", "fabric", *args],
        cwd=project.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        until = deadline(60)
        while not marker.exists():
            assert fab.poll() is None, f"fab ended before the marker: {fab.communicate()}"
            assert time.monotonic() < until, "never reached the marker"
            time.sleep(0.02)
        fab.send_signal(signum)
        out, err = fab.communicate(timeout=60)
    finally:
        fab.kill()
    return fab.returncode, out + err


def assert_nothing_touched(project: Project) -> None:
    assert not (project.path / ".deploy").exists(), "the local host's deploy root was never made"


def test_ctrl_c_while_the_deploy_plans_says_nothing_was_changed(local_project: Project, tmp_path: Path) -> None:
    """Soak violation (issue 21): ``fab_sigint`` early in a deploy, seed 2126 run 18, exited 1 with no output
    (Invoke's program.py swallowed the KeyboardInterrupt raised before deploytool's own handling began)."""
    marker, tools = tmp_path / "planning", tmp_path / "bin"
    tools.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    wrapper = tools / "git"
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" rev-parse "*) touch {marker}; sleep 30;; esac\nexec {real_git} "$@"\n'
    )
    wrapper.chmod(0o755)
    status, output = interrupt_when(local_project, marker, "deploy", env={"PATH": f"{tools}:{os.environ['PATH']}"})
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == ["Error: interrupted (Ctrl-C) while deploy was starting: nothing was changed on any host"]
    assert_nothing_touched(local_project)


def test_ctrl_c_while_fab_loads_the_fabfile_says_so(local_project: Project, tmp_path: Path) -> None:
    """Soak violation (issue 21), seed 2126 run 18: a Ctrl-C before any task runs (the fabfile still loading)
    ended fab with status 1 and nothing said."""
    marker = tmp_path / "loading"
    fabfile = f"from deploytool import ns\nimport pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
    fabfile += "time.sleep(30)\n"
    (local_project.path / "fabfile.py").write_text(fabfile)
    status, output = interrupt_when(local_project, marker, "deploy")
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == ["Error: interrupted (Ctrl-C) while fab was starting: nothing was changed on any host"], output
    assert_nothing_touched(local_project)


def test_sigterm_while_fab_loads_the_fabfile_says_so(local_project: Project, tmp_path: Path) -> None:
    """Soak violation (issue 21), seed 2207 run 72: ``fab_sigterm`` 0.4 s into ``fab unlock`` ended fab with
    status -15 and nothing said: deploytool handled SIGTERM only inside the deploy and rollback flows."""
    marker = tmp_path / "loading"
    fabfile = f"from deploytool import ns\nimport pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
    fabfile += "time.sleep(30)\n"
    (local_project.path / "fabfile.py").write_text(fabfile)
    status, output = interrupt_when(local_project, marker, "unlock", signum=signal.SIGTERM)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == ["Error: terminated (SIGTERM) while fab was starting: nothing was changed on any host"], output


def slow_python(server_or_dir: Path, module: str, marker: Path, seconds: float) -> Path:
    """A ``python`` for hosts.yml that runs host-side module ``module`` ``seconds`` late, touching ``marker`` first
    (so a test knows the module's call is under way on the host)."""
    wrapper = server_or_dir / "slow-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *"<deploytool.hostside.{module}>"*) touch {marker}; sleep {seconds};; esac\n'
        f'exec {HOST_PYTHON} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_sigterm_while_fab_unlock_runs_names_where_each_host_stands(local_project: Project, tmp_path: Path) -> None:
    """Soak violation (issue 21), seed 2207 run 72: ``fab_sigterm`` during ``fab unlock`` ended it with status -15
    and no ``Error:`` line. Now the step under way is waited for, and the line says which hosts it had done."""
    marker = tmp_path / "unlocking"
    local_project.inventory["python"] = str(slow_python(tmp_path, "unlock", marker, 1))
    local_project.write_inventory()
    status, output = interrupt_when(local_project, marker, "unlock", signum=signal.SIGTERM)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == [
        "Error: terminated (SIGTERM) during unlock: done on localhost; failed on none; not started on none"
    ], output


def test_sigterm_while_a_host_takes_the_lock_leaves_no_lock(
    ssh_project: Project, ssh_server: SshServer, tmp_path: Path
) -> None:
    """Soak violation (issue 21), seed 2207 run 57: ``fab_sigterm`` 0.4 s into a deploy, while web2's and web4's
    checks ran. The laptop cut those checks short, but the host-side check runs to its end and took the lock;
    not knowing it, the clean-up left both hosts locked. Now a check under way is waited for (the rest is cut),
    so its lock is known and released."""
    shared = ssh_server.host_root(f"{tmp_path.name}-python")
    marker = shared / "checking"
    ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["python"] = str(slow_python(shared, "check", marker, 1))
    ssh_project.write_inventory()
    ssh_project.commit("slow check on web2", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    status, output = interrupt_when(ssh_project, marker, "deploy", signum=signal.SIGTERM)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert status == 1 and "Traceback" not in output, output
    assert errors == ["Error: terminated (SIGTERM): no host was switched; the half-built releases were removed"]
    for host in ("web1", "web2", "web3", "web4"):
        root = Path(ssh_project.inventory["stages"]["test"]["hosts"][host]["root"])
        assert not (root / "deploy.lock").exists(), f"{host} was left locked: {output}"
        assert not (root / "current").exists()


def test_two_deploys_in_one_second_get_two_release_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Soak violation (issue 21), seed 2207 run 57: a deploy killed in its first second, then the recovery
    ``fab deploy`` of the same commit in that same second, minted the same release id; the recovery made live a
    release the killed run's journal entry marks failed. An id is minted once per laptop: the next one waits for
    the next second."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    clock = [datetime(2026, 12, 7, 8, 52, 36, 400000, tzinfo=timezone.utc)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    commit = "2410cd03e83f76b66ce411699095b98407f756f5"
    first = release_claim.mint_unclaimed("demo", commit, lambda: clock[0], sleep)
    second = release_claim.mint_unclaimed("demo", commit, lambda: clock[0], sleep)
    assert first.id == "20261207T085236Z-2410cd0" and second.id == "20261207T085237Z-2410cd0"
    assert slept == [pytest.approx(0.6)]
    other = release_claim.mint_unclaimed("other-app", commit, lambda: clock[0], sleep)
    assert other.id == second.id, "each app's ids are its own"
    assert Release.mint(commit, clock[0]).id == second.id  # mint itself stays pure


def test_a_deploy_planned_in_the_second_of_the_last_one_gets_a_new_id(
    local_project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same soak violation (seed 2207, run 57), through `plan_deploy`: two plans of one commit in one second
    (the clock frozen there until the laptop waits) get two ids."""
    from deploytool.flow.deploy import plan_deploy
    from deploytool.inventory import load_inventory

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    clock = [datetime(2026, 12, 7, 8, 52, 36, 400000, tzinfo=timezone.utc)]
    monkeypatch.setattr(release_claim, "utc_now", lambda: clock[0])
    monkeypatch.setattr(
        release_claim.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + timedelta(seconds=seconds))
    )
    inventory = load_inventory(local_project.path / "hosts.yml")
    hosts = inventory.hosts("local")
    first, second = (plan_deploy(inventory, hosts, "HEAD").release.id for _ in "ab")
    assert first.startswith("20261207T085236Z-") and second.startswith("20261207T085237Z-"), (first, second)
