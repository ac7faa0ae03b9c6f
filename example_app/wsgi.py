"""A minimal WSGI application: ``gunicorn example_app.wsgi:application``.

It answers every request with the release it runs from, so a deploy or rollback is visible with curl.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent.parent / ".deploytool.json"


def release_info() -> dict[str, str]:
    """The manifest deploytool wrote into this release, or a note that this is not a deployed copy."""
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {"release": "not deployed"}
    return {key: str(data.get(key, "")) for key in ("app", "release", "commit", "host", "stage")}


def application(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    body = json.dumps({**release_info(), "pid": os.getpid()}).encode() + b"\n"
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
