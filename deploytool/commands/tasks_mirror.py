"""The ``requirements.*`` and ``mirror.*`` tasks: check pins, hash them, and keep the internal wheelhouse."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from ..connection.transport import close, connect
from ..errors import DeployError, task_boundary
from ..flow.release import deployer
from ..inventory import HostConfig, Inventory
from ..supply import installer
from ..supply.index_upload import publish_to_index
from ..supply.mirror import PYPI, hash_requirements, publish, read_manifest, serve, sync, upload, write_indexes
from ..supply.mirror_verify import verify
from ..supply.pins import laptop_mirror, target_python
from ..supply.reqlock import lock
from ..supply.requirements import check_nested, read_requirements
from .common import STAGE_HELP, find_inventory, selected_hosts


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
    inventory, host = _first_host(c, stage)
    (mirror, kind), target = laptop_mirror(inventory, host), target_python(host)
    problems = []
    started = time.perf_counter()
    for path in role_files(inventory, host):
        try:
            reqs = read_requirements(path)
            check_nested(reqs, mirror, target, kind=kind)
            print(f"ok    {path.relative_to(inventory.project_root)}: {len(reqs.pins)} pins")
        except DeployError as error:
            problems.append(str(error))
            print(f"FAIL  {path.relative_to(inventory.project_root)}")
    print(f"checked against {mirror} for {target.describe()} in {time.perf_counter() - started:.2f}s")
    if problems:
        raise DeployError("\n".join(problems))


@task(name="hash", help={"stage": STAGE_HELP + "; sets the target Python and platform"})
@task_boundary
def hash_(c: Context, stage: str | None = None) -> None:
    """Write --hash=sha256 lines from the wheelhouse into the role files (pip's hash-checking mode)."""
    inventory, host = _first_host(c, stage)
    wheelhouse = wheelhouse_of(inventory)
    for path in role_files(inventory, host):
        for changed in hash_requirements(path, wheelhouse, target_python(host)):
            print(f"hashed {changed.relative_to(inventory.project_root)}")


@task(help={"stage": STAGE_HELP + "; sets the target Python and platform", "upstream": "index URL to download from"})
@task_boundary
def sync_(c: Context, stage: str | None = None, upstream: str | None = None) -> None:
    """Fill the wheelhouse with exactly the pinned wheels of all role files and deploytool's uv (write-once)."""
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
    wheelhouse = wheelhouse_of(find_inventory(c))
    write_indexes(wheelhouse)
    print(f"wrote {wheelhouse / 'index.html'} and {wheelhouse / 'simple'}/")


@task(help={"stage": STAGE_HELP + "; its mirror_host and mirror_path (or upload_url for an index) say where"})
@task_boundary
def publish_(c: Context, stage: str | None = None) -> None:
    """Copy the wheelhouse to the stage's mirror host over SSH, or upload it to its index (never changes a file)."""
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
    inventory, host = _first_host(c, stage)
    directory = host.requirements.parent
    sources = [directory / f"{role}.in"] if role else sorted(directory.glob("*.in"))
    missing = [str(path) for path in sources if not path.is_file()]
    if missing or not sources:
        raise DeployError(f"{inventory.path}: no input file {', '.join(missing) or str(directory / '<role>.in')}")
    for source in sources:
        started = time.perf_counter()
        written = lock(source, target_python(host), upstream or inventory.upstream)
        pins, seconds = len(read_requirements(written).pins), time.perf_counter() - started
        print(f"locked {written.relative_to(inventory.project_root)}: {pins} pins in {seconds:.2f}s")


@task(help={"upstream": "index URL to compare with (default: upstream, else PyPI)"})
@task_boundary
def verify_(c: Context, upstream: str | None = None) -> None:
    """Re-download every file the wheelhouse took from upstream and compare sha256s; exit 1 on any change."""
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
