"""hosts.yml's schema: every setting with its check and default, where each may be set (top level, stage, host),
the checks of the values (names, ``env``, the ``secrets`` source, ``shared_dirs``, ``python_version``) with their
more useful messages, and `Validator`, which checks one mapping of settings and names the file and the key's place
(``stages.production.hosts.web1.keep_release``) in each `InventoryError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import InventoryError
from .flow.golive import batch_size_problem, health_problem, restart_problem

# name -> (type description, check, default). ``None`` default with no check of absence means optional.
Check = Callable[[Any], bool]


def is_str(value: Any) -> bool:
    """A non-empty string without a NUL (no path, argument or environment variable can hold one)."""
    return isinstance(value, str) and value != "" and "\x00" not in value


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_gateway(value: Any) -> bool:
    """ProxyJump's form: ``[user@]host[:port]``, comma-separated hops; nothing ssh could take for an option."""
    return (
        is_str(value)
        and not any(char.isspace() for char in value)
        and all(hop and not hop.startswith("-") for hop in value.split(","))
    )


def is_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_str(item) for item in value)


#: An environment variable's name as the app's ``env`` and a secret source may give it.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_env_value(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _is_env(value: Any) -> bool:
    return is_mapping(value) and all(
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
    if not is_str(source):
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
    return is_str_list(value) and all(
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
    if key == "shared_dirs" and is_str_list(value):
        reserved = [item for item in value if item in RESERVED_SHARED_DIRS]
        if reserved:
            return (
                f"{reserved[0]!r} is a directory every release has itself (<release>/venv, <release>/etc); "
                "a shared directory of that name would replace it: choose another name"
            )
    problem = _PROBLEMS[key](value) if key in _PROBLEMS else None
    if problem is not None:
        return problem
    if key == "env" and is_mapping(value):
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


def _no_problem(key: str) -> Check:
    return lambda value: _PROBLEMS[key](value) is None


def _one_of(*choices: str) -> Check:
    return lambda value: value in choices


#: Settings allowed at the top level, in a stage and in a host entry.
SETTINGS: dict[str, tuple[str, Check, Any]] = {
    "transport": ("'ssh' or 'local'", _one_of("ssh", "local"), "ssh"),
    "address": ("a host name or IP address", is_str, None),
    "user": ("a user name", is_str, None),
    "port": ("a port number", _is_port, None),
    "root": ("an absolute path", is_str, None),
    "known_hosts": ("a path", is_str, None),  # None: each hop's UserKnownHostsFile from ssh_config
    "ssh_config": ("a path", is_str, None),
    "gateway": ("a jump host like 'deploy@bastion:2222' (ProxyJump's form)", _is_gateway, None),
    "identity_file": ("a path", is_str, None),
    "connect_timeout": ("a number of seconds", _is_positive_int, 10),
    "timeout": ("a number of seconds", _is_positive_int, 600),
    "allow_root": ("true or false", _is_bool, False),
    "requirements": ("a path", is_str, "requirements/prod.txt"),
    "mirror": ("a URL or path", is_str, None),
    "mirror_kind": ("'find-links', 'index' or 'vendored'", _one_of("find-links", "index", "vendored"), "find-links"),
    "upload_url": ("an http(s) URL", is_str, None),
    "installer": ("'pip' or 'uv'", _one_of("pip", "uv"), None),  # None: uv when the mirror has it, else pip
    "python": ("a command or path", is_str, None),  # None: python3, or for a local stage the laptop's own
    "python_version": ('the hosts\' full Python version, like "3.11.2"', _is_version, None),
    "platform_machine": ("a machine name like 'x86_64'", is_str, "x86_64"),
    "mirror_host": ("a host name", is_str, None),
    "mirror_path": ("an absolute path", is_str, None),
    "keep_releases": ("a whole number >= 1", _is_positive_int, 5),
    "shared_dirs": ("a list of directory names", _is_shared_dir_list, ["logs"]),
    "vars": ("a mapping", is_mapping, {}),
    "etc_root": ("an absolute path", is_str, None),  # None: /etc, or <root>/etc for transport local
    "sudo": ("true or false", _is_bool, False),
    "validate": ("a list of commands", is_str_list, []),
    "after_switch": ("a list of commands", is_str_list, []),
    "restart": ("a list of commands, or a gunicorn_pidfile mapping", _no_problem("restart"), []),
    "health_check": ("a mapping with url or command", _no_problem("health_check"), None),
    "batch_size": ('a number of hosts or a percentage like "25%"', _no_problem("batch_size"), None),
    "parallel": ("a whole number >= 1", _is_positive_int, 16),
    "confirm": ("true or false", _is_bool, False),
    "notify": ("a list of commands", is_str_list, []),
    "notify_timeout": ("a number of seconds", _is_positive_int, 30),
    "env": ("a mapping of environment variable names to text", _is_env, {}),
    "build": ("a list of commands", is_str_list, []),
    "secrets": ("a secrets source", _is_secrets, None),
    "migrate": ("a list of commands", is_str_list, []),
    "migrations": ("a list of file globs", is_str_list, ["**/migrations/*.py"]),
}
#: Settings of a whole stage (how its hosts are worked through, whether a run asks first, who hears of it):
#: allowed at the top level and in a stage only.
STAGE_ONLY = (
    "batch_size", "parallel", "confirm", "notify", "notify_timeout", "secrets", "migrate", "migrations"
)  # fmt: skip
TOP_LEVEL: dict[str, tuple[str, Check]] = {
    "app": ("a name", is_str),
    "default_stage": ("a stage name", is_str),
    "stages": ("a mapping of stage names to stages", is_mapping),
    "etc_templates": ("a path", is_str),
    "wheelhouse": ("a path", is_str),
    "upstream": ("an index URL", is_str),
    "roles": ("a mapping of role names to settings", lambda _v: True),
}
REQUIRED_SETTINGS = ("root", "mirror")


def suggest(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Validator:
    """Checks the settings of one inventory file against `SETTINGS`; its errors name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> InventoryError:
        return InventoryError(f"{self.path}: {where}: {message}")

    def settings(
        self, entry: Any, where: str, extra: Mapping[str, tuple[str, Check]], host: bool = False
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
                raise self.fail(place, f"unknown key {key!r}{suggest(str(key), allowed)}")
            if host and key in STAGE_ONLY:
                raise self.fail(place, f"{key} is a setting of the whole stage: set it in the stage or at the top")
            description, check = allowed[key]
            if not check(value):
                raise self.fail(place, _explain(str(key), value) or f"expected {description}, got {value!r}")
        return dict(entry)


def check_name(validator: Validator, where: str, kind: str, name: str) -> None:
    """Stage and host names become directory names (``build/etc/<stage>/<host>``): refuse anything else."""
    if not NAME.fullmatch(name):
        raise validator.fail(
            where,
            f"{kind} name {name!r} is not allowed: use letters, digits, '.', '_' and '-' (not first); "
            "a name is only a label, put the host's real address in 'address:'",
        )
