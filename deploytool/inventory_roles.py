"""Roles, and how one host's settings are put together: the ``roles`` mappings (top level and stage), a host's
``roles`` list, the settings its roles add (`role_overlay`), and `merge`, which lays top level, stage, the roles
and the host over the defaults (later wins; ``vars`` and ``env`` merged key by key instead of replaced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .flow.golive import Restart, parse_restart
from .inventory_schema import SETTINGS, Validator, check_name, is_mapping, is_str_list, suggest

#: What a role of ``roles`` may set (on top of the stage's settings, for the hosts that name the role).
ROLE_SETTINGS = ("restart", "health_check", "after_switch", "validate", "build", "env", "vars")
#: Lists a host's roles add up (in the order the host names its roles); the others: the last role's wins.
ROLE_LISTS = ("after_switch", "validate", "build")
#: Built in: the host that runs the stage's ``migrate`` commands; needs no entry under ``roles``.
MIGRATE_ROLE = "migrate"
#: A host that names no roles has this one (it need not be defined either).
DEFAULT_ROLE = "web"


def merge(*levels: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of one host: the defaults, then each of ``levels`` in turn (top level, stage, roles, host);
    ``vars`` and ``env`` merge, and ``env``'s values become text."""
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


def roles_map(validator: Validator, value: Any, where: str) -> dict[str, dict[str, Any]]:
    """A ``roles`` mapping (top level or stage): role name -> the settings it sets, each checked."""
    if value is None:
        return {}
    if not is_mapping(value):
        raise validator.fail(where, f"expected a mapping of role names to settings, got {value!r:.80}")
    roles: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        place = f"{where}.{name}"
        check_name(validator, place, "role", name)
        if entry is not None and isinstance(entry, dict):
            odd = next((key for key in entry if key not in ROLE_SETTINGS), None)
            if odd is not None:
                raise validator.fail(
                    f"{place}.{odd}",
                    f"a role may set {', '.join(ROLE_SETTINGS)}; {odd!r} is not one of them"
                    + suggest(str(odd), ROLE_SETTINGS),
                )
        roles[name] = validator.settings(entry, place, {})
    return roles


def host_roles(validator: Validator, value: Any, where: str, defined: Mapping[str, Any]) -> tuple[str, ...]:
    """A host's ``roles`` list: names defined under ``roles`` (or the built-in ``migrate``), each once."""
    if value is None:
        return (DEFAULT_ROLE,)
    if not is_str_list(value) or not value:
        raise validator.fail(where, f"expected a list of role names, like [web, migrate], got {value!r:.80}")
    for name in value:
        if name not in defined and name not in (MIGRATE_ROLE, DEFAULT_ROLE):
            known = ", ".join(defined) or "none"
            raise validator.fail(
                where,
                f"role {name!r} is not defined{suggest(name, [*defined, MIGRATE_ROLE])}; define it under roles "
                f"(top level or the stage; defined: {known}), or use the built-in role {MIGRATE_ROLE!r}",
            )
    return tuple(dict.fromkeys(value))


def role_overlay(
    validator: Validator, where: str, defined: Mapping[str, dict[str, Any]], names: Sequence[str]
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
