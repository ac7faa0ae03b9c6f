"""Issue 18's deploytool features over real SSH with tiny packages (no Django): env and secrets (masked, 0600,
never on a command line), build steps, migrate once before any switch, roles and --roles, migrations in dry-run
and rollback, fab run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project

CANARY = "CANARY-7f3a9c2e-secret"
PSLIST = """import os, sys
lines = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                lines.append(handle.read().replace(b"\\0", b" ").decode("utf-8", "replace"))
        except OSError:
            pass
with open(sys.argv[1], "w") as out:
    out.write("\\n".join(lines))
"""
RECORD = """import os, sys
# the order log, outside every release: "<what> <host> <cwd> <current or none>"
root = os.environ["DEPLOYTOOL_ROOT"]
current = os.path.join(root, "current")
with open(sys.argv[1], "a") as out:
    out.write(" ".join([sys.argv[2], os.environ["DEPLOYTOOL_HOST"], os.getcwd(),
                        os.readlink(current) if os.path.islink(current) else "none"]) + "\\n")
"""


def stage(project: Project) -> dict[str, Any]:
    return project.inventory["stages"]["test"]


def root_of(project: Project, host: str) -> Path:
    return Path(stage(project)["hosts"][host]["root"])


def current(project: Project, host: str) -> str | None:
    link = root_of(project, host) / "current"
    return os.readlink(link) if link.is_symlink() else None


def releases(project: Project, host: str) -> list[str]:
    path = root_of(project, host) / "releases"
    return sorted(os.listdir(path)) if path.exists() else []


def journal(project: Project, host: str) -> list[dict[str, Any]]:
    path = root_of(project, host) / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shared_log(project: Project) -> Path:
    """A file outside every release that the deploy user (another account when tests run as root) appends to,
    from every host."""
    directory = root_of(project, "web1").parent.parent / (root_of(project, "web1").parent.name + "-order")
    directory.mkdir()
    directory.chmod(0o777)
    return directory / "order.log"


def with_etc_roots(project: Project) -> None:
    for host in stage(project)["hosts"].values():
        etc_root = Path(host["root"]).parent / "etc-root"
        etc_root.mkdir()
        parent = Path(host["root"]).parent.stat()
        os.chown(etc_root, parent.st_uid, parent.st_gid)
        host["etc_root"] = str(etc_root)


@pytest.fixture
def secret_project(ssh_project: Project, tmp_path: Path) -> Project:
    """web1 and web2 with env from a secrets file outside the repo, a build that prints the env and lists the
    host's processes, config templates using the env, restart and health check that read it."""
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"db_password: {CANARY}\nunused: another-value-123\n")
    with_etc_roots(ssh_project)
    test = stage(ssh_project)
    test["secrets"] = {"file": str(secrets)}
    test["env"] = {
        "DATABASE_URL": "postgres://demo:{{ secrets.db_password }}@127.0.0.1/demo",
        "SECRET_KEY": "{{ secrets.db_password }}-key",
        "PLAIN": "plain-{{ host }}",
    }
    test["build"] = [
        'echo "building with $SECRET_KEY as $PLAIN"',
        "python scripts/pslist.py ps.txt",
        'python -c "import sys, app; print(sys.prefix)" > prefix.txt',
    ]
    test["restart"] = ['printf "%s" "$DATABASE_URL" > "$DEPLOYTOOL_RELEASE_PATH/../../restart-env"']
    test["migrate"] = ['python scripts/pslist.py "$DEPLOYTOOL_ROOT/migrate-ps.txt" && test -n "$DATABASE_URL"']
    test["hosts"]["web1"]["roles"] = ["web", "migrate"]
    test["health_check"] = {"command": 'test "${PLAIN#plain-web}" != "$PLAIN" && test -n "$DATABASE_URL"'}
    ssh_project.write_inventory()
    ssh_project.commit(
        "env and secrets",
        {
            "scripts/pslist.py": PSLIST,
            "etc-mock/demo/app.env.j2": "DATABASE_URL={{ env.DATABASE_URL }}\nKEY={{ secrets.db_password }}\n",
            "etc-mock/demo/worker.conf.j2": "[program:demo]\nenvironment={{ env | supervisor_environment }}\n",
            "etc-mock/demo/group.conf.j2": "{# mode: 0640 #}\nname={{ app }}\n",
            "etc-mock/demo/plain.conf.j2": "name={{ app }}\n",
            "hosts.yml": (ssh_project.path / "hosts.yml").read_text(),
        },
    )
    return ssh_project


def test_env_and_secrets_reach_the_commands_and_never_show(secret_project: Project) -> None:
    project = secret_project
    verbose = project.fab("deploy", "--hosts", "web1,web2", "--verbose")
    assert CANARY not in verbose.stdout + verbose.stderr
    assert "building with ***-key as plain-web1" in verbose.stdout, verbose.stdout  # build output, masked
    (release,) = releases(project, "web1")
    path = root_of(project, "web1") / "releases" / release

    # env file: 0600 in a 0700 directory, the secret inside; the build ran in the release with the venv first
    env_file = path / ".deploytool" / "env.json"
    assert mode(env_file) == 0o600 and mode(env_file.parent) == 0o700
    assert json.loads(env_file.read_text()) == {
        "DATABASE_URL": f"postgres://demo:{CANARY}@127.0.0.1/demo",
        "SECRET_KEY": f"{CANARY}-key",
        "PLAIN": "plain-web1",
    }
    assert (path / "prefix.txt").read_text().strip() == str(path / "venv")
    # no process on the host had the secret on its command line during the build
    processes = (path / "ps.txt").read_text()
    assert "pslist.py" in processes and CANARY not in processes
    processes = (root_of(project, "web1") / "migrate-ps.txt").read_text()  # nor during migrate
    assert "pslist.py" in processes and CANARY not in processes
    # the restart command had the env (from the release's env file), the health check passed with it
    assert (root_of(project, "web1") / "restart-env").read_text() == f"postgres://demo:{CANARY}@127.0.0.1/demo"
    status = json.loads(project.fab("status", "--hosts", "web1", "--json").stdout)  # its check has the env too
    assert status["hosts"][0]["health"] == "ok", status

    # modes: secret-bearing files 0600 in the release and installed; a declared mode kept; others 0644
    etc_root = Path(stage(project)["hosts"]["web1"]["etc_root"])
    for where in (path / "etc", etc_root):
        assert mode(where / "demo/app.env") == 0o600, where
        assert mode(where / "demo/worker.conf") == 0o600, where
        assert mode(where / "demo/group.conf") == 0o640, where
        assert mode(where / "demo/plain.conf") == 0o644, where
    assert (
        etc_root / "demo/app.env"
    ).read_text() == f"DATABASE_URL=postgres://demo:{CANARY}@127.0.0.1/demo\nKEY={CANARY}\n"
    assert 'environment=DATABASE_URL="postgres://demo:' in (etc_root / "demo/worker.conf").read_text()
    assert (etc_root / "demo/group.conf").read_text() == "name=demo\n"

    # nothing else deploytool keeps on the host holds it: journal, manifests, lock records
    for host in ("web1", "web2"):
        root = root_of(project, host)
        assert CANARY not in (root / "journal.jsonl").read_text()
        for release_dir in (root / "releases").iterdir():
            assert CANARY not in (release_dir / ".deploytool.json").read_text()

    # --json, --dry-run, render-etc --diff (the host's installed file holds it), errors
    project.commit("second")
    as_json = project.fab("deploy", "--hosts", "web1,web2", "--json")
    assert CANARY not in as_json.stdout + as_json.stderr and json.loads(as_json.stdout)["ok"] is True
    project.commit(
        "third",
        {"etc-mock/demo/app.env.j2": "DATABASE_URL={{ env.DATABASE_URL }}\nKEY={{ secrets.db_password }}\nX=1\n"},
    )
    dry = project.fab("deploy", "--hosts", "web1", "--dry-run")
    assert CANARY not in dry.stdout + dry.stderr and "***" in dry.stdout
    diff = project.fab("render-etc", "--hosts", "web1", "--diff")
    assert CANARY not in diff.stdout + diff.stderr and " KEY=***\n" in diff.stdout
    rendered = project.path / "build/etc/test/web1/demo/app.env"
    assert mode(rendered) == 0o600  # the local render too
    test = stage(project)
    test["build"] = ['echo "failing with $SECRET_KEY"; exit 1']
    project.write_inventory()
    failed = project.fab("deploy", "--hosts", "web1", check=False)
    assert failed.returncode == 1 and "failing with ***-key" in failed.stdout + failed.stderr
    assert CANARY not in failed.stdout + failed.stderr
    assert CANARY not in (root_of(project, "web1") / "journal.jsonl").read_text()


def test_a_missing_secret_stops_the_deploy_before_any_host_is_touched(secret_project: Project) -> None:
    project = secret_project
    stage(project)["env"]["API_KEY"] = "{{ secrets.api_key }}"
    project.write_inventory()
    project.commit("needs api_key", {"hosts.yml": (project.path / "hosts.yml").read_text()})
    result = project.fab("deploy", "--hosts", "web1,web2", check=False)
    assert result.returncode == 1
    assert "secret 'api_key' is used but the secrets file" in result.stderr and "env.API_KEY" in result.stderr
    assert CANARY not in result.stdout + result.stderr
    for host in ("web1", "web2"):  # nothing touched: not even the layout or the lock
        assert not (root_of(project, host) / "releases").exists() and not (root_of(project, host) / "repo.git").exists()
    # a command may not carry a secret on its command line: refused before any host, naming it
    del stage(project)["env"]["API_KEY"]
    stage(project)["after_switch"] = ["echo {{ secrets.db_password }}"]
    project.write_inventory()
    refused = project.fab("deploy", "--hosts", "web1", check=False)
    assert refused.returncode == 1 and "would put secret 'db_password' on a command line" in refused.stderr
    assert not (root_of(project, "web1") / "releases").exists()


def test_a_failing_build_leaves_the_old_release_serving(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    old = {host: current(ssh_project, host) for host in ("web1", "web2")}
    kept = {host: releases(ssh_project, host) for host in ("web1", "web2")}
    stage(ssh_project)["hosts"]["web2"]["build"] = ["echo first-line; echo the-last-words >&2; exit 3"]
    ssh_project.write_inventory()
    ssh_project.commit("broken build", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    result = ssh_project.fab("deploy", "--hosts", "web1,web2", check=False)
    assert result.returncode == 1
    assert "build: echo first-line" in result.stderr and "the-last-words" in result.stderr
    assert "No host was switched" in result.stderr
    for host in ("web1", "web2"):
        assert current(ssh_project, host) == old[host]
        assert releases(ssh_project, host) == kept[host], "the half-built release is removed"
        assert not (root_of(ssh_project, host) / "deploy.lock").exists()
    assert journal(ssh_project, "web2")[-1]["status"] == "failed"


def roles_project(project: Project, log: Path, migrate: list[str]) -> None:
    """web1: web + migrate; web2: web; web3: web + worker; each restart writes to the order log."""
    test = stage(project)
    test["roles"] = {
        "web": {"restart": [f"{{{{ venv }}}}/bin/python {{{{ current }}}}/scripts/record.py {log} restart-web"]},
        "worker": {
            "restart": [f"{{{{ venv }}}}/bin/python {{{{ current }}}}/scripts/record.py {log} restart-worker"],
            "health_check": {"command": 'test "$ROLE_ENV" = worker'},
            "env": {"ROLE_ENV": "worker"},
        },
    }
    test["env"] = {"ROLE_ENV": "none"}
    test["migrate"] = migrate
    hosts = test["hosts"]
    hosts["web1"]["roles"] = ["web", "migrate"]
    hosts["web2"]["roles"] = ["web"]
    hosts["web3"]["roles"] = ["web", "worker"]
    del hosts["web4"]
    project.write_inventory()
    project.commit("roles", {"scripts/record.py": RECORD, "hosts.yml": (project.path / "hosts.yml").read_text()})


def order(log: Path) -> list[list[str]]:
    return [line.split(" ") for line in log.read_text().splitlines()] if log.exists() else []


def test_migrate_runs_once_on_the_migrate_host_before_any_switch(ssh_project: Project, tmp_path: Path) -> None:
    log = shared_log(ssh_project)
    roles_project(ssh_project, log, [f"python scripts/record.py {log} migrate"])
    ssh_project.fab("deploy")
    first = order(log)
    migrations = [line for line in first if line[0] == "migrate"]
    assert len(migrations) == 1 and migrations[0][1] == "web1"
    (release,) = releases(ssh_project, "web1")
    assert migrations[0][2] == str(root_of(ssh_project, "web1") / "releases" / release)  # in the new release
    assert first[0][0] == "migrate", "migrate runs before any host switches and restarts"
    restarts = sorted((line[0], line[1]) for line in first if line[0].startswith("restart"))
    assert restarts == [
        ("restart-web", "web1"),
        ("restart-web", "web2"),
        ("restart-web", "web3"),
        ("restart-worker", "web3"),  # a host with two roles runs both restarts (and both checks)
    ]

    # second deploy: at migrate time every host still runs the old release
    log.write_text("")
    ssh_project.commit("v2")
    result = ssh_project.fab("deploy", "--json")
    document = json.loads(result.stdout)
    (migrate_line,) = [line for line in order(log) if line[0] == "migrate"]
    assert migrate_line[3] == f"releases/{release}"
    assert order(log)[0][0] == "migrate"
    phases = [(event["host"], event["phase"]) for event in document["events"]]
    assert phases.count(("web1", "migrate")) == 1 and not any(p == "migrate" for h, p in phases if h != "web1")

    # --roles worker: only web3, no migrate host among them, so no migrate
    log.write_text("")
    ssh_project.commit("v3")
    only_worker = ssh_project.fab("deploy", "--roles", "worker")
    assert "Note: migrate is not run: none of the hosts this deploy goes to has the role migrate" in only_worker.stdout
    assert {line[1] for line in order(log)} == {"web3"} and not [line for line in order(log) if line[0] == "migrate"]
    assert current(ssh_project, "web3") != current(ssh_project, "web1")

    # --skip-migrate: not run, journaled
    log.write_text("")
    ssh_project.commit("v4")
    ssh_project.fab("deploy", "--skip-migrate")
    assert not [line for line in order(log) if line[0] == "migrate"]
    assert "migrate skipped (--skip-migrate" in journal(ssh_project, "web1")[-1]["reason"]


def test_a_failing_migrate_switches_no_host(ssh_project: Project, tmp_path: Path) -> None:
    log = shared_log(ssh_project)
    roles_project(ssh_project, log, [f"python scripts/record.py {log} migrate"])
    ssh_project.fab("deploy")
    before = {host: current(ssh_project, host) for host in ("web1", "web2", "web3")}
    stage(ssh_project)["migrate"] = ["echo applying 0002; echo 'relation demo does not exist' >&2; exit 4"]
    ssh_project.write_inventory()
    ssh_project.commit("bad migration", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    log.write_text("")
    result = ssh_project.fab("deploy", "--json", check=False)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert "migrate on web1 failed" in document["error"] and "relation demo does not exist" in document["error"]
    assert "No host was switched" in result.stderr
    assert [e["result"] for e in document["events"] if e["phase"] == "migrate"] == ["failed"]
    assert order(log) == [], "no host switched or restarted"
    for host, release in before.items():
        assert current(ssh_project, host) == release
        assert len(releases(ssh_project, host)) == 1 and not (root_of(ssh_project, host) / "deploy.lock").exists()


def test_roles_must_be_defined_and_select_hosts(ssh_project: Project) -> None:
    stage(ssh_project)["roles"] = {"worker": {"restart": ["true"]}}
    stage(ssh_project)["hosts"]["web3"]["roles"] = ["wroker"]
    ssh_project.write_inventory()
    result = ssh_project.fab("releases", check=False)
    assert result.returncode == 1
    assert "stages.test.hosts.web3.roles: role 'wroker' is not defined (did you mean 'worker'?)" in result.stderr
    assert str(ssh_project.path / "hosts.yml") in result.stderr
    stage(ssh_project)["hosts"]["web3"]["roles"] = ["worker"]
    ssh_project.write_inventory()
    listing = ssh_project.fab("releases", "--roles", "worker")
    assert "web3" in listing.stdout and "web1" not in listing.stdout
    unknown = ssh_project.fab("releases", "--roles", "db", check=False)
    assert unknown.returncode == 1 and "no host of stage 'test' has the role 'db'" in unknown.stderr


def test_migrations_are_listed_and_a_rollback_past_them_needs_force(ssh_project: Project) -> None:
    ssh_project.commit("v1", {"demo/migrations/0001_initial.py": "# 1\n", "demo/migrations/__init__.py": ""})
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    first = current(ssh_project, "web1")
    ssh_project.commit("v2", {"demo/migrations/0002_column.py": "# 2\n", "demo/migrations/0001_initial.py": "# 1b\n"})
    dry = ssh_project.fab("deploy", "--hosts", "web1,web2", "--dry-run")
    assert "  migrations:\n    M demo/migrations/0001_initial.py\n    A demo/migrations/0002_column.py" in dry.stdout
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    second = current(ssh_project, "web1")

    refused = ssh_project.fab("rollback", "--hosts", "web1,web2", check=False)
    assert refused.returncode == 1
    assert "the database keeps these migrations" in refused.stderr
    assert "demo/migrations/0002_column.py" in refused.stderr and "0001_initial" not in refused.stderr
    assert current(ssh_project, "web1") == second and not (root_of(ssh_project, "web1") / "deploy.lock").exists()

    forced = ssh_project.fab("rollback", "--hosts", "web1,web2", "--force")
    assert current(ssh_project, "web1") == first == current(ssh_project, "web2")
    assert "Rolled back 2 host(s)" in forced.stdout
    assert "forced (--force): the database keeps migrations" in forced.stdout and "0002_column.py" in forced.stdout
    last = journal(ssh_project, "web1")[-1]
    assert last["event"] == "rollback" and "forced (--force)" in last["reason"] and "0002_column.py" in last["reason"]


def test_fab_run_in_the_current_release_with_env_and_exit_status(ssh_project: Project) -> None:
    stage(ssh_project)["env"] = {"GREETING": "hello {{ host }}"}
    stage(ssh_project)["hosts"]["web2"]["roles"] = ["worker"]
    stage(ssh_project)["roles"] = {"worker": {}}
    ssh_project.write_inventory()
    ssh_project.commit("env", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    code = "import os, sys, app; print(os.environ['GREETING'], sys.prefix, os.getcwd(), sys.argv[1:]); sys.exit(3)"
    result = ssh_project.fab("run", "--hosts", "web1", "--", "python", "-c", code, "a b", "$HOME", check=False)
    assert result.returncode == 3, result.stderr
    root = root_of(ssh_project, "web1")
    cwd = (root / "current").resolve()
    assert f"hello web1 {root}/current/venv {cwd} ['a b', '$HOME']" in result.stdout
    both = ssh_project.fab("run", "--roles", "worker", "--", "python", "-c", "import os; print(os.environ['GREETING'])")
    assert "hello web2" in both.stdout and "hello web1" not in both.stdout
    worst = ssh_project.fab(
        "run",
        "--hosts",
        "web1,web2",
        "--",
        "sh",
        "-c",
        'test "$GREETING" = "hello web1" && exit 0; exit 5',
        check=False,
    )
    assert worst.returncode == 5 and "[web2] exit 5" in worst.stdout
    tty = ssh_project.fab("run", "--hosts", "web1", "--pty", "--", "python", "-c", "import os; print(os.isatty(1))")
    assert "True" in tty.stdout
    plain = ssh_project.fab("run", "--hosts", "web1", "--", "python", "-c", "import os; print(os.isatty(1))")
    assert "False" in plain.stdout
    missing = ssh_project.fab("run", "--hosts", "web1", check=False)
    assert missing.returncode == 1 and "no command given" in missing.stderr

    # a rollback brings the old release's env back with it
    greeting = ["run", "--hosts", "web1", "--", "python", "-c", "import os; print(os.environ['GREETING'])"]
    stage(ssh_project)["env"] = {"GREETING": "bye {{ host }}"}
    ssh_project.write_inventory()
    ssh_project.commit("new env", {"hosts.yml": (ssh_project.path / "hosts.yml").read_text()})
    ssh_project.fab("deploy", "--hosts", "web1")
    assert "bye web1" in ssh_project.fab(*greeting).stdout
    ssh_project.fab("rollback", "--hosts", "web1")
    assert "hello web1" in ssh_project.fab(*greeting).stdout
