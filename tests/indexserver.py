"""A real index server for the tests: pypiserver (from PyPI) on loopback, uploads behind an htpasswd file.

passlib (pypiserver's htpasswd support) breaks on import when bcrypt >= 4.1 is installed (paramiko pulls it in),
so the server runs with bcrypt hidden; the password file uses the ``{SHA}`` scheme, which needs no bcrypt.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.isolation import deadline, free_port

USER, PASSWORD = "uploader", "s3cret-for-tests"
#: pypiserver's default server here is wsgiref: one thread and a listen backlog of 5, so uv's parallel requests
#: get "connection refused" and uv retries with back-off; a longer backlog queues them instead.
_START = (
    "import socketserver, sys; sys.modules['bcrypt'] = None; socketserver.TCPServer.request_queue_size = 128; "
    "from pypiserver.__main__ import main; sys.argv[0] = 'pypi-server'; sys.exit(main())"
)


@dataclass
class IndexServer:
    packages: Path  # pypiserver's package directory: files put here are served at once
    url: str  # the server's root, where uploads go (twine's --repository-url)

    @property
    def simple(self) -> str:
        return self.url + "simple/"


@contextmanager
def index_server(base: Path) -> Iterator[IndexServer]:
    """Start pypiserver on 127.0.0.1 serving ``base/packages``; uploads need USER/PASSWORD."""
    packages = base / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    (base / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    port = free_port()
    command = [
        sys.executable, "-c", _START, "run", "--host", "127.0.0.1", "--port", str(port),
        "--passwords", str(base / "htpasswd"), "--authenticate", "update", "--disable-fallback",
        "--backend", "simple-dir", "--hash-algo", "sha256", str(packages),
    ]  # fmt: skip
    log = (base / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        until = deadline(30)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pypiserver exited: {(base / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url + "simple/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > until:
                    raise RuntimeError(f"pypiserver did not start: {(base / 'server.log').read_text()}") from None
                time.sleep(0.05)
        yield IndexServer(packages, url)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
