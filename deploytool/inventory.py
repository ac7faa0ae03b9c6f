"""Read and validate ``hosts.yml``: the stages, their hosts, and each host's resolved settings.

Settings are looked up host -> stage -> top level -> default; ``vars`` mappings are merged in that order
instead of replaced. Every unknown key, wrong type or missing required key is an `InventoryError` that names
the file and the key's place (``stages.production.hosts.web1.keep_release``).
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .errors import InventoryError
from .flow.golive import (
    HealthCheck,
    Restart,
    batch_size_problem,
    health_problem,
    parse_health,
    parse_restart,
    restart_problem,
)

# name -> (type description, check, default). ``None`` default with no check of absence means optional.
_Check = Callable[[Any], bool]


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_gateway(value: Any) -> bool:
    """ProxyJump's form: ``[user@]host[:port]``, comma-separated hops; nothing ssh could take for an option."""
    return (
        _is_str(value)
        and not any(char.isspace() for char in value)
        and all(hop and not hop.startswith("-") for hop in value.split(","))
    )


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_str(item) for item in value)


#: An environment variable's name as the app's ``env`` and a secret source may give it.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_env_value(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _is_env(value: Any) -> bool:
    return _is_mapping(value) and all(
        ENV_NAME.fullmatch(key) and not key.startswith("DEPLOYTOOL_") and _is_env_value(item)
        for key, item in value.items()
    )


SECRET_SOURCES = ("command", "file", "env_prefix")


def secrets_problem(value: Any) -> str | None:
    """What is wrong with a ``secrets`` value, or None."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in SECRET_SOURCES:
        return (
            'expected one of {command: "sops -d secrets.yaml"}, {file: ~/.config/app/secrets.yaml} or '
            f"{{env_prefix: APP_}}, got {value!r:.80}"
        )
    kind, source = next(iter(value.items()))
    if not _is_str(source):
        return f"{kind}: expected text, got {source!r:.80}"
    if kind == "env_prefix" and not ENV_NAME.fullmatch(source):
        return f"env_prefix: expected the start of variable names, like DEMO_, got {source!r:.80}"
    return None


def _is_secrets(value: Any) -> bool:
    return value is None or secrets_problem(value) is None


#: Names a release directory uses itself (``<release>/venv``, ``<release>/etc``); a shared dir linked there
#: would replace them.
RESERVED_SHARED_DIRS = ("venv", "etc")


def _is_shared_dir_list(value: Any) -> bool:
    return _is_str_list(value) and all(
        "/" not in item and item not in (".", "..", *RESERVED_SHARED_DIRS) and not item.startswith(".")
        for item in value
    )


#: Stage and host names: they become directory names (``build/etc/<stage>/<host>``), so no slashes or dots
#: first. A host's real address goes in ``address:``.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_FULL_VERSION = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?\+?")


def _is_version(value: Any) -> bool:
    return isinstance(value, str) and _FULL_VERSION.fullmatch(value) is not None


def _explain(key: str, value: Any) -> str | None:
    """A more useful message than "expected <type>" for a few refused values."""
    if key == "shared_dirs" and _is_str_list(value):
        reserved = [item for item in value if item in RESERVED_SHARED_DIRS]
        if reserved:
            return (
                f"{reserved[0]!r} is a directory every release has itself (<release>/venv, <release>/etc); "
                "a shared directory of that name would replace it: choose another name"
            )
    problem = _PROBLEMS[key](value) if key in _PROBLEMS else None
    if problem is not None:
        return problem
    if key == "env" and _is_mapping(value):
        for name, item in value.items():
            if not ENV_NAME.fullmatch(name) or name.startswith("DEPLOYTOOL_"):
                return (
                    f"{name!r} is not an environment variable name for the app (letters, digits and _, not first a "
                    "digit; DEPLOYTOOL_* are deploytool's own)"
                )
            if not _is_env_value(item):
                return f"{name}: expected text (a template) or a number, got {item!r:.80}"
    if key == "python_version" and (isinstance(value, (str, float, int)) and not isinstance(value, bool)):
        return (
            f'expected the hosts\' full Python version X.Y.Z, like "3.11.2" (quoted), got {value!r}: the deploy '
            "compares it with the host's full version (platform.python_version())"
        )
    return None


_PROBLEMS: dict[str, Callable[[Any], str | None]] = {
    "restart": restart_problem,
    "health_check": health_problem,
    "batch_size": batch_size_problem,
    "secrets": lambda value: None if value is None else secrets_problem(value),
}


def _no_problem(key: str) -> _Check:
    return lambda value: _PROBLEMS[key](value) is None


def _one_of(*choices: str) -> _Check:
    return lambda value: value in choices


#: Settings allowed at the top level, in a stage and in a host entry.
SETTINGS: dict[str, tuple[str, _Check, Any]] = {
    "transport": ("'ssh' or 'local'", _one_of("ssh", "local"), "ssh"),
    "address": ("a host name or IP address", _is_str, None),
    "user": ("a user name", _is_str, None),
    "port": ("a port number", _is_port, None),
    "root": ("an absolute path", _is_str, None),
    "known_hosts": ("a path", _is_str, None),  # None: each hop's UserKnownHostsFile from ssh_config
    "ssh_config": ("a path", _is_str, None),
    "gateway": ("a jump host like 'deploy@bastion:2222' (ProxyJump's form)", _is_gateway, None),
    "identity_file": ("a path", _is_str, None),
    "connect_timeout": ("a number of seconds", _is_positive_int, 10),
    "timeout": ("a number of seconds", _is_positive_int, 600),
    "allow_root": ("true or false", _is_bool, False),
    "requirements": ("a path", _is_str, "requirements/prod.txt"),
    "mirror": ("a URL or path", _is_str, None),
    "mirror_kind": ("'find-links', 'index' or 'vendored'", _one_of("find-links", "index", "vendored"), "find-links"),
    "upload_url": ("an http(s) URL", _is_str, None),
    "installer": ("'pip' or 'uv'", _one_of("pip", "uv"), None),  # None: uv when the mirror has it, else pip
    "python": ("a command or path", _is_str, None),  # None: python3, or for a local stage the laptop's own
    "python_version": ('the hosts\' full Python version, like "3.11.2"', _is_version, None),
    "platform_machine": ("a machine name like 'x86_64'", _is_str, "x86_64"),
    "mirror_host": ("a host name", _is_str, None),
    "mirror_path": ("an absolute path", _is_str, None),
    "keep_releases": ("a whole number >= 1", _is_positive_int, 5),
    "shared_dirs": ("a list of directory names", _is_shared_dir_list, ["logs"]),
    "vars": ("a mapping", _is_mapping, {}),
    "etc_root": ("an absolute path", _is_str, None),  # None: /etc, or <root>/etc for transport local
    "sudo": ("true or false", _is_bool, False),
    "validate": ("a list of commands", _is_str_list, []),
    "after_switch": ("a list of commands", _is_str_list, []),
    "restart": ("a list of commands, or a gunicorn_pidfile mapping", _no_problem("restart"), []),
    "health_check": ("a mapping with url or command", _no_problem("health_check"), None),
    "batch_size": ('a number of hosts or a percentage like "25%"', _no_problem("batch_size"), None),
    "parallel": ("a whole number >= 1", _is_positive_int, 16),
    "confirm": ("true or false", _is_bool, False),
    "notify": ("a list of commands", _is_str_list, []),
    "notify_timeout": ("a number of seconds", _is_positive_int, 30),
    "env": ("a mapping of environment variable names to text", _is_env, {}),
    "build": ("a list of commands", _is_str_list, []),
    "secrets": ("a secrets source", _is_secrets, None),
    "migrate": ("a list of commands", _is_str_list, []),
    "migrations": ("a list of file globs", _is_str_list, ["**/migrations/*.py"]),
}
#: Settings of a whole stage (how its hosts are worked through, whether a run asks first, who hears of it):
#: allowed at the top level and in a stage only.
STAGE_ONLY = (
    "batch_size", "parallel", "confirm", "notify", "notify_timeout", "secrets", "migrate", "migrations"
)  # fmt: skip
#: What a role of ``roles`` may set (on top of the stage's settings, for the hosts that name the role).
ROLE_SETTINGS = ("restart", "health_check", "after_switch", "validate", "build", "env", "vars")
#: Lists a host's roles add up (in the order the host names its roles); the others: the last role's wins.
ROLE_LISTS = ("after_switch", "validate", "build")
#: Built in: the host that runs the stage's ``migrate`` commands; needs no entry under ``roles``.
MIGRATE_ROLE = "migrate"
#: A host that names no roles has this one (it need not be defined either).
DEFAULT_ROLE = "web"
TOP_LEVEL: dict[str, tuple[str, _Check]] = {
    "app": ("a name", _is_str),
    "default_stage": ("a stage name", _is_str),
    "stages": ("a mapping of stage names to stages", _is_mapping),
    "etc_templates": ("a path", _is_str),
    "wheelhouse": ("a path", _is_str),
    "upstream": ("an index URL", _is_str),
    "roles": ("a mapping of role names to settings", lambda _v: True),
}
REQUIRED_SETTINGS = ("root", "mirror")


@dataclass(frozen=True)
class HostConfig:
    """Everything deploytool needs to know about one host of one stage, fully resolved."""

    name: str
    stage: str
    app: str
    transport: str
    address: str
    user: str | None
    port: int | None  # None: ssh_config's, else 22
    root: str
    known_hosts: str | None  # None: each hop's UserKnownHostsFile (OpenSSH's default ~/.ssh/known_hosts)
    ssh_config: str | None  # None: ~/.ssh/config if it exists
    gateway: str | None
    identity_file: str | None
    connect_timeout: int
    allow_root: bool
    requirements: Path
    mirror: str
    mirror_kind: str
    upload_url: str | None
    installer: str | None  # None: uv when the mirror has deploytool's pinned uv wheel, else pip
    python: str
    python_version: str | None
    platform_machine: str
    mirror_host: str | None
    mirror_path: str | None
    keep_releases: int
    shared_dirs: tuple[str, ...]
    vars: Mapping[str, Any]
    etc_root: str
    sudo: bool
    validate: tuple[str, ...]
    after_switch: tuple[str, ...]
    restart: Restart = field(default_factory=Restart)
    health_check: HealthCheck | None = None
    batch_size: int | str | None = None  # hosts per batch: a number or "N%"; None: all at once
    parallel: int = 16  # hosts worked on at once
    timeout: int = 600  # seconds a build may take; the other phases get at most SHORT_PHASE_TIMEOUT of it
    confirm: bool = False  # deploy and rollback ask on the terminal first (--yes answers)
    notify: tuple[str, ...] = ()  # commands run on the laptop (sh -c) when a deploy or rollback ends
    notify_timeout: int = 30  # seconds each notify command may take
    env: Mapping[str, str] = field(default_factory=dict)  # the app's environment: name -> template
    build: tuple[str, ...] = ()  # commands run in the new release on every host, before any switch
    secrets: Mapping[str, str] | None = None  # the stage's secrets source: {command|file|env_prefix: text}
    migrate: tuple[str, ...] = ()  # commands run once per deploy on the first host with role migrate
    migrations: tuple[str, ...] = ("**/migrations/*.py",)  # globs of the files that change the database
    roles: tuple[str, ...] = (DEFAULT_ROLE,)
    health_checks: tuple[HealthCheck, ...] = ()  # every check the host's roles name (health_check: the first)

    @property
    def is_local(self) -> bool:
        return self.transport == "local"


@dataclass(frozen=True)
class Inventory:
    """A validated ``hosts.yml``."""

    path: Path
    app: str
    default_stage: str | None
    etc_templates: Path
    wheelhouse: Path
    upstream: str | None
    stages: Mapping[str, tuple[HostConfig, ...]] = field(default_factory=dict)

    @property
    def project_root(self) -> Path:
        return self.path.parent

    def hosts(self, stage: str | None, only: str | None = None, roles: str | None = None) -> tuple[HostConfig, ...]:
        """Return the hosts of ``stage`` (the default stage when None), limited to the comma list ``only`` and
        to the hosts having one of the comma list ``roles``."""
        name = stage or self.default_stage
        if not name:
            raise InventoryError(f"{self.path}: no --stage given and no default_stage set")
        if name not in self.stages:
            raise InventoryError(
                f"{self.path}: no stage named {name!r}{_suggest(name, self.stages)}; stages: {', '.join(self.stages)}"
            )
        hosts = self.stages[name]
        if roles is not None:
            hosts = self._with_roles(name, hosts, roles)
        if only is None:
            return hosts
        wanted = [item.strip() for item in only.split(",") if item.strip()]
        if not wanted:  # an empty --hosts is an unset variable in a script, never "every host"
            raise InventoryError(
                f"{self.path}: --hosts {only!r} names no host; leave --hosts out to act on every host of the stage"
            )
        known = {host.name: host for host in hosts}
        unknown = [item for item in wanted if item not in known]
        if unknown:
            everywhere = {host.name for host in self.stages[name]}
            if roles is not None and unknown[0] in everywhere:
                raise InventoryError(
                    f"{self.path}: host {unknown[0]!r} of stage {name!r} has none of the roles {roles!r}; "
                    f"the hosts with them: {', '.join(known) or 'none'}"
                )
            raise InventoryError(
                f"{self.path}: stage {name!r} has no host {unknown[0]!r}{_suggest(unknown[0], known)}; "
                f"its hosts: {', '.join(known)}"
            )
        return tuple(known[item] for item in dict.fromkeys(wanted))

    def _with_roles(self, stage: str, hosts: tuple[HostConfig, ...], roles: str) -> tuple[HostConfig, ...]:
        wanted = [item.strip() for item in roles.split(",") if item.strip()]
        if not wanted:
            raise InventoryError(
                f"{self.path}: --roles {roles!r} names no role; leave --roles out to act on every host of the stage"
            )
        known = {role for host in hosts for role in host.roles}
        unknown = [item for item in wanted if item not in known]
        if unknown:
            raise InventoryError(
                f"{self.path}: no host of stage {stage!r} has the role {unknown[0]!r}"
                f"{_suggest(unknown[0], known)}; its hosts' roles: {', '.join(sorted(known))}"
            )
        return tuple(host for host in hosts if any(role in host.roles for role in wanted))


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (PyYAML would silently keep the last)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping, at any depth (merge keys may still be
    overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise _DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {first}); each key may appear once in a mapping",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Validator:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> InventoryError:
        return InventoryError(f"{self.path}: {where}: {message}")

    def settings(
        self, entry: Any, where: str, extra: Mapping[str, tuple[str, _Check]], host: bool = False
    ) -> dict[str, Any]:
        """Check one mapping of settings (plus the ``extra`` keys allowed at this level; a ``host`` entry may not
        hold the stage-only settings)."""
        if entry is None:
            return {}
        if not isinstance(entry, dict):
            raise self.fail(where, f"expected a mapping, got {type(entry).__name__}")
        allowed = {**{key: spec[:2] for key, spec in SETTINGS.items()}, **extra}
        for key, value in entry.items():
            place = f"{where}.{key}" if where else str(key)
            if key not in allowed:
                raise self.fail(place, f"unknown key {key!r}{_suggest(str(key), allowed)}")
            if host and key in STAGE_ONLY:
                raise self.fail(place, f"{key} is a setting of the whole stage: set it in the stage or at the top")
            description, check = allowed[key]
            if not check(value):
                raise self.fail(place, _explain(str(key), value) or f"expected {description}, got {value!r}")
        return dict(entry)


def _merge(*levels: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {key: spec[2] for key, spec in SETTINGS.items()}
    merged_vars: dict[str, Any] = {}
    merged_env: dict[str, Any] = {}
    for level in levels:
        merged.update({key: value for key, value in level.items() if key in SETTINGS})
        merged_vars.update(level.get("vars") or {})
        merged_env.update(level.get("env") or {})
    merged["vars"] = merged_vars
    merged["env"] = {name: str(value) for name, value in merged_env.items()}
    return merged


def _roles_map(validator: _Validator, value: Any, where: str) -> dict[str, dict[str, Any]]:
    """A ``roles`` mapping (top level or stage): role name -> the settings it sets, each checked."""
    if value is None:
        return {}
    if not _is_mapping(value):
        raise validator.fail(where, f"expected a mapping of role names to settings, got {value!r:.80}")
    roles: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        place = f"{where}.{name}"
        _check_name(validator, place, "role", name)
        if entry is not None and isinstance(entry, dict):
            odd = next((key for key in entry if key not in ROLE_SETTINGS), None)
            if odd is not None:
                raise validator.fail(
                    f"{place}.{odd}",
                    f"a role may set {', '.join(ROLE_SETTINGS)}; {odd!r} is not one of them"
                    + _suggest(str(odd), ROLE_SETTINGS),
                )
        roles[name] = validator.settings(entry, place, {})
    return roles


def _host_roles(validator: _Validator, value: Any, where: str, defined: Mapping[str, Any]) -> tuple[str, ...]:
    """A host's ``roles`` list: names defined under ``roles`` (or the built-in ``migrate``), each once."""
    if value is None:
        return (DEFAULT_ROLE,)
    if not _is_str_list(value) or not value:
        raise validator.fail(where, f"expected a list of role names, like [web, migrate], got {value!r:.80}")
    for name in value:
        if name not in defined and name not in (MIGRATE_ROLE, DEFAULT_ROLE):
            known = ", ".join(defined) or "none"
            raise validator.fail(
                where,
                f"role {name!r} is not defined{_suggest(name, [*defined, MIGRATE_ROLE])}; define it under roles "
                f"(top level or the stage; defined: {known}), or use the built-in role {MIGRATE_ROLE!r}",
            )
    return tuple(dict.fromkeys(value))


def _role_overlay(
    validator: _Validator, where: str, defined: Mapping[str, dict[str, Any]], names: Sequence[str]
) -> tuple[dict[str, Any], list[Any]]:
    """The settings a host's roles set, in the host's order: lists of commands add up, ``restart`` commands
    add up (one gunicorn re-exec at most), ``env`` and ``vars`` merge, and every ``health_check`` is kept."""
    overlay: dict[str, Any] = {}
    checks: list[Any] = []
    gunicorn: str | None = None
    for name in names:
        for key, value in (defined.get(name) or {}).items():
            if key in ("env", "vars"):
                overlay[key] = {**overlay.get(key, {}), **(value or {})}
            elif key == "health_check":
                if value is not None:
                    checks.append(value)
            elif key == "restart":
                restart = parse_restart(value)
                if restart.gunicorn_pidfile:
                    if gunicorn is not None:
                        raise validator.fail(
                            f"{where}.roles",
                            f"roles {gunicorn!r} and {name!r} both restart a gunicorn master (gunicorn_pidfile); "
                            "a host re-executes one: give one of them restart commands",
                        )
                    gunicorn = name
                before = overlay.get("restart", Restart())
                overlay["restart"] = Restart(
                    before.commands + restart.commands,
                    before.gunicorn_pidfile or restart.gunicorn_pidfile,
                    before.start + restart.start,
                )
            elif key in ROLE_LISTS:
                overlay[key] = [*overlay.get(key, []), *value]
            else:
                overlay[key] = value
    return overlay, checks


def _resolve_path(value: str, project_root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root / path


def _check_mirror(validator: _Validator, where: str, merged: dict[str, Any]) -> str:
    """``mirror`` must fit ``mirror_kind``: an http(s) index URL, or a relative directory inside the repo."""
    mirror, kind = merged["mirror"], merged["mirror_kind"]
    if merged["upload_url"] is not None and not merged["upload_url"].startswith(("http://", "https://")):
        raise validator.fail(f"{where}.upload_url", f"expected an http(s) URL, got {merged['upload_url']!r}")
    if kind == "index" and not mirror.startswith(("http://", "https://")):
        raise validator.fail(f"{where}.mirror", f"mirror_kind: index needs an http(s) index URL, got {mirror!r}")
    if kind == "vendored":
        parts = PurePosixPath(mirror).parts
        if "://" in mirror or mirror.startswith(("/", "~")) or ".." in parts or not parts or parts == (".",):
            raise validator.fail(
                f"{where}.mirror",
                f"mirror_kind: vendored needs a directory inside the app's repository, like vendor/wheels, "
                f"got {mirror!r}",
            )
        return PurePosixPath(mirror).as_posix()
    return str(mirror)


def _host_config(
    validator: _Validator,
    inventory_root: Path,
    app: str,
    stage: str,
    name: str,
    merged: dict[str, Any],
    roles: tuple[str, ...] = (DEFAULT_ROLE,),
    checks: Sequence[Any] = (),
) -> HostConfig:
    where = f"stages.{stage}.hosts.{name}"
    for key in REQUIRED_SETTINGS:
        if merged[key] is None:
            raise validator.fail(where, f"missing required key {key!r} (set it for the host, stage or file)")
    local = merged["transport"] == "local"
    root = merged["root"]
    mirror = _check_mirror(validator, where, merged)
    if local and merged["mirror_kind"] != "vendored":
        root = str(_resolve_path(root, inventory_root).resolve())
        if "://" not in mirror:
            mirror = str(_resolve_path(mirror, inventory_root).resolve())
    elif not root.startswith("/"):
        raise validator.fail(f"{where}.root", f"expected an absolute path on the host, got {root!r}")
    if merged["mirror_path"] is not None and not merged["mirror_path"].startswith("/"):
        raise validator.fail(
            f"{where}.mirror_path", f"expected an absolute path on the mirror host, got {merged['mirror_path']!r}"
        )
    requirements = _resolve_path(merged["requirements"], inventory_root)
    if requirements.is_dir():
        raise validator.fail(
            f"{where}.requirements", f"expected a file (the role file hosts install), got the directory {requirements}"
        )
    etc_root = merged["etc_root"]
    if etc_root is None:
        # etc-mock/ mirrors /etc; a local stage is a playground, so by default its config stays under its root
        etc_root = str(Path(root) / "etc") if local else "/etc"
    elif not etc_root.startswith("/") and not local:
        raise validator.fail(f"{where}.etc_root", f"expected an absolute path on the host, got {etc_root!r}")
    if local:
        etc_root = str(_resolve_path(etc_root, inventory_root).resolve())
    identity = merged["identity_file"]
    health_checks = tuple(
        check for check in (parse_health(value) for value in (checks or [merged["health_check"]])) if check
    )
    return HostConfig(
        name=name,
        stage=stage,
        app=app,
        transport=merged["transport"],
        address=merged["address"] or name,
        user=merged["user"],
        port=merged["port"],
        root=root,
        known_hosts=str(_resolve_path(merged["known_hosts"], inventory_root)) if merged["known_hosts"] else None,
        ssh_config=str(_resolve_path(merged["ssh_config"], inventory_root)) if merged["ssh_config"] else None,
        gateway=merged["gateway"],
        identity_file=str(_resolve_path(identity, inventory_root)) if identity else None,
        connect_timeout=merged["connect_timeout"],
        allow_root=merged["allow_root"],
        requirements=requirements,
        mirror=mirror,
        mirror_kind=merged["mirror_kind"],
        upload_url=merged["upload_url"],
        installer=merged["installer"],
        # A local stage's "host" is the laptop: its Python is the one running fab (the one the requirements were
        # checked for), not whichever python3 comes first on PATH (pyenv, Homebrew, asdf).
        python=merged["python"] or (sys.executable if local else "python3"),
        python_version=merged["python_version"],
        platform_machine=merged["platform_machine"],
        mirror_host=merged["mirror_host"],
        mirror_path=merged["mirror_path"],
        keep_releases=merged["keep_releases"],
        shared_dirs=tuple(merged["shared_dirs"]),
        vars=merged["vars"],
        etc_root=etc_root,
        sudo=merged["sudo"],
        validate=tuple(merged["validate"]),
        after_switch=tuple(merged["after_switch"]),
        restart=merged["restart"] if isinstance(merged["restart"], Restart) else parse_restart(merged["restart"]),
        health_check=health_checks[0] if health_checks else None,
        health_checks=health_checks,
        batch_size=merged["batch_size"],
        parallel=merged["parallel"],
        timeout=merged["timeout"],
        confirm=merged["confirm"],
        notify=tuple(merged["notify"]),
        notify_timeout=merged["notify_timeout"],
        env=merged["env"],
        build=tuple(merged["build"]),
        secrets=merged["secrets"],
        migrate=tuple(merged["migrate"]),
        migrations=tuple(merged["migrations"]),
        roles=roles,
    )


def _check_name(validator: _Validator, where: str, kind: str, name: str) -> None:
    """Stage and host names become directory names (``build/etc/<stage>/<host>``): refuse anything else."""
    if not NAME.fullmatch(name):
        raise validator.fail(
            where,
            f"{kind} name {name!r} is not allowed: use letters, digits, '.', '_' and '-' (not first); "
            "a name is only a label, put the host's real address in 'address:'",
        )


def _stage_hosts(validator: _Validator, stage: str, entry: Any) -> dict[str, Any]:
    where = f"stages.{stage}.hosts"
    if isinstance(entry, list):
        if not all(_is_str(item) for item in entry):
            raise validator.fail(where, "expected host names, or a mapping of host names to settings")
        entry = dict.fromkeys(entry)
    if not isinstance(entry, dict) or not entry:
        raise validator.fail(where, "expected at least one host (a list of names or a mapping)")
    odd = [name for name in entry if not _is_str(name)]
    if odd:
        raise validator.fail(where, f"host name {odd[0]!r} is not a string; quote it in the YAML")
    for name in entry:
        _check_name(validator, f"{where}.{name}", "host", name)
    host_extra = {"roles": ("a list of role names", lambda _value: True)}
    return {
        str(name): validator.settings(settings, f"{where}.{name}", host_extra, host=True)
        for name, settings in entry.items()
    }


def parse_inventory(data: Any, path: Path) -> Inventory:
    """Validate the parsed YAML ``data`` of the inventory file at ``path``."""
    validator = _Validator(path)
    if not isinstance(data, dict):
        raise validator.fail("top level", "expected a mapping with at least 'app' and 'stages'")
    top = validator.settings(data, "", TOP_LEVEL)
    for key in ("app", "stages"):
        if key not in top:
            raise validator.fail("top level", f"missing required key {key!r}")
    if not top["stages"]:
        raise validator.fail("stages", "expected at least one stage")
    stages: dict[str, tuple[HostConfig, ...]] = {}
    top_roles = _roles_map(validator, top.get("roles"), "roles")
    stage_extra: dict[str, tuple[str, _Check]] = {
        "hosts": ("hosts", lambda _v: True),
        "roles": ("a mapping of role names to settings", lambda _v: True),
    }
    for stage, stage_entry in top["stages"].items():
        _check_name(validator, f"stages.{stage}", "stage", stage)
        settings = validator.settings(stage_entry, f"stages.{stage}", stage_extra)
        if "hosts" not in settings:
            raise validator.fail(f"stages.{stage}", "missing required key 'hosts'")
        hosts = _stage_hosts(validator, stage, settings.pop("hosts"))
        defined = {**top_roles, **_roles_map(validator, settings.pop("roles", None), f"stages.{stage}.roles")}
        configs = []
        for name, host in hosts.items():
            where = f"stages.{stage}.hosts.{name}"
            roles = _host_roles(validator, host.pop("roles", None), f"{where}.roles", defined)
            overlay, checks = _role_overlay(validator, where, defined, roles)
            if "health_check" in host:  # the host's own check replaces its roles'
                checks = []
            merged = _merge(top, settings, overlay, host)
            configs.append(_host_config(validator, path.parent, top["app"], stage, name, merged, roles, checks))
        stages[stage] = tuple(configs)
    default = top.get("default_stage")
    if default is not None and default not in stages:
        raise validator.fail("default_stage", f"no stage named {default!r}{_suggest(default, stages)}")
    return Inventory(
        path=path,
        app=top["app"],
        default_stage=default,
        etc_templates=_etc_templates(validator, top.get("etc_templates"), path.parent),
        wheelhouse=_resolve_path(top.get("wheelhouse", "wheels"), path.parent),
        upstream=top.get("upstream"),
        stages=stages,
    )


def _etc_templates(validator: _Validator, value: str | None, project_root: Path) -> Path:
    """The templates directory: when set it must exist; the default ``etc-mock/`` may be absent (no config)."""
    path = _resolve_path(value or "etc-mock", project_root)
    if value is not None and not path.exists():
        raise validator.fail("etc_templates", f"{path} does not exist; create it or remove etc_templates")
    if path.exists() and not path.is_dir():
        where = "etc_templates" if value is not None else "etc-mock"
        raise validator.fail(where, f"{path} is not a directory; expected the directory of config templates")
    return path


def load_inventory(path: Path) -> Inventory:
    """Read and validate the inventory file at ``path``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InventoryError(f"{path}: no such file; create it (see the README's 'hosts.yml')") from None
    except OSError as error:
        raise InventoryError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InventoryError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise InventoryError(f"{path}:{line}: invalid YAML: {problem}") from None
    return parse_inventory(data, path.resolve())
