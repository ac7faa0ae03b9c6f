"""The one sanitiser for what reaches the operator's terminal (and ``--json``): control characters shown escaped.

Text that came from a host (module errors, a failed step's output, journal fields, health-check answers, the
host's config files in a diff) may hold ANSI/OSC escape sequences that retitle a terminal, erase lines or
hide text; and a URL may carry a password (``https://user:secret@index/``). Everything a task prints goes
through `for_terminal` (credentials redacted, control characters escaped): the task boundary
(`errors.task_boundary`) wraps ``sys.stdout`` and the ``Error:`` line with it, and `clean_document` applies it to
every string of a ``--json`` document before it is serialised, so ``jq -r`` shows the same text as the table.
The app's secrets (`add_secrets`) are masked here too, as ``***``: in output, ``--json``, and the journal lines
and lock records sent to hosts (`mask_secrets`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

#: Values shorter than this are not masked (masking "1" or "on" would garble every line; such a value is no
#: secret anyway).
MIN_SECRET = 4
_secrets: list[str] = []
_secrets_lock = threading.Lock()
MASK = "***"

#: Control characters (Unicode category Cc: C0 but newline and tab, DEL, C1) and the format characters that
#: reorder what is shown (bidirectional marks, overrides and isolates: "Trojan Source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character (ESC, CSI, BEL, CR, backspace, DEL, C1...) and bidi override
    written as a visible escape (``\\x1b``, ``\\u202e``); newlines and tabs are kept. Linear in ``len(text)``."""
    return _UNSAFE.sub(_escaped, text)


_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text) if "@" in text else text


def add_secrets(values: Iterable[str]) -> None:
    """Mask every one of ``values`` (at least `MIN_SECRET` characters) in whatever is printed or serialised from
    now on (the app's secrets, read by `appsecrets.load`)."""
    global _secrets
    with _secrets_lock:
        known = set(_secrets) | {value for value in values if len(value) >= MIN_SECRET}
        _secrets = sorted(known, key=len, reverse=True)  # the longest first: a secret inside another


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for value in _secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


def holds_secret(text: str) -> bool:
    """Whether ``text`` holds a registered secret."""
    return any(value in text for value in _secrets)


def for_terminal(text: str) -> str:
    """What a task prints: secrets masked (`mask_secrets`), URLs' credentials redacted (`redact_credentials`),
    control characters escaped."""
    return escape_controls(redact_credentials(mask_secrets(text)))


def clean_document(value: Any) -> Any:
    """A JSON-able value with `for_terminal` applied to every string in it, keys included."""
    if isinstance(value, str):
        return for_terminal(value)
    if isinstance(value, dict):
        return {clean_document(key): clean_document(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_document(item) for item in value]
    return value
