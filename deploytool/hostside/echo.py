"""Host-side module ``echo``: answers what it was given and what runs it (used to test the module runner).

Every host-side module has this shape: stdlib only, Python 3.8 syntax, ``main(args) -> dict``, and the two
lines at the bottom that read the JSON arguments from stdin (one line) and print one line of JSON.
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any


def main(args: dict[str, Any]) -> dict[str, Any]:
    if args.get("fail"):
        return {"ok": False, "error": str(args["fail"])}
    return {"ok": True, "args": args, "python": platform.python_version()}


if __name__ == "__main__":
    answer = main(json.loads(sys.stdin.readline()))
    print(json.dumps(answer, sort_keys=True))
    sys.exit(0 if answer.get("ok", True) else 2)
