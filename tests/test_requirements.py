"""Pinning rules for role files, and the nested check against a real wheel mirror (directory and HTTP)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.supply.mirror import serve, write_indexes
from deploytool.supply.requirements import (
    RequirementsError,
    TargetPython,
    check_nested,
    pip_install_args,
    read_requirements,
    requirements_digest,
    uv_install_args,
)
from deploytool.supply.wheelmeta import sha256_file
from tests.wheelfactory import make_wheel

TARGET = TargetPython(python_version="3.11")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HASH = "a" * 64


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(RequirementsError) as caught:
        read_requirements(path)
    assert str(caught.value).count("\n") == len(caught.value.problems)
    return caught.value.problems


def test_pins_comments_markers_extras_and_hash_continuations(tmp_path: Path) -> None:
    prod = write(
        tmp_path / "prod.txt",
        "# web\n\nDjango==5.2.19  # the framework\ncelery[redis]==5.7.0\n"
        'pywin32==306 ; sys_platform == "win32"\n'
        f"-e git+https://git.example.com/org/lib.git@{COMMIT}#egg=ourlib\n",
    )
    reqs = read_requirements(prod)
    assert [(p.name, p.key, p.version, p.line) for p in reqs.pins] == [
        ("Django", "django", "5.2.19", 3),
        ("celery", "celery", "5.7.0", 4),
        ("pywin32", "pywin32", "306", 5),
        ("ourlib", "ourlib", None, 6),
    ]
    assert reqs.pins[1].extras == {"redis"}
    assert [p.key for p in reqs.active(TARGET)] == ["django", "celery", "ourlib"]
    hashed = write(tmp_path / "h.txt", f"six==1.17.0 \\\n    --hash=sha256:{HASH} \\\n    --hash sha256:{'b' * 64}\n")
    assert read_requirements(hashed).pins[0].hashes == (f"sha256:{HASH}", f"sha256:{'b' * 64}")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("django>=4.2", "is not pinned"),
        ("django~=4.2", "is not pinned"),
        ("django", "is not pinned"),
        ("django==4.*", "is not pinned"),
        ("django===4.2", "is not pinned"),
        ("django==4.2,<5", "is not pinned"),
        ("-i https://pypi.example.com/simple", "-i is not allowed"),
        ("--index-url https://pypi.example.com/simple", "--index-url is not allowed"),
        ("--extra-index-url=https://pypi.example.com/simple", "--extra-index-url is not allowed"),
        ("-f https://example.com/wheels/", "-f is not allowed"),
        ("--find-links ./wheels", "--find-links is not allowed"),
        ("--no-index", "--no-index is not allowed"),
        ("https://example.com/django-4.2-py3-none-any.whl", "is a URL or path"),
        ("./wheels/django-4.2-py3-none-any.whl", "is a URL or path"),
        ("django @ https://example.com/django.whl", "is a URL or path"),
        ("-e git+https://git.example.com/org/lib.git@main#egg=lib", "full 40-hex commit"),
        ("-e git+https://git.example.com/org/lib.git@0123abc#egg=lib", "full 40-hex commit"),
        (f"-e git+https://git.example.com/org/lib.git@{COMMIT}", "full 40-hex commit"),
        ("-e ./src", "full 40-hex commit"),
        ("-c constraints.txt", "constraints files are not supported"),
        ("six==1.17.0 --global-option=x", "only --hash"),
    ],
)
def test_rejected_forms_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path / "requirements" / "prod.txt", f"six==1.17.0\n{line}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:2: ") and expected in problem


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    path = write(tmp_path / "prod.txt", "a>=1\n# ok\nb\n-i https://x/simple\nc==1.0\n")
    assert [p.split(": ")[0] for p in problems(path)] == [f"{path}:1", f"{path}:3", f"{path}:4"]


def test_includes_are_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "requirements" / "base.txt", "six==1.17.0\n")
    write(tmp_path / "requirements" / "prod.txt", "-r base.txt\nidna==3.20\n")
    dev = write(tmp_path / "requirements" / "roles" / "dev.txt", "--requirement=../prod.txt\n-r../base.txt\nx==1\n")
    reqs = read_requirements(dev)
    assert [(p.key, p.file.name) for p in reqs.pins] == [
        ("six", "base.txt"),
        ("idna", "prod.txt"),
        ("x", "dev.txt"),
    ]
    assert [f.name for f in reqs.files] == ["dev.txt", "prod.txt", "base.txt"]


def test_include_cycle_and_missing_include(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", "-r a.txt\n")
    a = write(tmp_path / "a.txt", "-r b.txt\n-r missing.txt\n")
    cycle, missing = problems(a)
    assert cycle.startswith(f"{tmp_path / 'b.txt'}:1:") and "cycle: a.txt -> b.txt -> a.txt" in cycle
    assert missing.startswith(f"{a}:2:") and "does not exist" in missing


def test_conflicting_pins_across_includes_name_both_places(tmp_path: Path) -> None:
    prod = write(tmp_path / "prod.txt", "six==1.17.0\nidna==3.20\n")
    dev = write(tmp_path / "dev.txt", "-r prod.txt\nSix==1.16.0\nidna==3.20\n")
    (problem,) = problems(dev)
    assert problem == f"{dev}:2: Six==1.16.0 conflicts with six==1.17.0 at {prod}:1"


def test_hashes_are_all_or_none(tmp_path: Path) -> None:
    path = write(tmp_path / "prod.txt", f"six==1.17.0 --hash=sha256:{HASH}\nidna==3.20\nx==1 --hash=md5:abc\n")
    first, second = problems(path)
    assert first.startswith(f"{path}:3:") and "not a valid sha256" in first
    assert second.startswith(f"{path}:2:") and "has no --hash" in second


def test_digest_is_stable_over_layout_and_changes_with_pins(tmp_path: Path) -> None:
    one = read_requirements(write(tmp_path / "one.txt", "six==1.17.0\nidna==3.20\n"))
    two = read_requirements(write(tmp_path / "two.txt", "# comment\nIDNA==3.20\n\nsix==1.17.0\n"))
    three = read_requirements(write(tmp_path / "three.txt", "six==1.17.0\nidna==3.19\n"))
    assert requirements_digest(one) == requirements_digest(two) != requirements_digest(three)
    assert len(requirements_digest(one)) == 64


def test_install_argument_lists() -> None:
    assert pip_install_args("/srv/app/req.txt", "/srv/wheels", True) == [
        "install", "--no-deps", "--exists-action=w", "--no-index", "--find-links", "/srv/wheels",
        "--only-binary=:all:", "--no-input", "--require-hashes", "-r", "/srv/app/req.txt",
    ]  # fmt: skip
    assert "--require-hashes" not in pip_install_args("r.txt", "m", False)
    # pip ignores plain-HTTP find-links on other hosts than loopback unless they are trusted explicitly
    assert pip_install_args("r.txt", "http://pyrepo.internal:8080/wheels/", False)[6:8] == [
        "--trusted-host", "pyrepo.internal:8080",
    ]  # fmt: skip
    assert "--trusted-host" not in pip_install_args("r.txt", "https://pyrepo.internal/wheels/", False)
    assert uv_install_args("r.txt", "http://m/", False, python="/v/bin/python") == [
        "pip", "install", "--no-deps", "--no-index", "--find-links", "http://m/", "--only-binary", ":all:",
        "--python", "/v/bin/python", "-r", "r.txt",
    ]  # fmt: skip


# --- nested dependencies against a real mirror ---------------------------------------------------


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mirror")
    requires = [
        "lib<3,>=2",
        "old-backport>=1; python_version < '3.8'",
        "winonly; sys_platform == 'win32'",
        "extra-dep>=1; extra == 'fancy'",
    ]
    make_wheel(directory, "app", "1.0", requires, requires_python=">=3.8")
    make_wheel(directory, "lib", "2.5", ["deeper[speed]==1.0"])
    make_wheel(directory, "lib", "3.0")
    make_wheel(directory, "deeper", "1.0", ["fast-thing; extra == 'speed'"])
    make_wheel(directory, "fast-thing", "0.1")
    make_wheel(directory, "extra-dep", "1.0")
    make_wheel(directory, "needs-new-python", "1.0", requires_python=">=3.12")
    native = make_wheel(directory, "native", "1.0")
    native.rename(directory / "native-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    write_indexes(directory)
    return directory


@pytest.fixture(scope="module", params=["directory", "file-url", "http"])
def mirror(request: pytest.FixtureRequest, wheel_dir: Path) -> Iterator[str]:
    if request.param == "directory":
        yield str(wheel_dir)
    elif request.param == "file-url":
        yield wheel_dir.as_uri()
    else:
        server, url = serve(wheel_dir)
        yield url
        server.shutdown()
        server.server_close()


def nested_problems(tmp_path: Path, text: str, mirror: str) -> list[str]:
    reqs = read_requirements(write(tmp_path / "prod.txt", text))
    with pytest.raises(RequirementsError) as caught:
        check_nested(reqs, mirror, TARGET, cache_dir=tmp_path / "cache")
    return [p.removeprefix(f"{tmp_path / 'prod.txt'}:") for p in caught.value.problems]


def test_nested_ok_with_markers_evaluated_for_target(tmp_path: Path, mirror: str) -> None:
    text = "app==1.0\nlib==2.5\ndeeper==1.0\nfast-thing==0.1\n"
    check_nested(read_requirements(write(tmp_path / "prod.txt", text)), mirror, TARGET, cache_dir=tmp_path)


def test_nested_missing_dependency_and_dependency_extras(tmp_path: Path, mirror: str) -> None:
    assert nested_problems(tmp_path, "app==1.0\nlib==2.5\ndeeper==1.0\n", mirror) == [
        f"3: deeper==1.0 needs fast-thing but fast-thing is not pinned in {tmp_path / 'prod.txt'}"
    ]
    assert nested_problems(tmp_path, "app==1.0\n", mirror) == [
        f"1: app==1.0 needs lib<3,>=2 but lib is not pinned in {tmp_path / 'prod.txt'}"
    ]


def test_nested_conflicting_version(tmp_path: Path, mirror: str) -> None:
    assert nested_problems(tmp_path, "app==1.0\nlib==3.0\n", mirror) == [
        f"1: app==1.0 needs lib<3,>=2 but {tmp_path / 'prod.txt'}:2 pins lib==3.0"
    ]


def test_nested_extras_requested_on_the_pin_line(tmp_path: Path, mirror: str) -> None:
    base = "lib==2.5\ndeeper==1.0\nfast-thing==0.1\n"
    assert nested_problems(tmp_path, f"app[fancy]==1.0\n{base}", mirror) == [
        f"1: app[fancy]==1.0 needs extra-dep>=1 but extra-dep is not pinned in {tmp_path / 'prod.txt'}"
    ]
    check_nested(
        read_requirements(write(tmp_path / "ok.txt", f"app[fancy]==1.0\n{base}extra-dep==1.0\n")),
        mirror,
        TARGET,
    )


def test_nested_absent_incompatible_and_requires_python(tmp_path: Path, mirror: str) -> None:
    found = nested_problems(tmp_path, "ghost==1.0\nnative==1.0\nneeds-new-python==1.0\nlib==2.9\n", mirror)
    assert found == [
        f"1: ghost==1.0 is not in the mirror {mirror}",
        "2: native==1.0 has no wheel for cpython 3.11 linux x86_64 "
        "(mirror has native-1.0-cp312-cp312-manylinux_2_17_x86_64.whl)",
        f"4: lib==2.9 is not in the mirror {mirror}",
        "3: needs-new-python==1.0 requires Python >=3.12, not 3.11.0",
    ]


def test_http_mirror_without_metadata_files_downloads_once_then_uses_cache(tmp_path: Path, wheel_dir: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    links = []
    for name in ("app-1.0-py3-none-any.whl", "lib-2.5-py3-none-any.whl"):
        shutil.copy(wheel_dir / name, plain / name)
        links.append(f'<a href="{name}#sha256={sha256_file(plain / name)}">{name}</a>')
    (plain / "index.html").write_text("\n".join(links))
    reqs = read_requirements(write(tmp_path / "prod.txt", "app==1.0\nlib==2.5\n"))
    server, url = serve(plain)
    try:
        for _ in range(2):  # the second time the wheels are gone: metadata comes from the cache
            with pytest.raises(RequirementsError, match="needs deeper"):
                check_nested(reqs, url, TARGET, cache_dir=tmp_path / "cache")
            for wheel in plain.glob("*.whl"):
                wheel.unlink()
    finally:
        server.shutdown()
        server.server_close()
    assert len(list((tmp_path / "cache").glob("*.metadata"))) == 2
