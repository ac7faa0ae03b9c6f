"""Render the mock /etc tree (``etc-mock/``) of an app for one host, and write it out.

``etc-mock/`` mirrors ``/etc``: ``etc-mock/nginx/sites-available/{{ app }}.conf.j2`` becomes
``<etc_root>/nginx/sites-available/demo.conf``.  Rules:

* Every path component may hold Jinja expressions (``{{ app }}``); they are rendered first.
* Files ending in ``.j2`` are rendered with Jinja2 (``StrictUndefined``, ``trim_blocks`` and
  ``lstrip_blocks`` on, trailing newline kept) and lose the suffix; other files are copied byte
  for byte.  Templates may ``{% include %}`` / ``{% import %}`` other files of ``etc-mock/`` by
  their path relative to it (the included file is rendered as an output file too).
* File modes are normalised to ``0o755`` (owner-executable source) or ``0o644``: git keeps only
  the executable bit, so nothing else in a checkout is meaningful. A template that uses ``env`` or
  ``secrets`` (or whose output holds a secret's value) is written ``0o600``; a template may declare
  its file's mode on its first line, ``{# mode: 0640 #}`` (a Jinja comment: it renders to nothing),
  which is then kept, whatever the file uses. The installer never widens an existing file's mode.
* Symlinks and special files anywhere inside ``etc-mock/`` are refused, as are rendered names
  that are empty, absolute, contain ``.``/``..``/empty components or control characters, and
  two sources rendering to the same path (or to a path below another rendered file).

Variables available to templates (the deploy flow builds them; ``hosts.yml`` ``vars`` are
merged global, then stage, then host, and the facts below are set last):

* from ``hosts.yml`` ``vars`` -- whatever you define; the example app uses ``server_name``,
  ``workers``, ``port`` (gunicorn listens on ``127.0.0.1:<port>``) or ``socket`` (a unix socket
  path, preferred over ``port`` when set), and optionally ``listen`` (nginx port, default 80),
  ``timeout`` (default 30), ``process_manager`` (``supervisor``, the default, or ``systemd``),
  ``cron_schedule`` (default ``*/5 * * * *``), ``client_max_body_size`` (default ``10m``).
* facts:
    ``app``           application name
    ``stage``         stage name (e.g. ``production``)
    ``host``          host name as written in hosts.yml
    ``release_id``    id of the release being deployed
    ``release_path``  ``<root>/releases/<release_id>``
    ``root``          deploy root on the host
    ``current``       ``<root>/current``, the symlink switched on deploy and rollback -- use it
                      (not ``release_path``) for anything that must follow a rollback
    ``venv``          ``<current>/venv``
    ``shared``        ``<root>/shared``
    ``shared_dirs``   mapping shared dir name -> absolute path
    ``user``          deploy user (the app runs as this user)
    ``etc_root``      where the rendered tree is installed (``/etc``)
    ``env``           the host's final ``env`` (values rendered, secrets substituted), a mapping
    ``secrets``       the stage's secrets: ``{{ secrets.NAME }}`` (a missing one stops the render, named)

Filters besides Jinja's: ``env_list`` (mapping -> ``["K=V", ...]``, for gunicorn's ``raw_env``) and
``supervisor_environment`` (mapping -> supervisord's ``environment=`` value, quoted, ``%`` doubled).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tarfile
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import jinja2
import jinja2.meta

from deploytool.errors import DeployError
from deploytool.reporting.terminal import holds_secret

TEMPLATE_SUFFIX = ".j2"
_UNDEFINED_RE = re.compile(r"'([^']+)' is undefined")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class TemplateError(DeployError):
    """A template of etc-mock/ cannot be rendered for a host."""


class EtcPathError(DeployError):
    """A path in etc-mock/, or a rendered path, is unsafe or ambiguous."""


class RenderErrors(DeployError):
    """Several render problems, reported together."""

    def __init__(self, errors: list[DeployError]) -> None:
        lines = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{len(errors)} problems rendering the mock /etc:\n{lines}")
        self.errors = errors


@dataclass(frozen=True)
class RenderedEtc(Mapping[str, bytes]):
    """Rendered files of one host: relative POSIX path (relative to etc_root) -> content, plus modes."""

    files: Mapping[str, bytes] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)

    def __getitem__(self, relpath: str) -> bytes:
        return self.files[relpath]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def mode(self, relpath: str) -> int:
        """Return the permission bits of a rendered file (0o644 or 0o755; 0o600 when it uses the app's env or
        secrets; what its template declares)."""
        return self.modes.get(relpath, 0o644)


@dataclass(frozen=True)
class _Source:
    relpath: str  # POSIX path relative to the template dir, as found on disk
    mode: int


def _display(template_dir: Path, relpath: str) -> str:
    return f"{template_dir.name}/{relpath}"


def scan_sources(template_dir: Path) -> list[_Source]:
    """List the files of etc-mock/, refusing symlinks and special files; sorted by path."""
    if not template_dir.is_dir():
        raise EtcPathError(f"{template_dir}: mock /etc directory not found; create it or fix the path")
    sources: list[_Source] = []
    problems: list[DeployError] = []
    for dirpath, dirnames, filenames in os.walk(template_dir, followlinks=False):
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath, name)
            relpath = path.relative_to(template_dir).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                problems.append(
                    EtcPathError(
                        f"{_display(template_dir, relpath)}: symlinks are not allowed in the mock /etc "
                        f"(points to {os.readlink(path)}); replace it with a real file or directory"
                    )
                )
            elif stat.S_ISREG(st.st_mode):
                sources.append(_Source(relpath, 0o755 if st.st_mode & stat.S_IXUSR else 0o644))
            elif not stat.S_ISDIR(st.st_mode):
                problems.append(
                    EtcPathError(f"{_display(template_dir, relpath)}: not a regular file or directory; remove it")
                )
        dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
    if problems:
        raise problems[0] if len(problems) == 1 else RenderErrors(problems)
    return sorted(sources, key=lambda s: s.relpath)


def env_list(env: Mapping[str, object]) -> list[str]:
    """The ``env_list`` filter: ``{"A": "1"}`` -> ``["A=1"]`` (gunicorn's ``raw_env``, a container's env)."""
    return [f"{name}={value}" for name, value in env.items()]


def supervisor_environment(env: Mapping[str, object]) -> str:
    """The ``supervisor_environment`` filter: a mapping as supervisord's ``environment=`` value,
    ``A="1",B="x,y"``: every value quoted (``'`` when it holds ``"``), ``%`` doubled (supervisord expands
    ``%(name)s``). A value holding both quote characters, or a newline, cannot be written there."""
    items = []
    for name, value in env.items():
        text = str(value).replace("%", "%%")
        if "\n" in text or "\r" in text:
            raise DeployError(f"supervisor_environment: {name}'s value has a line break, which supervisord cannot read")
        quote = '"' if '"' not in text else "'"
        if quote in text:
            raise DeployError(
                f"supervisor_environment: {name}'s value holds both ' and \", which supervisord cannot read"
            )
        items.append(f"{name}={quote}{text}{quote}")
    return ",".join(items)


def _environment(template_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir), followlinks=False),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["env_list"] = env_list
    env.filters["supervisor_environment"] = supervisor_environment
    return env


#: A template declares its file's mode on its first line: ``{# mode: 0640 #}``.
_MODE_HEADER = re.compile(r"\{#-?\s*mode:\s*(0?[0-7]{3})\s*-?#\}")
#: Template variables that carry the app's environment or secrets: a file using them is written 0600.
SENSITIVE_VARIABLES = frozenset({"env", "secrets"})
SENSITIVE_MODE = 0o600


def _declared_mode(text: str) -> int | None:
    """The mode a template's first line declares (``{# mode: 0640 #}``), or None."""
    match = _MODE_HEADER.match(text.split("\n", 1)[0].strip())
    return int(match.group(1), 8) if match else None


def _uses_secrets(env: jinja2.Environment, text: str, rendered: str) -> bool:
    """Whether a template uses ``env`` or ``secrets`` (as the parser sees its names), or its output holds a
    secret's value."""
    try:
        names = jinja2.meta.find_undeclared_variables(env.parse(text))
    except jinja2.TemplateError:
        names = set(SENSITIVE_VARIABLES)
    return bool(names & SENSITIVE_VARIABLES) or holds_secret(rendered)


def _template_line(error: BaseException, template_dir: Path) -> tuple[str | None, int | None]:
    """Find the innermost template frame (file relative to template_dir, line) of a render error."""
    root = str(template_dir.resolve())
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(error.__traceback__):
        filename = os.path.realpath(frame.filename) if frame.filename else ""
        if filename.startswith(root + os.sep):
            found = (Path(filename).relative_to(root).as_posix(), frame.lineno)
    return found


def _describe(error: Exception, where: str, host: str) -> DeployError:
    """Turn a Jinja (or template code) error into a one-line TemplateError."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, DeployError):  # a missing secret, a filter's refusal: the message says it all
        return TemplateError(f"{where}, host {host}: {message}")
    if isinstance(error, jinja2.UndefinedError):
        match = _UNDEFINED_RE.search(message)
        what = f"undefined variable '{match.group(1)}'" if match else f"undefined value ({message})"
        return TemplateError(f"{where}, host {host}: {what}; define it in hosts.yml vars (global, stage or host)")
    if isinstance(error, jinja2.TemplateSyntaxError):
        return TemplateError(f"{where}: template syntax error: {message}; fix the template")
    if isinstance(error, jinja2.TemplateNotFound):
        return TemplateError(f"{where}, host {host}: included template not found: {message}")
    if isinstance(error, UnicodeDecodeError):
        return TemplateError(f"{where}: not valid UTF-8; templates must be UTF-8 text")
    return TemplateError(f"{where}, host {host}: {type(error).__name__}: {message}")


def _check_name(name: str, where: str, host: str) -> str:
    """Validate a rendered relative path and return it; raise EtcPathError if unsafe."""
    problem = None
    parts = name.split("/")
    if not name.strip():
        problem = "renders to an empty name"
    elif name.startswith("/"):
        problem = f"renders to an absolute path {name!r}"
    elif _CONTROL_RE.search(name):
        problem = f"renders to a name with control characters {name!r}"
    elif any(part in ("", ".", "..") for part in parts):
        problem = f"renders to {name!r}, which has an empty, '.' or '..' component"
    if problem:
        raise EtcPathError(f"{where}, host {host}: file name {problem}; fix the name or its variables")
    return name


def _render_one(
    env: jinja2.Environment, template_dir: Path, source: _Source, context: Mapping[str, object], host: str
) -> tuple[str, bytes, int]:
    where = _display(template_dir, source.relpath)
    name = source.relpath
    if "{" in name:
        try:
            name = env.from_string(name).render(context)
        except Exception as error:  # any template failure is a user error
            raise _describe(error, f"{where} (file name)", host) from None
    is_template = name.endswith(TEMPLATE_SUFFIX)
    if is_template:
        name = name[: -len(TEMPLATE_SUFFIX)]
    name = _check_name(name, where, host)
    if not is_template:
        return name, (template_dir / source.relpath).read_bytes(), source.mode
    try:
        template_text = (template_dir / source.relpath).read_text(encoding="utf-8")
        text = env.get_template(source.relpath).render(context)
    except Exception as error:
        file, line = _template_line(error, template_dir)
        if isinstance(error, jinja2.TemplateSyntaxError) and error.lineno:
            file, line = (error.name or source.relpath), error.lineno
        loc = _display(template_dir, file or source.relpath) + (f" line {line}" if line else "")
        raise _describe(error, loc, host) from None
    declared = _declared_mode(template_text)
    if declared is not None:
        mode = declared
    elif _uses_secrets(env, template_text, text):
        mode = SENSITIVE_MODE
    else:
        mode = source.mode
    return name, text.encode("utf-8"), mode


def _render_collect(
    env: jinja2.Environment,
    template_dir: Path,
    sources: list[_Source],
    variables: Mapping[str, object],
    host: str,
) -> tuple[RenderedEtc, list[DeployError]]:
    context = {"host": host, **variables}
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    origin: dict[str, str] = {}
    errors: list[DeployError] = []
    for source in sources:
        try:
            name, content, mode = _render_one(env, template_dir, source, context, host)
        except DeployError as error:
            errors.append(error)
            continue
        where = _display(template_dir, source.relpath)
        clash = origin.get(name)
        if clash is None:
            prefix = PurePosixPath(name)
            clash = next((origin[p.as_posix()] for p in prefix.parents if p.as_posix() in origin), None)
            if clash is None:
                clash = next((o for n, o in origin.items() if n.startswith(name + "/")), None)
        if clash is not None:
            errors.append(
                EtcPathError(f"{where}, host {host}: renders to {name!r}, which collides with {clash}; rename one")
            )
            continue
        origin[name] = where
        files[name] = content
        modes[name] = mode
    return RenderedEtc(files, modes), errors


def render_host(template_dir: Path, variables: Mapping[str, object], host: str) -> RenderedEtc:
    """Render etc-mock/ for one host; raise TemplateError/EtcPathError (or RenderErrors for several)."""
    sources = scan_sources(template_dir)
    rendered, errors = _render_collect(_environment(template_dir), template_dir, sources, variables, host)
    if errors:
        raise errors[0] if len(errors) == 1 else RenderErrors(errors)
    return rendered


def render_all(template_dir: Path, variables_by_host: Mapping[str, Mapping[str, object]]) -> dict[str, RenderedEtc]:
    """Render etc-mock/ for every host before failing; raise one error listing every problem."""
    sources = scan_sources(template_dir)
    env = _environment(template_dir)
    result: dict[str, RenderedEtc] = {}
    errors: list[DeployError] = []
    for host, variables in variables_by_host.items():
        rendered, host_errors = _render_collect(env, template_dir, sources, variables, host)
        result[host] = rendered
        errors.extend(host_errors)
    if errors:
        raise errors[0] if len(errors) == 1 else RenderErrors(errors)
    return result


def _refuse_unsafe_out_dir(out_dir: Path) -> None:
    resolved = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise EtcPathError(f"{out_dir}: output must be a plain directory (it is a symlink or a file)")
    if resolved in (Path(resolved.anchor), Path.home().resolve()) or cwd.is_relative_to(resolved):
        raise EtcPathError(f"{out_dir}: refusing to render into (and clean) this directory; pick build/...")
    if (out_dir / ".git").exists():
        raise EtcPathError(f"{out_dir}: holds a .git; refusing to clean it as a render output")


def write_tree(rendered: RenderedEtc, out_dir: Path) -> list[Path]:
    """Write the rendered files below out_dir, deleting anything there that was not rendered.

    out_dir belongs to the render: files and directories in it that are not part of `rendered`
    are removed (symlinks are removed, never followed).  Returns the written paths, sorted.
    """
    _refuse_unsafe_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted_dirs = {out_dir / p for name in rendered for p in PurePosixPath(name).parents}
    for dirpath, dirnames, filenames in os.walk(out_dir, topdown=False):
        here = Path(dirpath)
        for name in filenames:
            path = here / name
            if path.relative_to(out_dir).as_posix() not in rendered.files:
                path.unlink()
        for name in dirnames:
            path = here / name
            if path.is_symlink():
                path.unlink()
            elif path not in wanted_dirs:
                shutil.rmtree(path)
    written: list[Path] = []
    for name in rendered:
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_bytes(rendered[name])
        path.chmod(rendered.mode(name))
        written.append(path)
    return written


def tar_bytes(rendered: RenderedEtc, prefix: str = "etc") -> bytes:
    """Return a deterministic uncompressed tar of the rendered files under `prefix`/.

    Members: the ``prefix`` directory, every parent directory (0o755) and the files with their
    modes; owner root/0, mtime 0.  Extract it in the release directory (``tar -x -f -``) so the
    release gets ``etc/<relpath>``; extract with ``-p`` (or as a user with umask 022) to keep modes.
    """
    names = list(rendered)
    dirs = sorted({p.as_posix() for n in names for p in PurePosixPath(n).parents if p.as_posix() != "."})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def member(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
            info = tarfile.TarInfo(f"{prefix}/{name}" if name else prefix)
            info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        tar.addfile(member("", tarfile.DIRTYPE, 0o755))
        for name in dirs:
            tar.addfile(member(name, tarfile.DIRTYPE, 0o755))
        for name in names:
            content = rendered[name]
            tar.addfile(member(name, tarfile.REGTYPE, rendered.mode(name), len(content)), io.BytesIO(content))
    return buffer.getvalue()
