"""Host-side module ``bytecode``: compile a fresh release venv's bytecode, reusing the previous release's.

Releases ship compiled bytecode: an app that compiles at first import writes into its release at run time, and
starts several times slower when it cannot (another user, ``PYTHONDONTWRITEBYTECODE``), at every start of every
worker. Compiling all of a large venv costs seconds, though, and most files are the ones the previous release has.

So, for each ``.py`` under the new venv's ``site-packages``: when the previous release's venv has the same file
(the same inode, as uv links both from its cache, or the same bytes) and a valid ``.pyc`` for it, that ``.pyc``
is reused: hard-linked when the source itself is (Python replaces a ``.pyc`` by renaming, never writes one in
place, so this shares no more than uv's linked sources do), else copied, the same-bytes source of this release
given the old one's mtime, which the ``.pyc`` records. Then ``compileall`` compiles what is left: only the files
not reused, one by one (walking the tree again to check every reused ``.pyc`` cost half of this step), or, when
nothing was reused, the whole tree on every CPU. Files that do not compile (Python-2-only test files some packages
ship) are skipped as pip does.

Arguments (one JSON line on stdin): ``venv`` (the new venv), ``previous`` (the previous release's venv, or "").
Answer: ``ok``, ``reused``, ``compiled`` (files compiled here, counted by ``.pyc`` written). Standard library
only, Python 3.8 syntax.
"""

from __future__ import annotations

import compileall
import filecmp
import glob
import importlib.util
import os
import shutil
from typing import Any

from . import _common


def site_packages(venv: str) -> str | None:
    # The venv's path is data (a root may hold * ? [ ]): only the pattern built here is expanded.
    found = sorted(glob.glob(os.path.join(glob.escape(venv), "lib", "python*", "site-packages")))
    return found[0] if found else None


def _valid_pyc(pyc: str, source: os.stat_result) -> bool:
    """A timestamp-based ``.pyc`` of this interpreter recording ``source``'s mtime and size."""
    try:
        with open(pyc, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return False
    return (
        len(header) == 16
        and header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0
        and int.from_bytes(header[8:12], "little") == int(source.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == source.st_size & 0xFFFFFFFF
    )


def _reuse_one(new: str, old: str) -> bool:
    """Copy ``old``'s valid ``.pyc`` for ``new`` when both sources are the same file or the same bytes."""
    try:
        new_stat, old_stat = os.stat(new), os.stat(old)
    except OSError:
        return False
    old_pyc, new_pyc = importlib.util.cache_from_source(old), importlib.util.cache_from_source(new)
    if not _valid_pyc(old_pyc, old_stat):
        return False
    same_inode = (new_stat.st_dev, new_stat.st_ino) == (old_stat.st_dev, old_stat.st_ino)
    if not same_inode:
        if new_stat.st_size != old_stat.st_size or os.path.exists(new_pyc) or not filecmp.cmp(new, old, False):
            return False
        os.utime(new, ns=(new_stat.st_atime_ns, old_stat.st_mtime_ns))  # this release's own file only
    try:
        try:
            _put(old_pyc, new_pyc, same_inode)
        except FileNotFoundError:  # no __pycache__ yet: the first file of its directory
            os.makedirs(os.path.dirname(new_pyc), exist_ok=True)
            _put(old_pyc, new_pyc, same_inode)
    except FileExistsError:  # it has one already (compileall decides)
        return False
    return True


def _put(old_pyc: str, new_pyc: str, same_inode: bool) -> None:
    if same_inode:
        os.link(old_pyc, new_pyc)  # the source itself is shared (uv's cache): its bytecode may be too
    else:
        partial = new_pyc + ".part"
        shutil.copyfile(old_pyc, partial)
        os.replace(partial, new_pyc)


def reuse(new_site: str, old_site: str) -> tuple[int, list[str]]:
    """Copy every reusable ``.pyc`` of ``old_site`` into ``new_site``; return how many, and the sources left to
    compile (the files ``compileall.compile_dir`` would visit: every ``.py`` outside ``__pycache__``, in
    directories reached without following a symlink). The two trees are walked side by side: one ``scandir`` per
    directory, no path arithmetic per file (a large venv has thousands of directories, most without a ``.py``)."""
    reused, left = 0, []
    pending = [(new_site, old_site)]
    while pending:
        new_dir, old_dir = pending.pop()
        try:
            with os.scandir(new_dir) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.endswith(".py") and not entry.is_dir(follow_symlinks=False):
                if _reuse_one(entry.path, old_dir + os.sep + name):
                    reused += 1
                else:
                    left.append(entry.path)
            elif name != "__pycache__" and entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, old_dir + os.sep + name))
    return reused, left


def _count_pyc(site: str) -> int:
    return sum(name.endswith(".pyc") for _, _, files in os.walk(site) for name in files)


def main(args: dict[str, Any]) -> dict[str, Any]:
    new_site = site_packages(str(args["venv"]))
    if new_site is None:
        return {"ok": False, "error": f"no site-packages under {args['venv']}"}
    old_site = site_packages(str(args["previous"])) if args.get("previous") else None
    reused, left = reuse(new_site, old_site) if old_site else (0, [])
    if not reused:
        before = _count_pyc(new_site)
        compileall.compile_dir(new_site, quiet=2, workers=0)  # all of it, on every CPU
        return {"ok": True, "reused": 0, "compiled": _count_pyc(new_site) - before}
    before = sum(os.path.exists(importlib.util.cache_from_source(source)) for source in left)
    for source in left:
        compileall.compile_file(source, quiet=2)
    after = sum(os.path.exists(importlib.util.cache_from_source(source)) for source in left)
    return {"ok": True, "reused": reused, "compiled": after - before}


if __name__ == "__main__":
    _common.serve(main)
