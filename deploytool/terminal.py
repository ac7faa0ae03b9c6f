"""The one sanitiser for what reaches the operator's terminal (and ``--json``): control characters shown escaped.

Text that came from a host (module errors, a failed step's output, journal fields, health-check answers, the
host's config files in a diff) may hold ANSI/OSC escape sequences that retitle a terminal, erase lines or
hide text; and a URL may carry a password (``https://user:secret@index/``). Everything a task prints goes
through `for_terminal` (credentials redacted, control characters escaped): the task boundary
(`errors.task_boundary`) wraps ``sys.stdout`` and the ``Error:`` line with it, and `clean_document` applies it to
every string of a ``--json`` document before it is serialised, so ``jq -r`` shows the same text as the table.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

#: Kept as they are: the line structure of what is printed (a tab only moves the cursor right).
KEPT = frozenset("\n\t")
#: Format characters that reorder what is shown (bidirectional overrides and isolates, "Trojan Source").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    return ch not in KEPT and (unicodedata.category(ch) == "Cc" or ch in _BIDI)


def escape_controls(text: str) -> str:
    """``text`` with every control character (ESC, CSI, BEL, CR, backspace, DEL, C1...) and bidi override
    written as a visible escape (``\\x1b``, ``\\u202e``); newlines and tabs are kept. Linear in ``len(text)``."""
    if text.isprintable():  # the common case: nothing to do (newlines and tabs are not printable: checked below)
        return text
    return "".join(_escaped(ch) if _unsafe(ch) else ch for ch in text)


_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text) if "@" in text else text


def for_terminal(text: str) -> str:
    """What a task prints: URLs' credentials redacted (`redact_credentials`), control characters escaped."""
    return escape_controls(redact_credentials(text))


def clean_document(value: Any) -> Any:
    """A JSON-able value with `for_terminal` applied to every string in it, keys included."""
    if isinstance(value, str):
        return for_terminal(value)
    if isinstance(value, dict):
        return {clean_document(key): clean_document(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_document(item) for item in value]
    return value
