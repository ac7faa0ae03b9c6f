"""``fab status`` and ``fab audit`` over real SSH: drift found from the hosts themselves, versions per host and
release with their wheels' sha256, documented JSON keys, unreachable hosts; plus the host-side module run
locally and the laptop's validation of what a host answers."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from deploytool.connection.transport import close, connect
from deploytool.errors import DeployError
from deploytool.hostside import survey as hostside_survey
from deploytool.inspection.audit import MIRROR_MANIFEST, PINNED_HASH, MirrorWheel, mirror_wheels, wheel_of
from deploytool.inspection.status import FILES_MISSING, MODIFIED, NOT_INSTALLED, NOT_PINNED, OTHER_VERSION, drift_of
from deploytool.inspection.survey import ReleaseDetail, ReleasePins, parse_survey, release_pins
from deploytool.inventory import load_inventory
from deploytool.layout import Layout
from deploytool.supply.mirror import upload
from deploytool.supply.pins import target_python
from deploytool.supply.requirements import read_requirements
from tests import sshd
from tests.conftest import Mirror, Project, make_project, ssh_inventory
from tests.wheelfactory import _record_hash

README = Path(__file__).resolve().parent.parent / "README.md"
FIRST, SECOND = "20260101T000000Z-aaaaaaa", "20260102T000000Z-bbbbbbb"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- over real SSH: one fleet, deployed twice, then drifted by hand ----------------------------------------------


class Fleet:
    def __init__(self, project: Project, mirror: Mirror, first: str, second: str) -> None:
        self.project, self.mirror, self.first, self.second = project, mirror, first, second

    def host(self, name: str) -> Any:
        return next(h for h in load_inventory(self.project.path / "hosts.yml").hosts("test") if h.name == name)


def _on_host(fleet: Fleet, name: str, command: str) -> None:
    c = connect(fleet.host(name))
    try:
        c.run(command, hide=True, in_stream=False)
    finally:
        close(c)


def _release_of(project: Project, output: str) -> str:
    match = re.search(r"Deployed (\S+)", output)
    assert match, output
    return match.group(1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, ssh_server: sshd.SshServer, mirror: Mirror) -> Iterator[Fleet]:
    """web1-web3 of stage ``test`` get demo-lib 1.0; web1 and web2 then get 2.0 (pinned with its hash), so web3
    disagrees. On web1, demo-helper is installed by hand and demo_lib.py edited; web2 is locked. Stage
    ``staging`` has one host nobody can reach. The laptop's wheelhouse records only demo-lib 2.0."""
    base = tmp_path_factory.mktemp("status")
    inventory = ssh_inventory(ssh_server, mirror, base.name)
    hosts = inventory["stages"]["test"]["hosts"]
    inventory["stages"]["staging"] = {
        **inventory["stages"]["test"],
        "hosts": {"web4": {**hosts.pop("web4"), "port": 1}},
    }
    project = make_project(base / "project", inventory)
    first = _release_of(project, project.fab("deploy").stdout)
    lib2 = mirror.directory / "demo_lib-2.0-py3-none-any.whl"
    project.commit("demo-lib 2.0", {"requirements/prod.txt": f"demo-lib==2.0 --hash=sha256:{sha256_of(lib2)}\n"})
    second = _release_of(project, project.fab("deploy", "--hosts", "web1,web2").stdout)
    upload([lib2], project.path / "wheels", user="tester")
    fleet = Fleet(project, mirror, first, second)
    root1, root2 = Layout(hosts["web1"]["root"]), Layout(hosts["web2"]["root"])
    pip = [f"{root1.tools_venv}/bin/python", "-m", "pip", "--isolated", "--python", f"{root1.current}/venv"]
    install = [*pip, "install", "-q", "--no-deps", "--no-index", "--find-links", mirror.url, "demo-helper==1.0"]
    _on_host(fleet, "web1", shlex.join(install))
    edit = f"for f in {shlex.quote(root1.current)}/venv/lib/python3*/site-packages/demo_lib.py; do echo '#' >> $f; done"
    _on_host(fleet, "web1", edit)
    owner = json.dumps({"action": "deploy", "release": second, "user": "carol@laptop", "since": "2026-01-03T10:00:00"})
    _on_host(fleet, "web2", f"mkdir {shlex.quote(root2.lock)} && printf %s {shlex.quote(owner)} > {root2.lock_owner}")
    yield fleet


def test_status_reports_drift_lock_disagreement_and_previous(fleet: Fleet) -> None:
    result = fleet.project.fab("status", "--json")
    document = json.loads(result.stdout)
    rows = {row["host"]: row for row in document["hosts"]}
    web1, web2, web3 = rows["web1"], rows["web2"], rows["web3"]
    assert (web1["current"], web2["current"], web3["current"]) == (fleet.second, fleet.second, fleet.first)
    assert web1["previous"] == fleet.first and web3["previous"] is None
    assert re.fullmatch(r"[0-9a-f]{40}", web1["commit"]) and web1["commit"][:7] == fleet.second[-7:]
    assert web1["deployed_by"] and web1["deployed_at"]
    assert {(d["package"], d["kind"]) for d in web1["drift"]} == {("demo-helper", NOT_PINNED), ("demo-lib", MODIFIED)}
    assert "demo_lib.py" in next(d["detail"] for d in web1["drift"] if d["kind"] == MODIFIED)
    assert web2["drift"] == [] and web3["drift"] == []
    assert web2["lock"] == {
        "held": True,
        "action": "deploy",
        "release": fleet.second,
        "user": "carol@laptop",
        "since": "2026-01-03T10:00:00",
    }
    assert web1["lock"]["held"] is False and web1["health"] is None
    assert document["warnings"] == [
        f"stage test: hosts disagree on current: {fleet.second} on web1, web2; {fleet.first} on web3"
    ]
    assert document["unreachable"] == []

    table = fleet.project.fab("status").stdout
    assert re.search(rf"web2\s+{fleet.second}\s+\w{{12}}\s+.*deploy {fleet.second} by carol@laptop", table), table
    assert "web1: drift: demo-helper 1.0 is installed but not pinned in requirements/prod.txt" in table
    assert "web1: drift: demo-lib 2.0: 1 file(s) differ from RECORD (edited in place?): demo_lib.py" in table
    assert "hosts disagree on current" in table


def test_audit_one_package_across_hosts_and_kept_releases(fleet: Fleet) -> None:
    document = json.loads(fleet.project.fab("audit", "--package", "Demo_Lib", "--json").stdout)
    assert document["package"] == "demo-lib"
    [package] = document["packages"]
    assert package["name"] == "demo-lib"
    two, one = package["versions"]
    assert (two["version"], one["version"]) == ("2.0", "1.0")
    where = {(u["host"], u["release"], u["role"]) for u in two["current_on"]}
    assert where == {("web1", fleet.second, "current"), ("web2", fleet.second, "current")} and two["kept_on"] == []
    assert {(u["host"], u["role"]) for u in one["current_on"]} == {("web3", "current")}
    assert {(u["host"], u["release"], u["role"]) for u in one["kept_on"]} == {
        ("web1", fleet.first, "previous"),
        ("web2", fleet.first, "previous"),
    }
    lib2 = fleet.mirror.directory / "demo_lib-2.0-py3-none-any.whl"
    assert two["wheels"] == [
        {"sha256": sha256_of(lib2), "filename": lib2.name, "source": PINNED_HASH, "in_mirror_manifest": True}
    ]
    assert one["wheels"] == [{"sha256": None, "filename": None, "source": None, "in_mirror_manifest": False}]

    table = fleet.project.fab("audit", "--package", "demo-lib").stdout
    assert re.search(
        rf"demo-lib\s+2\.0\s+current\s+{fleet.second}\s+test/web1, test/web2\s+{sha256_of(lib2)[:16]}"
        rf"\s+pinned-hash\s+yes",
        table,
    ), table
    assert re.search(rf"demo-lib\s+1\.0\s+previous\s+{fleet.first}\s+test/web1, test/web2\s+unknown\s+-\s+NO", table)


def test_audit_of_all_stages_names_the_unreachable_host_and_fails(fleet: Fleet) -> None:
    result = fleet.project.fab("audit", "--stage", "all", "--json", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: audit failed: staging/web4: cannot connect to 127.0.0.5:1")
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["unreachable"] == ["staging/web4"]
    names = [p["name"] for p in document["packages"]]
    assert names == ["demo-helper", "demo-lib"]  # demo-helper: installed by hand on web1's current


def test_status_of_an_unreachable_host_is_a_row_and_a_failure(fleet: Fleet) -> None:
    result = fleet.project.fab("status", "--stage", "staging", check=False)
    assert result.returncode == 1
    assert re.search(r"^web4\s+unreachable", result.stdout, re.M), result.stdout
    assert result.stderr.startswith("Error: status failed: staging/web4: cannot connect to 127.0.0.5:1: ")
    assert len(result.stderr.strip().splitlines()) == 1


def _documented_keys(heading: str) -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+)`", section, re.M))


def _paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            found |= {path} | _paths(item, path)
        return found
    if isinstance(value, list):
        return set().union(*(_paths(item, prefix + "[]") for item in value)) if value else set()
    return set()


def test_json_documents_have_exactly_the_documented_keys(fleet: Fleet) -> None:
    status = json.loads(fleet.project.fab("status", "--json").stdout)
    unreachable = json.loads(fleet.project.fab("status", "--stage", "staging", "--json", check=False).stdout)
    assert _paths(status) | _paths(unreachable) == _documented_keys("#### `fab status --json`")
    audit = json.loads(fleet.project.fab("audit", "--stage", "all", "--json", check=False).stdout)
    assert _paths(audit) == _documented_keys("#### `fab audit --json`")


def test_bad_arguments_are_one_line_errors(fleet: Fleet) -> None:
    result = fleet.project.fab("audit", "--package", "no/such", check=False)
    assert result.stderr.strip() == "Error: --package 'no/such' is not a distribution name (like Django or demo-lib)"
    result = fleet.project.fab("audit", "--stage", "all", "--hosts", "web1", check=False)
    assert result.returncode == 1 and result.stderr.startswith("Error: --hosts names hosts of one stage")


# --- the host-side module, run locally --------------------------------------------------------------------------


def _dist(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not-this\n")
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
    (info / "RECORD").write_text("\n".join([*record, f"{info.name}/RECORD,,", "x/__pycache__/a.pyc,,"]) + "\n")


def _release(root: Path, release_id: str, requirements: dict[str, str]) -> Path:
    release = root / "releases" / release_id
    site = release / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for path, text in requirements.items():
        (release / path).parent.mkdir(parents=True, exist_ok=True)
        (release / path).write_text(text)
    (release / ".deploytool.json").write_text(json.dumps({"commit": "a" * 40, "user": "u@l", "time": "t"}))
    return site


def test_host_module_finds_edited_and_missing_files_and_follows_includes_inside_the_release(tmp_path: Path) -> None:
    root = tmp_path / "app"
    files = {
        "requirements/prod.txt": "-r base.txt\n-r ../../../../etc/passwd\nlib==1.0\n",
        "requirements/base.txt": "--requirement=more.txt  # comment\n",
        "requirements/more.txt": "x==2\n",
    }
    site = _release(root, FIRST, files)
    _dist(site, "lib", "1.0", {"lib/__init__.py": b"A = 1\n", "lib/util.py": b"B = 2\n", "lib/gone.py": b""})
    (site / "lib" / "util.py").write_bytes(b"B = 3\n")
    (site / "lib" / "gone.py").unlink()
    (root / "current").symlink_to("releases/" + FIRST)
    answer = hostside_survey.main({"root": str(root), "requirements": "requirements/prod.txt", "verify": True})
    assert answer["current"] == FIRST and answer["releases"] == [FIRST] and answer["root_exists"] is True
    [detail] = answer["details"]
    assert sorted(detail["requirements"]) == ["requirements/base.txt", "requirements/more.txt", "requirements/prod.txt"]
    [dist] = detail["dists"]
    assert (dist["name"], dist["version"], dist["modified"], dist["missing"]) == (
        "lib",
        "1.0",
        ["lib/util.py"],
        ["lib/gone.py"],
    )
    assert dist["counts"] == {"checked": 3, "modified": 1, "missing": 1}
    audit = hostside_survey.main({"root": str(root), "requirements": "requirements/prod.txt", "releases": "all"})
    assert "modified" not in audit["details"][0]["dists"][0]  # only status verifies, and only current


def test_host_module_answers_for_a_root_that_does_not_exist(tmp_path: Path) -> None:
    answer = hostside_survey.main({"root": str(tmp_path / "nothing"), "requirements": "r.txt", "verify": True})
    assert answer == {
        "ok": True,
        "root_exists": False,
        "current": None,
        "current_link": "",
        "releases": [],
        "journal": [],
        "lock": {"held": False, "owner": None},
        "details": [],
    }


# --- the laptop's validation and logic ---------------------------------------------------------------------------


def _host(tmp_path: Path) -> Any:
    project = tmp_path / "p"
    project.mkdir()
    (project / "hosts.yml").write_text("app: demo\nmirror: /m\nstages: {s: {transport: local, root: r, hosts: [h1]}}\n")
    return load_inventory(project / "hosts.yml").hosts("s")[0]


def test_hostile_answers_are_refused_field_by_field(tmp_path: Path) -> None:
    answer = {
        "root_exists": True,
        "current": "../../etc",
        "releases": [FIRST, "../x", 7],
        "journal": ['{"event": "deploy", "release": "$(rm -rf /)", "status": "ok"}', "not json"],
        "lock": {"held": True, "owner": '{"user": "\\u001b[31mevil", "release": "nope"}'},
        "details": [
            {
                "id": FIRST,
                "manifest": {"commit": "xyz", "user": "u"},
                "venv": True,
                "requirements": {"../../etc/passwd": "x", "/abs": "y", "r.txt": "a==1\n"},
                "dists": [
                    {"name": "ok-pkg", "version": "1.0"},
                    {"name": "bad name", "version": "1"},
                    {"name": "x", "version": "1;rm"},
                ],
            },
            {"id": "../../etc", "dists": []},
        ],
    }
    survey = parse_survey(_host(tmp_path), answer)
    assert survey.current is None and survey.releases == (FIRST,) and survey.entries == []
    assert survey.lock.held and survey.lock.user == "\\x1b[31mevil" and survey.lock.release is None
    detail = survey.details[FIRST]
    assert detail.manifest is not None and detail.manifest.commit is None
    assert dict(detail.requirements) == {"r.txt": "a==1\n"}
    assert [d.key for d in detail.dists] == ["ok-pkg"]
    assert len(survey.problems) == 5  # one for the release names, two requirement paths, two dists
    assert sum("not release ids" in p for p in survey.problems) == 1


def test_drift_kinds(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("a==1.0\nb==2.0\nc==3.0\n")
    pins = ReleasePins({p.key: p for p in read_requirements(tmp_path / "r.txt").pins}, None)
    answer = {
        "releases": [FIRST],
        "current": FIRST,
        "details": [
            {
                "id": FIRST,
                "dists": [
                    {"name": "A", "version": "1", "modified": [], "missing": ["a/x.py"], "counts": {"missing": 3}},
                    {"name": "b", "version": "2.1"},
                    {"name": "pip", "version": "24.0"},
                ],
            }
        ],
    }
    detail = parse_survey(_host(tmp_path), answer).details[FIRST]
    drift = drift_of(detail, pins, "r.txt")
    assert [(d.package, d.kind) for d in drift] == [
        ("A", FILES_MISSING),
        ("b", OTHER_VERSION),
        ("pip", NOT_PINNED),
        ("c", NOT_INSTALLED),
    ]  # 1 == 1.0: PEP 440 equality
    assert drift[0].detail == "A 1: 3 file(s) of RECORD are gone: a/x.py ..."


def test_requirements_from_the_host_are_parsed_with_the_laptop_parser(tmp_path: Path) -> None:
    host = _host(tmp_path)
    detail = ReleaseDetail(
        FIRST, None, {"req/p.txt": "-r b.txt\n", "req/b.txt": "lib==1.0 ; python_version < '3'\nz==1\n"}, True, ()
    )
    pins = release_pins(detail, "req/p.txt", target_python(host))
    assert list(pins.pins) == ["z"] and pins.problem is None and pins.digest
    broken = ReleaseDetail(SECOND, None, {"req/p.txt": "lib>=1\n"}, True, ())
    problem = release_pins(broken, "req/p.txt", target_python(host)).problem
    assert problem is not None and problem.startswith("req/p.txt: 1 problem in requirements:")
    assert release_pins(broken, "other.txt", target_python(host)).problem == "other.txt is not in the release"


def test_wheel_sha256_from_pinned_hash_or_mirror_manifest(tmp_path: Path) -> None:
    target = target_python(_host(tmp_path))
    any_ = MirrorWheel("lib-1.0-py3-none-any.whl", "a" * 64, frozenset(_tags("py3-none-any")))
    arm = MirrorWheel("lib-1.0-cp311-cp311-linux_aarch64.whl", "b" * 64, frozenset(_tags("cp311-cp311-linux_aarch64")))
    wheels: dict[tuple[str, Any], list[MirrorWheel]] = {("lib", Version("1.0")): [arm, any_]}
    assert wheel_of("lib", "1", None, target, wheels) == {
        "sha256": "a" * 64,
        "filename": any_.filename,
        "source": MIRROR_MANIFEST,
        "in_mirror_manifest": True,
    }
    (tmp_path / "r.txt").write_text(f"lib==1.0 --hash=sha256:{'c' * 64}\n")
    pin = read_requirements(tmp_path / "r.txt").pins[0]
    assert wheel_of("lib", "1.0", pin, target, wheels) == {
        "sha256": "c" * 64,
        "filename": None,
        "source": PINNED_HASH,
        "in_mirror_manifest": False,
    }


def _tags(text: str) -> Any:
    from packaging.tags import parse_tag

    return parse_tag(text)


def test_a_damaged_mirror_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "MANIFEST.jsonl").write_text('{"filename": "lib-1.0-py3-none-any.whl", "sha256": "zz"}\n')
    with pytest.raises(DeployError, match=r"MANIFEST.jsonl:1: sha256 is not 64 hex digits"):
        mirror_wheels(tmp_path)
    assert mirror_wheels(tmp_path / "absent") == {}
