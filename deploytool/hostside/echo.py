"""Host-side module ``echo``: answers what it was given and what runs it (used to test the module runner).

Every host-side module has this shape: stdlib only, Python 3.8 syntax, ``main(args) -> dict``, and
``_common.serve(main)`` at the bottom, which reads the JSON arguments from stdin (one line), prints one line of
JSON and exits 2 when it says ``ok: false``.
"""

from __future__ import annotations

import platform
from typing import Any

from . import _common


def main(args: dict[str, Any]) -> dict[str, Any]:
    if args.get("fail"):
        return {"ok": False, "error": str(args["fail"])}
    return {"ok": True, "args": args, "python": platform.python_version()}


if __name__ == "__main__":
    _common.serve(main)
