"""Host-side module ``check``: the first step of a deploy or rollback on a host: probe, make the layout, lock.

Steps (each reported, the first failure ends the run): git is installed; the deploy user is not root (unless
``allow_root``); sudo works (``sudo``: with ``password``, given to sudo only when it asks, else passwordless);
the deploy root's directories exist and it is writable, with a bare ``repo.git`` for the laptop to push into and
``current`` a symlink if it exists; then the lock is taken and the state read (the ``state`` module).

Arguments (one JSON line on stdin): ``root``, ``etc_root``, ``allow_root``, ``sudo``, ``password``, ``lock``
(the owner record, its ``run`` token included), ``timeout`` (seconds for each command). Answer: the ``state``
module's (``current_link``, ``releases``, ``journal``, ``python``), or its refusal (``reason``: ``locked``,
``no_space``, ...), plus ``steps``, ``failed_step`` and ``error``. Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from . import _common, state
from ._common import CURRENT, RELEASES, REPO, SHARED

PHASE = "check"


def tools(steps: _common.Steps) -> None:
    steps.begin("checking for git and python")
    if shutil.which("git") is None:
        steps.fail("git is not installed on the host")


def user(steps: _common.Steps) -> None:
    steps.begin("checking the deploy user")
    if os.getuid() == 0:
        steps.fail("logged in as root; deploy as an unprivileged user, or set allow_root: true for this stage")


def sudo(steps: _common.Steps, password: str | None) -> None:
    steps.begin("checking the sudo password" if password is not None else "checking passwordless sudo")
    sudo = _common.Sudo(password)
    ok, said = sudo.authenticate(steps.timeout)
    sudo.forget()
    if not ok:
        steps.fail(said)


def layout(steps: _common.Steps, root: str, etc_root: str) -> None:
    steps.begin(f"making the deploy root {root}")
    try:
        for name in (RELEASES, SHARED):
            os.makedirs(os.path.join(root, name), exist_ok=True)
    except OSError as error:
        steps.fail(str(error))
    with contextlib.suppress(OSError):  # it may be root's to make (sudo installs the config)
        os.makedirs(etc_root, exist_ok=True)
    if not os.access(root, os.W_OK):
        steps.fail(f"{root} is not writable")
    repo = os.path.join(root, REPO)
    if not os.path.isdir(repo):
        steps.run(["git", "init", "-q", "--bare", repo])
    current = os.path.join(root, CURRENT)
    if os.path.lexists(current) and not os.path.islink(current):
        steps.fail(f"{current} is not a symlink; move it away (deploytool switches current by renaming a link)")


def main(args: dict[str, Any]) -> dict[str, Any]:
    steps = _common.Steps(PHASE, float(args.get("timeout") or 120))
    root = str(args["root"])
    try:
        tools(steps)
        if not args.get("allow_root"):
            user(steps)
        if args.get("sudo"):
            sudo(steps, args.get("password"))
        layout(steps, root, str(args["etc_root"]))
        steps.begin("taking the lock and reading the state")
        found = state.main({"root": root, "lock": args["lock"]})
    except _common.StepFailed:
        return steps.answer()
    if found.get("ok") is not True:
        steps.current.update(ok=False, output=str(found.get("error")))
        return steps.answer(**found)  # its reason and error, as the state module says them
    return steps.answer(**{key: value for key, value in found.items() if key != "ok"})


if __name__ == "__main__":
    _common.serve(main)
