"""The installer a host uses, chosen on the laptop, and the host-side commands that make and fill a release venv.

Which installer (`choose`): ``installer: pip`` is pip; ``installer: uv`` is uv, refused on the laptop when the
mirror has no ``uv==UV_VERSION`` wheel for the hosts; unset, uv when the mirror has that wheel, else pip.

uv comes from the mirror like every other package: ``mirror.sync`` adds the wheel. The laptop chooses the one
wheel for the hosts' target and learns its sha256 (`uv_wheel`); a host's first deploy with uv fetches that file
from the host's own mirror, refuses any other bytes, and unpacks only its ``uv`` binary to
``<root>/tools/uv-<UV_VERSION>/uv`` (the host-side `deploytool.hostside.uv_fetch`): no pip, no tools venv. That
file is written whole or not at all, so a later deploy only sees that it is there. The pin lives here, not in
the app's role files: it is deploytool's tool, tested with the flags deploytool passes it, and not a dependency
of the app (a role file's pins are installed into every release). Upgrading deploytool moves it (a new
directory beside the old one).

pip: the release venv is made ``--without-pip`` (milliseconds instead of seconds of ensurepip) and filled by the
pip of ``<root>/tools/venv`` (made once per host), run as ``pip --python <venv>``. uv: ``uv venv`` and ``uv pip
install`` with the same flags, its cache in ``<root>/tools/uv-cache``. Either way the host's own pip/uv
configuration and environment are ignored (nothing but the given mirror is consulted, uv never downloads a
Python), and bytecode is written by the host-side module ``bytecode`` after the install, not by the installer.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from ..errors import DeployError
from ..hostside.uv_fetch import SHA256, WHEEL_NAME
from ..inventory import HostConfig
from ..layout import Layout
from .mirror_index import choose_wheel
from .requirements import UV_SOURCE_VARIABLES, Pin, pip_install_args, uv_install_args
from .simple_api import download_sha256, mirror_wheels
from .wheelmeta import MirrorError, TargetPython, sha256_file

UV_VERSION = "0.13.9"
UV_PIN = f"uv=={UV_VERSION}"
#: Written into the pip tools venv once it is complete: probing its pip instead costs a Python start per deploy.
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


def uv_wheel(mirror: str, kind: str, target: TargetPython, where: str) -> tuple[str, str]:
    """The ``uv==UV_VERSION`` wheel a host with ``target`` installs, as (filename, sha256), from the laptop's view
    of the mirror (the local wheelhouse when there is one: `pins.laptop_mirror`): the one pip would choose
    (`choose_wheel`), its sha256 as the index or page gives it, else of the file, read or downloaded here. The
    host takes that filename from its own mirror and refuses any other bytes (`deploytool.hostside.uv_fetch`),
    as the app's pinned wheels must match their ``--hash``."""
    try:
        links = [
            link
            for link in mirror_wheels(mirror, kind, ["uv"])
            if link.name == "uv" and link.version == Version(UV_VERSION)
        ]
        chosen = choose_wheel(links, target)
        digest = None
        if chosen is not None:
            digest = chosen.sha256
            if digest is None:
                digest = download_sha256(chosen.location) if chosen.remote else sha256_file(Path(chosen.location))
    except (MirrorError, OSError) as error:
        raise DeployError(f"{where}: cannot learn the sha256 of {UV_PIN}'s wheel from {mirror}: {error}") from None
    if chosen is None or digest is None:
        raise DeployError(f"{where}: the mirror {mirror} has no {UV_PIN} wheel for {target.describe()} any more")
    if not WHEEL_NAME.match(chosen.filename) or ".." in chosen.filename or not SHA256.match(digest):
        raise DeployError(f"{where}: {mirror} offers {UV_PIN} as {chosen.filename!r:.200}: not a plain wheel file")
    return chosen.filename, digest


def uv_pin() -> Pin:
    """The pinned uv as a `Pin` (for ``mirror.sync``), located in this module."""
    return Pin("uv", canonicalize_name("uv"), UV_VERSION, Path(__file__), 0)


def venv_python(layout: Layout, release_id: str) -> str:
    return posixpath.join(layout.venv(release_id), "bin", "python")


def tools_python(layout: Layout) -> str:
    return posixpath.join(layout.tools_venv, "bin", "python")


def uv_bin(layout: Layout) -> str:
    """The pinned uv on the host (`fetch_uv` puts it there)."""
    return layout.uv_bin(UV_VERSION)


def _pip(layout: Layout, python: str | None = None) -> list[str]:
    # --isolated drops PIP_* environment variables and user config; PIP_CONFIG_FILE=/dev/null drops the rest.
    pip = [tools_python(layout), "-m", "pip", "--isolated", "--disable-pip-version-check"]
    return ["env", "PIP_CONFIG_FILE=/dev/null", *pip, *(["--python", python] if python else [])]


def _uv(layout: Layout) -> list[str]:
    unset = [word for name in UV_SOURCE_VARIABLES for word in ("-u", name)]
    cache = layout.uv_cache
    return ["env", *unset, "UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never", f"UV_CACHE_DIR={cache}", uv_bin(layout)]


def make_tools(host: HostConfig, layout: Layout) -> list[str]:
    """The command (re)creating the per-host tools venv with pip (which fills release venvs: installer pip)."""
    return [host.python, "-m", "venv", "--clear", layout.tools_venv]


def tools_ready(layout: Layout) -> str:
    return posixpath.join(layout.tools_venv, TOOLS_READY)


def fetch_uv(host: HostConfig, layout: Layout, release_id: str, wheel: tuple[str, str]) -> dict[str, str]:
    """The host-side `deploytool.hostside.uv_fetch` arguments: put the pinned uv's binary at `uv_bin` from the
    wheel ``wheel`` (filename, sha256: `uv_wheel`) in the host's own mirror (`mirror_on_host`)."""
    mirror, kind = mirror_on_host(host, layout, release_id)
    filename, sha256 = wheel
    return {"path": uv_bin(layout), "wheel": filename, "sha256": sha256, "mirror": mirror, "kind": kind}


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
