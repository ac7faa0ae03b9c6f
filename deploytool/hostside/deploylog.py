"""Host-side module ``deploylog``: read one release's deploy log (``fab log``), bounded.

Arguments (one JSON line on stdin): ``dir`` (``<root>/deploy-logs``), ``release`` (an id, or null: the log
written last), ``limit`` (bytes read from the end of the file). Answer: ``ok``, ``release`` (the log's release
id, null when there is none), ``text`` (its last ``limit`` bytes, decoded), ``truncated`` (the file is longer),
``size``. The laptop validates every line. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import os
import re
from typing import Any

from . import _common

LOG_NAME = re.compile(r"([0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40})\.jsonl")


def newest(directory: str) -> str | None:
    """The release whose log was written last (None: no log)."""
    found: list[tuple[float, str]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return None
    for entry in entries:
        match = LOG_NAME.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            found.append((entry.stat(follow_symlinks=False).st_mtime, match.group(1)))
    return max(found)[1] if found else None


def main(args: dict[str, Any]) -> dict[str, Any]:
    directory, limit = str(args["dir"]), int(args.get("limit") or 1 << 20)
    release = args.get("release") or newest(directory)
    if release is None:
        return {"ok": True, "release": None, "text": "", "truncated": False, "size": 0}
    if not LOG_NAME.fullmatch(f"{release}.jsonl"):
        return {"ok": False, "error": f"not a release id: {release!r}"}
    path = os.path.join(directory, f"{release}.jsonl")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {"ok": True, "release": release, "missing": True, "text": "", "truncated": False, "size": 0}
    except OSError as error:
        return {"ok": False, "error": f"cannot read {path}: {error.strerror or error}"}
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - limit))
        data = handle.read(limit)
    return {"ok": True, "release": release, "text": data.decode("utf-8", "replace"), "truncated": size > limit,
            "size": size}  # fmt: skip


if __name__ == "__main__":
    _common.serve(main)
