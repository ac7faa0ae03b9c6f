"""The rendered config of a release: template variables, rendering every host up front, and the commands
that install a release's ``etc/`` at the switch (validated, restorable, through sudo where asked)."""

from __future__ import annotations

import base64
import getpass
import posixpath
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .etc import RenderedEtc, install_command, render_all, tar_bytes
from .inventory import HostConfig, Inventory
from .layout import Layout
from .phases import ConfigSwitch, Target
from .snapshot import extract, relative_to_project


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


def _empty_etc(layout: Layout) -> str:
    return posixpath.join(layout.root, "tools", "empty-etc")


def config_switch(target: Target, release_id: str, previous: str | None) -> ConfigSwitch:
    """The commands that put ``release_id``'s config in place of ``previous``'s, and that put it back.

    A release without ``etc/`` has no config: switching to it removes the files the other one installed."""
    host, layout = target.host, target.layout
    previous_etc = layout.etc(previous) if previous else None
    install = install_command(layout.etc(release_id), host.etc_root, previous_etc, False, python=host.python)
    # With no previous release, restoring means removing what the new one installed.
    restore = install_command(
        previous_etc or _empty_etc(layout), host.etc_root, layout.etc(release_id), False, python=host.python
    )
    return ConfigSwitch(
        install=install,
        restore=restore,
        empty_dir=_empty_etc(layout),
        validate=host.validate,
        after_switch=host.after_switch,
    )
