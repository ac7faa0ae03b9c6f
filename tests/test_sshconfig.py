"""Resolving hosts through ssh_config with OpenSSH's ``ssh -G`` (no server needed): hosts.yml's values win,
ProxyJump chains, and the git ssh command built from the same values."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytool.connection.sshconfig import resolve
from deploytool.errors import RemoteError
from deploytool.inventory import HostConfig, parse_inventory


def make_host(tmp_path: Path, config: str, **settings: object) -> HostConfig:
    (tmp_path / "ssh_config").write_text(config)
    (tmp_path / "key").write_text("not really a key\n")
    data = {
        "app": "demo",
        "root": "/srv/demo",
        "mirror": "http://mirror/",
        "ssh_config": "ssh_config",
        "stages": {"prod": {"hosts": {"web1": settings}}},
    }
    return parse_inventory(data, tmp_path / "hosts.yml").stages["prod"][0]


def test_ssh_config_supplies_what_hosts_yml_leaves_unset(tmp_path: Path) -> None:
    config = f"Host web1\n  HostName 10.0.0.5\n  User alice\n  Port 2200\n  IdentityFile {tmp_path}/key\n"
    config += f"  IdentityFile {tmp_path}/absent\n  ProxyJump jump@bastion:2222\n"
    endpoint = resolve(make_host(tmp_path, config))
    assert (endpoint.hostname, endpoint.user, endpoint.port) == ("10.0.0.5", "alice", 2200)
    assert endpoint.identity_files == (str(tmp_path / "key"),)  # keys that exist
    assert endpoint.via is not None
    assert (endpoint.via.hostname, endpoint.via.user, endpoint.via.port) == ("bastion", "jump", 2222)


def test_hosts_yml_wins_over_ssh_config(tmp_path: Path) -> None:
    config = "Host web1 db\n  HostName 10.0.0.5\n  User alice\n  Port 2200\n  IdentityFile ~/.ssh/id_other\n"
    config += "  ProxyJump far\nHost near\n  HostName 10.9.9.9\n  User jumper\n"
    host = make_host(tmp_path, config, user="deploy", port=22, identity_file="key", gateway="near:2022")
    endpoint = resolve(host)
    assert (endpoint.hostname, endpoint.user, endpoint.port) == ("10.0.0.5", "deploy", 22)
    assert endpoint.identity_files == (str(tmp_path / "key"),) and endpoint.identities_only
    assert endpoint.via is not None  # the gateway, itself looked up in ssh_config
    assert (endpoint.via.alias, endpoint.via.hostname, endpoint.via.user, endpoint.via.port) == (
        "near", "10.9.9.9", "jumper", 2022,
    )  # fmt: skip
    assert endpoint.via.via is None


def test_proxy_jump_chain_and_its_ssh_command(tmp_path: Path) -> None:
    config = "Host web1\n  HostName 10.0.0.5\n  ProxyJump a,b%x\nHost a\n  Port 2001\nHost b%x\n  Port 2002\n"
    host = make_host(tmp_path, config, user="deploy")
    endpoint = resolve(host)
    assert [hop.alias for hop in endpoint.hops] == ["a", "b%x"]  # the laptop connects to a first
    assert [hop.port for hop in endpoint.hops] == [2001, 2002]


def test_ssh_config_problems_name_the_host_and_file(tmp_path: Path) -> None:
    host = make_host(tmp_path, "Host web1\n  NoSuchOption yes\n")
    with pytest.raises(RemoteError, match=r"web1: cannot resolve web1 with .*ssh_config: .*line 2"):
        resolve(host)
    (tmp_path / "ssh_config").unlink()
    with pytest.raises(RemoteError, match=r"web1: ssh_config file .*ssh_config does not exist"):
        resolve(host)


def test_a_proxy_jump_loop_is_reported(tmp_path: Path) -> None:
    host = make_host(tmp_path, "Host web1\n  ProxyJump a\nHost a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(RemoteError, match=r"ProxyJump hops .* loop"):
        resolve(host)


def test_ssh_config_dev_null_reads_no_config(tmp_path: Path) -> None:
    """The README's way to read no ssh_config at all: ``ssh_config: /dev/null`` (a character device)."""
    host = make_host(tmp_path, "Host web1\n  HostName 10.0.0.5\n  User alice\n", address="web1", user="deploy")
    endpoint = resolve(host)
    assert endpoint.hostname == "10.0.0.5"  # read from the file
    data = {"app": "demo", "root": "/srv/demo", "mirror": "http://mirror/", "ssh_config": "/dev/null"}
    data["stages"] = {"prod": {"hosts": {"web1": {"address": "web1", "user": "deploy"}}}}
    endpoint = resolve(parse_inventory(data, tmp_path / "hosts.yml").stages["prod"][0])
    assert (endpoint.hostname, endpoint.user, endpoint.port) == ("web1", "deploy", 22)  # nothing read
