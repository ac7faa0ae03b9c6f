"""Host-side module ``etc_read``: the content and mode of the files a render would replace, for diffs.

Arguments: ``{"paths": [absolute paths]}``. Answer: ``{"ok": true, "files": {path: null | {"data": base64,
"mode": int} | {"error": text}}}`` (null: the file does not exist). Symlinks are followed, as the installer
writes through them. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import base64
import os
import stat
from typing import Any

from . import _common


def read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return {"data": base64.b64encode(data).decode("ascii"), "mode": stat.S_IMODE(os.stat(path).st_mode)}
    except FileNotFoundError:
        return None
    except OSError as error:
        return {"error": error.strerror or str(error)}


def main(args: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "files": {path: read(path) for path in args["paths"]}}


if __name__ == "__main__":
    _common.serve(main)
