"""The ``status`` and ``audit`` tasks: what runs where, asked of the hosts themselves (one round trip each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from invoke.context import Context
from invoke.tasks import task

from ..connection.fleet import describe_failures
from ..errors import DeployError, task_boundary
from ..flow.snapshot import relative_to_project
from ..inspection.audit import audit_document, audit_lines, check_package, mirror_wheels
from ..inspection.status import HostStatus, host_status, status_document, status_lines
from ..inspection.survey import HostSurvey, survey_hosts
from ..inventory import HostConfig, Inventory
from ..reporting.report import dumps
from ..supply.pins import target_python
from .common import HOSTS_HELP, ROLES_HELP, STAGE_HELP, HostsTask, find_inventory, selected_hosts

JSON_HELP = "print one JSON document (keys documented in the README) instead of the table"


def _relative(inventory: Inventory) -> Any:
    def relative(host: HostConfig) -> str:
        return relative_to_project(inventory.project_root, host.requirements, f"{inventory.path}: requirements")

    return relative


def _finish(
    lines: list[str], document: dict[str, Any], as_json: bool, surveys: Sequence[HostSurvey], what: str
) -> None:
    """Print the table or the document, then fail naming every unreachable host."""
    print(dumps(document) if as_json else "\n".join(lines))
    failures = [(f"{s.host.stage}/{s.host.name}", DeployError(s.error or "")) for s in surveys if not s.reachable]
    if failures:
        raise DeployError(describe_failures(what, failures))


def _status_of(survey: HostSurvey, relative: Any) -> HostStatus:
    """The status row of one host; an answer that breaks the laptop's reading is that host's error only."""
    try:
        return host_status(survey, relative(survey.host), target_python(survey.host))
    except (ValueError, LookupError, TypeError, OverflowError, RecursionError) as error:
        survey.error = f"its answer could not be read: {type(error).__name__}: {error}"
        return HostStatus(survey.host.stage, survey.host.name, error=survey.error)


@task(klass=HostsTask, help={"stage": STAGE_HELP, "hosts": HOSTS_HELP, "roles": ROLES_HELP, "json_": JSON_HELP})
@task_boundary
def status(
    c: Context, stage: str | None = None, hosts: str | None = None, json_: bool = False, roles: str | None = None
) -> None:
    """Show per host: current release, commit, who and when, previous good release, lock, drift warnings."""
    inventory, selected = selected_hosts(c, stage, hosts, roles)
    relative = _relative(inventory)
    surveys = survey_hosts(selected, relative, all_releases=False, verify=True)
    statuses = [_status_of(survey, relative) for survey in surveys]
    _finish(status_lines(statuses), status_document(statuses), json_, surveys, "status")


@task(
    klass=HostsTask,
    help={
        "stage": STAGE_HELP + "; 'all' for every stage",
        "hosts": HOSTS_HELP + " (not with --stage all)",
        "roles": ROLES_HELP + " (not with --stage all)",
        "package": "one distribution to answer for (default: every package)",
        "json_": JSON_HELP,
    },
)
@task_boundary
def audit(
    c: Context,
    stage: str | None = None,
    hosts: str | None = None,
    package: str | None = None,
    json_: bool = False,
    roles: str | None = None,
) -> None:
    """Show which version of each package every host runs, in current and kept releases, with wheel sha256s."""
    wanted = check_package(package)
    if stage == "all":
        if hosts:
            raise DeployError("--hosts names hosts of one stage; give --stage S with it, not --stage all")
        if roles:
            raise DeployError("--roles limits the hosts of one stage; give --stage S with it, not --stage all")
        inventory = find_inventory(c)
        selected: tuple[HostConfig, ...] = tuple(host for group in inventory.stages.values() for host in group)
    else:
        inventory, selected = selected_hosts(c, stage, hosts, roles)
    wheels = mirror_wheels(inventory.wheelhouse)
    relative = _relative(inventory)
    surveys = survey_hosts(selected, relative, all_releases=True, verify=False)
    document = audit_document(surveys, relative, target_python, wheels, wanted)
    _finish(audit_lines(document), document, json_, surveys, "audit")
