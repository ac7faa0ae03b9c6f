"""What the Django example's tests run against: a throwaway PostgreSQL cluster and a redis-server on loopback, and
the example's pinned wheels (Django, psycopg, celery...) from the cache ``scripts/test`` fills from PyPI.

The servers are Debian's ``postgresql`` and ``redis-server`` (``scripts/test`` installs them). The cluster lives in
a temporary directory, listens on 127.0.0.1 on a port of this worker's range (tests/isolation.py) and runs as an
unprivileged account (PostgreSQL refuses root); each test gets its own role and database with a password, which the
deployed app reaches over TCP with password authentication like a real host. Tests using them share one cluster
and one redis per pytest worker: mark them ``xdist_group("django")``.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.isolation import free_port, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django"
EXAMPLE_V2 = EXAMPLE.parent / "django-v2"
REQUIREMENTS = EXAMPLE / "requirements" / "prod.txt"
WHEELS_VARIABLE = "DEPLOYTOOL_TEST_DJANGO_WHEELS"


def _in_ci_or_fail(why: str) -> None:
    """A missing prerequisite: a failure (never a skip), saying how to get it."""
    pytest.fail(f"{why}: run scripts/test (or `scripts/test --prepare`), which installs and downloads it")


def wheel_cache() -> Path:
    """Where ``scripts/test`` keeps the example's wheels: $DEPLOYTOOL_TEST_DJANGO_WHEELS, else its default path."""
    if os.environ.get(WHEELS_VARIABLE):
        return Path(os.environ[WHEELS_VARIABLE])
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "deploytool-test" / "django-wheels" / key


@pytest.fixture(scope="session")
def django_wheels() -> Path:
    """The directory of the example's pinned wheels (filled by ``scripts/test``; the tests download nothing)."""
    directory = wheel_cache()
    if not list(directory.glob(".done-*")) or not list(directory.glob("*.whl")):
        _in_ci_or_fail(f"the Django example's wheels are not in {directory}")
    return directory


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def _account() -> pwd.struct_passwd:
    """The account the cluster runs as: ourselves, or (as root, which PostgreSQL refuses) Debian's ``postgres``."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        _in_ci_or_fail("there is no `postgres` account to run PostgreSQL as (Debian's postgresql package makes it)")
        raise


@dataclass
class Database:
    """One test's database: its own role and password on the shared cluster."""

    cluster: Postgres
    name: str
    password: str

    @property
    def url(self) -> str:
        return f"postgres://{self.name}:{self.password}@127.0.0.1:{self.cluster.port}/{self.name}"

    def sql(self, query: str) -> str:
        """Run ``query`` as the superuser in this database; its rows, ``|``-separated, one per line."""
        return self.cluster.sql(query, database=self.name)

    def columns(self, table: str) -> list[str]:
        rows = self.sql(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")
        return sorted(rows.split())

    def applied(self) -> list[tuple[str, str]]:
        """(app, migration) rows of ``django_migrations``, in the order applied."""
        rows = self.sql("SELECT app || '|' || name FROM django_migrations ORDER BY id")
        return [tuple(row.split("|", 1)) for row in rows.splitlines() if row]  # type: ignore[misc]


@dataclass
class Postgres:
    bin: Path
    base: Path
    port: int
    account: pwd.struct_passwd
    process: subprocess.Popen[bytes]

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    def run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        as_account = os.geteuid() == 0
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            argv,
            capture_output=True,
            text=True,
            check=True,
            user=self.account.pw_uid if as_account else None,
            group=self.account.pw_gid if as_account else None,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self.base)},
            cwd=self.base,
            **kwargs,
        )

    def sql(self, query: str, database: str = "postgres") -> str:
        argv = [str(self.bin / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]
        return self.run([*argv, "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query]).stdout.strip()

    def create_database(self, name: str) -> Database:
        password = secrets.token_hex(12)
        self.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self.sql(f"CREATE DATABASE {name} OWNER {name}")
        return Database(self, name, password)

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.sql(f"DROP ROLE IF EXISTS {name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_postgres(base: Path) -> Postgres:
    """initdb a cluster in ``base`` and start it on 127.0.0.1 (password auth over TCP, trust on its own socket)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        _in_ci_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError
    account = _account()
    (base / "socket").mkdir(parents=True)
    for path in (base, base / "socket"):
        os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    cluster = Postgres(bin_dir, base, port, account, None)  # type: ignore[arg-type]
    initdb = [str(bin_dir / "initdb"), "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8", "--no-sync"]
    cluster.run([*initdb, "--auth-local=trust", "--auth-host=scram-sha-256"])
    as_account = os.geteuid() == 0
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(base / "socket"),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "16MB",
        "max_connections": "50",
    }
    argv = [str(bin_dir / "postgres"), "-D", str(base / "data")]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    log = open(base / "postgres.log", "wb")  # noqa: SIM115 - the server's log for as long as it runs
    cluster.process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        user=account.pw_uid if as_account else None,
        group=account.pw_gid if as_account else None,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd=base,
    )
    log.close()

    def ready() -> bool:
        if cluster.process.poll() is not None:
            raise AssertionError(f"postgres exited: {(base / 'postgres.log').read_text()[-2000:]}")
        argv = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    try:
        wait_for(ready, 60, "postgres to accept connections")
    except AssertionError:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL cluster per pytest worker, stopped and removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="deploytool-postgres-"))
    base.chmod(0o755)
    cluster = start_postgres(base)
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


_databases = itertools.count(1)


@pytest.fixture
def database(postgres: Postgres) -> Iterator[Database]:
    """A fresh database and role of this test's own on the shared cluster, dropped afterwards."""
    name = f"demo_{os.getpid()}_{next(_databases)}"
    created = postgres.create_database(name)
    yield created
    postgres.drop_database(name)


# ---------------------------------------------------------------- redis


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes]
    base: Path

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def redis_ping(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(b"PING\r\n")
        return connection.recv(64).startswith(b"+PONG")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """Debian's redis-server on 127.0.0.1 (a port of this worker's range), nothing saved to disk."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(server):
        _in_ci_or_fail("redis-server is not installed (apt-get install redis-server)")
    base = Path(tempfile.mkdtemp(prefix="deploytool-redis-"))
    port = free_port()
    argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(base), "--daemonize", "no", "--databases", "64", "--logfile", str(base / "redis.log")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = Redis(port, process, base)
    try:
        wait_for(lambda: process.poll() is None and redis_ping(port), 30, "redis-server to answer")
    except AssertionError:
        redis.stop()
        raise
    yield redis
    redis.stop()
    shutil.rmtree(base, ignore_errors=True)


_redis_dbs = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: Redis) -> str:
    """A redis database of this test's own (the broker and result backend of its celery app)."""
    return redis_server.url(next(_redis_dbs) % 64)


# ---------------------------------------------------------------- nginx

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class Nginx:
    """An nginx of one test host, run as the host's user, serving the sites deploytool installs in its etc root."""

    base: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def reload_command(self) -> str:
        """What the host runs after a switch: nginx re-reads the site, which names the new release's static files."""
        return f"{NGINX} -p {self.base} -c {self.base / 'nginx.conf'} -e {self.base / 'error.log'} -s reload"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def nginx_missing() -> str | None:
    return None if os.path.exists(NGINX) else "nginx is not installed (apt-get install nginx)"


def start_nginx(base: Path, sites: Path, user: str) -> Nginx:
    """Start nginx as ``user`` with everything under ``base``, including ``sites/*.conf`` (none yet is fine)."""
    base.mkdir(parents=True)
    port = free_port()
    temp = "".join(
        f"    {kind}_temp_path {base}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (base / "nginx.conf").write_text(
        f"pid {base}/nginx.pid;\nerror_log {base}/error.log;\ndaemon off;\nworker_processes 1;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n    include /etc/nginx/mime.types;\n    access_log off;\n{temp}    include {sites}/*.conf;\n}}\n"
    )
    account = pwd.getpwnam(user)
    for path in (base, *base.rglob("*")):
        os.lchown(path, account.pw_uid, account.pw_gid)
    as_account = os.geteuid() == 0
    process = subprocess.Popen(
        [NGINX, "-p", str(base), "-c", str(base / "nginx.conf"), "-e", str(base / "error.log")],
        user=account.pw_uid if as_account else None,
        group=account.pw_gid if as_account else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=base,
    )
    wait_for(lambda: (base / "nginx.pid").exists() or process.poll() is not None, 30, "nginx to start")
    if process.poll() is not None:
        raise RuntimeError(f"nginx exited: {(base / 'error.log').read_text()}")
    return Nginx(base, port, process)
