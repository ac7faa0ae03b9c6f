"""The host-side module runner: a module of the package runs on a real host (SSH and local) and answers JSON."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
from invoke.context import Context

from deploytool.errors import RemoteError
from deploytool.hostside import ModuleFailed, command, echo, parse_answer, run_module, source, stdin_line
from deploytool.inventory import HostConfig, load_inventory
from deploytool.transport import close, connect
from tests.conftest import HOST_PYTHON, HOST_PYTHON_VERSION, Project


def test_echo_module_runs_locally_as_a_function() -> None:
    assert echo.main({"x": 1}) == {"ok": True, "args": {"x": 1}, "python": echo.platform.python_version()}
    assert echo.main({"fail": "nope"}) == {"ok": False, "error": "nope"}


def test_command_carries_the_module_file_and_no_arguments() -> None:
    argv = shlex.split(command("/usr/bin/python3", "echo"))
    assert argv == ["/usr/bin/python3", "-c", source("echo"), "echo"]
    assert shlex.split(command("python3", "echo", sudo=True))[:3] == ["sudo", "-n", "python3"]
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


@pytest.mark.parametrize("name", sorted(p.stem for p in Path(echo.__file__).parent.glob("[a-z]*.py")))
def test_modules_parse_as_python_3_8_for_older_hosts(name: str) -> None:
    ast.parse(source(name), feature_version=(3, 8))
