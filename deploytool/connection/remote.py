"""Payloads for remote commands: a stdin stream Invoke copies in large chunks.

Every remote step is a host-side module (`deploytool.connection.hostrun`) or one command built from an argument list; no
shell script is assembled here any more.
"""

from __future__ import annotations

import io


class ChunkedStream(io.StringIO):
    """A stdin payload that Invoke copies in large chunks (it asks for one byte at a time otherwise)."""

    def read(self, size: int | None = -1) -> str:
        return super().read(65536)
