"""Issue 17's laptop-side findings: what a host, a template value, an index server or the laptop's own pip
configuration sends is data, never instructions. Each test reproduces the attack and shows it does no harm; the
hosts are real (a real sshd on loopback; a hostile host is one whose ``python3`` answers what the test says)."""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import shlex
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploytool.connection import transport
from deploytool.errors import RemoteError
from deploytool.inventory import HostConfig, load_inventory
from deploytool.rendering.config import render_commands
from deploytool.reporting.terminal import escape_controls, redact_credentials
from deploytool.supply.index_upload import check_upload_url, publish_to_index
from deploytool.supply.mirror import hash_requirements, read_manifest, sync, upload, write_indexes
from deploytool.supply.requirements import RequirementsError, parse_requirement_texts
from deploytool.supply.wheelmeta import MirrorError, sha256_file
from tests import sshd
from tests.conftest import Project
from tests.isolation import deadline
from tests.test_config_deploy import config_project, etc_root  # noqa: F401  (a fixture)
from tests.test_deploy_ssh import current, root_of
from tests.test_mirror import TARGET, upstream  # noqa: F401  (a fixture)
from tests.test_unresponsive import own_sshd, serve_from, stall_builds, start_fab, wait_for  # noqa: F401
from tests.wheelfactory import make_wheel

ESC_SEQUENCES = "\x1b]0;PWNED\x07\x1b[2K\x1b[1A\r\x9b31m"


def hostile_python(project: Project, host: str, answer: Any, junk: int = 0) -> Path:
    """Make ``host``'s ``python`` a program that ignores what it is asked and answers ``answer`` (JSON) on
    stdout, after ``junk`` bytes of junk: a host that is not trusted, as the laptop sees it."""
    script = root_of(project, host).parent / "hostile-python"
    text = answer if isinstance(answer, str) else json.dumps(answer)
    lines = ["#!/bin/sh", "cat >/dev/null"]
    if junk:
        lines.append(f"head -c {junk} /dev/zero | tr '\\0' x; echo")
    lines.append(f"printf '%s\\n' {shlex.quote(text)}")
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    project.inventory["stages"]["test"]["hosts"][host]["python"] = str(script)
    return script


def assert_harmless(output: str) -> None:
    """No control character but newline and tab reaches the terminal (nor an escaped one in JSON text)."""
    assert not any((ord(ch) < 32 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F for ch in output), repr(output)
    assert "\\u001b" not in output and "\\u0007" not in output and "\\u009b" not in output
    assert "Traceback" not in output


# --- 1. a host must not make the laptop read or print its own files ------------------------------------------


def test_a_host_cannot_make_status_or_audit_read_or_print_a_laptop_file(ssh_project: Project, tmp_path: Path) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    canary = f"canary-{secrets.token_hex(8)}"
    secret = tmp_path / "laptop-secret.txt"  # on the laptop (the hosts are on this machine too: outside any release)
    secret.write_text(f"{canary}==6.6.6\nTOKEN={canary.upper()}\n")
    requirements = (root_of(ssh_project) / current(ssh_project) / "requirements" / "prod.txt").resolve()
    up = "../" * (len(requirements.parts) + 2)
    with requirements.open("a") as stream:
        stream.write(f"-r {secret}\n-r {up}{str(secret).lstrip('/')}\n-r /proc/self/environ\n")
    env = {"DEPLOYTOOL_TEST_SECRET": canary.upper()}  # in the laptop's environment: /proc/self/environ
    for args in (("status",), ("status", "--json"), ("audit",), ("audit", "--json")):
        result = ssh_project.fab(*args, "--hosts", "web1", env=env, check=False)
        both = result.stdout + result.stderr
        assert canary not in both.lower(), f"fab {' '.join(args)} showed a laptop file:\n{both}"
        assert "Traceback" not in both, both
        if args[0] == "status":
            assert result.returncode == 0, both
            assert f"-r {secret} is not followed: an include must name a file of the release" in both, both
            assert "-r /proc/self/environ is not followed" in both


def test_requirements_from_a_host_are_parsed_as_data_only(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret-pin==1.0\n")
    files = {"req/p.txt": f"-r {outside}\n-r ../../outside.txt\n-r b.txt\n-r ~/x\n", "req/b.txt": "z==1\n"}
    with pytest.raises(RequirementsError) as refused:
        parse_requirement_texts(files, "req/p.txt")
    assert "secret-pin" not in str(refused.value)
    assert [problem.split(": ", 1)[1] for problem in refused.value.problems] == [
        f"-r {outside} is not followed: an include must name a file of the release",
        "-r ../../outside.txt is not followed: an include must name a file of the release",
        "-r ~/x is not followed: an include must name a file of the release",
    ]
    # Keys that could not both be files, and a NUL, are data too.
    odd = {"x": "-r x/y\n", "x/y": "a==1\x00\n", "r.txt": "-r x\nb==2\n"}
    with pytest.raises(RequirementsError) as bad:
        parse_requirement_texts(odd, "r.txt")
    assert len(bad.value.problems) == 1 and bad.value.problems[0].startswith("x/y:1: cannot parse 'a==1\\x00'")
    good = parse_requirement_texts({"r.txt": "-r x/y\nb==2\n", "x/y": "a==1\n"}, "r.txt")
    assert sorted(pin.key for pin in good.pins) == ["a", "b"]


# --- 2. robustness: one host's bad answer is that host's error -----------------------------------------------


RELEASE = "20260101T000000Z-aaaaaaa"


def test_hostile_answers_are_each_that_hosts_problem_and_bounded(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    requirements = {"requirements/prod.txt": "-r x\n", "requirements/x": "a==1\n", "requirements/x/y": "b==1\x00\n"}
    hostile_python(ssh_project, "web2", {
        "root_exists": True, "current": RELEASE, "releases": [RELEASE], "journal": [],
        "lock": {"held": True, "owner": json.dumps({"pid": 2**64, "user": f"mallory{ESC_SEQUENCES}"})},
        "details": [{"id": RELEASE, "venv": True, "dists": [], "requirements": requirements}],
        "health": {"ok": False, "last": f"HTTP 500: {ESC_SEQUENCES}"},
    })  # fmt: skip
    ssh_project.inventory["stages"]["test"]["hosts"]["web2"]["health_check"] = {"url": "http://127.0.0.1:9/"}
    hostile_python(ssh_project, "web3", {"ok": False, "error": f"nope{ESC_SEQUENCES}"})
    hostile_python(ssh_project, "web4", {"ok": True}, junk=20 * 1024 * 1024)  # past the 16 MiB bound
    ssh_project.write_inventory()
    for args in (("status",), ("audit",)):
        text = ssh_project.fab(*args, check=False)
        document = ssh_project.fab(*args, "--json", check=False)
        for result in (text, document):
            assert result.returncode == 1, result.stderr  # web3 and web4 failed; web1 and web2 answered
            assert_harmless(result.stdout + result.stderr)
            assert "web3: nope\\x1b]0;PWNED\\x07\\x1b[2K\\x1b[1A\\x0d\\x9b31m" in result.stderr
            assert "web4: " in result.stderr and "output went past 16 MiB (refused)" in result.stderr
        rows = {row["host"]: row for row in json.loads(document.stdout)["hosts"]}
        assert rows["web1"]["reachable"] and rows["web2"]["reachable"], rows
        assert rows["web1"]["current"] == current(ssh_project).removeprefix("releases/")
        if args[0] == "status":
            assert rows["web2"]["lock"]["user"] == "mallory\\x1b]0;PWNED\\x07\\x1b[2K\\x1b[1A\\x0d\\x9b31m"
            assert rows["web2"]["health"] == "failing: HTTP 500: \\x1b]0;PWNED\\x07\\x1b[2K\\x1b[1A\\x0d\\x9b31m"
            assert "failing: HTTP 500: \\x1b]0;PWNED" in text.stdout
            assert not rows["web3"]["reachable"] and "nope\\x1b]0;PWNED" in rows["web3"]["error"]


def test_an_owner_json_with_an_impossible_pid_is_a_lock_not_a_crash(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    lock = root_of(ssh_project) / "deploy.lock"
    lock.mkdir()
    owner = {"action": "deploy", "release": RELEASE, "user": "mallory", "since": "now",
             "machine": socket.gethostname(), "pid": 2**64}  # fmt: skip
    (lock / "owner.json").write_text(json.dumps(owner))
    ssh_project.commit("next")
    result = ssh_project.fab("deploy", "--hosts", "web1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "OverflowError" not in result.stderr and "locked: deploy" in result.stderr


def test_answers_under_the_bound_are_read_whole(tmp_path: Path) -> None:
    """12 MB of junk before the JSON (under the bound): read in linear time, and the answer still found."""
    (tmp_path / "hosts.yml").write_text("app: demo\nmirror: /m\nstages: {s: {transport: local, root: r, hosts: [h]}}\n")
    host = load_inventory(tmp_path / "hosts.yml").hosts("s")[0]
    c = transport.connect(host)
    try:
        result = transport.run(
            c, "head -c 12000000 /dev/zero | tr '\\0' x; echo; echo done", hide=True, warn=True, in_stream=False
        )
        assert result.stdout.endswith("\ndone\n") and len(result.stdout) == 12_000_006
        with pytest.raises(RemoteError, match="output went past 16 MiB"):
            transport.run(c, "head -c 17000000 /dev/zero", hide=True, warn=True, in_stream=False)
    finally:
        transport.close(c)


# --- 3. terminal output ---------------------------------------------------------------------------------------


def test_what_a_host_prints_reaches_the_terminal_escaped(ssh_project: Project) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    printf = "printf '\\033]0;PWNED\\007\\033[2Kgone\\r\\n' >&2; printf '\\033]8;;http://evil/\\033\\\\link\\n'; exit 3"
    ssh_project.inventory["stages"]["test"]["validate"] = [printf]
    ssh_project.write_inventory()
    ssh_project.commit("hostile output")
    for args in ((), ("--verbose",), ("--json",)):
        result = ssh_project.fab("deploy", "--hosts", "web1", *args, check=False)
        assert result.returncode == 1
        assert_harmless(result.stdout + result.stderr)
        assert "\\x1b]0;PWNED\\x07\\x1b[2Kgone" in result.stderr, result.stderr
        shown = "\n".join(strings(json.loads(result.stdout))) if "--json" in args else result.stdout
        assert "\\x1b]0;PWNED\\x07\\x1b[2Kgone" in shown, shown  # the failed step's output, escaped


def test_a_host_config_file_in_a_diff_reaches_the_terminal_escaped(config_project: Project) -> None:  # noqa: F811
    config_project.fab("deploy", "--hosts", "web1")
    installed = etc_root(config_project, "web1") / "demo" / "app.conf"
    installed.write_text(installed.read_text() + f"hostile={ESC_SEQUENCES}\n")
    for args in (("deploy", "--dry-run"), ("render-etc", "--diff")):
        result = config_project.fab(*args, "--hosts", "web1")
        assert_harmless(result.stdout + result.stderr)
        # The host's file, in the diff: the CR ends a line there (difflib), everything else shows escaped.
        assert "-hostile=\\x1b]0;PWNED\\x07\\x1b[2K\\x1b[1A" in result.stdout and "\\x9b31m" in result.stdout


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_the_sanitiser() -> None:
    assert escape_controls("a\x1b[31mb\x07\r\n\tc\u202ed\x7f\x9b") == "a\\x1b[31mb\\x07\\x0d\n\tc\\u202ed\\x7f\\x9b"
    assert escape_controls("plain: déjà vu, 東京") == "plain: déjà vu, 東京"
    assert redact_credentials("see https://ann:s3cret@idx.example/simple/ and ftp://x@y") == (
        "see https://***@idx.example/simple/ and ftp://***@y"
    )


# --- 4. quoting ----------------------------------------------------------------------------------------------


def test_paths_and_vars_are_quoted_in_commands_on_the_local_stage(local_project: Project, tmp_path: Path) -> None:
    stage = local_project.inventory["stages"]["local"]
    stage["root"] = ".deploy/x $(touch PWNED) `touch PWNED2`; touch PWNED3"
    stage["vars"] = {"greeting": "hello; touch PWNED4", "cmd": "echo raw-ok >"}
    stage["validate"] = ["test -d {{ etc_root }}"]
    stage["after_switch"] = ["test -d {{ root }} && printf '%s\\n' {{ greeting }} > {{ root }}/greeting"]
    stage["restart"] = ["test -d {{ venv }} && {{ cmd|raw }} {{ root }}/raw"]
    stage["health_check"] = {"command": "test -d {{ release_path }}", "deadline": 5}
    local_project.write_inventory()
    local_project.commit("odd root")
    result = local_project.fab("deploy")
    assert "Deployed" in result.stdout
    pwned = [path for path in tmp_path.rglob("PWNED*") if path.name.startswith("PWNED") and path.is_file()]
    assert pwned == [], f"a template value ran as shell: {pwned}"
    root = local_project.path / stage["root"]
    assert (root / "greeting").read_text() == "hello; touch PWNED4\n"
    assert (root / "raw").read_text() == "raw-ok\n"


def _host(tmp_path: Path, settings: str) -> HostConfig:
    (tmp_path / "hosts.yml").write_text(
        "app: demo\nmirror: /m\nstages: {s: {transport: local, root: '/srv/a b', hosts: [h1], " + settings + "}}\n"
    )
    return load_inventory(tmp_path / "hosts.yml").hosts("s")[0]


def test_command_rendering_quotes_values_and_raw_inserts_them(tmp_path: Path) -> None:
    host = _host(
        tmp_path,
        "vars: {opts: '-a -b', empty: ''}, after_switch: ['run {{ opts }} {{ opts|raw }} [{{ empty }}] {{ 8 }}'], "
        "restart: {gunicorn_pidfile: '{{ root }}/g.pid', start: ['{{ venv }}/bin/gunicorn']}, "
        "health_check: {url: 'http://127.0.0.1:8000/{{ root }}', contains: '{{ root }}'}",
    )
    rendered = render_commands(host, RELEASE, None)
    assert rendered.after_switch == ("run '-a -b' -a -b [''] 8",)
    assert rendered.restart.start == ("'/srv/a b/current/venv'/bin/gunicorn",)
    assert rendered.restart.gunicorn_pidfile == "/srv/a b/g.pid"  # not shell: as it is
    assert rendered.health_check is not None
    assert (rendered.health_check.url, rendered.health_check.contains) == ("http://127.0.0.1:8000//srv/a b", "/srv/a b")
    checked = render_commands(_host(tmp_path, "health_check: {command: 'test -d {{ root }}'}"), RELEASE, None)
    assert checked.health_check is not None and checked.health_check.command == "test -d '/srv/a b'"


# --- 5. index upload ------------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]]
    redirect_to: str | None = None

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.command == "POST" and self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
        else:
            self.send_response(404 if self.path.startswith("/simple/") else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _server(redirect_to: str | None = None) -> tuple[http.server.ThreadingHTTPServer, list[Any], str]:
    seen: list[Any] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "redirect_to": redirect_to})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def elsewhere() -> Iterator[tuple[list[Any], str]]:
    server, seen, url = _server()
    yield seen, url
    server.shutdown()
    server.server_close()


def test_upload_credentials_never_follow_a_redirect_to_another_origin(
    tmp_path: Path, elsewhere: tuple[list[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_elsewhere, other = elsewhere
    server, seen, url = _server(redirect_to=f"{other}/stolen")
    try:
        make_wheel(tmp_path / "wheels", "demo-lib", "1.0")
        monkeypatch.setenv("TWINE_USERNAME", "ann")
        monkeypatch.setenv("TWINE_PASSWORD", "s3cret")
        with pytest.raises(MirrorError, match="uploaded but not listed"):
            publish_to_index(tmp_path / "wheels", f"{url}/upload/", f"{url}/simple/")
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(b"ann:s3cret").decode()
    assert ("POST", "/upload/", expected) in seen, "the index itself got the credentials"
    assert [method for method, _, _ in seen_elsewhere] == ["GET"], "the redirect was followed"
    assert all(auth is None for _, _, auth in seen_elsewhere), "credentials went to another origin"


def test_upload_url_must_not_expose_credentials(local_project: Project) -> None:
    check_upload_url("http://127.0.0.1:8080/")
    check_upload_url("http://localhost/")
    check_upload_url("https://pyrepo.example/")
    with pytest.raises(MirrorError, match="never sent over plain http except to this machine"):
        check_upload_url("http://pyrepo.example/")
    with pytest.raises(MirrorError) as creds:
        check_upload_url("https://ann:s3cret@pyrepo.example/")
    assert "s3cret" not in str(creds.value) and "https://***@pyrepo.example/" in str(creds.value)

    stage = local_project.inventory["stages"]["local"]
    stage.update(mirror="https://ann:s3cret@127.0.0.1:9/simple/", mirror_kind="index",
                 upload_url="https://ann:s3cret@127.0.0.1:9/")  # fmt: skip
    local_project.write_inventory()
    result = local_project.fab("mirror.publish", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "s3cret" not in result.stdout + result.stderr and "***@127.0.0.1:9" in result.stderr, result.stderr


# --- 6. mirror: only vetted files ------------------------------------------------------------------------------


def test_sync_asks_the_upstream_only_and_checks_pinned_hashes(
    tmp_path: Path,
    upstream: tuple[Path, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, url = upstream
    rogue = tmp_path / "rogue"  # a source the laptop's pip configuration adds
    make_wheel(rogue, "rogue-only", "1.0")
    make_wheel(rogue, "alpha", "1.1", module_source="VERSION = 'rogue'\n")
    write_indexes(rogue)
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nfind-links = {rogue}\n")
    monkeypatch.setenv("PIP_FIND_LINKS", str(rogue))
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    wheelhouse = tmp_path / "wheelhouse"
    prod = tmp_path / "prod.txt"
    prod.write_text("rogue-only==1.0\n")
    with pytest.raises(MirrorError, match=r"rogue-only==1\.0: no wheel for .* and no sdist upstream"):
        sync([prod], wheelhouse, TARGET, f"{url}simple/", user="ann")
    assert not (wheelhouse / "rogue_only-1.0-py3-none-any.whl").exists()

    alpha = root / "alpha-1.1-py3-none-any.whl"
    prod.write_text(f"alpha==1.1 --hash=sha256:{'0' * 64}\nbeta==2.0 --hash=sha256:{'1' * 64}\n")
    with pytest.raises(MirrorError) as mismatch:
        sync([prod], wheelhouse, TARGET, f"{url}simple/", user="ann")
    assert f"prod.txt:1: alpha==1.1: {alpha.name} from upstream has sha256 {sha256_file(alpha)}" in str(mismatch.value)
    assert "prod.txt:2: beta==2.0: beta-2.0-py3-none-any.whl from upstream" in str(mismatch.value)
    assert not list(wheelhouse.glob("*.whl")), "nothing added"

    beta = root / "beta-2.0-py3-none-any.whl"
    prod.write_text(f"alpha==1.1 --hash=sha256:{sha256_file(alpha)}\nbeta==2.0 --hash=sha256:{sha256_file(beta)}\n")
    report = sync([prod], wheelhouse, TARGET, f"{url}simple/", user="ann")
    assert sorted(report.added) == [alpha.name, beta.name]
    assert sha256_file(wheelhouse / alpha.name) == sha256_file(alpha)
    assert {e["filename"]: e["source"] for e in read_manifest(wheelhouse)}[alpha.name] == f"{url}{alpha.name}"


def test_hash_refuses_to_rewrite_a_pin_the_wheelhouse_file_does_not_match(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    upload([make_wheel(tmp_path / "in", "alpha", "1.0"), make_wheel(tmp_path / "in", "beta", "2.0")], wheelhouse,
           user="a")  # fmt: skip
    prod = tmp_path / "prod.txt"
    beta = sha256_file(wheelhouse / "beta-2.0-py3-none-any.whl")
    pinned = f"alpha==1.0 --hash=sha256:{'0' * 64}\nbeta==2.0 \\\n    --hash=sha256:{beta}\n"
    prod.write_text(pinned)
    with pytest.raises(RequirementsError) as refused:
        hash_requirements(prod, wheelhouse, TARGET)
    assert refused.value.problems == [
        f"{prod}:1: alpha==1.0: its --hash values do not match alpha-1.0-py3-none-any.whl in {wheelhouse} (sha256 "
        f"{sha256_file(wheelhouse / 'alpha-1.0-py3-none-any.whl')}); not rewritten: find out which file is right "
        "(fab mirror.verify) before changing the pin"
    ]
    assert prod.read_text() == pinned, "never a rewrite"


# --- 7. issue 21: a library's traceback never reaches the terminal -------------------------------------------


def test_a_host_whose_sshd_dies_mid_build_shows_no_library_traceback(
    ssh_project: Project,
    own_sshd: sshd.SshServer,  # noqa: F811
) -> None:
    """The sshd of web2 dies during the build and something that accepts and closes connections takes its port
    (a host going down): the clean-up's reconnect makes paramiko's transport thread log "Error reading SSH
    protocol banner" with its traceback, which used to reach stderr through Python's last-resort logging."""
    serve_from(ssh_project, "web2", own_sshd)
    marker = stall_builds(ssh_project, "web2")
    ssh_project.write_inventory()
    ssh_project.commit("web2 goes down")
    address, port = own_sshd.addresses[0], own_sshd.port
    fab = start_fab(ssh_project, "deploy", "--hosts", "web1,web2")
    closer = socket.socket()
    try:
        wait_for(marker, process=fab)
        own_sshd.signal_all(signal.SIGKILL)  # the listening sshd and every session: the host's sshd is gone
        closer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        until = deadline(20)
        while True:  # the killed sshd lets go of its port when it is gone
            try:
                closer.bind((address, port))
                break
            except OSError:
                assert time.monotonic() < until, "the sshd never let go of its port"
                time.sleep(0.05)
        closer.listen(16)
        threading.Thread(target=_close_every_connection, args=(closer,), daemon=True).start()
        stdout, stderr = fab.communicate(timeout=240)
    finally:
        fab.kill()
        closer.close()
    assert fab.returncode == 1, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert "web2: connection lost during build" in stderr, stderr


def _close_every_connection(listener: socket.socket) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        connection.close()


def test_library_messages_are_one_line_with_verbose_and_nothing_without(capfd: pytest.CaptureFixture[str]) -> None:
    """paramiko's own log of a connection that never sends a banner (its traceback included), as the clean-up's
    reconnect to a dying host produces it."""
    import paramiko

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    threading.Thread(target=_close_every_connection, args=(listener,), daemon=True).start()

    def connect() -> None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with pytest.raises(paramiko.SSHException, match="Error reading SSH protocol banner"):
            client.connect("127.0.0.1", port=listener.getsockname()[1], username="x", password="y", banner_timeout=5,
                           look_for_keys=False, allow_agent=False)  # fmt: skip
        client.close()

    try:
        transport.show_library_messages(False)
        connect()
        quiet = capfd.readouterr()
        transport.show_library_messages(True)
        connect()
        verbose = capfd.readouterr()
    finally:
        transport.show_library_messages(False)
        listener.close()
    assert quiet.err == "" and quiet.out == ""
    # One line: paramiko's own words, which end in "[Errno 104] Connection reset by peer" when the close comes as
    # a reset rather than an end of file (a matter of timing); its traceback lines are not shown.
    assert verbose.err.count("\n") == 1 and "Traceback" not in verbose.err, verbose.err
    assert verbose.err.startswith("paramiko.transport: Exception (client): Error reading SSH protocol banner")
