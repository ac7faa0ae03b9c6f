"""Describe the target interpreter and read what a wheel declares about itself."""

from __future__ import annotations

import email.parser
import hashlib
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name

from deploytool.errors import DeployError

ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


class MirrorError(DeployError):
    """A wheel, the wheelhouse or a mirror cannot be used as asked."""


@dataclass(frozen=True)
class TargetPython:
    """The interpreter and platform the hosts run, for markers and wheel tags.

    ``platforms`` overrides the platform tags; by default a Linux target accepts
    ``manylinux_2_<glibc>`` down to ``manylinux1`` plus ``linux_<machine>`` wheels.
    """

    python_version: str = "3.11"
    sys_platform: str = "linux"
    platform_machine: str = "x86_64"
    implementation: str = "cpython"
    glibc: str = "2.28"
    platforms: tuple[str, ...] = ()

    @property
    def major_minor(self) -> tuple[int, int]:
        """Return (major, minor) of ``python_version``."""
        major, minor = self.python_version.split(".")[:2]
        return int(major), int(minor)

    @property
    def interpreter(self) -> str:
        """Return the interpreter tag, e.g. ``cp311``."""
        prefix = {"cpython": "cp", "pypy": "pp"}.get(self.implementation, "py")
        major, minor = self.major_minor
        return f"{prefix}{major}{minor}"

    def describe(self) -> str:
        """Return a short human description, e.g. ``cpython 3.11 linux x86_64``."""
        return f"{self.implementation} {self.python_version} {self.sys_platform} {self.platform_machine}"

    @cached_property
    def platform_tags(self) -> tuple[str, ...]:
        """Return accepted platform tags, most specific first (``any`` excluded)."""
        if self.platforms:
            return self.platforms
        arch = ARCH_ALIASES.get(self.platform_machine, self.platform_machine)
        if self.sys_platform != "linux":
            return ()
        top = int(self.glibc.split(".")[1])
        tags: list[str] = []
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        for minor in range(top, 4, -1):
            tags.append(f"manylinux_2_{minor}_{arch}")
            if minor in legacy:
                tags.append(f"{legacy[minor]}_{arch}")
        tags.append(f"linux_{arch}")
        return tuple(tags)

    @cached_property
    def tag_priority(self) -> dict[Tag, int]:
        """Map every wheel tag the target accepts to its rank (0 is best)."""
        version = self.major_minor
        tags: list[Tag] = []
        if self.implementation == "cpython":
            tags += cpython_tags(version, [self.interpreter], self.platform_tags)
        tags += compatible_tags(version, self.interpreter, self.platform_tags)
        return {tag: rank for rank, tag in reversed(list(enumerate(tags)))}

    def wheel_rank(self, tags: frozenset[Tag]) -> int | None:
        """Return the best rank among a wheel's tags, or None if the target cannot install it."""
        ranks = [self.tag_priority[tag] for tag in tags if tag in self.tag_priority]
        return min(ranks) if ranks else None

    def marker_environment(self, extra: str = "") -> dict[str, str]:
        """Return a PEP 508 marker environment for this target."""
        full = self.python_version if self.python_version.count(".") >= 2 else f"{self.python_version}.0"
        return {
            "implementation_name": self.implementation,
            "implementation_version": full,
            "os_name": "nt" if self.sys_platform == "win32" else "posix",
            "platform_machine": self.platform_machine,
            "platform_python_implementation": {"cpython": "CPython", "pypy": "PyPy"}.get(
                self.implementation, self.implementation
            ),
            "platform_release": "",
            "platform_system": {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}.get(
                self.sys_platform, self.sys_platform
            ),
            "platform_version": "",
            "python_full_version": full,
            "python_version": "{}.{}".format(*self.major_minor),
            "sys_platform": self.sys_platform,
            "extra": extra,
        }

    def pip_download_args(self) -> list[str]:
        """Return the ``pip download`` options selecting wheels for this target."""
        args = ["--python-version", "{}.{}".format(*self.major_minor)]
        if self.implementation == "cpython":
            args += ["--implementation", "cp", "--abi", self.interpreter]
        for platform in self.platform_tags:
            args += ["--platform", platform]
        return args


@dataclass(frozen=True)
class WheelMetadata:
    """The parts of a wheel's METADATA that matter for checking dependencies."""

    name: str
    version: str
    requires_dist: tuple[Requirement, ...]
    requires_python: str | None


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_wheel_metadata(wheel: Path | IO[bytes], filename: str) -> bytes:
    """Return the raw ``*.dist-info/METADATA`` bytes of a wheel file."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            candidates = [
                member
                for member in archive.namelist()
                if member.count("/") == 1 and member.endswith(".dist-info/METADATA")
            ]
            wanted = canonicalize_name(filename.split("-")[0])
            exact = [m for m in candidates if canonicalize_name(m.split("-")[0]) == wanted]
            chosen = (exact or candidates)[:1]
            if not chosen:
                raise MirrorError(f"{filename}: not a valid wheel (no *.dist-info/METADATA inside)")
            return archive.read(chosen[0])
    except (zipfile.BadZipFile, OSError) as error:
        raise MirrorError(f"{filename}: not a valid wheel ({error})") from None


def parse_metadata(data: bytes, source: str) -> WheelMetadata:
    """Parse METADATA bytes into name, version, Requires-Dist and Requires-Python."""
    message = email.parser.BytesHeaderParser().parsebytes(data)
    name, version = message.get("Name"), message.get("Version")
    if not name or not version:
        raise MirrorError(f"{source}: METADATA has no Name or Version")
    requires: list[Requirement] = []
    for line in message.get_all("Requires-Dist") or []:
        try:
            requires.append(Requirement(str(line)))
        except InvalidRequirement as error:
            raise MirrorError(f"{source}: invalid Requires-Dist {line!r}: {error}") from None
    requires_python = message.get("Requires-Python")
    return WheelMetadata(
        str(name).strip(),
        str(version).strip(),
        tuple(requires),
        str(requires_python) if requires_python else None,
    )
