"""`HostConfig`: everything deploytool needs to know about one host of one stage, and `host_config`, which makes
one from a host's merged settings (required keys, paths resolved against the project, the mirror checked against
its kind, a local stage's defaults).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .flow.golive import HealthCheck, Restart, parse_health, parse_restart
from .inventory_roles import DEFAULT_ROLE
from .inventory_schema import REQUIRED_SETTINGS, Validator


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


def resolve_path(value: str, project_root: Path) -> Path:
    """``value`` (``~`` expanded), relative to ``project_root`` unless it is absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root / path


def _check_mirror(validator: Validator, where: str, merged: dict[str, Any]) -> str:
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


def host_config(
    validator: Validator,
    inventory_root: Path,
    app: str,
    stage: str,
    name: str,
    merged: dict[str, Any],
    roles: tuple[str, ...] = (DEFAULT_ROLE,),
    checks: Sequence[Any] = (),
) -> HostConfig:
    """The `HostConfig` of host ``name`` of ``stage`` from its ``merged`` settings, its ``roles`` and the
    ``health_check`` values they name (``checks``; none: the merged ``health_check``)."""
    where = f"stages.{stage}.hosts.{name}"
    for key in REQUIRED_SETTINGS:
        if merged[key] is None:
            raise validator.fail(where, f"missing required key {key!r} (set it for the host, stage or file)")
    local = merged["transport"] == "local"
    root = merged["root"]
    mirror = _check_mirror(validator, where, merged)
    if local and merged["mirror_kind"] != "vendored":
        root = str(resolve_path(root, inventory_root).resolve())
        if "://" not in mirror:
            mirror = str(resolve_path(mirror, inventory_root).resolve())
    elif not root.startswith("/"):
        raise validator.fail(f"{where}.root", f"expected an absolute path on the host, got {root!r}")
    if merged["mirror_path"] is not None and not merged["mirror_path"].startswith("/"):
        raise validator.fail(
            f"{where}.mirror_path", f"expected an absolute path on the mirror host, got {merged['mirror_path']!r}"
        )
    requirements = resolve_path(merged["requirements"], inventory_root)
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
        etc_root = str(resolve_path(etc_root, inventory_root).resolve())
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
        known_hosts=str(resolve_path(merged["known_hosts"], inventory_root)) if merged["known_hosts"] else None,
        ssh_config=str(resolve_path(merged["ssh_config"], inventory_root)) if merged["ssh_config"] else None,
        gateway=merged["gateway"],
        identity_file=str(resolve_path(identity, inventory_root)) if identity else None,
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
