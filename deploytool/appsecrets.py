"""The app's secrets: read on the laptop from a source outside the repository, never shown.

hosts.yml's ``secrets`` (top level or stage) names one source:

    secrets: {command: "sops -d secrets/production.yaml"}   # its output: YAML, JSON or dotenv (NAME=value lines)
    secrets: {file: ~/.config/demo/production.yaml}         # the same formats
    secrets: {env_prefix: DEMO_}                            # DEMO_DB_PASSWORD -> secrets.DB_PASSWORD (and db_password)

They are read once per run, before any host is touched, and every value is given to `terminal.add_secrets`, so
that whatever a task prints or serialises shows ``***`` in its place. Templates see them as ``{{ secrets.NAME }}``
(`Secrets`): a name the source lacks stops the run naming it (`MissingSecret`), never showing a value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import DeployError
from .reporting import terminal

COMMAND_TIMEOUT = 120  # seconds a secrets command may take
_DOTENV = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")


class MissingSecret(DeployError):
    """A template uses a secret the source does not have."""

    def __init__(self, name: str, source: str) -> None:
        super().__init__(f"secret {name!r} is used but {source} does not define it; add it there")
        self.name = name


class Secrets(Mapping[str, str]):
    """What templates see as ``secrets``: ``secrets.NAME`` or ``secrets["NAME"]``; a missing name raises
    `MissingSecret` (not an undefined value that a template could test or print)."""

    def __init__(self, values: Mapping[str, str], source: str) -> None:
        self._values = dict(values)
        self._source = source

    def __getitem__(self, name: str) -> str:
        if name not in self._values:
            raise MissingSecret(str(name), self._source)
        return self._values[name]

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<secrets from {self._source}: {', '.join(self._values) or 'none'}>"


NONE = Secrets({}, "hosts.yml (it sets no secrets)")


def describe(source: Mapping[str, str]) -> str:
    kind, value = next(iter(source.items()))
    return {"command": "the secrets command", "file": f"the secrets file {value}", "env_prefix": f"{value}*"}[kind]


def parse(text: str, where: str) -> dict[str, str]:
    """NAME -> value from a source's text: a JSON or YAML mapping, else dotenv lines. Values are shown nowhere."""
    data: Any = None
    stripped = text.strip()
    if not stripped:
        return {}
    try:
        data = json.loads(stripped) if stripped.startswith("{") else yaml.safe_load(stripped)
    except (ValueError, yaml.YAMLError):
        data = None
    if not isinstance(data, dict):
        data = _dotenv(stripped, where)
    values: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not name:
            raise DeployError(f"{where}: a secret's name must be text, got {type(name).__name__}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DeployError(
                f"{where}: secret {name!r} is not text (a {type(value).__name__}); secrets are NAME: value pairs"
            )
        values[name] = str(value)
    return values


def _dotenv(text: str, where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV.fullmatch(line)
        if match is None:
            raise DeployError(f"{where} line {number}: expected NAME=value (or a YAML or JSON mapping)")
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def load(source: Mapping[str, str] | None, project_root: Path, inventory: Path) -> Secrets:
    """Read the secrets ``source`` names (None: no secrets) and register their values for masking."""
    if source is None:
        return NONE
    kind, value = next(iter(source.items()))
    where = f"{inventory}: secrets ({describe(source)})"
    if kind == "env_prefix":
        values = {name[len(value) :]: text for name, text in os.environ.items() if name.startswith(value)}
        values = {name: text for name, text in values.items() if name}
        values.update({name.lower(): text for name, text in values.items() if name.lower() not in values})
    elif kind == "file":
        path = Path(value).expanduser()
        path = path if path.is_absolute() else project_root / path
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DeployError(f"{where}: {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise DeployError(f"{where}: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        values = parse(text, where)
    else:
        values = parse(_command_output(value, project_root, where), where)
    terminal.add_secrets(values.values())
    return Secrets(values, describe(source))


def _command_output(command: str, project_root: Path, where: str) -> str:
    try:
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=project_root,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeployError(f"{where}: {command!r} did not finish within {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        # Its output may hold secrets: only its error output's last lines are shown.
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise DeployError(
            f"{where}: {command!r} failed (exit {done.returncode}): {' | '.join(lines[-3:]) or 'no error output'}"
        )
    return done.stdout
