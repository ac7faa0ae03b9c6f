"""Deploys to hosts reachable only through a bastion: ssh_config's ProxyJump, hosts.yml's ``gateway``, and every
hop's host key checked (real sshd in a network namespace)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import sshd
from tests.conftest import HOST_PYTHON, HOST_PYTHON_VERSION, Mirror, Project, git, make_project

HOSTS = {"web1": "127.0.0.2", "web2": "127.0.0.3"}


def _ssh_config(path: Path, servers: sshd.Bastion, proxy_jump: str = "bastion") -> Path:
    """The user's ssh_config: aliases for the bastion and the hosts, each with its own key."""
    hosts = "".join(f"Host {name}\n  HostName {address}\n" for name, address in HOSTS.items())
    path.write_text(
        f"Host bastion\n  HostName {servers.bastion_address}\n  Port {servers.bastion.port}\n  User deploy\n"
        f"  IdentityFile {servers.bastion.client_key}\n"
        f"{hosts}"
        f"Host web*\n  Port {servers.hosts.port}\n  User {servers.hosts.user}\n"
        f"  IdentityFile {servers.hosts.client_key}\n  ProxyJump {proxy_jump}\n"
    )
    return path


def _known_hosts(path: Path, servers: sshd.Bastion, with_bastion: bool = True) -> Path:
    text = servers.hosts.known_hosts.read_text()
    path.write_text(text + (servers.bastion.known_hosts.read_text() if with_bastion else ""))
    return path


def _project(tmp_path: Path, servers: sshd.Bastion, mirror: Mirror, stage: dict[str, Any]) -> Project:
    """A project deploying to the namespace's hosts (which install from the mirror's directory: the HTTP
    mirror on this machine's loopback is out of their reach)."""
    roots = {name: str(servers.hosts.host_root(f"{tmp_path.name}-{name}") / "app") for name in HOSTS}
    settings = stage.pop("hosts", {})
    hosts = {name: {"root": roots[name], **settings.get(name, {})} for name in HOSTS}
    inventory = {
        "app": "demo",
        "default_stage": "prod",
        "mirror": str(mirror.directory),
        "python": HOST_PYTHON,
        "python_version": HOST_PYTHON_VERSION,
        "stages": {"prod": {**stage, "hosts": hosts}},
    }
    return make_project(tmp_path / "project", inventory)


def _current(project: Project, name: str) -> str | None:
    root = Path(project.inventory["stages"]["prod"]["hosts"][name]["root"])
    return os.readlink(root / "current") if (root / "current").is_symlink() else None


def _tunnels(servers: sshd.Bastion) -> str:
    """The bastion's debug log lines for forwarded connections."""
    log = (servers.bastion.base / "sshd.log").read_text()
    return "\n".join(line for line in log.splitlines() if "server_request_direct_tcpip" in line)


def test_deploy_and_rollback_through_the_bastion_of_ssh_config(
    tmp_path: Path, bastion: sshd.Bastion, mirror: Mirror
) -> None:
    ssh_config = _ssh_config(tmp_path / "ssh_config", bastion)
    known_hosts = _known_hosts(tmp_path / "known_hosts", bastion)
    project = _project(tmp_path, bastion, mirror, {"ssh_config": str(ssh_config), "known_hosts": str(known_hosts)})
    # The hosts are out of reach without the bastion: the same hosts, but ProxyJump turned off.
    project.inventory["stages"]["direct"] = {
        **project.inventory["stages"]["prod"],
        "ssh_config": str(tmp_path / "no_jump"),
    }
    (tmp_path / "no_jump").write_text(ssh_config.read_text().replace("ProxyJump bastion", "ProxyJump none"))
    project.write_inventory()
    direct = project.fab("deploy", "--stage", "direct", check=False)
    assert direct.returncode == 1
    port = bastion.hosts.port  # held bound outside the namespace: nothing here answers on it
    assert f"web1: cannot connect to 127.0.0.2:{port}" in direct.stderr
    assert f"web2: cannot connect to 127.0.0.3:{port}" in direct.stderr
    assert "Traceback" not in direct.stderr

    before = _tunnels(bastion)
    first = git(project.path, "rev-parse", "HEAD")
    project.fab("deploy")
    for name in HOSTS:
        assert first[:7] in (_current(project, name) or "")
    tunnels = _tunnels(bastion)[len(before) :]
    for address in HOSTS.values():
        # Fabric's connection (Paramiko names no originator) went through, and nothing else: the commit rode it.
        assert f"originator  port 0, target {address} port {port}" in tunnels
        assert f"originator 127.0.0.1 port 65535, target {address} port {port}" not in tunnels

    second = project.commit("second")
    project.fab("deploy")
    assert all(second[:7] in (_current(project, name) or "") for name in HOSTS)
    rolled = project.fab("rollback")
    assert "Traceback" not in rolled.stderr
    assert all(first[:7] in (_current(project, name) or "") for name in HOSTS)


def test_gateway_in_hosts_yml_and_settings_there_win(tmp_path: Path, bastion: sshd.Bastion, mirror: Mirror) -> None:
    """``gateway: user@host:port`` in hosts.yml, the hosts' address, port, user and key from hosts.yml; the
    ssh_config knows only the bastion's key (and says wrong things about the hosts, which hosts.yml overrides)."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host {bastion.bastion_address}\n  IdentityFile {bastion.bastion.client_key}\n"
        "Host 127.0.0.*\n  User nobody\n  Port 1\n  ProxyJump nowhere.invalid\n"
    )
    stage = {
        "ssh_config": str(ssh_config),
        "known_hosts": str(_known_hosts(tmp_path / "known_hosts", bastion)),
        "gateway": f"deploy@{bastion.bastion_address}:{bastion.bastion.port}",
        "user": bastion.hosts.user,
        "port": bastion.hosts.port,
        "identity_file": str(bastion.hosts.client_key),
        "hosts": {name: {"address": address} for name, address in HOSTS.items()},
    }
    project = _project(tmp_path, bastion, mirror, stage)
    commit = git(project.path, "rev-parse", "HEAD")
    project.fab("deploy")
    assert all(commit[:7] in (_current(project, name) or "") for name in HOSTS)


def test_two_jump_hosts_in_a_row(tmp_path: Path, bastion: sshd.Bastion, mirror: Mirror) -> None:
    """ProxyJump with two hops (the bastion, then the bastion again from itself): nested jump commands."""
    ssh_config = _ssh_config(tmp_path / "ssh_config", bastion, proxy_jump="bastion,bastion")
    known_hosts = _known_hosts(tmp_path / "known_hosts", bastion)
    project = _project(tmp_path, bastion, mirror, {"ssh_config": str(ssh_config), "known_hosts": str(known_hosts)})
    commit = git(project.path, "rev-parse", "HEAD")
    project.fab("deploy", "--hosts", "web1")
    assert commit[:7] in (_current(project, "web1") or "")


def _fingerprint(public_key_file: Path) -> str:
    listing = subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True)
    return listing.stdout.split()[1]


@pytest.mark.parametrize("problem", ["unknown", "changed"])
def test_a_bastion_key_not_in_known_hosts_stops_everything(
    tmp_path: Path, bastion: sshd.Bastion, mirror: Mirror, problem: str
) -> None:
    ssh_config = _ssh_config(tmp_path / "ssh_config", bastion)
    known_hosts = _known_hosts(tmp_path / "known_hosts", bastion, with_bastion=problem == "changed")
    if problem == "changed":  # the bastion's line now holds another key (the hosts' one)
        text = known_hosts.read_text().replace(bastion.bastion.host_public_key, bastion.hosts.host_public_key)
        known_hosts.write_text(text)
    project = _project(tmp_path, bastion, mirror, {"ssh_config": str(ssh_config), "known_hosts": str(known_hosts)})
    result = project.fab("deploy", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    where = f"jump host bastion ({bastion.bastion_address}:{bastion.bastion.port})"
    fingerprint = _fingerprint(bastion.bastion.base / "host_key.pub")
    assert fingerprint.startswith("SHA256:")
    for name in HOSTS:
        reason = "is unknown: it is not in" if problem == "unknown" else "does not match"
        assert f"{name}: host key of {where} {reason} {known_hosts}" in result.stderr
        assert f"ssh-ed25519 {fingerprint}" in result.stderr
        assert not Path(project.inventory["stages"]["prod"]["hosts"][name]["root"]).exists()
