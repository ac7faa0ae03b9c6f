"""What a warm deploy costs per host on the wire: one connection, four exec calls (check, build, publish,
finish), and no second connection: the commit travels as a git pack on the build call's stdin, made once for
every host with the same deploy head. Counted on the real SSH client while deploying to a real sshd."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest

from deploytool.flow import phases
from deploytool.flow.deploy import plan_deploy, run_deploy
from deploytool.flow.target import Target
from deploytool.inventory import load_inventory
from tests.conftest import Project, git


def test_a_warm_deploy_is_one_connection_and_four_calls_per_host_and_no_ssh_process(
    ssh_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    first = git(ssh_project.path, "rev-parse", "HEAD")
    ssh_project.commit("warm")
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    plan = plan_deploy(inventory, inventory.hosts("test", "web1,web2"), "HEAD")
    connections: list[str] = []
    calls: list[tuple[str, str]] = []
    programs: list[str] = []
    packs: list[str | None] = []
    real_connect, real_exec = paramiko.SSHClient.connect, paramiko.Channel.exec_command
    real_make_pack = phases._make_pack

    def connect(client: paramiko.SSHClient, hostname: str, *args: Any, **kwargs: Any) -> None:
        connections.append(hostname)
        real_connect(client, hostname, *args, **kwargs)

    def exec_command(channel: paramiko.Channel, command: str) -> None:
        words = shlex.split(command)
        program = words[2] if words[1:2] == ["-c"] else words[0]  # <python> -c <bootstrap>: the module it runs
        module = program.rsplit('sources["', 1)[-1].split('"', 1)[0] if "Shipped" in program else words[0]
        calls.append((channel.get_transport().getpeername()[0], module))  # type: ignore[union-attr]
        real_exec(channel, command)

    real_popen_init = subprocess.Popen.__init__

    def popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        argv = [args] if isinstance(args, str) else list(args)
        programs.append(" ".join(str(word) for word in argv[:4]))
        real_popen_init(self, args, *rest, **kwargs)

    def make_pack(project_root: str, commit: str, host_head: str | None) -> str | None:
        packs.append(host_head)
        return real_make_pack(project_root, commit, host_head)

    monkeypatch.setattr(paramiko.SSHClient, "connect", connect)
    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_command)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)
    monkeypatch.setattr(phases, "_make_pack", make_pack)
    run_deploy(plan, ssh_project.path)
    assert len(connections) == 2, connections
    by_host: dict[str, list[str]] = {}
    for address, module in calls:
        by_host.setdefault(address, []).append(module)
    assert sorted(by_host.values()) == [["check", "build", "publish", "finish"]] * 2, calls
    connecting = [p for p in programs if (p.startswith("ssh") and not p.startswith("ssh -G")) or " push" in p]
    assert not connecting, programs  # `ssh -G` only resolves ssh_config; no second connection
    assert packs == [first]  # one pack for both hosts: what their deploy head lacks


def test_a_host_receives_what_its_repo_lacks_and_nothing_when_it_has_the_commit(
    ssh_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_project.fab("deploy", "--hosts", "web1")
    ssh_project.commit("second", {"big.txt": "x" * 200_000})
    sent: dict[str, str | None] = {}
    real_build_args = phases.build_args

    def build_args(target: Target, *args: Any) -> dict[str, object]:
        built = real_build_args(target, *args)
        sent[target.name] = built["pack"]  # type: ignore[assignment]
        return built

    monkeypatch.setattr(phases, "build_args", build_args)
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    run_deploy(plan_deploy(inventory, inventory.hosts("test", "web1,web2"), "HEAD"), ssh_project.path)
    assert sent["web1"] is not None and sent["web2"] is not None
    assert len(sent["web1"]) < len(sent["web2"])  # web1 had the first commit: it got only the second's objects
    head = git(ssh_project.path, "rev-parse", "HEAD")
    for name in ("web1", "web2"):
        repo = Path(ssh_project.inventory["stages"]["test"]["hosts"][name]["root"]) / "repo.git"
        assert host_git(repo, "rev-parse", "refs/heads/deploy") == head
        assert host_git(repo, "log", "--format=%s", "-1", head) == "second"
    sent.clear()
    run_deploy(plan_deploy(inventory, inventory.hosts("test", "web1"), "HEAD"), ssh_project.path)  # same commit
    assert sent == {"web1": None}


def host_git(repo: Path, *args: str) -> str:
    """git in a host's bare repo (owned by the hosts' user, so marked safe for this one call)."""
    argv = ["git", "-c", "safe.directory=*", f"--git-dir={repo}", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
