"""The ``render-etc`` task: each host's config rendered from the templates into ``build/etc/`` for review, and with
``--diff`` compared to what the host has; changes nothing on hosts."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from ..errors import DeployError, task_boundary
from .common import HOSTS_HELP, ROLES_HELP, STAGE_HELP, HostsTask, selected_hosts


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "out": "directory to write into (default: build/etc/<stage>/ in the project)",
        "diff": "also print a unified diff of each file against what the host has under its etc_root now",
    },
)
@task_boundary
def render_etc(
    c: Context,
    stage: str | None = None,
    hosts: str | None = None,
    out: str | None = None,
    diff: bool = False,
    roles: str | None = None,
) -> None:
    """Render each host's config from etc-mock/ into build/etc/ for review; changes nothing on hosts."""
    from ..connection.fleet import connected, on_each
    from ..flow.release import Release, resolve_commit
    from ..rendering import appsecrets
    from ..rendering.config import render_hosts
    from ..rendering.etc import diff_against, format_diffs, write_tree

    inventory, selected = selected_hosts(c, stage, hosts, roles)
    if not inventory.etc_templates.is_dir():
        raise DeployError(f"no templates: {inventory.etc_templates} does not exist")
    release = Release.mint(resolve_commit(inventory.project_root, "HEAD"))
    secrets = appsecrets.load(selected[0].secrets, inventory.project_root, inventory.path)
    rendered = render_hosts(inventory.etc_templates, selected, release.id, secrets)
    base = Path(out) if out else inventory.project_root / "build" / "etc" / selected[0].stage
    if base.exists() and not base.is_dir():
        what = f"--out {base}" if out else str(base)
        raise DeployError(f"{what} exists and is not a directory; give a directory to write the config into")
    for host in selected:
        try:
            written = write_tree(rendered[host.name], base / host.name)
        except OSError as error:
            where = error.filename or base / host.name
            raise DeployError(f"cannot write the rendered config under {base}: {where}: {error.strerror}") from None
        for path in written:
            print(f"wrote {path.relative_to(base.parent) if not out else path}")
    if diff:
        with connected(selected) as targets:
            results = on_each(
                targets,
                lambda t: diff_against(t.c, t.host.etc_root, rendered[t.name], python=t.host.python, host=t.name),
                lambda t: t.name,
            )
            for target, diffs in results.done:
                print(format_diffs(diffs, host=target.name))
            results.raise_if_failed("diff", lambda t: t.name)
