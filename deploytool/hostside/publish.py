"""Host-side module ``publish``: make a release live on this host, wholly or not at all, while the lock is held.

Steps: install the release's config under the etc root (the ``etc_install`` module, through sudo when asked),
run the ``validate`` commands, swap ``current`` to the release (a new link renamed over the old), run the
``after_switch`` commands, restart the app server (``restart``: commands, or gunicorn's graceful re-exec by the
``gunicorn_reexec`` module, or its ``start`` commands when no master runs) and wait for the ``health`` check
to pass (the ``health`` module: an HTTP URL answering 2xx, or a command exiting 0, tried until its deadline).
Rejected config is put back before ``current`` moves, so a failure before the swap leaves the host wholly on the
old release; after the swap it is wholly on the new one (the laptop decides whether to switch back, which is
this module again with the releases exchanged: restarted and checked too). ``release: null`` means "no release":
the config is removed and ``current`` with it (going back after a failed first deploy).

Once started the module runs to its end even if the laptop or the network goes away: it ignores SIGHUP,
SIGINT and SIGPIPE, and writes what it is doing to a record inside the lock (``record``), so a later run or
``fab unlock`` can tell where the host stands. It refuses to start unless the lock is this run's.

Arguments (one JSON line on stdin): ``run``, ``lock_owner``, ``record``, ``current``, ``release``, ``link``,
``previous``, ``entry`` (the journal line of this switch, kept in the record for a run that
loses the host), ``etc`` (``install`` and ``restore``: ``etc_install``'s argument lists), ``sudo``,
``password`` (given to sudo only when it asks: `_common.Sudo`), ``validate``, ``after_switch``, ``restart``
(``commands``; or ``gunicorn`` with ``pidfile`` and ``timeout``, and ``start``), ``health`` (``url`` or
``command``, ``contains``, ``timeout``, ``deadline``, ``interval``) or ``health_checks`` (a list of them, run in
order), ``env`` (deploytool's variables), ``app_env`` (the release's env file: its variables reach every command
and check, through `envexec`, never on a command line), ``command_timeout``. The modules it
runs (``etc_install``, ``gunicorn_reexec``, ``health``) are shipped with it: it imports them.
Answer: ``ok``, ``switched`` (``current`` moved), ``current`` (the release it names now, or null), ``failed_step``,
``error``, ``steps`` (``step``, ``phase``: ``publish``, ``restart`` or ``health``, ``ok``, ``seconds``,
``output`` each). Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from . import _common, envexec, etc_install, gunicorn_reexec, health

# The phase each step belongs to (the laptop shows one event per phase; a revert's main phase is its own).
PUBLISH, RESTART, HEALTH = "publish", "restart", "health"


class Failed(Exception):
    """A step failed; its output is already recorded."""


class Publish:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.steps: list[dict[str, Any]] = []
        self.switched = False
        self.sudo = _common.Sudo(args.get("password")) if args.get("sudo") else None

    # -- running things -------------------------------------------------------------------------------------

    def execute(
        self,
        argv: list[str],
        stdin: str = "",
        timeout: float | None = None,
        stdout_only: bool = False,
        privileged: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command (through ``sudo -n`` when the stage asks for it and ``privileged``: `authenticate`
        has given sudo the password, if any), never raising for a failed one."""
        if privileged and self.sudo is not None:
            argv = self.sudo.argv(argv)
        limit = timeout or float(self.args.get("command_timeout") or 600)
        return _common.run(argv, stdin, limit, stdout_only=stdout_only)

    def note(self, step: str, ok: bool, started: float, output: str, phase: str = PUBLISH) -> None:
        self.steps.append(
            {
                "step": step,
                "phase": phase,
                "ok": ok,
                "seconds": round(time.monotonic() - started, 3),
                "output": output[-_common.OUTPUT_LIMIT :],
            }
        )

    def run(self, step: str, argv: list[str], phase: str = PUBLISH) -> subprocess.CompletedProcess[str]:
        """Run one command as step ``step``, recording its output; never raises for a failed command."""
        started = time.monotonic()
        done = self.execute(argv)
        self.note(step, done.returncode == 0, started, done.stdout or "", phase)
        return done

    def shell_argv(self, command: str) -> list[str]:
        """A hosts.yml command, run by ``sh`` with the release named in its environment and a PATH that has the
        sbin directories."""
        env = [f"{key}={value}" for key, value in sorted(self.args.get("env", {}).items())]
        env.append("PATH=" + _common.command_path())
        argv = ["env", *env, "sh", "-c", command]
        app_env = self.args.get("app_env") or ""
        if not app_env:
            return argv
        # The app's env reaches the command from the release's env file, read by `envexec` (through sudo too):
        # only the file's path is on a command line.
        return _common.program(sys.executable, _name(envexec), app_env, "", "", *argv)

    def shell(self, step: str, command: str, phase: str = PUBLISH) -> subprocess.CompletedProcess[str]:
        return self.run(step, self.shell_argv(command), phase)

    def etc(self, step: str, which: str) -> subprocess.CompletedProcess[str]:
        return self.run(step, _common.program(sys.executable, _name(etc_install), *self.args["etc"][which]))

    def authenticate(self) -> None:
        """Give sudo the password (only if it asks), or check passwordless sudo, before anything changes."""
        if self.sudo is None:
            return
        started = time.monotonic()
        ok, said = self.sudo.authenticate()
        if not ok:
            step = "checking the sudo password" if self.sudo.password is not None else "checking passwordless sudo"
            self.note(step, False, started, said)
            raise Failed()

    # -- the steps ------------------------------------------------------------------------------------------

    def record(self, state: str) -> None:
        """Say where this host stands, inside the lock, atomically (a crash leaves the old record or the new)."""
        path = self.args["record"]
        data = {
            "run": self.args["run"],
            "release": self.args.get("release"),
            "previous": self.args.get("previous"),
            "state": state,
            "entry": self.args.get("entry"),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        }
        temporary = path + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(json.dumps(data, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def restore_config(self) -> None:
        done = self.etc("restoring the previous config", "restore")
        if done.returncode != 0:
            self.steps[-1]["output"] += "\nrestoring the previous config failed too"

    def install_config(self) -> None:
        done = self.etc("installing config", "install")
        if done.returncode == etc_install.EXIT_REFUSED:
            raise Failed()  # refused before changing anything: nothing to put back
        if done.returncode != 0:
            self.restore_config()
            raise Failed()
        for command in self.args.get("validate", []):
            if self.shell("validating config: " + command, command).returncode != 0:
                self.restore_config()
                raise Failed()

    def swap(self) -> None:
        """Point ``current`` at the release: a new link renamed over the old one, so it is never missing."""
        started = time.monotonic()
        current, link = self.args["current"], self.args.get("link")
        temporary = "{}.{}.tmp".format(current, self.args.get("release") or "none")
        step: dict[str, Any] = {
            "step": "switching current to {}".format(self.args.get("release") or "no release"),
            "phase": PUBLISH,
            "output": "",
        }
        created = False
        try:
            if link is None:
                if os.path.lexists(current):
                    os.unlink(current)
            else:
                if os.path.islink(temporary):  # left by an earlier, interrupted switch
                    os.unlink(temporary)
                os.symlink(link, temporary)
                created = True
                os.replace(temporary, current)
            self.switched = True
        except OSError as error:
            step["output"] = str(error)
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        step.update(ok=self.switched, seconds=round(time.monotonic() - started, 3))
        self.steps.append(step)
        if not self.switched:
            self.restore_config()
            raise Failed()

    def after_switch(self) -> None:
        for command in self.args.get("after_switch", []):
            if self.shell("after-switch command: " + command, command).returncode != 0:
                raise Failed()

    def restart(self) -> None:
        """Restart the app server so that it runs the release ``current`` names now (or start it)."""
        restart = self.args.get("restart") or {}
        for command in restart.get("commands", []):
            if self.shell("restarting: " + command, command, RESTART).returncode != 0:
                raise Failed()
        gunicorn = restart.get("gunicorn")
        if gunicorn and not self.reexec(gunicorn):
            for command in restart.get("start", []):
                if self.shell("starting: " + command, command, RESTART).returncode != 0:
                    raise Failed()

    def program(
        self, module: str, request: dict[str, Any], timeout: float, privileged: bool = True
    ) -> tuple[dict[str, Any] | None, str]:
        """Run a host-side module shipped with this one on one JSON line: its JSON answer (None if it gave none)
        and, for that case, what it said instead."""
        argv = _common.program(sys.executable, module)
        done = self.execute(argv, json.dumps(request) + "\n", timeout, stdout_only=True, privileged=privileged)
        return _common.answer_of(done)

    def reexec(self, gunicorn: dict[str, Any]) -> bool:
        """gunicorn's graceful re-exec (the ``gunicorn_reexec`` module); False when no master runs to re-exec."""
        started, step = time.monotonic(), "graceful restart (gunicorn USR2): " + gunicorn["pidfile"]
        request = {"pidfile": gunicorn["pidfile"], "timeout": gunicorn["timeout"]}
        answer, said = self.program(_name(gunicorn_reexec), request, float(gunicorn["timeout"]) + 30)
        if answer is None:
            self.note(step, False, started, said, RESTART)
            raise Failed()
        output = str(answer.get("output") or "") + ("\n" + str(answer["error"]) if answer.get("error") else "")
        if answer.get("ok") is not True:
            self.note(step, False, started, output, RESTART)
            raise Failed()
        if answer.get("running") is not True:
            return False
        self.note(step, True, started, output, RESTART)
        return True

    def health(self) -> None:
        """Wait for every health check to pass (a host with several roles has several), one after the other."""
        checks = self.args.get("health_checks") or ([self.args["health"]] if self.args.get("health") else [])
        for check in checks:
            self.health_check(check)

    def health_check(self, check: dict[str, Any]) -> None:
        """Wait for one health check to pass (the ``health`` module retries until its deadline), as the deploy
        user: a check needs no privilege; the app's env is in its environment (given on stdin)."""
        started = time.monotonic()
        what = "health check: " + str(check.get("url") or check.get("command"))
        try:
            app_env = _common.read_env(self.args["app_env"]) if self.args.get("app_env") else {}
        except (OSError, ValueError) as error:
            self.note(what, False, started, f"the app's env: {error}", HEALTH)
            raise Failed() from None
        request = dict(check, env={**app_env, **self.args.get("env", {})})
        limit = float(check["deadline"]) + float(check["timeout"]) + 30
        answer, said = self.program(_name(health), request, limit, privileged=False)
        if answer is None:
            self.note(what, False, started, "the check did not answer: " + said, HEALTH)
            raise Failed()
        ok = answer.get("ok") is True
        outcome = "passed ({} attempts); last: {}".format(answer.get("attempts"), answer.get("last"))
        self.note(what, ok, started, outcome if ok else str(answer.get("error")), HEALTH)
        if not ok:
            raise Failed()

    def answer(self, error: str | None = None) -> dict[str, Any]:
        failed = next((step["step"] for step in self.steps if not step["ok"]), None)
        if failed and error is None:
            error = f"{failed} failed"
        current = self.args.get("release") if self.switched else self.args.get("previous")
        return {
            "ok": error is None,
            "switched": self.switched,
            "current": current,
            "failed_step": failed,
            "error": error,
            "steps": self.steps,
        }

    def main(self) -> dict[str, Any]:
        if not _common.lock_is_ours(self.args["lock_owner"], self.args["run"]):
            return self.answer("the lock is not this run's any more (was it cleared with fab unlock?); nothing changed")
        self.record("publishing")
        try:
            self.authenticate()
            self.install_config()
            self.swap()
            self.record("switched")
            self.after_switch()
            self.restart()
            self.health()
        except Failed:
            pass
        except Exception as error:  # a bug or an odd host: still answer, saying whether current moved
            result = self.answer(f"unexpected {type(error).__name__}: {error}")
            self.record("switched" if self.switched else "not switched")
            return result
        result = self.answer()
        self.record("published" if result["ok"] else ("switched" if self.switched else "not switched"))
        return result


def _name(module: Any) -> str:
    """A host-side module's own name (``health`` for ``deploytool.hostside.health``)."""
    return str(module.__name__).rpartition(".")[2]


def main(args: dict[str, Any]) -> dict[str, Any]:
    publish = Publish(args)
    try:
        return publish.main()
    finally:
        if publish.sudo is not None:
            publish.sudo.forget()


if __name__ == "__main__":
    _common.serve(main, detached=True)
