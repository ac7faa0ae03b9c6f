"""Host-side program ``envexec``: run a command for the app with the app's environment, which never travels on a
command line.

``python3 -c <bootstrap> ENV_FILE DIRECTORY VENV COMMAND...``: read the release's env file (``ENV_FILE``, JSON,
mode 0600; none: an empty env), change to ``DIRECTORY`` and replace this process with ``COMMAND`` (looked up on
``PATH``), its environment this one's plus the app's, ``PATH`` starting with ``VENV/bin`` (when ``VENV`` is given)
and holding the sbin directories. Only the file's path is on the command line, never a value; through ``sudo`` the
file is read by the command's user. Used by ``publish`` for the hosts.yml commands and by ``fab run``. Exit 126
when the env file or directory is unusable, 127 when the command is not found. Standard library only, Python 3.8
syntax.
"""

from __future__ import annotations

import os
import signal
import sys

from . import _common

PREFIX = "deploytool envexec: "


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        sys.stderr.write(PREFIX + "usage: envexec ENV_FILE DIRECTORY VENV COMMAND...\n")
        return 2
    env_file, directory, venv, command = argv[0], argv[1], argv[2], argv[3:]
    try:
        env = _common.read_env(env_file) if env_file else {}
        if directory:
            os.chdir(directory)
    except (OSError, ValueError) as error:
        sys.stderr.write(PREFIX + f"{error}\n")
        return 126
    # This is a Python process: it started with SIGPIPE and SIGXFSZ ignored, and a program exec'd from it would
    # keep that (what subprocess's restore_signals undoes); the app's command gets every default disposition.
    _common.default_signals()
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvpe(command[0], command, _common.app_environment(env, venv))
    except OSError as error:
        sys.stderr.write(PREFIX + f"{command[0]}: {error.strerror or error}\n")
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
