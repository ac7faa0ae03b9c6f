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

from ..flow.golive import Restart
from ..flow.snapshot import extract, relative_to_project
from ..inventory import HostConfig, Inventory
from ..layout import Layout
from .etc import RenderedEtc, TemplateError, render_all, tar_bytes
from .shell_templates import command_environment


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


def _render(text: str, variables: dict[str, Any], where: str, host: str) -> str:
    try:
        return command_environment(where).from_string(text).render(variables)
    except jinja2.UndefinedError as error:
        raise TemplateError(
            f"hosts.yml: {where} of host {host} ({text!r:.80}): {error}; define it in hosts.yml vars"
        ) from None
    except jinja2.TemplateError as error:
        raise TemplateError(f"hosts.yml: {where} of host {host} ({text!r:.80}): {error}") from None


def render_commands(host: HostConfig, release_id: str | None, previous: str | None) -> HostConfig:
    """``host`` with its ``validate``, ``after_switch``, ``restart`` and ``health_check`` strings rendered for
    ``release_id`` (Jinja, the template variables plus ``previous_release``); a `TemplateError` names the key."""
    variables = {**template_variables(host, release_id or ""), "previous_release": previous or ""}

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
    health = host.health_check
    if health is not None:

        def one(key: str, value: str | None) -> str | None:
            return None if value is None else _render(value, variables, f"health_check.{key}", host.name)

        health = replace(
            health,
            url=one("url", health.url),
            command=one("command", health.command),
            contains=one("contains", health.contains),
        )
    return replace(
        host,
        validate=each("validate", host.validate),
        after_switch=each("after_switch", host.after_switch),
        restart=restart,
        health_check=health,
    )


def render_hosts(template_dir: Path, hosts: Sequence[HostConfig], release_id: str) -> dict[str, RenderedEtc]:
    """Render every host's config on the laptop; any template error for any host stops everything here."""
    if not template_dir.is_dir():
        return {}
    return render_all(template_dir, {host.name: template_variables(host, release_id) for host in hosts})


def render_commit(
    inventory: Inventory, hosts: Sequence[HostConfig], release_id: str, commit: str
) -> dict[str, RenderedEtc]:
    """Render every host's config from the templates *as committed* in ``commit`` (what the release ships);
    {} when the commit has no templates."""
    relative = relative_to_project(inventory.project_root, inventory.etc_templates, f"{inventory.path}: etc_templates")
    with tempfile.TemporaryDirectory(prefix="deploytool-etc-") as tmp:
        if not extract(inventory.project_root, commit, [relative], Path(tmp)):
            return {}
        return render_hosts(Path(tmp) / relative, hosts, release_id)


def payload(rendered: RenderedEtc) -> str:
    """The rendered tree as base64 text (a tar with ``etc/`` at its top) for the build step's stdin."""
    return base64.b64encode(tar_bytes(rendered)).decode("ascii")
