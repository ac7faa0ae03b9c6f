"""The host-side module runner: a module of the package runs on a real host (SSH and local) and answers JSON."""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.context import Context

from deploytool.connection.hostrun import (
    ModuleFailed,
    argv,
    command,
    parse_answer,
    program,
    run_module,
    source,
    stdin_line,
)
from deploytool.connection.transport import close, connect
from deploytool.errors import RemoteError
from deploytool.hostside import _common, echo
from deploytool.inventory import HostConfig, load_inventory
from tests.conftest import HOST_PYTHON, HOST_PYTHON_VERSION, Project


def test_echo_module_runs_locally_as_a_function() -> None:
    assert echo.main({"x": 1}) == {"ok": True, "args": {"x": 1}, "python": echo.platform.python_version()}
    assert echo.main({"fail": "nope"}) == {"ok": False, "error": "nope"}


def test_command_carries_the_module_and_what_it_imports_and_no_arguments() -> None:
    words = shlex.split(command("/usr/bin/python3", "echo"))
    assert words == ["/usr/bin/python3", "-c", program("echo")] == argv("/usr/bin/python3", "echo")
    assert shlex.split(command("python3", "echo", sudo=True))[:3] == ["sudo", "-n", "python3"]
    assert _common.bundle("echo") == {"echo": source("echo"), "_common": source("_common")}
    assert sorted(_common.bundle("publish")) == [
        "_common",
        "envexec",
        "etc_install",
        "gunicorn_reexec",
        "health",
        "publish",
    ]
    assert stdin_line({"password": "s3cret"}) == '{"password":"s3cret"}\n'  # secrets travel on stdin only


def test_unknown_module_is_refused() -> None:
    with pytest.raises(ValueError):
        source("../errors")
    with pytest.raises(ValueError):
        source("no_such_module")


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "expected"),
    [
        ("", "Traceback ...\nNameError: x\n", 1, "echo failed (exit 1): Traceback ... | NameError: x"),
        ("[1, 2]\n", "", 0, "echo failed (exit 0): [1, 2]"),
        ("not json\n", "", 0, "echo failed (exit 0): not json"),
        ("", "", 137, "echo failed (exit 137): no output"),
    ],
)
def test_answers_that_are_not_a_json_object_are_errors(stdout: str, stderr: str, code: int, expected: str) -> None:
    with pytest.raises(RemoteError) as raised:
        parse_answer("web1", "echo", stdout, stderr, code)
    assert str(raised.value) == f"web1: {expected}"


def test_a_module_that_says_it_failed_raises_with_its_answer() -> None:
    with pytest.raises(ModuleFailed) as raised:
        parse_answer("web1", "echo", '{"ok": false, "error": "disk full"}\n', "", 2)
    assert str(raised.value) == "web1: disk full"
    assert raised.value.result["error"] == "disk full"


def _hosts(project: Project) -> tuple[HostConfig, ...]:
    return load_inventory(project.path / "hosts.yml").hosts(None)


def test_module_runs_over_real_ssh_with_hostile_arguments(ssh_project: Project) -> None:
    host = _hosts(ssh_project)[0]
    c = connect(host)
    try:
        tricky = {"text": "a'b\"c $(touch /tmp/pwned) `id` \n;", "n": [1, 2.5, None, True]}
        answer = run_module(c, host.name, HOST_PYTHON, "echo", tricky)
        assert answer == {"ok": True, "args": tricky, "python": HOST_PYTHON_VERSION}
        with pytest.raises(ModuleFailed, match="web1: refused"):
            run_module(c, host.name, HOST_PYTHON, "echo", {"fail": "refused"})
    finally:
        close(c)


def test_module_runs_on_a_local_context() -> None:
    answer = run_module(Context(), "localhost", HOST_PYTHON, "echo", {"k": "v"})
    assert answer["args"] == {"k": "v"}


def test_a_shipped_module_runs_the_modules_shipped_with_it(tmp_path: Path) -> None:
    """On the host, `_common.program` builds a nested module's command from the sources it was shipped with:
    here ``echo``'s bootstrap runs a copy of ``_common`` that must find ``echo`` without this package's files."""
    probe = (
        "import json, sys\n"
        "from . import _common\n"
        "done = _common.run(_common.program(sys.executable, 'echo'), json.dumps({'x': 1}) + '\\n', 30, True)\n"
        "print(json.dumps(_common.json_answer(done.stdout)))\n"
    )
    sources = {**_common.bundle("echo"), "probe": probe}
    done = subprocess.run(
        [sys.executable, "-c", _common.bootstrap(sources, "probe")], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["args"] == {"x": 1}


def test_a_module_exits_2_when_it_answers_not_ok() -> None:
    done = subprocess.run(argv(sys.executable, "echo"), input='{"fail": "no"}\n', capture_output=True, text=True)
    assert done.returncode == _common.EXIT_FAILED and json.loads(done.stdout) == {"error": "no", "ok": False}


@pytest.mark.parametrize("name", sorted(p.stem for p in Path(echo.__file__).parent.glob("[a-z_]*.py")))
def test_modules_parse_as_python_3_8_for_older_hosts(name: str) -> None:
    ast.parse(source(name), feature_version=(3, 8))
