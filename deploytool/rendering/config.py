"""The rendered config of a release: template variables, rendering every host's ``etc-mock/`` up front, and
the hosts.yml commands rendered for a release (`render_commands`). What the switch does with them is `switch`'s."""

from __future__ import annotations

import base64
import getpass
import posixpath
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2

from ..appsecrets import NONE, MissingSecret, Secrets
from ..errors import DeployError
from ..flow.golive import HealthCheck, Restart
from ..flow.snapshot import extract, relative_to_project
from ..inventory import HostConfig, Inventory
from ..layout import Layout
from .etc import RenderedEtc, TemplateError, render_all, tar_bytes
from .shell_templates import DATA, command_environment


def template_variables(host: HostConfig, release_id: str) -> dict[str, Any]:
    """The variables a template sees: hosts.yml ``vars`` (global, stage, host), then the release's facts."""
    layout = Layout(host.root)
    return {
        **host.vars,
        "app": host.app,
        "stage": host.stage,
        "host": host.name,
        "release_id": release_id,
        "release_path": layout.release(release_id),
        "root": layout.root,
        "current": layout.current,
        "venv": posixpath.join(layout.current, "venv"),
        "shared": layout.shared,
        "shared_dirs": {name: layout.shared_dir(name) for name in host.shared_dirs},
        "user": host.user or getpass.getuser(),  # what SSH logs in as when hosts.yml names no user
        "etc_root": host.etc_root,
    }


_SECRET_MARK = "\x00secret:"


class _SecretMarks(Secrets):
    """``secrets`` as command templates see it: each value a mark that `_render` refuses to put on a command
    line (a command's argv shows in the host's process list); no secret need be read to render commands."""

    def __init__(self) -> None:
        super().__init__({}, "commands")

    def __getitem__(self, name: str) -> str:
        return f"{_SECRET_MARK}{name}\x00"


def render_env(host: HostConfig, release_id: str, secrets: Secrets = NONE) -> dict[str, str]:
    """The app's environment on ``host`` for ``release_id``: hosts.yml's ``env`` (stage, roles, host), each value
    rendered (Jinja, no quoting) with the template variables and ``secrets``."""
    variables = {**template_variables(host, release_id), "secrets": secrets}
    env: dict[str, str] = {}
    for name, text in host.env.items():
        where = f"hosts.yml: env.{name} of host {host.name}"
        try:
            value = DATA.from_string(text).render(variables)
        except MissingSecret as error:
            raise TemplateError(f"{where}: {error}") from None
        except jinja2.UndefinedError as error:
            raise TemplateError(f"{where} ({text!r:.80}): {error}; define it in hosts.yml vars") from None
        except jinja2.TemplateError as error:
            raise TemplateError(f"{where} ({text!r:.80}): {error}") from None
        if "\x00" in value and _SECRET_MARK not in value:
            raise DeployError(f"{where}: renders to text with a NUL character, which no environment can hold")
        env[name] = value
    return env


def _render(text: str, variables: dict[str, Any], where: str, host: str) -> str:
    try:
        rendered = command_environment(where).from_string(text).render(variables)
    except MissingSecret as error:
        raise TemplateError(f"hosts.yml: {where} of host {host}: {error}") from None
    except jinja2.UndefinedError as error:
        raise TemplateError(
            f"hosts.yml: {where} of host {host} ({text!r:.80}): {error}; define it in hosts.yml vars"
        ) from None
    except jinja2.TemplateError as error:
        raise TemplateError(f"hosts.yml: {where} of host {host} ({text!r:.80}): {error}") from None
    if _SECRET_MARK in rendered:
        name = rendered.split(_SECRET_MARK, 1)[1].split("\x00", 1)[0]
        raise TemplateError(
            f"hosts.yml: {where} of host {host} ({text!r:.80}) would put secret {name!r} on a command line, which "
            "the host's process list shows; the command has the app's env in its environment: use $NAME there"
        )
    return rendered


def render_commands(host: HostConfig, release_id: str | None, previous: str | None) -> HostConfig:
    """``host`` with its ``validate``, ``after_switch``, ``restart``, ``health_check``, ``build`` and ``migrate``
    strings rendered for ``release_id`` (Jinja, the template variables plus ``previous_release`` and ``env``); a
    `TemplateError` names the key. A secret (``secrets.NAME``, or an ``env`` value holding one) is refused:
    commands get the app's env in their environment, never on their command line."""
    marks = _SecretMarks()
    variables = {
        **template_variables(host, release_id or ""),
        "previous_release": previous or "",
        "secrets": marks,
        "env": render_env(host, release_id or "", marks),
    }

    def each(key: str, texts: Sequence[str]) -> tuple[str, ...]:
        return tuple(_render(text, variables, f"{key}[{index}]", host.name) for index, text in enumerate(texts))

    restart = host.restart
    restart = Restart(
        each("restart", restart.commands),
        _render(restart.gunicorn_pidfile, variables, "restart.gunicorn_pidfile", host.name)
        if restart.gunicorn_pidfile
        else None,
        each("restart.start", restart.start),
    )

    def rendered_check(check: HealthCheck) -> HealthCheck:
        def one(key: str, value: str | None) -> str | None:
            return None if value is None else _render(value, variables, f"health_check.{key}", host.name)

        return replace(
            check,
            url=one("url", check.url),
            command=one("command", check.command),
            contains=one("contains", check.contains),
        )

    health = rendered_check(host.health_check) if host.health_check is not None else None
    return replace(
        host,
        validate=each("validate", host.validate),
        after_switch=each("after_switch", host.after_switch),
        build=each("build", host.build),
        migrate=each("migrate", host.migrate),
        restart=restart,
        health_check=health,
        health_checks=(health, *(rendered_check(check) for check in host.health_checks[1:])) if health else (),
    )


def etc_variables(host: HostConfig, release_id: str, secrets: Secrets = NONE) -> dict[str, Any]:
    """What an ``etc-mock/`` template sees: the template variables, ``env`` (the host's final env, secrets
    substituted) and ``secrets``."""
    return {
        **template_variables(host, release_id),
        "env": render_env(host, release_id, secrets),
        "secrets": secrets,
    }


def render_hosts(
    template_dir: Path, hosts: Sequence[HostConfig], release_id: str, secrets: Secrets = NONE
) -> dict[str, RenderedEtc]:
    """Render every host's config on the laptop; any template error for any host stops everything here."""
    if not template_dir.is_dir():
        return {}
    return render_all(template_dir, {host.name: etc_variables(host, release_id, secrets) for host in hosts})


def render_commit(
    inventory: Inventory, hosts: Sequence[HostConfig], release_id: str, commit: str, secrets: Secrets = NONE
) -> dict[str, RenderedEtc]:
    """Render every host's config from the templates *as committed* in ``commit`` (what the release ships);
    {} when the commit has no templates."""
    relative = relative_to_project(inventory.project_root, inventory.etc_templates, f"{inventory.path}: etc_templates")
    with tempfile.TemporaryDirectory(prefix="deploytool-etc-") as tmp:
        if not extract(inventory.project_root, commit, [relative], Path(tmp)):
            return {}
        return render_hosts(Path(tmp) / relative, hosts, release_id, secrets)


def payload(rendered: RenderedEtc) -> str:
    """The rendered tree as base64 text (a tar with ``etc/`` at its top) for the build step's stdin."""
    return base64.b64encode(tar_bytes(rendered)).decode("ascii")
