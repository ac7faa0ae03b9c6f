"""Read and validate ``hosts.yml``: the stages, their hosts, and each host's resolved settings.

Settings are looked up host -> stage -> top level -> default; ``vars`` mappings are merged in that order
instead of replaced. Every unknown key, wrong type or missing required key is an `InventoryError` that names
the file and the key's place (``stages.production.hosts.web1.keep_release``).

This module reads the file (`load_inventory`), walks its stages and hosts (`parse_inventory`) and answers which
hosts a task acts on (`Inventory.hosts`). The schema and the checks of values live in `inventory_schema`, roles
and the merging of the levels in `inventory_roles`, a host's resolved settings (`HostConfig`) in
`inventory_host`; other modules import all of these names from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError
from .inventory_host import HostConfig, host_config, resolve_path
from .inventory_roles import (
    DEFAULT_ROLE,
    MIGRATE_ROLE,
    ROLE_LISTS,
    ROLE_SETTINGS,
    host_roles,
    merge,
    role_overlay,
    roles_map,
)
from .inventory_schema import (
    ENV_NAME,
    NAME,
    REQUIRED_SETTINGS,
    RESERVED_SHARED_DIRS,
    SECRET_SOURCES,
    SETTINGS,
    STAGE_ONLY,
    TOP_LEVEL,
    Check,
    Validator,
    check_name,
    is_str,
    secrets_problem,
    suggest,
)

__all__ = [
    "DEFAULT_ROLE",
    "ENV_NAME",
    "MIGRATE_ROLE",
    "NAME",
    "REQUIRED_SETTINGS",
    "RESERVED_SHARED_DIRS",
    "ROLE_LISTS",
    "ROLE_SETTINGS",
    "SECRET_SOURCES",
    "SETTINGS",
    "STAGE_ONLY",
    "TOP_LEVEL",
    "HostConfig",
    "Inventory",
    "load_inventory",
    "parse_inventory",
    "secrets_problem",
]


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
                f"{self.path}: no stage named {name!r}{suggest(name, self.stages)}; stages: {', '.join(self.stages)}"
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
                f"{self.path}: stage {name!r} has no host {unknown[0]!r}{suggest(unknown[0], known)}; "
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
                f"{suggest(unknown[0], known)}; its hosts' roles: {', '.join(sorted(known))}"
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


def _stage_hosts(validator: Validator, stage: str, entry: Any) -> dict[str, Any]:
    where = f"stages.{stage}.hosts"
    if isinstance(entry, list):
        if not all(is_str(item) for item in entry):
            raise validator.fail(where, "expected host names, or a mapping of host names to settings")
        entry = dict.fromkeys(entry)
    if not isinstance(entry, dict) or not entry:
        raise validator.fail(where, "expected at least one host (a list of names or a mapping)")
    odd = [name for name in entry if not is_str(name)]
    if odd:
        raise validator.fail(where, f"host name {odd[0]!r} is not a string; quote it in the YAML")
    for name in entry:
        check_name(validator, f"{where}.{name}", "host", name)
    host_extra = {"roles": ("a list of role names", lambda _value: True)}
    return {
        str(name): validator.settings(settings, f"{where}.{name}", host_extra, host=True)
        for name, settings in entry.items()
    }


def parse_inventory(data: Any, path: Path) -> Inventory:
    """Validate the parsed YAML ``data`` of the inventory file at ``path``."""
    validator = Validator(path)
    if not isinstance(data, dict):
        raise validator.fail("top level", "expected a mapping with at least 'app' and 'stages'")
    top = validator.settings(data, "", TOP_LEVEL)
    for key in ("app", "stages"):
        if key not in top:
            raise validator.fail("top level", f"missing required key {key!r}")
    if not top["stages"]:
        raise validator.fail("stages", "expected at least one stage")
    stages: dict[str, tuple[HostConfig, ...]] = {}
    top_roles = roles_map(validator, top.get("roles"), "roles")
    stage_extra: dict[str, tuple[str, Check]] = {
        "hosts": ("hosts", lambda _v: True),
        "roles": ("a mapping of role names to settings", lambda _v: True),
    }
    for stage, stage_entry in top["stages"].items():
        check_name(validator, f"stages.{stage}", "stage", stage)
        settings = validator.settings(stage_entry, f"stages.{stage}", stage_extra)
        if "hosts" not in settings:
            raise validator.fail(f"stages.{stage}", "missing required key 'hosts'")
        hosts = _stage_hosts(validator, stage, settings.pop("hosts"))
        defined = {**top_roles, **roles_map(validator, settings.pop("roles", None), f"stages.{stage}.roles")}
        configs = []
        for name, host in hosts.items():
            where = f"stages.{stage}.hosts.{name}"
            roles = host_roles(validator, host.pop("roles", None), f"{where}.roles", defined)
            overlay, checks = role_overlay(validator, where, defined, roles)
            if "health_check" in host:  # the host's own check replaces its roles'
                checks = []
            merged = merge(top, settings, overlay, host)
            configs.append(host_config(validator, path.parent, top["app"], stage, name, merged, roles, checks))
        stages[stage] = tuple(configs)
    default = top.get("default_stage")
    if default is not None and default not in stages:
        raise validator.fail("default_stage", f"no stage named {default!r}{suggest(default, stages)}")
    return Inventory(
        path=path,
        app=top["app"],
        default_stage=default,
        etc_templates=_etc_templates(validator, top.get("etc_templates"), path.parent),
        wheelhouse=resolve_path(top.get("wheelhouse", "wheels"), path.parent),
        upstream=top.get("upstream"),
        stages=stages,
    )


def _etc_templates(validator: Validator, value: str | None, project_root: Path) -> Path:
    """The templates directory: when set it must exist; the default ``etc-mock/`` may be absent (no config)."""
    path = resolve_path(value or "etc-mock", project_root)
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
