"""Issue 18's pieces on their own (no SSH): roles and the new settings, secret sources and masking, env
rendering, template modes and filters, migration globs, the host-side env file and envexec."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploytool import appsecrets
from deploytool.appsecrets import Secrets
from deploytool.errors import DeployError, InventoryError
from deploytool.flow.journal import Entry
from deploytool.hostside import _common
from deploytool.inventory import parse_inventory
from deploytool.migrations import matches
from deploytool.rendering.config import render_commands, render_env
from deploytool.rendering.etc_render import render_host, supervisor_environment
from deploytool.reporting import terminal
from tests.conftest import HOST_PYTHON

PATH = Path("/project/hosts.yml")


def inventory(stage: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"app": "demo", "mirror": "http://127.0.0.1:1/", "root": "/srv/demo", **top, "stages": {"p": stage}}


def hosts_of(data: dict[str, Any]) -> dict[str, Any]:
    return {host.name: host for host in parse_inventory(data, PATH).stages["p"]}


def test_roles_add_up_in_the_hosts_order_on_top_of_the_stage() -> None:
    stage = {
        "env": {"A": "stage", "B": 1},
        "restart": ["stage restart"],
        "roles": {
            "web": {"restart": ["web restart"], "health_check": {"url": "http://127.0.0.1:8000/"}, "build": ["b1"]},
            "worker": {"restart": ["worker restart"], "health_check": {"command": "true"}, "env": {"A": "worker"}},
        },
        "hosts": {
            "web1": {"roles": ["web", "migrate"]},
            "both": {"roles": ["web", "worker"], "env": {"C": "host"}},
            "plain": None,
            "own": {"roles": ["worker"], "health_check": {"command": "own"}},
        },
    }
    hosts = hosts_of(inventory(stage, build=["b0"]))
    assert hosts["web1"].roles == ("web", "migrate") and hosts["plain"].roles == ("web",)
    assert hosts["both"].restart.commands == ("web restart", "worker restart")
    assert [c.url or c.command for c in hosts["both"].health_checks] == ["http://127.0.0.1:8000/", "true"]
    assert hosts["both"].env == {"A": "worker", "B": "1", "C": "host"}
    assert hosts["web1"].build == ("b1",), "a role's setting replaces the stage's"
    assert hosts["plain"].restart.commands == ("web restart",), "no roles named: the default role web"
    assert [c.command for c in hosts["own"].health_checks] == ["own"], "the host's own check wins"
    assert hosts["web1"].migrations == ("**/migrations/*.py",) and hosts["web1"].secrets is None


@pytest.mark.parametrize(
    ("stage", "top", "message"),
    [
        ({"hosts": {"w": {"roles": ["wroker"]}}, "roles": {"worker": {}}}, {}, "role 'wroker' is not defined"),
        ({"hosts": {"w": {"migrate": ["x"]}}}, {}, "migrate is a setting of the whole stage"),
        ({"hosts": ["w"], "secrets": {"vault": "x"}}, {}, "expected one of {command:"),
        ({"hosts": ["w"], "secrets": {"env_prefix": "a b"}}, {}, "env_prefix: expected the start"),
        ({"hosts": ["w"], "env": {"1X": "y"}}, {}, "'1X' is not an environment variable name"),
        ({"hosts": ["w"], "env": {"DEPLOYTOOL_X": "y"}}, {}, "DEPLOYTOOL_* are deploytool's own"),
        ({"hosts": ["w"], "env": {"X": ["y"]}}, {}, "X: expected text"),
        ({"hosts": ["w"], "roles": {"web": {"root": "/x"}}}, {}, "a role may set restart"),
        ({"hosts": ["w"]}, {"roles": {"web": {"build": "make"}}}, "roles.web.build: expected a list of commands"),
        (
            {
                "hosts": {"w": {"roles": ["a", "b"]}},
                "roles": {"a": {"restart": {"gunicorn_pidfile": "/x"}}, "b": {"restart": {"gunicorn_pidfile": "/y"}}},
            },
            {},
            "roles 'a' and 'b' both restart a gunicorn master",
        ),
    ],
)
def test_bad_settings_are_one_clear_error(stage: dict[str, Any], top: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryError) as raised:
        parse_inventory(inventory(stage, **top), PATH)
    assert str(raised.value).startswith(f"{PATH}: ") and message in str(raised.value)


def test_roles_select_hosts() -> None:
    data = inventory({"roles": {"worker": {}}, "hosts": {"a": {"roles": ["worker"]}, "b": None, "c": None}})
    inv = parse_inventory(data, PATH)
    assert [h.name for h in inv.hosts("p", roles="worker")] == ["a"]
    assert [h.name for h in inv.hosts("p", roles="web,worker")] == ["a", "b", "c"]
    assert [h.name for h in inv.hosts("p", "b", roles="web")] == ["b"]
    with pytest.raises(InventoryError, match="has none of the roles 'worker'"):
        inv.hosts("p", "b", roles="worker")
    with pytest.raises(InventoryError, match="no host of stage 'p' has the role 'db'"):
        inv.hosts("p", roles="db")
    with pytest.raises(InventoryError, match="names no role"):
        inv.hosts("p", roles=" ,")


def test_secret_sources_yaml_json_dotenv_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert appsecrets.parse("a: 1\nb: two\n", "x") == {"a": "1", "b": "two"}
    assert appsecrets.parse('{"a": "x"}', "x") == {"a": "x"}
    assert appsecrets.parse("# c\nexport A=1\nB='two words'\nC=\"q\"\n", "x") == {"A": "1", "B": "two words", "C": "q"}
    with pytest.raises(DeployError, match="secret 'a' is not text"):
        appsecrets.parse("a: {b: 1}\n", "x")
    with pytest.raises(DeployError, match="line 1: expected NAME=value"):
        appsecrets.parse("just words\n", "x")
    (tmp_path / "s.env").write_text("TOKEN=abcd-secret-1\n")
    loaded = appsecrets.load({"file": "s.env"}, tmp_path, tmp_path / "hosts.yml")
    assert dict(loaded) == {"TOKEN": "abcd-secret-1"} and terminal.for_terminal("x abcd-secret-1 y") == "x *** y"
    monkeypatch.setenv("DEMO_DB_PASSWORD", "pw-from-env-1")
    loaded = appsecrets.load({"env_prefix": "DEMO_"}, tmp_path, tmp_path / "hosts.yml")
    assert loaded["DB_PASSWORD"] == loaded.db_password == "pw-from-env-1"
    with pytest.raises(DeployError) as failed:
        appsecrets.load(
            {"command": "printf 'out-%s' secret-xyz; echo boom >&2; exit 3"}, tmp_path, tmp_path / "hosts.yml"
        )
    assert "failed (exit 3): boom" in str(failed.value) and "out-secret-xyz" not in str(failed.value)
    with pytest.raises(DeployError, match="does not exist"):
        appsecrets.load({"file": "nope.yaml"}, tmp_path, tmp_path / "hosts.yml")
    with pytest.raises(appsecrets.MissingSecret, match="secret 'other' is used but"):
        _ = loaded.other


def test_masking_reaches_json_and_journal_lines() -> None:
    terminal.add_secrets(["hunter2-hunter2", "abc"])  # too short to mask: "abc"
    assert terminal.for_terminal("pw=hunter2-hunter2, abc") == "pw=***, abc"
    assert terminal.clean_document({"k": ["x hunter2-hunter2"]}) == {"k": ["x ***"]}
    line = Entry.failed("deploy", "20260101T000000Z-abcdef0", None, None, "build failed: hunter2-hunter2").to_json()
    assert "hunter2" not in line and json.loads(line)["reason"] == "build failed: ***"


def test_env_renders_with_secrets_and_commands_never_carry_one() -> None:
    data = inventory(
        {
            "env": {"URL": "pg://u:{{ secrets.pw }}@db/{{ app }}", "PLAIN": "{{ host }}-x"},
            "hosts": ["w"],
            "after_switch": ["echo {{ env.PLAIN }}"],
        }
    )
    host = hosts_of(data)["w"]
    secrets = Secrets({"pw": "s3cr3t-value"}, "the secrets file x")
    assert render_env(host, "r1", secrets) == {"URL": "pg://u:s3cr3t-value@db/demo", "PLAIN": "w-x"}
    assert render_commands(host, "r1", None).after_switch == ("echo w-x",)
    with pytest.raises(DeployError, match="secret 'pw' is used but the secrets file x does not define"):
        render_env(host, "r1", Secrets({}, "the secrets file x"))
    data["stages"]["p"]["after_switch"] = ["echo {{ env.URL }}"]
    with pytest.raises(DeployError, match="would put secret 'pw' on a command line"):
        render_commands(hosts_of(data)["w"], "r1", None)


def test_template_modes_and_filters(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/declared.j2").write_text("{# mode: 0640 #}\nx={{ secrets.pw }}\n")
    (tmp_path / "a/secret.j2").write_text("x={{ secrets.pw }}\n")
    (tmp_path / "a/env.j2").write_text("{% for k, v in env.items() %}{{ k }}{% endfor %}\n")
    (tmp_path / "a/plain.j2").write_text("{{ app }}\n")
    (tmp_path / "a/tool.sh").write_text("#!/bin/sh\n")
    (tmp_path / "a/tool.sh").chmod(0o755)
    variables = {"app": "demo", "env": {"K": "v"}, "secrets": Secrets({"pw": "pw-123456"}, "f")}
    rendered = render_host(tmp_path, variables, "w")
    modes = {name: rendered.mode(name) for name in rendered}
    assert modes == {"a/declared": 0o640, "a/secret": 0o600, "a/env": 0o600, "a/plain": 0o644, "a/tool.sh": 0o755}
    assert rendered["a/declared"] == b"x=pw-123456\n"
    assert supervisor_environment({"A": "1%", "B": 'say "hi"', "C": "x,y"}) == 'A="1%%",B=\'say "hi"\',C="x,y"'
    with pytest.raises(DeployError, match="both ' and \""):
        supervisor_environment({"A": "'\""})


def test_migration_globs() -> None:
    globs = ["**/migrations/*.py"]
    assert matches("app/migrations/0001_initial.py", globs) and matches("migrations/0001.py", globs)
    assert matches("a/b/migrations/x.py", globs) and not matches("app/migrations/sub/x.py", globs)
    assert not matches("app/migrations.py", globs) and matches("db/x.sql", ["db/*.sql"])


def test_env_file_is_0600_and_envexec_runs_with_it(tmp_path: Path) -> None:
    path = str(tmp_path / "rel" / ".deploytool" / "env.json")
    (tmp_path / "rel").mkdir()
    _common.write_env(path, {"GREETING": "hi there", "X": "1"})
    assert (
        stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    )
    assert _common.read_env(path) == {"GREETING": "hi there", "X": "1"}
    assert _common.read_env(str(tmp_path / "none.json")) == {}
    with pytest.raises(ValueError, match="not a variable name"):
        _common.write_env(path, {"A B": "x"})
    venv = tmp_path / "rel" / "venv"
    (venv / "bin").mkdir(parents=True)
    argv = _common.program(HOST_PYTHON, "envexec", path, str(tmp_path / "rel"), str(venv))
    code = "import os; print(os.environ['GREETING'], os.getcwd(), os.environ['PATH'].split(':')[0])"
    done = subprocess.run([*argv, sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hi there {tmp_path / 'rel'} {venv / 'bin'}"
    assert "hi there" not in " ".join(argv), "only the file's path is on the command line"
    missing = subprocess.run([*argv, "no-such-program-x"], capture_output=True, text=True, check=False)
    assert missing.returncode == 127 and "no-such-program-x" in missing.stderr
