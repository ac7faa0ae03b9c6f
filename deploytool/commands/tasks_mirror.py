"""The ``requirements.*`` and ``mirror.*`` tasks: check pins, hash them, and keep the internal wheelhouse."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from ..errors import DeployError, task_boundary
from .common import STAGE_HELP, find_inventory, selected_hosts

if TYPE_CHECKING:  # the mirror, pins and requirements code is imported by the tasks that use it
    from ..inventory import HostConfig, Inventory


def role_files(inventory: Inventory, host: HostConfig) -> list[Path]:
    """The role files (prod.txt, dev.txt, test.txt, ...): every ``*.txt`` beside the stage's requirements."""
    files = sorted(host.requirements.parent.glob("*.txt"))
    if not files:
        raise DeployError(f"{inventory.path}: no requirement files in {host.requirements.parent}")
    return files


def wheelhouse_of(inventory: Inventory) -> Path:
    """The inventory's wheelhouse, refused when it exists but is not a directory (naming the hosts.yml key)."""
    path = inventory.wheelhouse
    if path.exists() and not path.is_dir():
        raise DeployError(
            f"{inventory.path}: wheelhouse: {path} exists and is not a directory; "
            "point wheelhouse at a directory (the laptop's copy of the mirror)"
        )
    return path


def _first_host(c: Context, stage: str | None) -> tuple[Inventory, HostConfig]:
    inventory, hosts = selected_hosts(c, stage, None)
    return inventory, hosts[0]


@task(help={"stage": STAGE_HELP + "; sets the target Python, platform and mirror"})
@task_boundary
def check(c: Context, stage: str | None = None) -> None:
    """Check every role file: all pinned with ==, nested dependencies pinned, every pin in the mirror."""
    from ..supply.pins import laptop_mirror, target_python
    from ..supply.requirements import RequirementsError, check_nested, read_requirements

    inventory, host = _first_host(c, stage)
    (mirror, kind), target = laptop_mirror(inventory, host), target_python(host)
    problems: dict[str, dict[str, None]] = {}  # the file a problem is in -> its problems, each once
    hints: dict[str, None] = {}
    started = time.perf_counter()
    for path in role_files(inventory, host):
        shown = _relative(inventory, path)
        try:
            reqs = read_requirements(path)
            check_nested(reqs, mirror, target, kind=kind)
            print(f"ok    {shown}: {len(reqs.pins)} pins")
        except RequirementsError as error:
            found = error.problems or [str(error)]
            where = {_file_of(problem) or str(path): None for problem in found}
            for problem in found:
                problems.setdefault(_file_of(problem) or str(path), {})[problem] = None
            hints.update({error.hint: None} if error.hint else {})
            others = [_relative(inventory, Path(name)) for name in where if name != str(path)]
            print(f"FAIL  {shown}" + (f": through {', '.join(others)}" if others and str(path) not in where else ""))
        except DeployError as error:
            problems.setdefault(str(path), {})[str(error)] = None
            print(f"FAIL  {shown}")
    print(f"checked against {mirror} for {target.describe()} in {time.perf_counter() - started:.2f}s")
    if problems:
        lines = []
        for name, listed in problems.items():
            count = f"{len(listed)} problem{'s' * (len(listed) > 1)}"
            lines += [f"{name}: {count}:", *(f"  {problem}" for problem in listed)]
        raise DeployError("\n".join([*lines, *hints]))


_LOCATION = re.compile(r"(.+?):\d+: ")


def _file_of(problem: str) -> str | None:
    """The file a problem is in (problems start with ``<file>:<line>: ``)."""
    match = _LOCATION.match(problem)
    return match.group(1) if match else None


def _relative(inventory: Inventory, path: Path) -> str:
    try:
        return str(path.relative_to(inventory.project_root))
    except ValueError:
        return str(path)


@task(name="hash", help={"stage": STAGE_HELP + "; sets the target Python and platform"})
@task_boundary
def hash_(c: Context, stage: str | None = None) -> None:
    """Write --hash=sha256 lines from the wheelhouse into the role files (pip's hash-checking mode)."""
    from ..supply.mirror import hash_requirements
    from ..supply.pins import target_python

    inventory, host = _first_host(c, stage)
    wheelhouse = wheelhouse_of(inventory)
    for path in role_files(inventory, host):
        for changed in hash_requirements(path, wheelhouse, target_python(host)):
            print(f"hashed {changed.relative_to(inventory.project_root)}")


@task(help={"stage": STAGE_HELP + "; sets the target Python and platform", "upstream": "index URL to download from"})
@task_boundary
def sync_(c: Context, stage: str | None = None, upstream: str | None = None) -> None:
    """Fill the wheelhouse with exactly the pinned wheels of all role files and deploytool's uv (write-once)."""
    from ..flow.release import deployer
    from ..supply import installer
    from ..supply.mirror import sync
    from ..supply.pins import target_python

    inventory, host = _first_host(c, stage)
    wheelhouse = wheelhouse_of(inventory)
    report = sync(
        role_files(inventory, host), wheelhouse, target_python(host), upstream or inventory.upstream,
        user=deployer(), tools=[installer.uv_pin()],
    )  # fmt: skip
    print(f"{wheelhouse}: {len(report.added)} added ({len(report.built)} built from sdists), "
          f"{len(report.present)} already present")  # fmt: skip
    for skipped in report.skipped:
        print(f"skipped {skipped}")
    if any(note.startswith(installer.UV_PIN) for note in report.skipped):
        print("the mirror has no uv: hosts install with pip (installer: uv is refused until it has)")


@task(iterable=["file"], help={"file": "a wheel to add (repeat --file for several)"})
@task_boundary
def upload_(c: Context, file: list[str]) -> None:
    """Add locally built wheels to the wheelhouse; never overwrites a file of the same name."""
    from ..flow.release import deployer
    from ..supply.mirror import upload, write_indexes

    wheelhouse = wheelhouse_of(find_inventory(c))
    if not file:
        raise DeployError("give at least one --file WHEEL")
    for name in upload([Path(item) for item in file], wheelhouse, user=deployer()):
        print(f"added {name}")
    write_indexes(wheelhouse)


@task(name="index")
@task_boundary
def index(c: Context) -> None:
    """Regenerate the wheelhouse's index.html and simple/ tree."""
    from ..supply.mirror import write_indexes

    wheelhouse = wheelhouse_of(find_inventory(c))
    write_indexes(wheelhouse)
    print(f"wrote {wheelhouse / 'index.html'} and {wheelhouse / 'simple'}/")


@task(help={"stage": STAGE_HELP + "; its mirror_host and mirror_path (or upload_url for an index) say where"})
@task_boundary
def publish_(c: Context, stage: str | None = None) -> None:
    """Copy the wheelhouse to the stage's mirror host over SSH, or upload it to its index (never changes a file)."""
    from ..connection.transport import close, connect
    from ..supply.index_upload import publish_to_index
    from ..supply.mirror import publish

    inventory, host = _first_host(c, stage)
    if host.mirror_kind == "index":
        if not host.upload_url:
            raise DeployError(
                f"{inventory.path}: stage {host.stage!r} has mirror_kind: index: set upload_url (the index's "
                "upload endpoint, as twine's --repository-url) to publish"
            )
        report = publish_to_index(wheelhouse_of(inventory), host.upload_url, host.mirror)
        print(f"{host.upload_url}: {len(report.uploaded)} uploaded and verified, {len(report.present)} already there")
        return
    if host.mirror_kind == "vendored":
        raise DeployError(f"{inventory.path}: stage {host.stage!r} vendors its wheels (commit {host.mirror}/)")
    if not host.mirror_host or not host.mirror_path:
        raise DeployError(f"{inventory.path}: stage {host.stage!r} needs mirror_host and mirror_path to publish")
    wheelhouse = wheelhouse_of(inventory)
    mirror_host = replace(host, name=host.mirror_host, address=host.mirror_host)
    connection = connect(mirror_host)
    try:
        publish(connection, wheelhouse, host.mirror_path)
    finally:
        close(connection)
    print(f"published {inventory.wheelhouse} to {host.mirror_host}:{host.mirror_path}")


@task(help={"port": "port to listen on (default: any free one)"})
@task_boundary
def serve_(c: Context, port: int = 0) -> None:
    """Serve the wheelhouse over HTTP on loopback until interrupted, for local work."""
    from ..supply.mirror import serve, write_indexes

    wheelhouse = wheelhouse_of(find_inventory(c))
    write_indexes(wheelhouse)
    server, url = serve(wheelhouse, port=port)
    print(f"serving {wheelhouse} at {url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()


@task(
    name="lock",
    help={
        "stage": STAGE_HELP + "; sets the target Python and platform",
        "role": "only this role (requirements/<role>.in); default: every *.in",
        "upstream": "index URL to resolve against (default: upstream)",
    },
)
@task_boundary
def lock_(c: Context, stage: str | None = None, role: str | None = None, upstream: str | None = None) -> None:
    """Resolve requirements/<role>.in into <role>.txt: every dependency ==-pinned, annotated and hashed."""
    from ..supply.pins import target_python
    from ..supply.reqlock import find_uv, lock
    from ..supply.requirements import read_requirements

    inventory, host = _first_host(c, stage)
    directory = host.requirements.parent
    sources = [directory / f"{role}.in"] if role else sorted(directory.glob("*.in"))
    missing = [str(path) for path in sources if not path.is_file()]
    if missing or not sources:
        raise DeployError(f"{inventory.path}: no input file {', '.join(missing) or str(directory / '<role>.in')}")
    uv = find_uv(wheelhouse_of(inventory))
    print(f"resolving with {uv}")
    for source in sources:
        started = time.perf_counter()
        written = lock(source, target_python(host), upstream or inventory.upstream, uv)
        pins, seconds = len(read_requirements(written).pins), time.perf_counter() - started
        print(f"locked {written.relative_to(inventory.project_root)}: {pins} pins in {seconds:.2f}s")


@task(help={"upstream": "index URL to compare with (default: upstream, else PyPI)"})
@task_boundary
def verify_(c: Context, upstream: str | None = None) -> None:
    """Re-download every file the wheelhouse took from upstream and compare sha256s; exit 1 on any change."""
    from ..supply.mirror import PYPI, read_manifest
    from ..supply.mirror_verify import verify

    inventory = find_inventory(c)
    wheelhouse = wheelhouse_of(inventory)
    source = upstream or inventory.upstream or PYPI
    report = verify(wheelhouse, read_manifest(wheelhouse), source)
    for title, lines in (
        ("changed upstream", report.changed_upstream),
        ("vanished upstream", report.vanished_upstream),
        ("changed in the wheelhouse", report.changed_locally),
    ):
        for line in lines:
            print(f"{title}: {line}")
    print(f"{len(report.ok)} files match {source}; {len(report.local_only)} uploaded or built here (not upstream)")
    if report.failed:
        count = len(report.changed_upstream) + len(report.vanished_upstream) + len(report.changed_locally)
        raise DeployError(f"{wheelhouse}: {count} file(s) differ from MANIFEST.jsonl (listed above)")


requirements_tasks = Collection("requirements", check, hash_, lock_)
mirror_tasks = Collection("mirror")
_MIRROR_TASKS = {"sync": sync_, "upload": upload_, "index": index, "publish": publish_, "serve": serve_}
for _name, _task in {**_MIRROR_TASKS, "verify": verify_}.items():
    mirror_tasks.add_task(_task, name=_name)
