"""What a warm deploy costs per host on the wire: one connection, four exec calls (check, build, publish,
finish), one git push. Counted on the real SSH client while deploying to a real sshd."""

from __future__ import annotations

import shlex
from typing import Any

import paramiko
import pytest

from deploytool.flow import phases
from deploytool.flow.deploy import plan_deploy, run_deploy
from deploytool.inventory import load_inventory
from tests.conftest import Project


def test_a_warm_deploy_is_one_connection_four_calls_and_a_push_per_host(
    ssh_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_project.fab("deploy", "--hosts", "web1,web2")
    ssh_project.commit("warm")
    inventory = load_inventory(ssh_project.path / "hosts.yml")
    plan = plan_deploy(inventory, inventory.hosts("test", "web1,web2"), "HEAD")
    connections: list[str] = []
    calls: list[tuple[str, str]] = []
    pushes: list[str] = []
    real_connect, real_exec, real_push = paramiko.SSHClient.connect, paramiko.Channel.exec_command, phases.push

    def connect(client: paramiko.SSHClient, hostname: str, *args: Any, **kwargs: Any) -> None:
        connections.append(hostname)
        real_connect(client, hostname, *args, **kwargs)

    def exec_command(channel: paramiko.Channel, command: str) -> None:
        words = shlex.split(command)
        program = words[2] if words[1:2] == ["-c"] else words[0]  # <python> -c <bootstrap>: the module it runs
        module = program.rsplit('sources["', 1)[-1].split('"', 1)[0] if "Shipped" in program else words[0]
        calls.append((channel.get_transport().getpeername()[0], module))  # type: ignore[union-attr]
        real_exec(channel, command)

    def push(target: phases.Target, *args: Any) -> None:
        pushes.append(target.name)
        real_push(target, *args)

    monkeypatch.setattr(paramiko.SSHClient, "connect", connect)
    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_command)
    monkeypatch.setattr(phases, "push", push)
    run_deploy(plan, ssh_project.path)
    assert len(connections) == 2, connections
    by_host: dict[str, list[str]] = {}
    for address, module in calls:
        by_host.setdefault(address, []).append(module)
    assert sorted(by_host.values()) == [["check", "build", "publish", "finish"]] * 2, calls
    assert sorted(pushes) == ["web1", "web2"]
