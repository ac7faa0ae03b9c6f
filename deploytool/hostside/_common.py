"""Helpers every host-side module shares, written once and shipped with each module that imports them.

The laptop ships a module together with the host-side modules it imports (``from . import _common``), the way
Ansible's AnsiballZ bundles ``module_utils``: `program` builds the one ``<python> -c <bootstrap>`` command that
carries them all (compressed, as data: no program text travels inside another program's arguments) and runs the
named one as ``__main__``. A module on the host runs a module shipped with it (``publish`` runs ``etc_install``,
``gunicorn_reexec`` and ``health``) with the same `program`, from the sources it was shipped with.

Here too: the layout's names (`LOCK`, `OWNER`, ..., `list_releases`), lock ownership (`lock_is_ours`), the ``PATH``
that hosts.yml commands get (`command_path`), running a program and reading its JSON answer (`run`,
`json_answer`, `answer_of`), sudo that is given the password only when it asks (`Sudo`), the steps a module
reports (`Steps`), `detach` and the answer footer (`serve`). Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from typing import Any, BinaryIO, Callable, NoReturn

PACKAGE = "deploytool.hostside"
EXIT_FAILED = 2  # a module that ran and answered ``ok: false``: its JSON still comes back on stdout

# -- the layout's names (the laptop's `deploytool.layout` uses the same) ----------------------------------------
RELEASES = "releases"
SHARED = "shared"
CURRENT = "current"
REPO = "repo.git"
TRASH = "trash"
LOCK = "deploy.lock"
OWNER = "owner.json"
SWITCH_RECORD = "switch.json"
JOURNAL = "journal.jsonl"
DEPLOY_LOGS = "deploy-logs"  # <root>/deploy-logs/<release id>.jsonl: every step of every run of that release
ENV_FILE = ".deploytool/env.json"  # a release's app env (`deploytool.layout.ENV_FILE`)
OWNER_LIMIT = 4096  # an owner record is a few hundred bytes; a host cannot make the laptop read more
RECORD_LIMIT = 1 << 20  # publish's record holds its answer once done: its steps' output tails


def list_releases(root: str) -> list[str]:
    """Names of the directories (not symlinks, not files) under ``<root>/releases``; [] when there is none.
    Raises OSError when it exists but cannot be read."""
    try:
        entries = list(os.scandir(os.path.join(root, RELEASES)))
    except FileNotFoundError:
        return []
    return sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))


def current_link(root: str) -> str:
    """What ``<root>/current`` points at, as the host has it ("" when it is not a link)."""
    try:
        return os.readlink(os.path.join(root, CURRENT))
    except OSError:
        return ""


def owner_text(lock: str) -> str:
    """The text of the lock's ``owner.json`` (at most `OWNER_LIMIT` bytes; "" when unreadable)."""
    try:
        with open(os.path.join(lock, OWNER), "rb") as handle:
            return handle.read(OWNER_LIMIT).decode("utf-8", "replace")
    except OSError:
        return ""


def remove(path: str) -> None:
    """Remove ``path``: a directory tree, or a file or link (a hand-made lock may be either)."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def private_file(path: str, flags: int) -> BinaryIO:
    """Open ``path`` (binary) as a file only its owner may read and write: created 0600 whatever the umask, and an
    existing one of this user's narrowed to 0600."""
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        append = flags & os.O_APPEND
        return os.fdopen(fd, ("ab+" if flags & os.O_RDWR else "ab") if append else "wb")
    except BaseException:
        os.close(fd)
        raise


def not_a_real_directory(path: str) -> bool:
    """True when ``path`` exists and is not a directory itself (a symlink to one counts as not): never follow it."""
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def lock_is_ours(owner_path: str, run: str) -> bool:
    """The lock's owner record carries this run's token."""
    try:
        with open(owner_path) as handle:
            owner = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(owner, dict) and owner.get("run") == run


# -- commands --------------------------------------------------------------------------------------------------
EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
OUTPUT_LIMIT = 4000  # characters of a step's output kept (its end)
LOG_OUTPUT_LIMIT = 65536  # characters of a step's output kept in the deploy log (its end)


def command_path(path: str | None = None) -> str:
    """``PATH`` with the sbin directories appended where missing (a non-login shell on Debian lacks them:
    ``nginx: not found``)."""
    path = os.environ.get("PATH", "") if path is None else path
    parts = path.split(":") if path else []
    return ":".join(parts + [d for d in EXTRA_PATH if d not in parts])


DETACHED_SIGNALS = ("SIGHUP", "SIGINT", "SIGPIPE")  # what `detach` ignores


def process_runs(pid: object) -> bool | None:
    """Whether process ``pid`` of this host still runs (as any user); None when ``pid`` is no process id (a
    record written without one)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it runs, as another user
    return True


def default_signals() -> None:
    """In a child, before its program starts: the signals a detached module ignores are back to their defaults,
    so the programs it starts (daemons included) get a hang-up, an interrupt or a closed pipe as usual."""
    for name in DETACHED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_DFL)


def run(
    argv: list[str],
    stdin: str = "",
    timeout: float = 600.0,
    stdout_only: bool = False,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell), feeding ``stdin``; never raises for a failed, missing or late
    program (exit 127 and 124, with what happened as its output). ``stdout_only``: stderr is kept apart."""
    try:
        return subprocess.run(
            argv,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stdout_only else subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            preexec_fn=default_signals,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.output if isinstance(expired.output, str) else ""
        return subprocess.CompletedProcess(argv, 124, output + f"\n(timed out after {expired.timeout}s)", "")
    except OSError as error:
        return subprocess.CompletedProcess(argv, 127, str(error), "")


# -- the app's environment ------------------------------------------------------------------------------------
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ENV_LIMIT = 1024 * 1024  # bytes an env file may hold


def check_env(env: Any, where: str) -> dict[str, str]:
    """``env`` when it is a mapping of variable names to text without NUL; else ValueError naming ``where``."""
    if not isinstance(env, dict):
        raise ValueError(f"{where}: expected a mapping of variable names to text")
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValueError(f"{where}: {name!r:.60} is not a variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError(f"{where}: {name}'s value is not text without NUL")
    return env


def read_env(path: str) -> dict[str, str]:
    """The app's environment of a release (its env file; {} when it has none: a release made before env)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(ENV_LIMIT + 1)
    except FileNotFoundError:
        return {}
    if len(data) > ENV_LIMIT:
        raise ValueError(f"{path}: larger than {ENV_LIMIT} bytes")
    try:
        env = json.loads(data.decode("utf-8"))
    except ValueError:
        raise ValueError(f"{path}: not JSON") from None
    return check_env(env, path)


def write_env(path: str, env: dict[str, str]) -> None:
    """Write the app's environment as ``path`` (JSON, mode 0600, its directory 0700), atomically."""
    check_env(env, "env")
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    temporary = path + ".tmp"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(env, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, path)


def app_environment(env: dict[str, str], venv: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a command run for the app: this process's, the app's ``env``, ``extra`` (deploytool's
    own variables), and ``PATH`` with the sbin directories and, first, the release's ``venv/bin``."""
    environment = {**os.environ, **env, **(extra or {})}
    path = command_path(env.get("PATH", os.environ.get("PATH", "")))
    if venv:
        path = os.path.join(venv, "bin") + ":" + path
        environment["VIRTUAL_ENV"] = venv
    environment["PATH"] = path
    return environment


def run_lines(
    argv: list[str],
    stdin: str,
    timeout: float,
    on_line: Callable[[str], None],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`run` (output and errors merged, never raising), handing each line of output to ``on_line`` as it comes
    (for progress: pip says ``Collecting``/``Processing`` per package)."""
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            preexec_fn=default_signals,
            env=env,
            cwd=cwd,
        )
    except OSError as error:
        return subprocess.CompletedProcess(argv, 127, str(error), "")
    assert process.stdin is not None and process.stdout is not None
    timed_out: list[bool] = []

    def stop() -> None:
        timed_out.append(True)
        process.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    output: list[str] = []
    try:
        try:
            process.stdin.write(stdin)
            process.stdin.close()
        except OSError:
            pass
        for line in process.stdout:
            output.append(line)
            with contextlib.suppress(Exception):  # progress must never fail a step
                on_line(line)
        process.wait()
    finally:
        timer.cancel()
        process.stdout.close()
    if timed_out:
        return subprocess.CompletedProcess(argv, 124, "".join(output) + f"\n(timed out after {timeout}s)", "")
    return subprocess.CompletedProcess(argv, process.returncode, "".join(output), "")


def json_answer(stdout: str) -> dict[str, Any] | None:
    """A program's answer: its last non-empty stdout line, when that is a JSON object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def answer_of(done: subprocess.CompletedProcess[str]) -> tuple[dict[str, Any] | None, str]:
    """The JSON answer of a finished program (None if it gave none) and, for that case, what it said instead."""
    said = (done.stderr or "").strip() or (done.stdout or "").strip() or "no answer"
    return json_answer(done.stdout or ""), f"exit {done.returncode}: {said[-OUTPUT_LIMIT:]}"


def tail(output: str, lines: int = 6) -> str:
    """The last ``lines`` non-empty lines of ``output``, joined with `` | `` (for one-line messages)."""
    said = [line.strip() for line in output.splitlines() if line.strip()]
    return " | ".join(said[-lines:])


class Sudo:
    """sudo for one module run. With a password, `authenticate` runs ``sudo -S -p <prompt> -v`` and writes the
    password only when sudo shows this run's own prompt (sudo asks again after a wrong one, up to its limit);
    every command then runs with ``sudo -n`` on the credentials sudo cached for this process (sudo keys them
    by parent process when there is no terminal), so no command's stdin ever carries the password. Without a
    password only passwordless sudo works (``sudo -n``)."""

    def __init__(self, password: str | None) -> None:
        self.password = password
        self.prompt = f"[deploytool sudo password {os.urandom(8).hex()}]"
        self.authenticated = False

    def argv(self, argv: list[str]) -> list[str]:
        return ["sudo", "-n", "--", *argv]

    def authenticate(self, timeout: float = 60.0) -> tuple[bool, str]:
        """Check that sudo works for this user: (worked, what sudo said)."""
        if self.password is None:
            done = run(["sudo", "-n", "true"], timeout=timeout)
            return done.returncode == 0, done.stdout or ""
        ok, said = self.respond(["sudo", "-S", "-p", self.prompt, "-v"], timeout)
        self.authenticated = ok
        return ok, said

    def respond(self, argv: list[str], timeout: float) -> tuple[bool, str]:
        """Run ``argv`` answering each of its prompts with the password; (exit status 0, its output without
        the prompts)."""
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=default_signals,
            )
        except OSError as error:
            return False, str(error)
        assert process.stdin is not None and process.stdout is not None
        prompt, seen, answered = self.prompt.encode("utf-8"), b"", 0
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                while seen.count(prompt) > answered:
                    answered += 1
                    try:
                        process.stdin.write((self.password or "").encode("utf-8") + b"\n")
                        process.stdin.flush()
                    except OSError:
                        pass
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()
        said = seen.replace(prompt, b"").decode("utf-8", "replace")
        return process.returncode == 0, said

    def forget(self) -> None:
        """Drop the credentials `authenticate` cached (best effort)."""
        if self.authenticated:
            run(["sudo", "-k"], timeout=30)
            self.authenticated = False


# -- the deploy log --------------------------------------------------------------------------------------------
class RunLog:
    """The deploy log a module appends to as its steps end: ``spec`` (from the laptop, or None: no log) names the
    file (``path``, `DEPLOY_LOGS`/<release>.jsonl), the ``run`` and its ``action``. One JSON line per step
    (``time``, ``run``, ``action``, ``phase``, ``step``, ``ok``, ``seconds``, ``output``: its last
    `LOG_OUTPUT_LIMIT` characters), each written with one ``write`` in append mode. Best effort: a log that
    cannot be written never fails a deploy."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec if isinstance(spec, dict) and isinstance(spec.get("path"), str) else None

    def write(self, phase: str, step: str, ok: bool, seconds: float, output: str) -> None:
        if self.spec is None:
            return
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run": self.spec.get("run"),
            "action": self.spec.get("action"),
            "phase": phase,
            "step": step,
            "ok": ok,
            "seconds": seconds,
            "output": output[-LOG_OUTPUT_LIMIT:],
        }
        path = self.spec["path"]
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            pass


# -- steps ---------------------------------------------------------------------------------------------------
def announce(title: str, phase: str) -> None:
    """Say on stderr, at once, as one JSON line (``{"progress": title, "phase": phase}``), that step ``title``
    starts: the laptop shows it live on a terminal, and if the host stops answering or the connection drops, it
    can tell where it was."""
    try:
        sys.stderr.write(json.dumps({"progress": title, "phase": phase}) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class StepFailed(Exception):
    """The current step failed; `Steps` has recorded why."""


class Steps:
    """The steps of one module run as the laptop reads them: each ``step`` (its title), ``phase``, ``ok``,
    ``seconds`` and ``output`` (its end), in the answer. A failed step ends the run: ``error`` is ``<step> failed:
    <its last lines>``, the way every step failure reads."""

    def __init__(self, phase: str, timeout: float = 600.0, log: Any = None) -> None:
        self.phase = phase
        self.timeout = timeout
        self.steps: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.log = RunLog(log)
        self.logged = 0  # steps written to the log so far
        self.full = ""  # the current step's output as the log keeps it (longer than the answer's)

    @property
    def current(self) -> dict[str, Any]:
        return self.steps[-1]

    def begin(self, title: str) -> None:
        """Start step ``title``, and say so at once on stderr (`announce`)."""
        self.close()
        self.started = time.monotonic()
        self.full = ""
        self.steps.append({"step": title, "phase": self.phase, "ok": True, "seconds": 0.0, "output": ""})
        announce(title, self.phase)

    def close(self) -> None:
        if self.steps and self.logged < len(self.steps):
            step = self.current
            step["seconds"] = round(time.monotonic() - self.started, 3)
            self.log.write(step["phase"], step["step"], step["ok"], step["seconds"], self.full)
            self.logged = len(self.steps)

    def say(self, output: str) -> None:
        self.current["output"] = (self.current["output"] + output)[-OUTPUT_LIMIT:]
        self.full = (self.full + output)[-LOG_OUTPUT_LIMIT:]

    def fail(self, output: str = "") -> NoReturn:
        self.say(output)
        self.current["ok"] = False
        self.close()
        raise StepFailed(self.current["step"])

    def run(
        self,
        argv: list[str],
        stdin: str = "",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        count: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as part of the current step; a failure fails the step with its output. ``count``: output
        line prefixes to count as they come, each new count announced as ``<step> (N done)``."""
        if not count:
            done = run(argv, stdin, self.timeout, env=env, cwd=cwd)
        else:
            title, seen = self.current["step"], [0]

            def counted(line: str) -> None:
                if line.startswith(count):
                    seen[0] += 1
                    announce(f"{title} ({seen[0]} done)", self.phase)

            done = run_lines(argv, stdin, self.timeout, counted, env=env, cwd=cwd)
        if done.returncode != 0:
            self.fail(done.stdout or "")
        self.say(done.stdout or "")
        return done

    def answer(self, **fields: Any) -> dict[str, Any]:
        """The module's answer: ``ok`` unless a step failed (``failed_step`` and ``error`` then say which)."""
        self.close()
        failed = next((step for step in self.steps if not step["ok"]), None)
        answer: dict[str, Any] = {"ok": failed is None, "steps": self.steps, "failed_step": None, "error": None}
        if failed is not None:
            detail = tail(failed["output"]) or "no output"
            answer.update(failed_step=failed["step"], error="{} failed: {}".format(failed["step"], detail))
        answer.update(fields)
        return answer


# -- shipping modules ------------------------------------------------------------------------------------------
BOOTSTRAP = """import binascii, importlib.machinery, json, sys, zlib
class Shipped:
    def __init__(self, sources):
        self.sources = sources
    def find_spec(self, fullname, path=None, target=None):
        if fullname in ("deploytool", "deploytool.hostside"):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        head, _, name = fullname.rpartition(".")
        if head == "deploytool.hostside" and name in self.sources:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        head, _, name = module.__name__.rpartition(".")
        text = self.sources[name] if head == "deploytool.hostside" else ""
        exec(compile(text, "<" + module.__name__ + ">", "exec"), module.__dict__)
shipped = Shipped(json.loads(zlib.decompress(binascii.a2b_base64("{blob}")).decode("utf-8")))
sys.meta_path.insert(0, shipped)
main = sys.modules["__main__"].__dict__
main.update(__package__="deploytool.hostside", __loader__=shipped)
exec(compile(shipped.sources["{name}"], "<deploytool.hostside.{name}>", "exec"), main)
"""


def _shipped_sources() -> dict[str, str] | None:
    """The sources this module was shipped with, when it runs from a bootstrap."""
    sources = getattr(globals().get("__loader__"), "sources", None)
    return sources if isinstance(sources, dict) else None


def source(name: str) -> str:
    """The text of host-side module ``name``: as shipped, or read from this package's directory."""
    shipped = _shipped_sources()
    if shipped is not None:
        return str(shipped[name])
    if not name.isidentifier():
        raise ValueError(f"no host-side module {name!r}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    if not os.path.isfile(path):
        raise ValueError(f"no host-side module {name!r}")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


_RELATIVE_IMPORT = re.compile(r"^from \.(\w*) import (?:\(([\w,\s]+)\)|([\w, ]+))", re.MULTILINE)


def imports(text: str) -> list[str]:
    """The host-side modules ``text`` imports (``from . import x`` and ``from .x import y``, at a line's start).
    Read without ``ast``: parsing in several threads at once trips CPython 3.11's AST recursion check."""
    found = []
    for module, wrapped, names in _RELATIVE_IMPORT.findall(text):
        words = (wrapped or names).split(",")
        found.extend([module] if module else [name.strip() for name in words if name.strip()])
    return found


def bundle(name: str, read: Callable[[str], str] = source) -> dict[str, str]:
    """Module ``name`` and every host-side module it needs (its imports, theirs, ...), by name."""
    sources: dict[str, str] = {}
    pending = [name]
    while pending:
        module = pending.pop()
        if module not in sources:
            sources[module] = read(module)
            pending.extend(imports(sources[module]))
    return sources


def bootstrap(sources: dict[str, str], name: str) -> str:
    """The ``-c`` program that runs module ``name`` from ``sources`` (which `bundle` made)."""
    if not name.isidentifier() or name not in sources:
        raise ValueError(f"no host-side module {name!r}")
    data = json.dumps(sources, sort_keys=True).encode("utf-8")
    blob = binascii.b2a_base64(zlib.compress(data, 9), newline=False).decode("ascii")
    return BOOTSTRAP.replace("{blob}", blob).replace("{name}", name)


def program(python: str, name: str, *args: str) -> list[str]:
    """The argument list running host-side module ``name`` with the ``python`` given (its own arguments after)."""
    return [python, "-c", bootstrap(bundle(name), name), *args]


# -- the answer ------------------------------------------------------------------------------------------------
def detach() -> None:
    """Run to the end whatever happens to the SSH channel: a hang-up, an interrupt or a closed pipe."""
    for name in DETACHED_SIGNALS:  # the programs it starts get their defaults back (`default_signals`)
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def reply(answer: dict[str, Any]) -> None:
    """Print the answer as one JSON line, if anyone still listens."""
    try:
        sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
        sys.stdout.flush()
    except OSError:
        pass


def serve(main: Callable[[dict[str, Any]], dict[str, Any]], detached: bool = False) -> None:
    """A module's ``__main__``: read its arguments (one JSON line on stdin), answer, and exit 0, or
    `EXIT_FAILED` when the answer says ``ok: false``. ``detached``: run to the end whatever happens to the
    channel (`detach`)."""
    if detached:
        detach()
    answer = main(json.loads(sys.stdin.readline()))
    reply(answer)
    sys.exit(EXIT_FAILED if answer.get("ok") is False else 0)
