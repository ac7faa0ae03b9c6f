"""The installer a host uses, chosen on the laptop, and the host-side commands that make and fill a release venv.

Which installer (`choose`): ``installer: pip`` is pip; ``installer: uv`` is uv, refused on the laptop when the
mirror has no ``uv==UV_VERSION`` wheel for the hosts; unset, uv when the mirror has that wheel, else pip.

uv comes from the mirror like every other package: ``mirror.sync`` adds the wheel, and a host installs it once
into ``<root>/tools/venv`` (with that venv's pip, the seed flow's flags, from the mirror only). The pin lives
here, not in the app's role files: it is deploytool's tool, tested with the flags deploytool passes it, and not a
dependency of the app (a role file's pins are installed into every release). Upgrading deploytool moves it.

pip: the release venv is made ``--without-pip`` (milliseconds instead of seconds of ensurepip) and filled by the
pip of ``<root>/tools/venv``, run as ``pip --python <venv>``. uv: ``uv venv`` and ``uv pip install`` with the
same flags, its cache in ``<root>/tools/uv-cache``. Either way the host's own pip/uv configuration and
environment are ignored (nothing but the given mirror is consulted, uv never downloads a Python), and bytecode is
written by the host-side module ``bytecode`` after the install, not by the installer.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from ..errors import DeployError
from ..inventory import HostConfig
from ..layout import Layout
from .mirror_index import choose_wheel
from .requirements import UV_SOURCE_VARIABLES, Pin, pip_install_args, pip_source_args, uv_install_args
from .simple_api import mirror_wheels
from .wheelmeta import MirrorError, TargetPython

UV_VERSION = "0.13.9"
UV_PIN = f"uv=={UV_VERSION}"
#: Written into the tools venv once it is complete: probing its pip instead costs a Python start per deploy.
TOOLS_READY = ".deploytool-ready"


def choose(host: HostConfig, mirror: str, kind: str, target: TargetPython, where: str) -> str:
    """``pip`` or ``uv`` for ``host``, from its ``installer`` setting and what the laptop sees in the mirror
    (``mirror``/``kind`` as `pins.laptop_mirror` gives them); an explicit uv the mirror lacks is an error."""
    if host.installer == "pip":
        return "pip"
    try:
        links = [link for link in mirror_wheels(mirror, kind, ["uv"]) if link.name == "uv"]
    except MirrorError as error:
        if host.installer == "uv":
            raise DeployError(f"{where}: installer: uv, but the mirror could not be read: {error}") from None
        return "pip"
    if choose_wheel([link for link in links if link.version == Version(UV_VERSION)], target):
        return "uv"
    if host.installer == "uv":
        raise DeployError(
            f"{where}: installer: uv, but the mirror {mirror} has no {UV_PIN} wheel for {target.describe()}; "
            "run fab mirror.sync (it adds it) and fab mirror.publish, or set installer: pip"
        )
    return "pip"


def uv_pin() -> Pin:
    """The pinned uv as a `Pin` (for ``mirror.sync``), located in this module."""
    return Pin("uv", canonicalize_name("uv"), UV_VERSION, Path(__file__), 0)


def venv_python(layout: Layout, release_id: str) -> str:
    return posixpath.join(layout.venv(release_id), "bin", "python")


def tools_python(layout: Layout) -> str:
    return posixpath.join(layout.tools_venv, "bin", "python")


def uv_bin(layout: Layout) -> str:
    return posixpath.join(layout.tools_venv, "bin", "uv")


def _pip(layout: Layout, python: str | None = None) -> list[str]:
    # --isolated drops PIP_* environment variables and user config; PIP_CONFIG_FILE=/dev/null drops the rest.
    pip = [tools_python(layout), "-m", "pip", "--isolated", "--disable-pip-version-check"]
    return ["env", "PIP_CONFIG_FILE=/dev/null", *pip, *(["--python", python] if python else [])]


def _uv(layout: Layout) -> list[str]:
    unset = [word for name in UV_SOURCE_VARIABLES for word in ("-u", name)]
    cache = posixpath.join(posixpath.dirname(layout.tools_venv), "uv-cache")
    return ["env", *unset, "UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never", f"UV_CACHE_DIR={cache}", uv_bin(layout)]


def make_tools(host: HostConfig, layout: Layout) -> list[str]:
    """The command (re)creating the per-host tools venv with pip (which fills release venvs, or installs uv)."""
    return [host.python, "-m", "venv", "--clear", layout.tools_venv]


def tools_ready(layout: Layout) -> str:
    return posixpath.join(layout.tools_venv, TOOLS_READY)


def install_uv(host: HostConfig, layout: Layout, release_id: str) -> list[str]:
    """The command installing the pinned uv into the tools venv, with its pip, from the mirror only."""
    mirror, kind = mirror_on_host(host, layout, release_id)
    return [*_pip(layout), "install", *pip_source_args(mirror, kind), "--no-compile", UV_PIN]


def uv_version_line() -> str:
    """What ``uv --version`` of the pinned uv starts with."""
    return f"uv {UV_VERSION}"


def make_venv(host: HostConfig, layout: Layout, release_id: str, tool: str) -> list[str]:
    """The command creating the release's fresh, empty virtualenv."""
    if tool == "uv":
        return [*_uv(layout), "venv", "--quiet", "--python", host.python, layout.venv(release_id)]
    return [host.python, "-m", "venv", "--without-pip", layout.venv(release_id)]


def mirror_on_host(host: HostConfig, layout: Layout, release_id: str) -> tuple[str, str]:
    """Where the host installs from and how: (location, ``find-links`` or ``index``).

    Vendored wheels are the release's own copy (``<release>/<mirror>``), read as a find-links directory.
    """
    if host.mirror_kind == "vendored":
        return posixpath.join(layout.release(release_id), host.mirror), "find-links"
    return host.mirror, host.mirror_kind


def install(
    host: HostConfig, layout: Layout, release_id: str, requirements: str, require_hashes: bool, tool: str
) -> list[str]:
    """The command installing the pinned ``requirements`` (a path on the host) into the release's venv, without
    compiling bytecode (the ``bytecode`` module does that, reusing the previous release's)."""
    mirror, kind = mirror_on_host(host, layout, release_id)
    python = venv_python(layout, release_id)
    if tool == "uv":
        return [*_uv(layout), *uv_install_args(requirements, mirror, require_hashes, python=python, kind=kind)]
    return [*_pip(layout, python), *pip_install_args(requirements, mirror, require_hashes, kind, compile=False)]


def check(host: HostConfig, layout: Layout, release_id: str, tool: str) -> list[str]:
    """The command verifying the installed set is consistent (``pip check``)."""
    if tool == "uv":
        return [*_uv(layout), "pip", "check", "--python", venv_python(layout, release_id)]
    return [*_pip(layout, venv_python(layout, release_id)), "check"]
