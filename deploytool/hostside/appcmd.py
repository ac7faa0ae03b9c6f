"""Host-side module ``appcmd``: run the app's commands in a release (the ``migrate`` step), while the lock is held.

Each command runs with ``sh -c`` in the release's directory, its venv first on ``PATH`` and the app's env (read
from the release's env file, mode 0600: it never travels on a command line) and deploytool's variables set; the
first failure ends the run with its last output lines. It refuses to start unless the lock is this run's.

Arguments (one JSON line on stdin): ``path`` (the release's directory), ``env_file``, ``venv``, ``command_env``,
``commands``, ``phase`` (the steps' phase), ``lock_owner``, ``run``, ``timeout``. Answer: ``ok``, ``steps``,
``failed_step``, ``error``. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

from typing import Any

from . import _common


def main(args: dict[str, Any]) -> dict[str, Any]:
    steps = _common.Steps(str(args.get("phase") or "migrate"), float(args.get("timeout") or 600))
    try:
        steps.begin("checking the lock and the release")
        if not _common.lock_is_ours(args["lock_owner"], args["run"]):
            steps.fail("the lock is not this run's any more (was it cleared with fab unlock?); nothing was run")
        try:
            env = _common.read_env(args["env_file"])
        except (OSError, ValueError) as error:
            steps.fail(f"the app's env: {error}")
        environment = _common.app_environment(env, args["venv"], args.get("command_env") or {})
        for command in args["commands"]:
            steps.begin(str(args.get("phase") or "migrate") + ": " + command)
            steps.run(["sh", "-c", command], env=environment, cwd=args["path"])
    except _common.StepFailed:
        pass
    return steps.answer()


if __name__ == "__main__":
    _common.serve(main)
