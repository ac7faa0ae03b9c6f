"""Host-side module ``health``: ask the app whether it is healthy, retried until a deadline.

Run by ``publish`` after the restart (shipped with it, run as its own process) and by ``survey`` for ``fab status``
(one try: ``deadline`` 0). A check is an HTTP URL on this host that must answer 2xx (and hold ``contains``) within
``timeout`` seconds, never through a proxy, or a command that must exit 0 within ``timeout`` seconds, run by
``sh`` as the deploy user (never through sudo: a check needs no privilege) with ``env`` in its environment.
Tried every ``interval`` seconds until ``deadline`` seconds have passed.

Arguments (one JSON line on stdin): ``url`` or ``command``, ``contains``, ``timeout``, ``deadline``,
``interval``, ``env``. Answer: ``ok``, ``attempts``, ``seconds``, ``last`` (what the last try said), ``error``.
Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from . import _common

BODY_LIMIT = 65536  # bytes of an answer read to look for ``contains``


def probe_url(url: str, contains: str | None, timeout: float) -> tuple[bool, str]:
    """One GET: (passed, what it said)."""
    import urllib.request  # here: 12 ms of imports (http.client, email, ssl) a publish without a URL check skips

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # on the host: never a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            status, body = response.status, response.read(BODY_LIMIT).decode("utf-8", "replace")
    except Exception as error:  # refused, reset, timed out, 4xx/5xx (HTTPError): all mean "not healthy yet"
        return False, f"{type(error).__name__}: {error}"[:300]
    if not 200 <= status < 300:
        return False, f"HTTP {status}"
    if contains and contains not in body:
        return False, f"HTTP {status} without {contains!r}: {body.strip()[:200]}"
    return True, f"HTTP {status}"


def probe_command(command: str, env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """One run of the command: (passed, its exit status and last lines)."""
    environment = {**os.environ, **env, "PATH": _common.command_path()}
    try:
        done = subprocess.run(
            ["sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=environment,
            timeout=timeout,
            preexec_fn=_common.default_signals,
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:g}s"
    except OSError as error:
        return False, str(error)
    lines = [line.strip() for line in (done.stdout or "").splitlines() if line.strip()]
    return done.returncode == 0, "exit {}: {}".format(done.returncode, " | ".join(lines[-4:]) or "no output")


def main(args: dict[str, Any]) -> dict[str, Any]:
    url, command = args.get("url"), args.get("command")
    if not (isinstance(url, str) and url) and not (isinstance(command, str) and command):
        return {"ok": False, "attempts": 0, "seconds": 0, "last": "", "error": "no url or command to check"}
    timeout, interval = float(args.get("timeout") or 5), float(args.get("interval") or 1)
    started = time.monotonic()
    deadline, attempts = started + float(args.get("deadline") or 0), 0
    while True:
        attempts += 1
        if url:
            ok, last = probe_url(url, args.get("contains"), timeout)
        else:
            ok, last = probe_command(str(command), dict(args.get("env") or {}), timeout)
        if ok or time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    seconds = time.monotonic() - started
    error = None if ok else f"still failing after {seconds:.0f}s ({attempts} attempts); last: {last}"
    return {"ok": ok, "attempts": attempts, "seconds": round(seconds, 3), "last": last, "error": error}


if __name__ == "__main__":
    _common.serve(main)
