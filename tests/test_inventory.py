"""hosts.yml: loading, precedence, host selection, and an error naming the file and the key's place."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploytool.errors import DeployError, InventoryError
from deploytool.inventory import HostConfig, Inventory, load_inventory

FULL = """\
app: shop
default_stage: staging
etc_templates: templates/etc
user: deploy
port: 2200
root: /srv/shop
mirror: https://mirror.example/simple
installer: uv
python: python3.11
keep_releases: 3
shared_dirs: [logs, media]
connect_timeout: 7
timeout: 700
known_hosts: /etc/ssh/known_hosts
identity_file: /keys/top
requirements: req/top.txt
etc_root: /
sudo: false
allow_root: false
validate: ["top-validate"]
after_switch: ["top-after"]
vars:
  level: top
  only_top: 1
  shared: top
stages:
  staging:
    port: 2201
    keep_releases: 4
    user: stager
    installer: pip
    python: python3.12
    shared_dirs: [logs]
    connect_timeout: 8
    timeout: 800
    identity_file: /keys/stage
    requirements: req/stage.txt
    etc_root: /opt/etc
    sudo: true
    validate: ["stage-validate"]
    vars:
      level: stage
      only_stage: 2
    hosts:
      web1:
        address: 10.0.0.1
        port: 2202
        keep_releases: 6
        user: hostuser
        root: /srv/host
        mirror: https://host-mirror.example/simple
        installer: uv
        python: /usr/bin/python3
        shared_dirs: [cache]
        connect_timeout: 9
        timeout: 900
        known_hosts: /host/known_hosts
        identity_file: /keys/host
        requirements: req/host.txt
        etc_root: /host/etc
        sudo: false
        allow_root: true
        validate: ["host-validate"]
        after_switch: ["host-after"]
        vars:
          level: host
          only_host: 3
      web2:
  production:
    hosts: [app1, app2]
  local:
    transport: local
    root: deploy/root
    mirror: wheels
    etc_root: etc-out
    hosts: [here]
"""

MINIMAL = """\
app: shop
root: /srv/shop
mirror: https://mirror.example/simple
stages:
  production:
    hosts: [web1, web2, web3]
  staging:
    hosts: [stage1]
"""


def write(tmp_path: Path, text: str, name: str = "hosts.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    if text is FULL:
        (tmp_path / "templates/etc").mkdir(parents=True, exist_ok=True)  # FULL sets etc_templates explicitly
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """Load ``text`` as hosts.yml, expecting an InventoryError that names the file; return its message."""
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert isinstance(caught.value, DeployError)
    message = str(caught.value)
    assert str(path.resolve()) in message or str(path) in message
    return message


def host(inventory: Inventory, stage: str, name: str) -> HostConfig:
    (found,) = inventory.hosts(stage, name)
    return found


# --- a valid, full example ---------------------------------------------------------------------------


@pytest.fixture
def full(tmp_path: Path) -> Inventory:
    return load_inventory(write(tmp_path, FULL))


def test_full_example_top_level(full: Inventory, tmp_path: Path) -> None:
    assert full.app == "shop"
    assert full.default_stage == "staging"
    assert full.path == (tmp_path / "hosts.yml").resolve()
    assert full.project_root == tmp_path.resolve()
    assert full.etc_templates == tmp_path.resolve() / "templates/etc"
    assert list(full.stages) == ["staging", "production", "local"]
    assert [h.name for h in full.stages["staging"]] == ["web1", "web2"]


def test_host_settings_override_stage_and_top(full: Inventory, tmp_path: Path) -> None:
    web1 = host(full, "staging", "web1")
    root = tmp_path.resolve()
    assert web1.name == "web1"
    assert web1.stage == "staging"
    assert web1.app == "shop"
    assert web1.transport == "ssh"
    assert web1.address == "10.0.0.1"
    assert web1.user == "hostuser"
    assert web1.port == 2202
    assert web1.root == "/srv/host"
    assert web1.mirror == "https://host-mirror.example/simple"
    assert web1.installer == "uv"
    assert web1.python == "/usr/bin/python3"
    assert web1.keep_releases == 6
    assert web1.shared_dirs == ("cache",)
    assert web1.connect_timeout == 9
    assert web1.timeout == 900
    assert web1.known_hosts == "/host/known_hosts"
    assert web1.identity_file == "/keys/host"
    assert web1.requirements == root / "req/host.txt"
    assert web1.etc_root == "/host/etc"
    assert web1.sudo is False
    assert web1.allow_root is True
    assert web1.validate == ("host-validate",)
    assert web1.after_switch == ("host-after",)
    assert not web1.is_local


def test_stage_settings_override_top(full: Inventory, tmp_path: Path) -> None:
    web2 = host(full, "staging", "web2")
    assert web2.address == "web2"  # defaults to the host's name
    assert web2.user == "stager"
    assert web2.port == 2201
    assert web2.root == "/srv/shop"
    assert web2.mirror == "https://mirror.example/simple"
    assert web2.installer == "pip"
    assert web2.python == "python3.12"
    assert web2.keep_releases == 4
    assert web2.shared_dirs == ("logs",)
    assert web2.connect_timeout == 8
    assert web2.timeout == 800
    assert web2.known_hosts == "/etc/ssh/known_hosts"
    assert web2.identity_file == "/keys/stage"
    assert web2.requirements == tmp_path.resolve() / "req/stage.txt"
    assert web2.etc_root == "/opt/etc"
    assert web2.sudo is True
    assert web2.allow_root is False
    assert web2.validate == ("stage-validate",)
    assert web2.after_switch == ("top-after",)


def test_top_level_settings_apply_when_stage_and_host_are_silent(full: Inventory, tmp_path: Path) -> None:
    app1 = host(full, "production", "app1")
    assert app1.address == "app1"
    assert app1.user == "deploy"
    assert app1.port == 2200
    assert app1.root == "/srv/shop"
    assert app1.installer == "uv"
    assert app1.python == "python3.11"
    assert app1.keep_releases == 3
    assert app1.shared_dirs == ("logs", "media")
    assert app1.connect_timeout == 7
    assert app1.timeout == 700
    assert app1.identity_file == "/keys/top"
    assert app1.requirements == tmp_path.resolve() / "req/top.txt"
    assert app1.etc_root == "/"
    assert app1.sudo is False
    assert app1.validate == ("top-validate",)
    assert app1.after_switch == ("top-after",)


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, MINIMAL))
    web1 = host(inventory, "production", "web1")
    assert inventory.default_stage is None
    assert inventory.etc_templates == tmp_path.resolve() / "etc-mock"
    assert web1.transport == "ssh"
    assert web1.address == "web1"
    assert web1.user is None
    assert web1.port is None  # ssh_config's Port, else 22
    assert web1.ssh_config is None  # ~/.ssh/config if it exists
    assert web1.gateway is None
    assert web1.known_hosts is None  # each hop's UserKnownHostsFile from ssh_config (OpenSSH's default)
    assert web1.identity_file is None
    assert web1.connect_timeout == 10
    assert web1.timeout == 600
    assert web1.allow_root is False
    assert web1.requirements == tmp_path.resolve() / "requirements/prod.txt"
    assert web1.installer is None  # uv when the mirror has it, else pip
    assert web1.python == "python3"
    assert web1.keep_releases == 5
    assert web1.shared_dirs == ("logs",)
    assert dict(web1.vars) == {}
    assert web1.etc_root == "/etc"  # etc-mock/ mirrors /etc
    assert web1.sudo is False
    assert web1.validate == ()
    assert web1.after_switch == ()


def test_vars_are_merged_across_levels_not_replaced(full: Inventory) -> None:
    assert dict(host(full, "staging", "web1").vars) == {
        "level": "host",
        "only_top": 1,
        "shared": "top",
        "only_stage": 2,
        "only_host": 3,
    }
    assert dict(host(full, "staging", "web2").vars) == {
        "level": "stage",
        "only_top": 1,
        "shared": "top",
        "only_stage": 2,
    }
    assert dict(host(full, "production", "app1").vars) == {"level": "top", "only_top": 1, "shared": "top"}


def test_local_stage_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    inventory = load_inventory(write(project, FULL))
    here = host(inventory, "local", "here")
    base = project.resolve()
    assert here.is_local
    assert here.root == str(base / "deploy/root")
    assert here.mirror == str(base / "wheels")
    assert here.etc_root == str(base / "etc-out")


def test_local_stage_puts_config_under_its_root_by_default(tmp_path: Path) -> None:
    """A local stage is a playground: without etc_root its config goes to <root>/etc, never the laptop's /etc."""
    project = tmp_path / "project"
    project.mkdir()
    text = "app: a\nmirror: wheels\nstages:\n  local: {transport: local, root: deploy/root, hosts: [here]}\n"
    here = host(load_inventory(write(project, text)), "local", "here")
    assert here.etc_root == str(project.resolve() / "deploy/root/etc")


def test_local_stage_runs_the_laptops_own_python_unless_told(tmp_path: Path) -> None:
    """The interpreter running fab (the one the requirements are checked for), not the first python3 on PATH;
    a remote host's default stays python3, and an explicit ``python`` wins everywhere."""
    project = tmp_path / "project"
    project.mkdir()
    text = (
        "app: a\nmirror: wheels\nroot: /srv/a\nstages:\n  local: {transport: local, root: deploy/root, hosts: [here]}\n"
        "  prod: {hosts: [web1]}\n  pinned: {transport: local, root: r, python: /opt/py/bin/python3, hosts: [there]}\n"
    )
    inventory = load_inventory(write(project, text))
    assert host(inventory, "local", "here").python == sys.executable
    assert host(inventory, "prod", "web1").python == "python3"
    assert host(inventory, "pinned", "there").python == "/opt/py/bin/python3"


def test_local_stage_resolves_relative_to_file_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(project, FULL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    inventory = load_inventory(Path("../project/hosts.yml"))
    here = host(inventory, "local", "here")
    assert here.root == str(project.resolve() / "deploy/root")


def test_local_stage_keeps_mirror_urls_and_absolute_paths(tmp_path: Path) -> None:
    inventory = load_inventory(
        write(
            tmp_path,
            """\
            app: shop
            stages:
              dev:
                transport: local
                root: /abs/root
                mirror: http://127.0.0.1:8000/wheels/
                hosts: [box]
            """,
        )
    )
    box = host(inventory, "dev", "box")
    assert box.root == "/abs/root"
    assert box.mirror == "http://127.0.0.1:8000/wheels/"


def test_hosts_as_list_and_as_mapping(tmp_path: Path) -> None:
    inventory = load_inventory(
        write(
            tmp_path,
            """\
            app: shop
            root: /srv/shop
            mirror: https://m.example/
            stages:
              listed:
                hosts: [a, b, c]
              mapped:
                hosts:
                  a:
                  b: {port: 2222}
                  c: {}
            """,
        )
    )
    listed = inventory.hosts("listed")
    mapped = inventory.hosts("mapped")
    assert [h.name for h in listed] == ["a", "b", "c"]
    assert [h.name for h in mapped] == ["a", "b", "c"]
    assert [h.port for h in listed] == [None, None, None]  # unset: ssh_config decides
    assert [h.port for h in mapped] == [None, 2222, None]
    assert all(h.stage == "mapped" for h in mapped)


# --- Inventory.hosts ---------------------------------------------------------------------------------


def test_hosts_of_default_stage(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "default_stage: staging\n" + MINIMAL))
    assert [h.name for h in inventory.hosts(None)] == ["stage1"]
    assert [h.name for h in inventory.hosts(None, "stage1")] == ["stage1"]


def test_hosts_of_explicit_stage_overrides_default(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "default_stage: staging\n" + MINIMAL))
    assert [h.name for h in inventory.hosts("production")] == ["web1", "web2", "web3"]


def test_hosts_only_limits_keeps_order_given_and_drops_duplicates(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, MINIMAL))
    assert [h.name for h in inventory.hosts("production", "web1,web3")] == ["web1", "web3"]
    assert [h.name for h in inventory.hosts("production", " web3 , web1,web3,")] == ["web3", "web1"]
    assert [h.name for h in inventory.hosts("production")] == ["web1", "web2", "web3"]


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_hosts_that_names_no_host_is_an_error_not_every_host(tmp_path: Path, only: str) -> None:
    inventory = load_inventory(write(tmp_path, MINIMAL))
    with pytest.raises(InventoryError, match="names no host; leave --hosts out to act on every host"):
        inventory.hosts("production", only)


def test_hosts_without_stage_or_default_stage(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    inventory = load_inventory(path)
    with pytest.raises(InventoryError, match="no --stage given and no default_stage set") as caught:
        inventory.hosts(None)
    assert str(path.resolve()) in str(caught.value)


def test_hosts_unknown_stage_suggests_close_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    inventory = load_inventory(path)
    with pytest.raises(InventoryError) as caught:
        inventory.hosts("prodution")
    message = str(caught.value)
    assert str(path.resolve()) in message
    assert "no stage named 'prodution'" in message
    assert "did you mean 'production'" in message
    assert "stages: production, staging" in message


def test_hosts_unknown_host_suggests_close_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    inventory = load_inventory(path)
    with pytest.raises(InventoryError) as caught:
        inventory.hosts("production", "web1,wbe2")
    message = str(caught.value)
    assert isinstance(caught.value, DeployError)
    assert str(path.resolve()) in message
    assert "stage 'production' has no host 'wbe2'" in message
    assert "did you mean 'web2'" in message
    assert "its hosts: web1, web2, web3" in message


def test_hosts_unknown_name_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, MINIMAL))
    with pytest.raises(InventoryError) as caught:
        inventory.hosts("qqqqqqq")
    assert "did you mean" not in str(caught.value)


# --- invalid files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "place"),
    [
        (MINIMAL + "keep_release: 3\n", "keep_release"),
        (MINIMAL.replace("  staging:\n", "  staging:\n    keep_release: 3\n"), "stages.staging.keep_release"),
        (
            MINIMAL.replace("    hosts: [stage1]\n", "    hosts:\n      stage1:\n        keep_release: 3\n"),
            "stages.staging.hosts.stage1.keep_release",
        ),
    ],
    ids=["top", "stage", "host"],
)
def test_unknown_key_names_place_and_suggests(tmp_path: Path, text: str, place: str) -> None:
    message = load_error(tmp_path, text)
    assert f": {place}: unknown key 'keep_release'" in message
    assert "did you mean 'keep_releases'" in message


GATEWAY = "expected a jump host like 'deploy@bastion:2222' (ProxyJump's form), got "


@pytest.mark.parametrize(
    ("setting", "place", "expected"),
    [
        ('port: "22"', "port", "expected a port number, got '22'"),
        ("port: 70000", "port", "expected a port number, got 70000"),
        ("keep_releases: 0", "keep_releases", "expected a whole number >= 1, got 0"),
        ("keep_releases: true", "keep_releases", "expected a whole number >= 1, got True"),
        ("timeout: 0", "timeout", "expected a number of seconds, got 0"),
        ('allow_root: "yes"', "allow_root", "expected true or false, got 'yes'"),
        ('shared_dirs: ["../x"]', "shared_dirs", "expected a list of directory names, got ['../x']"),
        ('shared_dirs: "logs"', "shared_dirs", "expected a list of directory names, got 'logs'"),
        ("vars: [1]", "vars", "expected a mapping, got [1]"),
        ("transport: rsync", "transport", "expected 'ssh' or 'local', got 'rsync'"),
        ("installer: conda", "installer", "expected 'pip' or 'uv', got 'conda'"),
        ('gateway: "-oProxyCommand=sh"', "gateway", GATEWAY + "'-oProxyCommand=sh'"),
        ('gateway: "bastion, other"', "gateway", GATEWAY + "'bastion, other'"),
        ("gateway: 22", "gateway", GATEWAY + "22"),
        ("ssh_config: []", "ssh_config", "expected a path, got []"),
        ('user: ""', "user", "expected a user name, got ''"),
        ("validate: [1]", "validate", "expected a list of commands, got [1]"),
    ],
)
@pytest.mark.parametrize("level", ["top", "stage", "host"])
def test_wrong_type_names_place(tmp_path: Path, setting: str, place: str, expected: str, level: str) -> None:
    if level == "top":
        text, where = MINIMAL + setting + "\n", place
    elif level == "stage":
        text = MINIMAL.replace("  staging:\n", f"  staging:\n    {setting}\n")
        where = f"stages.staging.{place}"
    else:
        text = MINIMAL.replace("    hosts: [stage1]\n", f"    hosts:\n      stage1:\n        {setting}\n")
        where = f"stages.staging.hosts.stage1.{place}"
    message = load_error(tmp_path, text)
    assert f": {where}: {expected}" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stages: {}\n", "top level: missing required key 'app'"),
        ("app: shop\n", "top level: missing required key 'stages'"),
        ("app: shop\nstages: {prod: {hosts: [a]}}\n", "stages.prod.hosts.a: missing required key 'root'"),
        (
            "app: shop\nroot: /srv\nstages: {prod: {hosts: [a]}}\n",
            "stages.prod.hosts.a: missing required key 'mirror'",
        ),
        ("app: shop\nroot: /srv\nmirror: m\nstages: {prod: {}}\n", "stages.prod: missing required key"),
        ("app: shop\nroot: /srv\nmirror: m\nstages: {prod: }\n", "stages.prod: missing required key"),
        (
            "app: shop\nroot: /srv\nmirror: m\nstages: {prod: {hosts: []}}\n",
            "stages.prod.hosts: expected at least one host",
        ),
        (
            "app: shop\nroot: /srv\nmirror: m\nstages: {prod: {hosts: [a, 5]}}\n",
            "stages.prod.hosts: expected host names",
        ),
    ],
    ids=["app", "stages", "root", "mirror", "hosts", "stage-null", "hosts-empty", "hosts-not-names"],
)
def test_missing_required_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


def test_required_key_may_come_from_any_level(tmp_path: Path) -> None:
    inventory = load_inventory(
        write(
            tmp_path,
            """\
            app: shop
            stages:
              prod:
                root: /srv/stage
                hosts:
                  a: {mirror: https://m.example/}
            """,
        )
    )
    a = host(inventory, "prod", "a")
    assert (a.root, a.mirror) == ("/srv/stage", "https://m.example/")


def test_missing_root_on_one_host_names_that_host(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        app: shop
        mirror: m
        stages:
          prod:
            hosts:
              a: {root: /srv}
              b:
        """,
    )
    assert "stages.prod.hosts.b: missing required key 'root'" in message


def test_relative_root_for_ssh_stage(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL.replace("root: /srv/shop", "root: srv/shop"))
    expected = "stages.production.hosts.web1.root: expected an absolute path on the host, got 'srv/shop'"
    assert expected in message


def test_relative_etc_root_for_ssh_stage(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "etc_root: etc\n")
    assert "stages.production.hosts.web1.etc_root: expected an absolute path on the host" in message


def test_default_stage_naming_no_stage(tmp_path: Path) -> None:
    message = load_error(tmp_path, "default_stage: productoin\n" + MINIMAL)
    assert "default_stage: no stage named 'productoin'" in message
    assert "did you mean 'production'" in message


def test_stages_not_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "app: shop\nstages: [prod]\n")
    assert "stages: expected a mapping of stage names to stages, got ['prod']" in message


def test_stage_not_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "app: shop\nstages: {prod: [a, b]}\n")
    assert "stages.prod: expected a mapping, got list" in message


def test_host_settings_not_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "app: shop\nstages: {prod: {hosts: {a: [1]}}}\n")
    assert "stages.prod.hosts.a: expected a mapping, got list" in message


def test_top_level_only_keys_are_not_allowed_in_a_stage(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL.replace("  staging:\n", "  staging:\n    app: other\n"))
    assert "stages.staging.app: unknown key 'app'" in message


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "app: shop\nstages:\n  prod:\n    hosts: [a, b\n  other: 1\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line ")
    assert "invalid YAML" in message


def test_invalid_yaml_line_number_is_one_based(tmp_path: Path) -> None:
    path = write(tmp_path, "app: shop\nstages: {}\nbad: [\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    # The flow sequence opened on line 3 is never closed; the scanner notices at the end (line 4).
    assert f"{path}: line 4: invalid YAML" in str(caught.value)


def test_invalid_yaml_tab_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "app: shop\nstages:\n\tprod: {}\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert f"{path}: line 3: invalid YAML" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert isinstance(caught.value, DeployError)
    assert str(caught.value).startswith(f"{path}: no such file")


def test_unreadable_path(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.mkdir()
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert str(caught.value).startswith(f"{path}: cannot read")


def test_undecodable_file_is_an_inventory_error(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_bytes(b"app: caf\xe9\n")
    with pytest.raises(InventoryError, match=r"hosts\.yml: not UTF-8"):
        load_inventory(path)


def test_empty_stages_host_list_and_odd_host_names_are_refused(tmp_path: Path) -> None:
    assert "stages: expected at least one stage" in load_error(tmp_path, "app: shop\nstages: {}\n")
    odd = "app: shop\nmirror: /m\nstages:\n  prod:\n    root: /srv\n    hosts: {yes: , web1: }\n"
    assert "host name True is not a string" in load_error(tmp_path, odd)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"], ids=["empty", "comment", "doc-marker"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = load_error(tmp_path, text)
    assert "top level: expected a mapping with at least 'app' and 'stages'" in message


@pytest.mark.parametrize("text", ["- app: shop\n- stages: {}\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    message = load_error(tmp_path, text)
    assert "top level: expected a mapping with at least 'app' and 'stages'" in message


# --- the real CLI ------------------------------------------------------------------------------------


def test_cli_reports_invalid_inventory_without_traceback(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "fabfile.py").write_text("from deploytool import ns\n")
    hosts = write(tmp_path, MINIMAL.replace("  staging:\n", "  staging:\n    keep_release: 3\n"))
    result = subprocess.run(
        [sys.executable, "-m", "fabric", "deploy", "--stage", "staging"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ")
    assert str(hosts.resolve()) in result.stderr
    assert "stages.staging.keep_release" in result.stderr
    assert "did you mean 'keep_releases'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


# --- names, reserved directories, versions, paths, duplicate keys -----------------------------------


@pytest.mark.parametrize("name", ["venv", "etc"])
@pytest.mark.parametrize("level", ["top", "stage", "host"])
def test_shared_dirs_refuses_the_release_s_own_directories(tmp_path: Path, name: str, level: str) -> None:
    setting = f"shared_dirs: [logs, {name}]"
    if level == "top":
        text, where = MINIMAL + setting + "\n", "shared_dirs"
    elif level == "stage":
        text, where = MINIMAL.replace("  staging:\n", f"  staging:\n    {setting}\n"), "stages.staging.shared_dirs"
    else:
        text = MINIMAL.replace("    hosts: [stage1]\n", f"    hosts:\n      stage1:\n        {setting}\n")
        where = "stages.staging.hosts.stage1.shared_dirs"
    message = load_error(tmp_path, text)
    assert f": {where}: {name!r} is a directory every release has itself" in message
    assert "choose another name" in message


def test_shared_dirs_still_refuses_hidden_names(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "shared_dirs: [.cache]\n")
    assert ": shared_dirs: expected a list of directory names, got ['.cache']" in message


@pytest.mark.parametrize("bad", ["../../src", ".hidden", "a/b", "-x", "web 1", "_x"])
def test_host_names_must_be_plain_names(tmp_path: Path, bad: str) -> None:
    message = load_error(tmp_path, MINIMAL.replace("hosts: [stage1]", f"hosts: [{bad!r}]"))
    assert f": stages.staging.hosts.{bad}: host name {bad!r} is not allowed" in message
    assert "address:" in message


@pytest.mark.parametrize("bad", ["../../src", ".x", "a/b"])
def test_stage_names_must_be_plain_names(tmp_path: Path, bad: str) -> None:
    message = load_error(tmp_path, MINIMAL.replace("  staging:\n", f"  {bad!r}:\n"))
    assert f": stages.{bad}: stage name {bad!r} is not allowed" in message
    assert "address:" in message


def test_dotted_host_names_and_stage_names_are_fine(tmp_path: Path) -> None:
    text = MINIMAL.replace("hosts: [stage1]", "hosts: [web1.example.com, app_2-b]").replace("staging:", "pre.prod_1-a:")
    inventory = load_inventory(write(tmp_path, text))
    assert [h.name for h in inventory.hosts("pre.prod_1-a")] == ["web1.example.com", "app_2-b"]
    assert host(inventory, "pre.prod_1-a", "web1.example.com").address == "web1.example.com"


@pytest.mark.parametrize("value", ['"3.11"', "3.11", '"3"', '"3.11.2.1"', '"3.x.1"', "3"])
def test_python_version_must_be_the_full_version(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, MINIMAL.replace("  staging:\n", f"  staging:\n    python_version: {value}\n"))
    assert ": stages.staging.python_version: expected the hosts' full Python version X.Y.Z" in message
    assert "compares it with the host's full version" in message and '"3.11.2"' in message


@pytest.mark.parametrize("value", ["3.11.2", "3.13.0rc1", "3.12.10"])
def test_python_version_full_versions_are_accepted(tmp_path: Path, value: str) -> None:
    inventory = load_inventory(write(tmp_path, MINIMAL + f'python_version: "{value}"\n'))
    assert host(inventory, "staging", "stage1").python_version == value


def test_mirror_path_must_be_absolute(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "mirror_host: pyrepo\nmirror_path: srv/wheels\n")
    assert "stages.production.hosts.web1.mirror_path: expected an absolute path on the mirror host" in message
    ok = load_inventory(write(tmp_path, MINIMAL + "mirror_host: pyrepo\nmirror_path: /srv/wheels\n"))
    assert host(ok, "staging", "stage1").mirror_path == "/srv/wheels"


def test_requirements_pointing_at_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    message = load_error(tmp_path, MINIMAL + "requirements: requirements\n")
    assert "stages.production.hosts.web1.requirements: expected a file" in message
    assert str(tmp_path / "requirements") in message


def test_etc_templates_set_but_missing_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "etc_templates: templates\n")
    assert f": etc_templates: {tmp_path.resolve() / 'templates'} does not exist" in message


def test_etc_templates_set_to_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "templates").write_text("not a directory\n")
    message = load_error(tmp_path, MINIMAL + "etc_templates: templates\n")
    assert f": etc_templates: {tmp_path.resolve() / 'templates'} is not a directory" in message


def test_default_etc_mock_may_be_absent_but_not_a_file(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, MINIMAL))
    assert inventory.etc_templates == tmp_path.resolve() / "etc-mock"
    assert not inventory.etc_templates.exists()
    (tmp_path / "etc-mock").write_text("oops\n")
    message = load_error(tmp_path, MINIMAL)
    assert f": etc-mock: {tmp_path.resolve() / 'etc-mock'} is not a directory" in message


def test_etc_templates_set_to_a_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    inventory = load_inventory(write(tmp_path, MINIMAL + "etc_templates: templates\n"))
    assert inventory.etc_templates == tmp_path.resolve() / "templates"


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        (MINIMAL + "app: other\n", "app", 9, 1),
        (MINIMAL.replace("  staging:\n", "  staging:\n    port: 22\n    port: 23\n"), "port", 9, 8),
        (MINIMAL + "  production:\n    hosts: [x]\n", "production", 9, 5),
        (
            MINIMAL.replace("    hosts: [stage1]\n", "    hosts:\n      stage1:\n        vars: {a: 1, b: 2, a: 3}\n"),
            "a",
            10,
            10,
        ),
        (MINIMAL + "vars:\n  deep:\n    x: 1\n    y: 2\n    x: 3\n", "x", 13, 11),
    ],
    ids=["top", "stage", "stage-name", "flow-same-line", "deep-vars"],
)
def test_duplicate_keys_are_refused_with_their_line(tmp_path: Path, text: str, key: str, line: int, first: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line {line}: ")
    assert f"duplicate key {key!r} (first on line {first})" in message


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = MINIMAL + "vars:\n  base: &base {a: 1, b: 2}\n  merged:\n    <<: *base\n    a: 5\n"
    inventory = load_inventory(write(tmp_path, text))
    assert host(inventory, "staging", "stage1").vars["merged"] == {"a": 5, "b": 2}


def test_ssh_settings_gateway_and_ssh_config(tmp_path: Path) -> None:
    settings = "    gateway: deploy@bastion:2222,jump2\n    ssh_config: ssh/config\n"
    text = MINIMAL.replace("  staging:\n", "  staging:\n" + settings)
    inventory = load_inventory(write(tmp_path, text))
    stage1 = host(inventory, "staging", "stage1")
    assert stage1.gateway == "deploy@bastion:2222,jump2"
    assert stage1.ssh_config == str(tmp_path.resolve() / "ssh/config")  # relative to hosts.yml
    assert host(inventory, "production", "web1").gateway is None


# --- going live: restart, health_check, batch_size, parallel --------------------------------------------

LIVE = """\
app: shop
root: /srv/shop
mirror: https://mirror.example/simple
stages:
  production:
    {stage}
    hosts:
      web1: {{{host}}}
"""


def test_going_live_settings_are_read_with_their_defaults(tmp_path: Path) -> None:
    stage = (
        'batch_size: "25%"\n    parallel: 4\n    restart: {gunicorn_pidfile: /run/shop.pid, start: ["run it"]}\n'
        '    health_check: {url: "http://127.0.0.1:{{ port }}/", contains: "{{ release_id }}", deadline: 9}'
    )
    inventory = load_inventory(write(tmp_path, LIVE.format(stage=stage, host="")))
    web1 = host(inventory, "production", "web1")
    assert (web1.batch_size, web1.parallel) == ("25%", 4)
    assert (web1.restart.gunicorn_pidfile, web1.restart.start, web1.restart.commands) == (
        "/run/shop.pid",
        ("run it",),
        (),
    )
    check = web1.health_check
    assert check is not None and (check.url, check.contains, check.deadline, check.timeout) == (
        "http://127.0.0.1:{{ port }}/",
        "{{ release_id }}",
        9,
        5,
    )
    plain = host(load_inventory(write(tmp_path, LIVE.format(stage="restart: [a, b]", host=""))), "production", "web1")
    assert plain.restart.commands == ("a", "b") and plain.health_check is None and plain.batch_size is None


@pytest.mark.parametrize(
    ("stage", "host_settings", "expected"),
    [
        ("batch_size: 0", "", "stages.production.batch_size: expected a number of hosts (>= 1) or a percentage"),
        ('batch_size: "150%"', "", "stages.production.batch_size: expected a number of hosts"),
        ("", "batch_size: 2", "stages.production.hosts.web1.batch_size: batch_size is a setting of the whole stage"),
        ("restart: {gunicorn_pidfile: run.pid}", "", "gunicorn_pidfile: expected the absolute path"),
        ("restart: {pidfile: /run/x.pid}", "", "restart: unknown key 'pidfile'"),
        ("health_check: {url: 'http://x/', command: 'true'}", "", "expected exactly one of url"),
        ("health_check: {command: 'true', contains: ok}", "", "contains: only a url check reads an answer"),
        ("health_check: {url: 'http://x/', deadline: -1}", "", "deadline: expected a number of seconds"),
        ("health_check: {url: 'ftp://x/'}", "", "url: expected an http(s) URL on the host"),
    ],
)
def test_bad_going_live_settings_name_the_key(tmp_path: Path, stage: str, host_settings: str, expected: str) -> None:
    message = load_error(tmp_path, LIVE.format(stage=stage, host=host_settings))
    assert expected in message, message
