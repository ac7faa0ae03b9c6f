"""The Django example (examples/django) deployed for real to three hosts over real SSH: web1 {web, migrate}, web2
{web}, worker1 {worker}; real PostgreSQL, redis, celery, gunicorn and supervisord, nginx for the static files.

v1 is the example as it is; v2 is examples/django-v2 copied over it (migration 0002 adds a column, the view reads
it, the celery task writes it)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import HOST_PYTHON, HOST_PYTHON_VERSION, Mirror, Project, git, seed_tools, ssh_inventory
from tests.djangostack import (
    EXAMPLE,
    EXAMPLE_V2,
    Database,
    Nginx,
    nginx_missing,
    start_nginx,
)
from tests.gunicornhost import (
    AppHost,
    Supervisord,
    free_port,
    get,
    kill_mentioning,
    serve_app_server,
    start_supervisord,
)
from tests.isolation import wait_for
from tests.sshd import SshServer

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("django")]

MIGRATION_V2 = "notes/migrations/0002_note_author.py"
#: Where the test hosts come from (conftest's four loopback hosts): the third is the worker.
HOSTS = {"web1": "web1", "web2": "web2", "worker1": "web3"}
ROLES = {"web1": ["web", "migrate"], "web2": ["web"], "worker1": ["worker"]}


@dataclass
class DjangoFleet:
    project: Project
    database: Database
    secret_key: str
    hosts: dict[str, AppHost]
    supervisors: list[Supervisord] = field(default_factory=list)
    nginx: dict[str, Nginx] = field(default_factory=dict)

    @property
    def web(self) -> list[AppHost]:
        return [host for name, host in self.hosts.items() if "web" in ROLES[name]]

    def deploy(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.project.fab("deploy", *args, check=check)

    def deploy_json(self, *args: str, check: bool = True) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
        result = self.deploy("--json", *args, check=check)
        return json.loads(result.stdout), result

    def currents(self) -> dict[str, str]:
        return {name: host.current() for name, host in self.hosts.items()}

    def commit_v2(self, extra: dict[str, str] | None = None) -> str:
        copy_tree(EXAMPLE_V2, self.project.path, skip=("README.md",))
        return self.project.commit("v2: notes get an author (migration 0002)", extra)

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.project.fab("run", *args, check=check)

    def ask_worker(self) -> dict[str, str]:
        """Have web1's app send the worker a task (``/worker/``) and return which release and code ran it."""
        answer = get(self.hosts["web1"].url + "worker/", timeout=60)
        return answer

    def stop(self) -> None:
        for supervisor in self.supervisors:
            supervisor.stop()
        for nginx in self.nginx.values():
            nginx.stop()
        for host in self.hosts.values():
            kill_mentioning(str(host.base))


def copy_tree(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or relative.as_posix() in skip or "__pycache__" in relative.parts:
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)


def django_inventory(
    server: SshServer, mirror: Mirror, label: str, database: Database, redis_url: str, secrets_file: Path
) -> dict[str, Any]:
    """The example's hosts.yml with its stage replaced by three test hosts (the roles, env, build and migrate kept;
    supervisorctl and nginx are each host's own)."""
    example = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    stage = ssh_inventory(server, mirror, label)["stages"]["test"]
    stage["hosts"] = {name: {**stage["hosts"][source], "roles": ROLES[name]} for name, source in HOSTS.items()}
    roles = example["roles"]
    for role in roles.values():
        role["restart"] = [command.replace("supervisorctl", "{{ supervisorctl }}") for command in role["restart"]]
        role.pop("after_switch", None)  # nginx: each test host's own (its after_switch)
    env = {
        **example["env"],
        "DATABASE_URL": f"postgres://{database.name}:{{{{ secrets.db_password }}}}@127.0.0.1:"
        f"{database.cluster.port}/{database.name}",
        "CELERY_BROKER_URL": redis_url,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    return {
        "app": "demo",
        "default_stage": "test",
        "requirements": "requirements/prod.txt",
        "mirror": mirror.url,
        "keep_releases": 3,
        "python": HOST_PYTHON,
        "python_version": HOST_PYTHON_VERSION,
        "env": env,
        "secrets": {"file": str(secrets_file)},
        "build": example["build"],
        "migrate": example["migrate"],
        "migrations": example["migrations"],
        "roles": roles,
        "stages": {"test": stage},
    }


@pytest.fixture
def django_fleet(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    ssh_server: SshServer,
    mirror: Mirror,
    django_wheels: Path,
    database: Database,
    redis_url: str,
) -> Iterator[DjangoFleet]:
    for wheel in django_wheels.glob("*.whl"):
        if not (mirror.directory / wheel.name).exists():
            shutil.copy2(wheel, mirror.directory / wheel.name)
    serve_app_server(mirror.directory)  # supervisor, for the hosts' supervisord
    secret_key = "canary-" + secrets.token_hex(16)
    secrets_file = tmp_path / "laptop-config" / "production.yaml"  # outside the repository
    secrets_file.parent.mkdir()
    secrets_file.write_text(yaml.safe_dump({"db_password": database.password, "secret_key": secret_key}))
    secrets_file.chmod(0o600)
    inventory = django_inventory(ssh_server, mirror, tmp_path.name, database, redis_url, secrets_file)
    seed_tools(inventory, request.getfixturevalue("tools_template"))

    path = tmp_path / "project"
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("__pycache__", "staticfiles"))
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    project = Project(path, inventory)

    fleet = DjangoFleet(project, database, secret_key, {})
    try:
        for name, settings in inventory["stages"]["test"]["hosts"].items():
            host = fleet.hosts[name] = AppHost(name, Path(settings["root"]), free_port())
            host.prepare(settings)
            supervisor = start_supervisord(
                host.base / "supervisor", mirror.directory, host.base / "etc" / "supervisor" / "conf.d", ssh_server.user
            )
            fleet.supervisors.append(supervisor)
            settings["vars"].update({"supervisorctl": str(supervisor.ctl), "worker_stopwaitsecs": 20})
            if "web" in ROLES[name]:
                settings["health_check"] = {"url": host.url, "contains": "{{ release_id }}"}
                if not nginx_missing():
                    nginx = fleet.nginx[name] = start_nginx(
                        host.base / "nginx", host.base / "etc" / "nginx" / "sites-available", ssh_server.user
                    )
                    settings["vars"].update({"listen": nginx.port, "nginx_log_dir": str(nginx.base)})
                    settings["after_switch"] = [nginx.reload_command()]
            else:
                settings["vars"]["worker_concurrency"] = 1
        project.write_inventory()
        project.commit("v1: the Django example")
        yield fleet
    finally:
        fleet.stop()


def serves(host: AppHost, release: str) -> dict[str, Any]:
    answer = get(host.url)
    assert answer["release"] == release, answer
    return answer


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def static_served(fleet: DjangoFleet, name: str, release: str, marker: str) -> None:
    """The release's collected static file is there, and nginx (if the machine has it) serves that one."""
    host = fleet.hosts[name]
    collected = host.root / "releases" / release / "staticfiles" / "notes" / "style.css"
    assert marker in collected.read_text(), f"{name}: collectstatic did not put {marker!r} into {collected}"
    if nginx_missing():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {nginx_missing()}")
        return  # without nginx: the collected file is checked, not its serving
    nginx = fleet.nginx[name]
    wait_for(lambda: marker in fetch(nginx.url + "static/notes/style.css"), 30, f"{name}'s nginx to serve {marker}")
    assert json.loads(fetch(nginx.url))["release"] == release  # nginx passes the rest to gunicorn


def events(document: dict[str, Any], phase: str) -> list[dict[str, Any]]:
    return [event for event in document["events"] if event["phase"] == phase]


def test_django_v1_then_v2_migrates_once_before_any_switch_then_rollback_needs_force(django_fleet: DjangoFleet) -> None:
    fleet, db = django_fleet, django_fleet.database

    # v1: the deploy's migrate creates the table; every web host serves v1, the worker runs v1's code.
    first, result = fleet.deploy_json()
    assert first["ok"], result.stdout + result.stderr
    v1 = first["release"]
    assert db.columns("notes_note") == ["created", "id", "text"]
    assert db.applied() == [("notes", "0001_initial")]
    for host in fleet.web:
        assert serves(host, v1)["code"] == "v1"
        static_served(fleet, host.name, v1, "demo v1")
    worker = fleet.ask_worker()
    assert (worker["release"], worker["code"], worker["host"]) == (v1, "v1", "worker1")

    # v2: the dry run names the migration the deploy adds.
    fleet.commit_v2()
    plan = fleet.deploy("--dry-run")
    assert MIGRATION_V2 in plan.stdout, plan.stdout
    assert fleet.currents() == dict.fromkeys(fleet.hosts, v1)

    second, result = fleet.deploy_json()
    assert second["ok"], result.stdout + result.stderr
    v2 = second["release"]
    assert fleet.currents() == dict.fromkeys(fleet.hosts, v2)
    migrations = events(second, "migrate")
    assert [(event["host"], event["result"]) for event in migrations] == [("web1", "ok")], second["events"]
    switches = events(second, "publish")
    assert {event["host"] for event in switches} == set(fleet.hosts)
    assert migrations[0]["end"] <= min(event["start"] for event in switches), "a host switched before migrate ended"
    assert db.applied() == [("notes", "0001_initial"), ("notes", "0002_note_author")]
    assert "author" in db.columns("notes_note")

    # Every web host runs v2's code, which reads the new column; the worker runs v2's code, which writes it.
    for host in fleet.web:
        answer = serves(host, v2)
        assert answer["code"] == "v2" and answer["authors"] == []
        static_served(fleet, host.name, v2, "demo v2")
    worker = fleet.ask_worker()
    assert (worker["release"], worker["code"], worker["host"]) == (v2, "v2", "worker1")
    for host in fleet.web:
        assert serves(host, v2)["authors"] == ["worker v2"]

    # The secret key reached the app (Django refuses to start without it) but no --json, journal or manifest.
    # The files that carry it (the app's env) are 0600, as installed and as kept in the release.
    for host in fleet.hosts.values():
        for relative in ("gunicorn/demo.conf.py", "supervisor/conf.d/demo.conf", "demo/worker.env"):
            for path in (host.base / "etc" / relative, host.root / "releases" / v2 / "etc" / relative):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: {oct(path.stat().st_mode)}"
                assert fleet.secret_key in path.read_text() or relative != "gunicorn/demo.conf.py"
    for document in (first, second):
        assert fleet.secret_key not in json.dumps(document)
    for host in fleet.hosts.values():
        for path in (host.root / "journal.jsonl", host.root / "releases" / v2 / ".deploytool.json"):
            assert fleet.secret_key not in path.read_text(), path

    # Back to v1: refused, naming the migration the database keeps; with --force it goes back and says so.
    refused = fleet.project.fab("rollback", check=False)
    assert refused.returncode != 0
    assert MIGRATION_V2 in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert fleet.currents() == dict.fromkeys(fleet.hosts, v2)
    forced = fleet.project.fab("rollback", "--force")
    assert fleet.currents() == dict.fromkeys(fleet.hosts, v1)
    for host in fleet.web:
        assert serves(host, v1)["code"] == "v1"
    assert db.applied()[-1] == ("notes", "0002_note_author")  # the database keeps it
    worker = fleet.ask_worker()  # v1's code still writes notes: the column has a database default
    assert (worker["release"], worker["code"]) == (v1, "v1")
    for host in fleet.hosts.values():
        assert "force" in (host.root / "journal.jsonl").read_text().splitlines()[-1]
    # ... and says so: the migrations the database keeps, and that --force went past them.
    assert MIGRATION_V2 in forced.stdout + forced.stderr, forced.stdout + forced.stderr
    assert "force" in (forced.stdout + forced.stderr).lower(), forced.stdout + forced.stderr


BROKEN_MIGRATION = """\
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.RunSQL("UPDATE no_such_table SET broken = 1")]
"""


def test_django_failed_build_or_migration_switches_no_host(django_fleet: DjangoFleet) -> None:
    fleet, db = django_fleet, django_fleet.database
    v1 = fleet.deploy_json()[0]["release"]
    inventory = fleet.project.inventory

    # A build command that fails (Django's deployment checks, made strict): no host switches, its output shown.
    inventory["build"] = [*inventory["build"], "python manage.py check --deploy --fail-level WARNING"]
    fleet.project.write_inventory()
    fleet.commit_v2()
    failed = fleet.deploy(check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert "System check identified" in output, output
    assert fleet.currents() == dict.fromkeys(fleet.hosts, v1)
    for host in fleet.web:
        assert serves(host, v1)["code"] == "v1"
    assert db.applied() == [("notes", "0001_initial")], "migrate ran although a build failed"
    for host in fleet.hosts.values():
        assert sorted(path.name for path in (host.root / "releases").iterdir()) == [v1], "half-built release left"

    # A migration that fails: no host switches, every host still serves v1, the migration's error is shown.
    inventory["build"] = inventory["build"][:-1]
    git(fleet.project.path, "revert", "--no-edit", "HEAD")  # v1's code and hosts.yml, and a broken migration:
    fleet.project.commit("a migration that fails", {"notes/migrations/0002_broken.py": BROKEN_MIGRATION})
    failed = fleet.deploy(check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert "no_such_table" in output, output
    assert fleet.currents() == dict.fromkeys(fleet.hosts, v1)
    for host in fleet.web:
        assert serves(host, v1)["code"] == "v1"
    assert db.applied() == [("notes", "0001_initial")]
    assert fleet.ask_worker()["release"] == v1
    assert fleet.secret_key not in output


def test_django_fab_run_in_the_current_release_passes_the_exit_status(django_fleet: DjangoFleet) -> None:
    fleet = django_fleet
    fleet.deploy()
    fleet.commit_v2()  # committed, not deployed: showmigrations of the current release knows only 0001
    # fab run: in the current release, with its venv and env; the command's exit status comes back.
    shown = fleet.run("--hosts", "web1", "--", "python", "manage.py", "showmigrations", "notes")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "[X] 0001_initial" in shown.stdout and "0002" not in shown.stdout, shown.stdout
    failed = fleet.run("--hosts", "web1", "--", "python", "manage.py", "showmigrations", "nosuchapp")
    assert failed.returncode == 2, failed.stdout + failed.stderr  # Django: CommandError for a bad app label
    assert "nosuchapp" in failed.stdout + failed.stderr
    exited = fleet.run("--hosts", "web1", "--", "python", "-c", "import sys; sys.exit(3)")
    assert exited.returncode == 3, exited.stdout + exited.stderr
    printed = fleet.run("--hosts", "web1", "--", "python", "-c", "import os; print(os.environ['SECRET_KEY'])")
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert fleet.secret_key not in printed.stdout + printed.stderr and "***" in printed.stdout, printed.stdout
