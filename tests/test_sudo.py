"""``sudo: true`` end to end: config installed into a root-owned etc_root through real ``sudo -S`` over real SSH.

As root, the ``deploy`` login user gets a random password (per run) and a sudoers drop-in for the module; both
are removed afterwards. Deploys run in-process so the password is handed over as the tasks do after prompting.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.errors import DeployError
from deploytool.flow.deploy import plan_deploy, run_deploy, run_rollback
from deploytool.inventory import load_inventory
from tests.conftest import Project
from tests.isolation import machine_lock
from tests.sshd import SshServer
from tests.test_deploy_ssh import current, journal, release_ids, root_of

SUDOERS = Path("/etc/sudoers.d/deploytool-tests")
TEMPLATE = "workers={{ workers }}\nrelease={{ release_id }}\n"
# Shell-special characters too: the password must only ever travel on stdin, never through a command line.
PASSWORD = secrets.token_urlsafe(24) + " $'\"`;"
TOKEN = PASSWORD.split(" ")[0]  # the unique part, searched for in files and the process list

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: the tests give the deploy user a password and a sudoers drop-in"
    ),
    pytest.mark.xdist_group("sudo"),  # one worker: the account's password and drop-ins are the machine's
]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the tests give the deploy user a password and a sudoers drop-in"
    for tool in ("sudo", "visudo", "chpasswd", "usermod"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install sudo)"
    if not Path("/etc/sudoers.d").is_dir():
        return "/etc/sudoers.d does not exist"
    return None


def install_drop_in(drop_in: Path, rule: str) -> None:
    """Write a sudoers drop-in checked by visudo, under a dotted name first (sudo skips those), then renamed."""
    staged = drop_in.with_name(drop_in.name + ".tmp")
    try:
        staged.write_text(rule + "\n")
        staged.chmod(0o440)
        subprocess.run(["visudo", "-cf", str(staged)], check=True, capture_output=True)
        staged.replace(drop_in)
    finally:
        staged.unlink(missing_ok=True)


def give_password(user: str) -> None:
    """Set the user's password (on stdin: it never shows in the process list). Called before every deploy too:
    any other test run on this machine starts an sshd, which resets the shared account's password to ``*``."""
    subprocess.run(["chpasswd"], input=f"{user}:{PASSWORD}\n", text=True, check=True)


@pytest.fixture(scope="module")
def sudo_user(ssh_server: SshServer) -> Iterator[str]:
    """The login user may run anything as root with ``PASSWORD``; undone (password back to ``*``) afterwards."""
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"CI=true as root but {missing}")
        pytest.skip(missing)
    user = ssh_server.user
    leftovers = [
        path for path in (Path("/run/sudo/ts", user), Path("/var/lib/sudo/lectured", user)) if not path.exists()
    ]
    with machine_lock("sudo"):  # another suite running here (the other interpreter's) waits for this module
        try:
            give_password(user)
            install_drop_in(SUDOERS, f"{user} ALL=(root) ALL")
            yield user
        finally:
            SUDOERS.unlink(missing_ok=True)
            # "*", not a locked "!": sshd runs without PAM and refuses locked accounts even for keys.
            subprocess.run(["usermod", "--password", "*", user], check=True)
            for path in leftovers:  # sudo's cached credentials and "lectured" mark, if this module created them
                path.unlink(missing_ok=True)


def etc_root(project: Project) -> Path:
    return Path(project.inventory["stages"]["test"]["hosts"]["web1"]["etc_root"])


@pytest.fixture
def sudo_project(ssh_project: Project, sudo_user: str) -> Project:
    """web1 with ``sudo: true`` and an etc_root only root can write, validate and after-switch commands that
    record who ran them."""
    host = ssh_project.inventory["stages"]["test"]["hosts"]["web1"]
    etc = Path(host["root"]).parent / "etc-root"
    etc.mkdir()
    os.chown(etc, 0, 0)
    etc.chmod(0o755)
    host.update(
        sudo=True,
        etc_root=str(etc),
        vars={"workers": 2},
        validate=['test "$(id -u)" = 0', f"id -u > {etc}/validated-by", f"grep -q workers= {etc}/demo/app.conf"],
        # cat: what an after-switch command reads on its stdin (issue 17: it used to be the password)
        after_switch=[f"id -u >> {etc}/reloaded-by", f"cat >> {etc}/after-switch-stdin"],
    )
    ssh_project.write_inventory()
    ssh_project.commit(
        "config", {"etc-mock/demo/app.conf.j2": TEMPLATE, "etc-mock/cron.d/{{ app }}.j2": "* * * * * {{ user }} true\n"}
    )
    return ssh_project


def deploy(project: Project, password: str | None) -> str:
    """Deploy HEAD to web1 in-process, as ``fab deploy`` does once it has the password; the release id."""
    inventory = load_inventory(project.path / "hosts.yml")
    hosts = inventory.hosts("test", "web1")
    give_password(str(hosts[0].user))
    plan = plan_deploy(inventory, hosts, "HEAD")
    run_deploy(plan, inventory.project_root, password=password)
    return plan.release.id


def rollback(project: Project, password: str | None) -> str:
    inventory = load_inventory(project.path / "hosts.yml")
    hosts = inventory.hosts("test", "web1")
    give_password(str(hosts[0].user))
    return run_rollback(hosts, None, password=password)


def files_containing(top: Path, needle: str) -> list[Path]:
    found = []
    for here, _dirs, names in os.walk(top):
        for name in names:
            path = Path(here, name)
            if path.is_symlink() or not path.is_file():
                continue
            if needle.encode() in path.read_bytes():
                found.append(path)
    return found


class ProcessWatch:
    """Poll every process's command line and environment, and the host's lock file, for the password."""

    def __init__(self, lock: Path) -> None:
        self.lock, self.seen, self.scans, self.lock_seen = lock, set[str](), 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        needle = TOKEN.encode()
        while not self._stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                for part in ("cmdline", "environ"):
                    try:
                        data = Path("/proc", pid, part).read_bytes()
                    except OSError:
                        continue
                    if needle in data:
                        self.seen.add(f"pid {pid} {part}: {data[:200]!r}")
            try:
                if needle in (self.lock / "owner.json").read_bytes():
                    self.seen.add("lock owner file")
                self.lock_seen += 1
            except OSError:
                pass
            self.scans += 1
            time.sleep(0.005)


def test_sudo_installs_root_owned_config_runs_hooks_as_root_and_rollback_restores(sudo_project: Project) -> None:
    etc, root = etc_root(sudo_project), root_of(sudo_project)
    with ProcessWatch(root / "deploy.lock") as watch:
        first = deploy(sudo_project, PASSWORD)
    assert current(sudo_project) == f"releases/{first}"
    conf = etc / "demo/app.conf"
    assert conf.read_text() == f"workers=2\nrelease={first}\n"
    for path in (conf, etc / "demo", etc / "cron.d/demo", etc / "cron.d"):
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), f"{path} is not owned by root"
    assert etc.stat().st_uid == 0 and etc.stat().st_mode & 0o777 == 0o755, "etc_root stays root's"
    assert (etc / "validated-by").read_text() == "0\n", "validate commands run as root"
    assert (etc / "reloaded-by").read_text() == "0\n", "after-switch commands run as root"
    assert not (root / "deploy.lock").exists()

    sudo_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    (sudo_project.path / "etc-mock/cron.d/{{ app }}.j2").unlink()
    sudo_project.commit("drop cron")
    second = deploy(sudo_project, PASSWORD)
    assert current(sudo_project) == f"releases/{second}"
    assert conf.read_text() == f"v2\nworkers=2\nrelease={second}\n"
    assert not (etc / "cron.d/demo").exists(), "a root-owned file the new release dropped is removed"

    assert rollback(sudo_project, PASSWORD) == first
    assert current(sudo_project) == f"releases/{first}"
    assert conf.read_text() == f"workers=2\nrelease={first}\n"
    assert (etc / "cron.d/demo").is_file() and (etc / "cron.d/demo").stat().st_uid == 0
    assert (etc / "reloaded-by").read_text() == "0\n0\n0\n"
    assert (etc / "after-switch-stdin").read_text() == "", "a command's stdin never carries the sudo password"
    assert [(e["event"], e["status"]) for e in journal(sudo_project)] == [
        ("deploy", "ok"),
        ("deploy", "ok"),
        ("rollback", "ok"),
    ]

    assert watch.scans > 10 and watch.lock_seen > 0, "the watcher must have run while the host was locked"
    assert not watch.seen, f"password visible while deploying: {sorted(watch.seen)}"
    assert files_containing(root.parent, TOKEN) == [], "the password must not be written on the host"


def test_wrong_password_fails_and_changes_nothing(sudo_project: Project) -> None:
    etc, root = etc_root(sudo_project), root_of(sudo_project)
    wrong = "not-" + secrets.token_urlsafe(12)
    with pytest.raises(DeployError) as failure:
        deploy(sudo_project, wrong)  # a first deploy: nothing to go back to
    # The password is checked before anything is built or locked.
    assert "checking the sudo password failed" in str(failure.value) and "incorrect password" in str(failure.value)
    assert not (root / "current").exists() and list(etc.iterdir()) == []
    assert not (root / "releases").exists() and not (root / "deploy.lock").exists()

    good = deploy(sudo_project, PASSWORD)
    before = {path: path.read_bytes() for path in sorted(etc.rglob("*")) if path.is_file()}
    sudo_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    expected = {  # None: no password given (and nobody to ask), so only passwordless sudo could work
        wrong: ("checking the sudo password failed", "sudo: 3 incorrect password attempts"),
        None: ("checking passwordless sudo failed", "sudo: a password is required"),
    }
    for password, (step, said) in expected.items():
        with pytest.raises(DeployError) as failure:
            deploy(sudo_project, password)
        message = str(failure.value)
        assert message.startswith(f"deploy failed: web1: {step}"), message
        assert said in message and "No host was switched" in message, message
        assert current(sudo_project) == f"releases/{good}"
        assert {path: path.read_bytes() for path in sorted(etc.rglob("*")) if path.is_file()} == before
        assert release_ids(sudo_project) == [good], "nothing was built"
        assert journal(sudo_project)[-1]["status"] == "ok", "nothing was attempted, so nothing is journaled"
        assert not (root / "deploy.lock").exists()
    for password in (PASSWORD, wrong):
        assert files_containing(root.parent, password.split(" ")[0]) == []


def test_wrong_password_message_names_the_sudo_step_and_claims_no_failed_restore(sudo_project: Project) -> None:
    with pytest.raises(DeployError) as failure:
        deploy(sudo_project, "not-" + secrets.token_urlsafe(12))
    message = str(failure.value)
    assert "web1:  failed" not in message and "checking the sudo password failed" in message, message
    assert "incorrect password" in message, message
    assert "restoring the previous config failed too" not in message, message


def test_wrong_password_rollback_switches_nothing(sudo_project: Project) -> None:
    etc, root = etc_root(sudo_project), root_of(sudo_project)
    first = deploy(sudo_project, PASSWORD)
    sudo_project.commit("v2", {"etc-mock/demo/app.conf.j2": "v2\n" + TEMPLATE})
    second = deploy(sudo_project, PASSWORD)
    before = (etc / "demo/app.conf").read_text()
    with pytest.raises(DeployError) as failure:
        rollback(sudo_project, "not-" + secrets.token_urlsafe(12))
    assert str(failure.value).startswith("rollback failed: web1:")
    assert "sudo: 3 incorrect password attempts" in str(failure.value)
    assert current(sudo_project) == f"releases/{second}"
    assert (etc / "demo/app.conf").read_text() == before
    assert not (root / "deploy.lock").exists()
    assert rollback(sudo_project, PASSWORD) == first
    assert (etc / "demo/app.conf").read_text() == f"workers=2\nrelease={first}\n"


def test_the_drop_in_and_password_are_real(sudo_user: str) -> None:
    """Guard against a vacuous pass: without the password, sudo refuses the deploy user."""
    give_password(sudo_user)
    probe = subprocess.run(
        ["su", "-s", "/bin/sh", sudo_user, "-c", "sudo -n true"], capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0 and "password" in probe.stderr
    with tempfile.TemporaryFile("w+") as stdin:
        stdin.write(PASSWORD + "\n")
        stdin.seek(0)
        ok = subprocess.run(
            ["su", "-s", "/bin/sh", sudo_user, "-c", "sudo -S -p '' id -u"],
            stdin=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
    assert ok.returncode == 0 and ok.stdout == "0\n", ok.stderr
    assert SUDOERS.stat().st_mode & 0o777 == 0o440


def fab(project: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``fab`` as a CI job runs it: no terminal (stdin is /dev/null), the password set first."""
    give_password(str(project.inventory["stages"]["test"]["user"]))
    return project.fab(*args, check=False, env=env)


def test_without_a_terminal_or_a_given_password_the_error_says_how_and_nothing_is_touched(
    sudo_project: Project,
) -> None:
    result = fab(sudo_project, "deploy", "--hosts", "web1")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr and "EOFError" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: sudo: true, and the deploy user needs a password for sudo on web1: ")
    assert "--prompt-for-sudo-password" in line and "FABRIC_SUDO_PASSWORD" in line
    root = root_of(sudo_project)
    assert not (root / "releases").exists() and not (root / "deploy.lock").exists()

    result = fab(sudo_project, "rollback", "--hosts", "web1")
    assert result.returncode == 1 and "FABRIC_SUDO_PASSWORD" in result.stderr


def test_password_from_fabrics_environment_variable(sudo_project: Project) -> None:
    result = fab(sudo_project, "deploy", "--hosts", "web1", env={"FABRIC_SUDO_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    conf = etc_root(sudo_project) / "demo/app.conf"
    assert conf.read_text().startswith("workers=2\n") and conf.stat().st_uid == 0


@pytest.fixture
def passwordless(sudo_user: str) -> Iterator[str]:
    """The login user may sudo without a password (a later drop-in wins over the password one)."""
    drop_in = SUDOERS.with_name(SUDOERS.name + "-nopasswd")
    try:
        install_drop_in(drop_in, f"{sudo_user} ALL=(root) NOPASSWD: ALL")
        yield sudo_user
    finally:
        drop_in.unlink(missing_ok=True)


def test_passwordless_sudo_asks_nothing(sudo_project: Project, passwordless: str) -> None:
    result = fab(sudo_project, "deploy", "--hosts", "web1")
    assert result.returncode == 0, result.stderr
    assert (etc_root(sudo_project) / "demo/app.conf").stat().st_uid == 0
    assert (etc_root(sudo_project) / "validated-by").read_text() == "0\n"
