"""Host-side module ``build``: make ``releases/<id>`` while the lock is held, in one call.

Steps (each reported, the first failure ends the run): move the releases interrupted runs left into ``trash/``
(deleted in the background; best effort); receive the commit into the host's own repo (the objects it lacks, as
a pack the laptop sent on stdin: no second connection, no ``git push``) and check it out (``git archive`` into
``tar -x``); write the manifest; unpack the rendered config (a tar, base64 in the arguments); prepare the
installer once per host: for pip the tools venv (complete when its mark is there), for uv the pinned uv's binary
alone, fetched from the host's own mirror and checked against the sha256 the laptop knows (`uv_fetch`: complete
whenever it exists); create the release venv; install the requirements; compile bytecode (the ``bytecode``
module, shipped with this one); ``pip check``; link the shared directories; run hosts.yml's ``build`` commands
(``sh -c``, in the release, its venv first on ``PATH``, the app's env set). Every other command is an argument
list the laptop built. The app's env is written first, as the release's env file (mode 0600; it came on stdin,
never on a command line).

A failed step whose output says the disk is full, or that failed with under `LOW_SPACE` bytes free on the deploy
root's filesystem (``ensurepip`` hides its ENOSPC), is reported as ``no_space``.

Arguments (one JSON line on stdin): ``root``, ``release`` (id), ``commit``, ``path`` (the release's directory),
``repo``, ``pack`` (base64 of a git pack, or null when the repo has the commit), ``manifest`` (its text) and
``manifest_path``, ``etc_tar`` (base64, or null) and ``etc``,
``stale`` (pairs of release directory and trash path), ``trash``, ``installer`` (``tool``; for pip
``tools_venv``, ``ready``, ``make_tools``; for uv ``uv``: `uv_fetch`'s arguments), ``make_venv``, ``install``,
``check`` (argument lists), ``bytecode`` (``venv``, ``previous``), ``shared`` (pairs of shared directory and link),
``env`` and ``env_file`` (the app's env and where it goes), ``venv``, ``command_env`` (deploytool's variables),
``build`` (commands), ``timeout``, ``log`` (the deploy log each step is appended to as it ends:
`_common.RunLog`; null: none). Answer: ``ok``, ``steps``, ``failed_step``, ``error``, ``no_space``, ``removed``
(the stale releases moved away). Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from . import _common, bytecode, uv_fetch

PHASE = "build"
PACKAGE_LINES = ("Collecting ", "Processing ")  # what pip says once per package it takes (live progress)
LOW_SPACE = 2 * 1024 * 1024  # bytes: a step that failed with less than this free failed for lack of space


def remove_stale(steps: _common.Steps, stale: list[list[str]], trash: str) -> list[str]:
    """Move the releases an interrupted run left into trash/ and delete them in the background; best effort."""
    names = [os.path.basename(path) for path, _ in stale]
    steps.begin("removing incomplete releases " + ", ".join(names))
    removed: list[str] = []
    with contextlib.suppress(OSError):
        os.makedirs(trash, exist_ok=True)
    if _common.not_a_real_directory(trash):
        steps.say(f"{trash} is not a directory (a symlink?): not followed, nothing moved; remove it\n")
        return removed
    for path, into in stale:
        try:
            os.rename(path, into)
        except OSError as error:
            steps.say(f"could not move {path}: {error.strerror or error}\n")
            continue
        removed.append(os.path.basename(path))
        with open(os.devnull, "r+b") as null:
            subprocess.Popen(["rm", "-rf", "--", into], stdin=null, stdout=null, stderr=null, start_new_session=True)
    return removed


def check_out(steps: _common.Steps, args: dict[str, Any]) -> None:
    path, repo, commit = args["path"], args["repo"], args["commit"]
    steps.begin(f"checking out {commit[:12]}")
    if os.path.lexists(path):
        steps.fail("release {} already exists on the host".format(args["release"]))
    receive(steps, args)
    steps.run(["git", f"--git-dir={repo}", "cat-file", "-e", f"{commit}^{{commit}}"])
    try:
        os.mkdir(path)
    except OSError as error:
        steps.fail(str(error))
    archive = ["git", f"--git-dir={repo}", "archive", "--format=tar", commit]
    git = subprocess.Popen(archive, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    untar = subprocess.Popen(
        ["tar", "-x", "-C", path], stdin=git.stdout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if git.stdout is not None:
        git.stdout.close()  # tar holds the pipe: git sees it close if tar stops
    try:
        said = untar.communicate(timeout=steps.timeout)[0]
        said = (git.stderr.read() if git.stderr else b"") + said
        git.wait(timeout=steps.timeout)
    except subprocess.TimeoutExpired:
        git.kill()
        untar.kill()
        steps.fail(f"(timed out after {steps.timeout:g}s)")
    output = said.decode("utf-8", "replace")
    if git.returncode != 0 or untar.returncode != 0:
        steps.fail(output)
    steps.say(output)


def write_manifest(steps: _common.Steps, args: dict[str, Any]) -> None:
    steps.begin("writing the manifest")
    try:
        with open(args["manifest_path"], "w") as handle:
            handle.write(args["manifest"] + "\n")
    except OSError as error:
        steps.fail(str(error))


def unpack_config(steps: _common.Steps, args: dict[str, Any]) -> None:
    steps.begin("unpacking the rendered config")
    shutil.rmtree(args["etc"], ignore_errors=True)
    try:
        data = base64.b64decode(args["etc_tar"], validate=True)
    except ValueError as error:
        steps.fail(f"the rendered config is not base64: {error}")
    done = subprocess.run(
        ["tar", "-x", "-p", "-C", args["path"]], input=data, capture_output=True, timeout=steps.timeout, check=False
    )
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode != 0:
        steps.fail(output)
    steps.say(output)


def prepare_installer(steps: _common.Steps, installer: dict[str, Any]) -> None:
    """pip: make the tools venv unless a complete one is there. uv: put the pinned uv's binary in place from the
    host's mirror (`uv_fetch`) unless it is there; no venv, no process when it is. Both once per host."""
    if installer["tool"] == "uv":
        uv = installer["uv"]
        steps.begin("preparing the installer (uv) in {}".format(os.path.dirname(str(uv.get("path")))))
        if not uv_fetch.present(uv["path"]):
            try:
                steps.say(uv_fetch.ensure(uv, steps.timeout) + "\n")
            except (uv_fetch.Refused, OSError) as error:
                steps.fail(str(error))
        return
    steps.begin("preparing the installer (pip) in {}".format(installer["tools_venv"]))
    if not os.path.exists(installer["ready"]):
        # A half-made tools venv (python3-venv missing the first time) has no mark: it is made again.
        steps.run(installer["make_tools"])
        with open(installer["ready"], "w"):
            pass


def compile_bytecode(steps: _common.Steps, request: dict[str, Any]) -> None:
    steps.begin("compiling bytecode (reusing the current release's)")
    argv = _common.program(sys.executable, bytecode.__name__.rpartition(".")[2])
    done = _common.run(argv, json.dumps(request) + "\n", steps.timeout, stdout_only=True)
    answer, said = _common.answer_of(done)
    if answer is None or answer.get("ok") is not True:
        steps.fail(str(answer.get("error")) if answer else said)
    steps.say(json.dumps(answer, sort_keys=True))


def write_env(steps: _common.Steps, args: dict[str, Any]) -> None:
    """The app's env of this release, 0600: every command run for the app reads it (never its command line)."""
    steps.begin("writing the app's environment ({} variables, mode 0600)".format(len(args.get("env") or {})))
    try:
        _common.write_env(args["env_file"], args.get("env") or {})
    except (OSError, ValueError) as error:
        steps.fail(str(error))


def run_build(steps: _common.Steps, args: dict[str, Any]) -> None:
    """hosts.yml's ``build`` commands, in the new release, venv first on ``PATH``, the app's env set."""
    if not args.get("build"):
        return
    environment = _common.app_environment(args.get("env") or {}, args["venv"], args.get("command_env") or {})
    for command in args.get("build") or []:
        steps.begin("build: " + command)
        steps.run(["sh", "-c", command], env=environment, cwd=args["path"])


def link_shared(steps: _common.Steps, shared: list[list[str]]) -> None:
    for directory, link in shared:
        steps.begin("linking shared/" + os.path.basename(directory))
        try:
            os.makedirs(directory, exist_ok=True)
            if os.path.isdir(link) and not os.path.islink(link):
                shutil.rmtree(link)
            elif os.path.lexists(link):
                os.unlink(link)
            os.symlink(directory, link)
        except OSError as error:
            steps.fail(str(error))


def receive(steps: _common.Steps, args: dict[str, Any]) -> None:
    """Put the commit into the host's own ``repo.git``, which then names it ``refs/heads/deploy``: the laptop sent
    the objects the repo lacks (a pack of what is not reachable from the repo's ``deploy`` head), or nothing when
    the repo has the commit already. `update-ref` refuses a commit whose object is missing."""
    repo, pack = args["repo"], args.get("pack")
    if pack:
        try:
            done = subprocess.run(
                ["git", f"--git-dir={repo}", "index-pack", "--stdin", "--fix-thin"],
                input=base64.b64decode(pack),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=steps.timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            steps.fail(str(error))
        if done.returncode != 0:
            steps.fail(done.stdout.decode("utf-8", "replace"))
    steps.run(["git", f"--git-dir={repo}", "update-ref", "refs/heads/deploy", args["commit"]])


def build(steps: _common.Steps, args: dict[str, Any]) -> None:
    check_out(steps, args)
    write_manifest(steps, args)
    if "env_file" in args:
        write_env(steps, args)
    if args.get("etc_tar") is not None:
        unpack_config(steps, args)
    prepare_installer(steps, args["installer"])
    steps.begin("creating the virtualenv")
    steps.run(args["make_venv"])
    steps.begin("installing requirements")
    steps.run(args["install"], count=PACKAGE_LINES)
    compile_bytecode(steps, args["bytecode"])
    steps.begin("checking installed requirements (pip check)")
    steps.run(args["check"])
    link_shared(steps, args.get("shared", []))
    run_build(steps, args)


def free_bytes(path: str) -> int | None:
    try:
        info = os.statvfs(path)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def main(args: dict[str, Any]) -> dict[str, Any]:
    steps = _common.Steps(PHASE, float(args.get("timeout") or 600), args.get("log"))
    removed = remove_stale(steps, args["stale"], args["trash"]) if args.get("stale") else []
    try:
        build(steps, args)
    except _common.StepFailed:
        free = free_bytes(args["root"])
        full = "No space left on device" in steps.current["output"] or (free is not None and free < LOW_SPACE)
        answer = steps.answer(removed=removed, no_space=full)
        if full:
            answer["error"] = "no space left on {} ({} failed); free some space on the host".format(
                args["root"], answer["failed_step"]
            )
        return answer
    return steps.answer(removed=removed, no_space=False)


if __name__ == "__main__":
    _common.serve(main)
