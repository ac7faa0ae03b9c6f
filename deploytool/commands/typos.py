"""Typos on the ``fab`` command line (``fab delpoy``, ``fab deploy --stgae x``, ``fab deploy --stage`` with no value)
end in deploytool's one-line ``Error: ...``, with a suggestion where one is close, and exit status 1.

Invoke's `Program` parses the task part of the command line after it has imported the fabfile (which imports
deploytool), and prints a `ParseError` it raises as it is, with exit status 1. A user's plain ``fab`` is Fabric's
own `Program`, which a fabfile cannot replace; what deploytool can do from the import is to wrap Invoke's
`Parser.parse_argv` so that the `ParseError` it raises carries a message of ours. `install` does that once; any
other parse error keeps Invoke's text, prefixed with ``Error:``. Typos in Fabric's own options that come before
the fabfile is loaded (``fab --colelction x``) are Invoke's to report, as ``fab --help <task>`` of an unknown task.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable
from typing import Any

from invoke.exceptions import ParseError
from invoke.parser.context import ParserContext
from invoke.parser.parser import Parser

from ..reporting.terminal import for_terminal

_UNKNOWN = re.compile(r"No idea what (.+) is!")
_NO_VALUE = re.compile(r"Flag <Argument: ([^ >]+)[^>]*> needed value and was not given one!")
_INSTALLED = "_deploytool_typos"


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flag(name: str) -> str:
    name = name.replace("_", "-")
    return f"-{name}" if len(name) == 1 else f"--{name}"


def _flags_of(context: ParserContext | None) -> list[str]:
    """Every flag ``context`` takes, under each of its names."""
    if context is None:
        return []
    return [_flag(str(name)) for argument in context.args.values() for name in argument.names]


def _token(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


def explain(parser: Parser, error: ParseError) -> str:
    """The ``Error: ...`` line for ``error``, raised by ``parser``."""
    message = str(error)
    context: ParserContext | None = error.context
    task = context.name if context is not None and context.name else None
    where = f"fab {task}: " if task else ""
    options_help = f"; fab {task} --help shows its options" if task else "; fab --help shows fab's options"
    core_flags = _flags_of(parser.initial)
    unknown = _UNKNOWN.fullmatch(message)
    if unknown:
        token = _token(unknown.group(1))
        if token.startswith("-"):
            flags = [*_flags_of(context), *core_flags]
            long_flags = [flag for flag in flags if flag.startswith("--")]
            return f"Error: {where}no option {token!r}{_suggest(token, long_flags)}{options_help}"
        tasks = [str(name) for name in parser.contexts]
        what = f"no task {token!r}" if not task else f"{where}{token!r} is neither a task nor an option of {task}"
        return f"Error: {what}{_suggest(token, tasks)}; fab --list shows every task"
    no_value = _NO_VALUE.fullmatch(message)
    if no_value:
        flag = _flag(no_value.group(1))
        return f"Error: {where}{flag} needs a value (give it as {flag} VALUE){options_help}"
    return f"Error: {where}{message}"


def install() -> None:
    """Wrap `Parser.parse_argv` (once) so that its `ParseError` reads as deploytool's ``Error:`` line."""
    if getattr(Parser, _INSTALLED, False):
        return
    original = Parser.parse_argv

    def parse_argv(self: Parser, argv: list[str]) -> Any:
        try:
            return original(self, argv)
        except ParseError as error:
            raise ParseError(for_terminal(explain(self, error)), error.context) from None

    setattr(Parser, "parse_argv", parse_argv)  # noqa: B010 - mypy refuses assigning to a method
    setattr(Parser, _INSTALLED, True)
