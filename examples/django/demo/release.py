"""Which release this code runs from: the manifest deploytool writes into every release (``.deploytool.json``)."""

import json
from pathlib import Path

#: The version of this code, bumped by each example commit (v1, v2): the tests tell releases apart by it.
CODE_VERSION = "v1"
MANIFEST = Path(__file__).resolve().parent.parent / ".deploytool.json"


def release_info() -> dict:
    """app, release, commit, host and stage of this release, or a note that this is not a deployed copy."""
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {"release": "not deployed", "code": CODE_VERSION}
    info = {key: str(data.get(key, "")) for key in ("app", "release", "commit", "host", "stage")}
    return {**info, "code": CODE_VERSION}
