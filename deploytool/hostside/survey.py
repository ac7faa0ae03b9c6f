"""Host-side module ``survey``: what a host runs, read in one call for ``fab status`` and ``fab audit``.

Arguments (JSON): ``root`` (the deploy root), ``requirements`` (the role file's path inside a release, e.g.
``requirements/prod.txt``), ``releases`` (``"current"`` or ``"all"``: which releases to describe) and
``verify`` (check every file of the current release's installed distributions against its ``RECORD``),
``health`` (the rendered check for the ``health`` module, ``RELEASE_MARK`` standing for the current release's id:
tried once).

Answer: ``root_exists``; ``current`` (the release id ``current`` points at, or null) and ``current_link``
(the link as it is); ``releases`` (directory names under ``releases/``); ``journal`` (its lines); ``lock``
(``held``, and the text of ``owner.json``); ``details``: one object per described release with its
``manifest`` (parsed JSON or null), ``requirements`` (``{path inside the release: text}``: the role file and
the files it includes with ``-r``), ``venv`` (it has one) and ``dists``: every ``*.dist-info`` in its venv's
site-packages, with ``name`` and ``version`` from METADATA and, when verifying, the RECORD entries whose file
is ``missing`` or ``modified`` (a few named, all counted); ``health`` (``ok``, ``last``) when asked and a release
is current. Nothing is imported from the app; nothing is written.

Standard library only, Python 3.8 syntax: it runs on the host's own python3.
"""

from __future__ import annotations

import base64
import csv
import glob
import hashlib
import json
import os
import sys
from typing import Any

from . import _common, health
from ._common import CURRENT, JOURNAL, LOCK, OWNER, RELEASES

RELEASE_MARK = "@@DEPLOYTOOL_RELEASE@@"  # where the health check's release id goes (see ``_health``)
MAX_TEXT = 512 * 1024  # bytes read of any one text file
MAX_JOURNAL_LINES = 20000  # the newest lines are kept
MAX_NAMED = 20  # files named per distribution and kind; the rest are only counted
MAX_INCLUDES = 32  # requirement files followed through -r


def _read(path: str, limit: int = MAX_TEXT) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _current(root: str, releases: list[str]) -> dict[str, Any]:
    """The release ``current`` points at: one of ``releases`` (the laptop validates the link's form too)."""
    link = _common.current_link(root)
    if not link:
        return {"current": None, "current_link": ""}
    resolved = os.path.realpath(os.path.join(root, CURRENT))
    inside = os.path.dirname(resolved) == os.path.realpath(os.path.join(root, RELEASES))
    name = os.path.basename(resolved)
    return {"current": name if inside and name in releases else None, "current_link": link}


def _releases(root: str) -> list[str]:
    try:
        return _common.list_releases(root)
    except OSError:
        return []


def _journal(root: str) -> list[str]:
    try:
        with open(os.path.join(root, JOURNAL), "rb") as handle:
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-MAX_JOURNAL_LINES:]


def _lock(root: str) -> dict[str, Any]:
    lock = os.path.join(root, LOCK)
    return {"held": os.path.isdir(lock), "owner": _read(os.path.join(lock, OWNER), _common.OWNER_LIMIT)}


def _manifest(release: str) -> dict[str, Any] | None:
    text = _read(os.path.join(release, ".deploytool.json"), 64 * 1024)
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _include(line: str) -> str | None:
    """The file a ``-r``/``--requirement`` line names, else None."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    first = words[0]
    if first in ("-r", "--requirement"):
        return words[1] if len(words) > 1 else None
    if first.startswith("--requirement="):
        return first[len("--requirement=") :]
    if first.startswith("-r"):
        return first[2:]
    return None


def _requirements(release: str, relative: str) -> dict[str, str]:
    """The role file and the files it includes, by their path inside the release (never outside it)."""
    base = os.path.realpath(release)
    found: dict[str, str] = {}
    pending = [os.path.normpath(os.path.join(base, relative))]
    while pending and len(found) < MAX_INCLUDES:
        path = pending.pop(0)
        real = os.path.realpath(path)
        if not real.startswith(base + os.sep):
            continue
        key = os.path.relpath(real, base)
        if key in found:
            continue
        text = _read(real)
        if text is None:
            continue
        found[key] = text
        for line in text.splitlines():
            named = _include(line.strip())
            if named:
                pending.append(os.path.normpath(os.path.join(os.path.dirname(real), named)))
    return found


def _site_packages(venv: str) -> list[str]:
    # The venv's path is data (a root may hold * ? [ ]): only the pattern built here is expanded.
    paths = glob.glob(os.path.join(glob.escape(venv), "lib", "python*", "site-packages"))
    paths += glob.glob(os.path.join(glob.escape(venv), "lib64", "python*", "site-packages"))
    unique: dict[str, str] = {}
    for path in sorted(paths):
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values())


def _name_version(dist_info: str) -> dict[str, str | None]:
    fields: dict[str, str | None] = {"name": None, "version": None}
    text = _read(os.path.join(dist_info, "METADATA"), 64 * 1024) or ""
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the rest is the description
        key, _, value = line.partition(":")
        if key.lower() in fields and fields[key.lower()] is None:
            fields[key.lower()] = value.strip()
    return fields


def _digest(path: str, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode("ascii")


def _verify(site: str, dist_info: str, venv: str) -> dict[str, Any]:
    """Files of the distribution whose content no longer matches RECORD, and files RECORD lists that are gone."""
    modified: list[str] = []
    missing: list[str] = []
    counts = {"modified": 0, "missing": 0, "checked": 0}
    top = os.path.realpath(venv) + os.sep
    text = _read(os.path.join(dist_info, "RECORD"), 16 * 1024 * 1024)
    if text is None:
        return {"record": False, "modified": [], "missing": [], "counts": counts}
    for row in csv.reader(text.splitlines()):
        if len(row) < 2 or "=" not in row[1]:
            continue  # RECORD itself and .pyc files carry no hash
        algorithm, _, expected = row[1].partition("=")
        path = os.path.normpath(os.path.join(site, row[0]))
        if not os.path.realpath(path).startswith(top) or algorithm not in hashlib.algorithms_guaranteed:
            continue
        counts["checked"] += 1
        try:
            same = _digest(path, algorithm) == expected
        except OSError:
            counts["missing"] += 1
            if len(missing) < MAX_NAMED:
                missing.append(row[0])
            continue
        if not same:
            counts["modified"] += 1
            if len(modified) < MAX_NAMED:
                modified.append(row[0])
    return {"record": True, "modified": modified, "missing": missing, "counts": counts}


def _dists(venv: str, verify: bool) -> list[dict[str, Any]]:
    dists = []
    for site in _site_packages(venv):
        for dist_info in sorted(glob.glob(os.path.join(glob.escape(site), "*.dist-info"))):
            dist: dict[str, Any] = {"dist_info": os.path.basename(dist_info)}
            dist.update(_name_version(dist_info))
            if verify:
                dist.update(_verify(site, dist_info, venv))
            dists.append(dist)
    return dists


def _describe(root: str, release_id: str, relative: str, verify: bool) -> dict[str, Any]:
    release = os.path.join(root, RELEASES, release_id)
    return {
        "id": release_id,
        "manifest": _manifest(release),
        "requirements": _requirements(release, relative),
        "venv": os.path.isdir(os.path.join(release, "venv")),
        "dists": _dists(os.path.join(release, "venv"), verify),
    }


def _health(check: dict[str, Any], root: str, current: str) -> dict[str, Any]:
    """One try of the app's health check (the ``health`` module, shipped with this one) against the current
    release: the laptop rendered it with ``RELEASE_MARK`` where the release id goes, since it does not know the id
    before asking."""
    request = {
        key: value.replace(RELEASE_MARK, current) if isinstance(value, str) else value for key, value in check.items()
    }
    try:  # the app's env, as deploy's checks have it (a release from before env has none)
        env = _common.read_env(os.path.join(root, _common.RELEASES, current, _common.ENV_FILE))
    except (OSError, ValueError):
        env = {}
    request.update(deadline=0, env={**env, "DEPLOYTOOL_RELEASE": current})
    argv = _common.program(sys.executable, health.__name__.rpartition(".")[2])
    done = _common.run(argv, json.dumps(request) + "\n", float(check.get("timeout") or 5) + 10, stdout_only=True)
    said, why = _common.answer_of(done)
    if said is None:
        return {"ok": False, "last": f"the check did not answer: {why}"[:300]}
    return {"ok": said.get("ok") is True, "last": str(said.get("last") or "")[:300]}


def main(args: dict[str, Any]) -> dict[str, Any]:
    root = str(args["root"])
    answer: dict[str, Any] = {"ok": True, "root_exists": os.path.isdir(root)}
    answer["releases"] = _releases(root)
    answer.update(_current(root, answer["releases"]))
    answer["journal"] = _journal(root)
    answer["lock"] = _lock(root)
    described = answer["releases"] if args.get("releases") == "all" else []
    if args.get("releases") != "all" and answer["current"]:
        described = [answer["current"]]
    relative = str(args.get("requirements") or "")
    answer["details"] = [
        _describe(root, rid, relative, bool(args.get("verify")) and rid == answer["current"]) for rid in described
    ]
    if isinstance(args.get("health"), dict) and answer["current"]:
        answer["health"] = _health(args["health"], root, answer["current"])
    return answer


if __name__ == "__main__":
    _common.serve(main)
