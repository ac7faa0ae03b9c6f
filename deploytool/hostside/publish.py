"""Host-side module ``publish``: make a release live on this host, wholly or not at all, while the lock is held.

Steps: install the release's config under the etc root (the ``etc_install`` program, through sudo when asked),
run the ``validate`` commands, swap ``current`` to the release (a new link renamed over the old), then run the
``after_switch`` commands. Rejected config is put back before ``current`` moves, so a failure before the swap
leaves the host wholly on the old release; after the swap it is wholly on the new one (the laptop decides
whether to switch back, which is this module again with the releases exchanged). ``release: null`` means "no
release": the config is removed and ``current`` with it (going back after a failed first deploy).

Once started the module runs to its end even if the laptop or the network goes away: it ignores SIGHUP,
SIGINT and SIGPIPE, and writes what it is doing to a record inside the lock (``record``), so a later run or
``fab unlock`` can tell where the host stands. It refuses to start unless the lock is this run's.

Arguments (one JSON line on stdin): ``run``, ``lock_owner``, ``record``, ``current``, ``release``, ``link``,
``previous``, ``entry`` (the journal line of this switch, kept in the record for a run that
loses the host), ``etc`` (``program``, ``python``, ``install`` and ``restore`` argument lists), ``sudo``,
``password``, ``validate``, ``after_switch``, ``env``, ``command_timeout``.
Answer: ``ok``, ``switched`` (``current`` moved), ``current`` (the release it names now, or null), ``failed_step``,
``error``, ``steps`` (``step``, ``ok``, ``seconds``, ``output`` each). Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
OUTPUT_LIMIT = 4000  # characters of a step's output kept (its end)
EXIT_REFUSED = 3  # etc_install: refused before changing anything


class Failed(Exception):
    """A step failed; its output is already recorded."""


class Publish:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.steps: list[dict[str, Any]] = []
        self.switched = False

    # -- running things -------------------------------------------------------------------------------------

    def privileged(self, argv: list[str]) -> list[str]:
        """``argv`` through sudo when the stage asks for it: ``-k -S`` reads the password we feed (every time, so
        the command never sees it), ``-n`` when there is none (passwordless sudo)."""
        if not self.args.get("sudo"):
            return argv
        if self.args.get("password") is not None:
            return ["sudo", "-k", "-S", "-p", "", "--", *argv]
        return ["sudo", "-n", "--", *argv]

    def run(self, step: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run one command as step ``step``, recording its output; never raises for a failed command."""
        started = time.monotonic()
        password = self.args.get("password")
        feed = password + "\n" if self.args.get("sudo") and password is not None else ""
        try:
            done = subprocess.run(
                self.privileged(argv),
                input=feed,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=float(self.args.get("command_timeout") or 600),
            )
        except subprocess.TimeoutExpired as expired:
            output = expired.output if isinstance(expired.output, str) else ""
            done = subprocess.CompletedProcess(argv, 124, output + f"\n(timed out after {expired.timeout}s)")
        except OSError as error:
            done = subprocess.CompletedProcess(argv, 127, str(error))
        self.steps.append(
            {
                "step": step,
                "ok": done.returncode == 0,
                "seconds": round(time.monotonic() - started, 3),
                "output": (done.stdout or "")[-OUTPUT_LIMIT:],
            }
        )
        return done

    def shell(self, step: str, command: str) -> subprocess.CompletedProcess[str]:
        """A hosts.yml command, run by ``sh`` with the release named in its environment and a PATH that has the
        sbin directories (a non-login shell on Debian lacks them: ``nginx: not found``)."""
        env = [f"{key}={value}" for key, value in sorted(self.args.get("env", {}).items())]
        path = os.environ.get("PATH", "")
        parts = path.split(":") if path else []
        env.append("PATH=" + ":".join(parts + [d for d in EXTRA_PATH if d not in parts]))
        return self.run(step, ["env", *env, "sh", "-c", command])

    def etc(self, step: str, which: str) -> subprocess.CompletedProcess[str]:
        etc = self.args["etc"]
        return self.run(step, [etc["python"], "-c", etc["program"], *etc[which]])

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
        if done.returncode == EXIT_REFUSED:
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

    def lock_is_ours(self) -> bool:
        try:
            with open(self.args["lock_owner"]) as handle:
                owner = json.load(handle)
        except (OSError, ValueError):
            return False
        return isinstance(owner, dict) and owner.get("run") == self.args["run"]

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
        if not self.lock_is_ours():
            return self.answer("the lock is not this run's any more (was it cleared with fab unlock?); nothing changed")
        self.record("publishing")
        try:
            self.install_config()
            self.swap()
            self.record("switched")
            self.after_switch()
        except Failed:
            pass
        except Exception as error:  # a bug or an odd host: still answer, saying whether current moved
            result = self.answer(f"unexpected {type(error).__name__}: {error}")
            self.record("switched" if self.switched else "not switched")
            return result
        result = self.answer()
        self.record("published" if result["ok"] else ("switched" if self.switched else "not switched"))
        return result


def main(args: dict[str, Any]) -> dict[str, Any]:
    return Publish(args).main()


def detach() -> None:
    """Run to the end whatever happens to the SSH channel: a hang-up, an interrupt or a closed pipe."""
    for name in ("SIGHUP", "SIGINT", "SIGPIPE"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def reply(answer: dict[str, Any]) -> None:
    """Print the answer if anyone still listens (the record inside the lock has it either way)."""
    try:
        sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
        sys.stdout.flush()
    except OSError:
        pass


if __name__ == "__main__":
    detach()
    reply(main(json.loads(sys.stdin.readline())))
