"""The host-side commands that make a release's virtualenv and fill it from the mirror only.

pip (the default): the release venv is made ``--without-pip`` (milliseconds instead of seconds of ensurepip)
and filled by one pip kept in ``<root>/tools/venv`` (made once per host), run as ``pip --python <venv>``.
uv (``installer: uv``): ``uv venv`` and ``uv pip install`` with the same flags. Either way the host's own
pip/uv configuration and environment variables are ignored, so nothing but the given mirror is ever consulted.
"""

from __future__ import annotations

import posixpath

from .inventory import HostConfig
from .layout import Layout
from .requirements import UV_SOURCE_VARIABLES, pip_install_args, uv_install_args


def venv_python(layout: Layout, release_id: str) -> str:
    return posixpath.join(layout.venv(release_id), "bin", "python")


def tools_python(layout: Layout) -> str:
    return posixpath.join(layout.tools_venv, "bin", "python")


def _pip(host: HostConfig, layout: Layout, release_id: str) -> list[str]:
    # --isolated drops PIP_* environment variables and user config; PIP_CONFIG_FILE=/dev/null drops the rest.
    pip = [tools_python(layout), "-m", "pip", "--isolated", "--python", venv_python(layout, release_id)]
    return ["env", "PIP_CONFIG_FILE=/dev/null", *pip]


def make_venv(host: HostConfig, layout: Layout, release_id: str) -> list[str]:
    """The command creating the release's fresh, empty virtualenv."""
    if host.installer == "uv":
        return ["env", "UV_NO_CONFIG=1", "uv", "venv", "--quiet", "--python", host.python, layout.venv(release_id)]
    return [host.python, "-m", "venv", "--without-pip", layout.venv(release_id)]


def make_tools(host: HostConfig, layout: Layout) -> list[str] | None:
    """The command creating the per-host tools venv holding pip (None for uv, which needs none)."""
    if host.installer == "uv":
        return None
    return [host.python, "-m", "venv", layout.tools_venv]


def mirror_on_host(host: HostConfig, layout: Layout, release_id: str) -> tuple[str, str]:
    """Where the host installs from and how: (location, ``find-links`` or ``index``).

    Vendored wheels are the release's own copy (``<release>/<mirror>``), read as a find-links directory.
    """
    if host.mirror_kind == "vendored":
        return posixpath.join(layout.release(release_id), host.mirror), "find-links"
    return host.mirror, host.mirror_kind


def install(host: HostConfig, layout: Layout, release_id: str, requirements: str, require_hashes: bool) -> list[str]:
    """The command installing the pinned ``requirements`` (a path on the host) into the release's venv."""
    mirror, kind = mirror_on_host(host, layout, release_id)
    if host.installer == "uv":
        python = venv_python(layout, release_id)
        args = uv_install_args(requirements, mirror, require_hashes, python=python, kind=kind)
        unset = [word for name in UV_SOURCE_VARIABLES for word in ("-u", name)]
        return ["env", *unset, "UV_NO_CONFIG=1", "uv", *args]
    return [*_pip(host, layout, release_id), *pip_install_args(requirements, mirror, require_hashes, kind)]


def check(host: HostConfig, layout: Layout, release_id: str) -> list[str]:
    """The command verifying the installed set is consistent (``pip check``)."""
    if host.installer == "uv":
        return ["env", "UV_NO_CONFIG=1", "uv", "pip", "check", "--python", venv_python(layout, release_id)]
    return [*_pip(host, layout, release_id), "check"]
