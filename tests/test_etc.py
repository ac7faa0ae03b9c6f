"""Tests of the mock /etc: rendering etc-mock/, writing and packing it, installing it for real, diffing it."""

from __future__ import annotations

import configparser
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from invoke import Context

from deploytool.connection.hostrun import argv
from deploytool.errors import DeployError
from deploytool.rendering.etc import (
    EtcPathError,
    RenderedEtc,
    RenderErrors,
    TemplateError,
    diff_against,
    format_diffs,
    install_args,
    render_all,
    render_host,
    tar_bytes,
    write_tree,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "etc-mock"
ROOT = "/srv/demo"

Facts = Callable[..., dict[str, object]]


@pytest.fixture
def facts() -> Facts:
    """Build the variables the deploy flow passes for one host: facts plus the given hosts.yml vars."""

    def make(host: str, **hosts_yml_vars: object) -> dict[str, object]:
        return {
            "server_name": f"{host}.example.com",
            **hosts_yml_vars,
            "app": "demo",
            "stage": "production",
            "host": host,
            "release_id": "20240102T030405",
            "release_path": f"{ROOT}/releases/20240102T030405",
            "root": ROOT,
            "current": f"{ROOT}/current",
            "venv": f"{ROOT}/current/venv",
            "shared": f"{ROOT}/shared",
            "shared_dirs": {"logs": f"{ROOT}/shared/logs"},
            "user": "deploy",
            "etc_root": "/etc",
        }

    return make


def make_tree(base: Path, files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> Path:
    """Create files (relative path -> content) under base and return base."""
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(0o755 if name in executable else 0o644)
    return base


def nginx_is_sane(text: str) -> bool:
    """Check nginx syntax roughly: balanced braces, every statement ends with ';', '{' or '}'."""
    depth = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.endswith((";", "{", "}")):
            return False
        depth += line.count("{") - line.count("}")
        if depth < 0:
            return False
    return depth == 0


# --- rendering the example etc-mock/ ----------------------------------------------------------------


def test_example_renders_per_host_with_paths_through_current(facts: Facts) -> None:
    """Three hosts with different vars get different configs; app paths go through `current`, except gunicorn's
    own directory (its release's, so an old worker never imports new code through the symlink)."""
    rendered = render_all(
        EXAMPLE,
        {
            "web1": facts("web1", workers=2, port=8001),
            "web2": facts("web2", workers=4, port=8002, listen=8080),
            "web3": facts("web3", workers=8, socket="/run/demo/gunicorn.sock", process_manager="systemd"),
        },
    )
    expected = {
        "cron.d/demo",
        "gunicorn/demo.conf.py",
        "nginx/sites-available/demo.conf",
        "supervisor/conf.d/demo.conf",
        "systemd/system/demo.service",
    }
    binds = {}
    for host, files in rendered.items():
        assert set(files) == expected
        assert all(files.mode(name) == 0o644 for name in files)
        text = {name: files[name].decode() for name in files}
        for name, content in text.items():
            if name != "gunicorn/demo.conf.py":
                assert "/releases/" not in content  # never a release path: rollbacks must apply
            assert f"on {host}:" in content

        gunicorn: dict[str, object] = {}
        exec(compile(text["gunicorn/demo.conf.py"], "gunicorn.conf.py", "exec"), gunicorn)
        assert gunicorn["chdir"] == gunicorn["pythonpath"] == f"{ROOT}/releases/20240102T030405"
        assert gunicorn["CURRENT"] == f"{ROOT}/current"
        assert callable(gunicorn["pre_exec"]) and callable(gunicorn["post_worker_init"])
        assert gunicorn["wsgi_app"] == "example_app.wsgi:application"
        binds[host] = (gunicorn["bind"], gunicorn["workers"])

        nginx = text["nginx/sites-available/demo.conf"]
        assert nginx_is_sane(nginx), nginx
        assert f"server_name {host}.example.com;" in nginx

        supervisor = configparser.ConfigParser(interpolation=None)
        supervisor.read_string(text["supervisor/conf.d/demo.conf"])
        program = supervisor["program:demo"]
        assert program["command"] == f"{ROOT}/current/venv/bin/gunicorn --config /etc/gunicorn/demo.conf.py"
        assert program["directory"] == f"{ROOT}/current"
        assert program["autostart"] == ("false" if host == "web3" else "true")

        unit = configparser.ConfigParser(interpolation=None, strict=True)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read_string(text["systemd/system/demo.service"])
        assert unit["Service"]["ExecStart"] == program["command"]
        assert unit["Service"]["WorkingDirectory"] == f"{ROOT}/current"
        assert unit["Service"]["User"] == "deploy"

        cron = [line for line in text["cron.d/demo"].splitlines() if line and not line.startswith("#")]
        job = cron[-1].split()
        assert job[5] == "deploy" and job[6] == "curl" and "%" not in cron[-1]
        assert text["cron.d/demo"].endswith("\n")

    assert binds == {
        "web1": (["127.0.0.1:8001"], 2),
        "web2": (["127.0.0.1:8002"], 4),
        "web3": (["unix:/run/demo/gunicorn.sock"], 8),
    }
    assert "listen 8080;" in rendered["web2"]["nginx/sites-available/demo.conf"].decode()
    web3 = rendered["web3"]
    assert "server unix:/run/demo/gunicorn.sock fail_timeout=0;" in web3["nginx/sites-available/demo.conf"].decode()
    assert "--unix-socket /run/demo/gunicorn.sock" in web3["cron.d/demo"].decode()
    assert "RuntimeDirectory=demo" in web3["systemd/system/demo.service"].decode()


def test_plain_files_copied_byte_for_byte_and_exec_bit_kept(tmp_path: Path) -> None:
    """Non-.j2 files are not rendered; an executable source stays executable."""
    blob = b"{{ not a template }}\xff\x00"
    src = make_tree(
        tmp_path / "etc-mock",
        {"a/blob.bin": blob, "a/hook.sh.j2": "#!/bin/sh\necho {{ x }}\n"},
        ("a/hook.sh.j2",),
    )
    rendered = render_host(src, {"x": "hi"}, "web1")
    assert rendered["a/blob.bin"] == blob
    assert rendered["a/hook.sh"] == b"#!/bin/sh\necho hi\n"
    assert (rendered.mode("a/hook.sh"), rendered.mode("a/blob.bin")) == (0o755, 0o644)


# --- render errors --------------------------------------------------------------------------------------


def test_undefined_variable_names_variable_template_line_and_host(facts: Facts) -> None:
    """A missing hosts.yml var is reported with its name, the template's repo path, the line and the host."""
    variables = facts("web2", workers=2, port=8001)
    del variables["server_name"]
    with pytest.raises(TemplateError) as caught:
        render_host(EXAMPLE, variables, "web2")
    message = str(caught.value)
    assert "\n" not in message
    assert "'server_name'" in message
    assert "etc-mock/nginx/sites-available/{{ app }}.conf.j2 line 11" in message
    assert "host web2" in message and "hosts.yml vars" in message


def test_undefined_in_filter_and_in_file_name(tmp_path: Path) -> None:
    """Undefined values behind filters (| int) and in file names are errors too."""
    src = make_tree(tmp_path / "etc-mock", {"x.j2": "a\nworkers = {{ workers | int }}\n"})
    with pytest.raises(TemplateError, match=r"etc-mock/x\.j2 line 2, host h1: undefined variable 'workers'"):
        render_host(src, {}, "h1")
    src = make_tree(tmp_path / "etc2", {"{{ appp }}.conf": "x"})
    with pytest.raises(
        TemplateError, match=r"etc2/\{\{ appp \}\}\.conf \(file name\), host h1: undefined variable 'appp'"
    ):
        render_host(src, {"app": "demo"}, "h1")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A Jinja syntax error names the template and its line."""
    src = make_tree(tmp_path / "etc-mock", {"nginx/bad.conf.j2": "ok\nok\n{% if x %}\nno endif\n"})
    with pytest.raises(TemplateError) as caught:
        render_host(src, {"x": 1}, "web1")
    assert re.search(r"etc-mock/nginx/bad\.conf\.j2 line \d+: template syntax error", str(caught.value))


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../escape", "'..'"),
        ("a/../../escape", "'..'"),
        ("/etc/passwd", "absolute path"),
        ("", "empty name"),
        ("a//b", "empty"),
        ("bad\nname", "control characters"),
    ],
)
def test_unsafe_rendered_names_refused(tmp_path: Path, name: str, problem: str) -> None:
    """Rendered file names must stay relative and inside etc_root."""
    src = make_tree(tmp_path / "etc-mock", {"{{ name }}.j2": "x"})
    with pytest.raises(EtcPathError, match=re.escape(problem)):
        render_host(src, {"name": name}, "web1")


def test_colliding_names_refused(tmp_path: Path) -> None:
    """Two sources rendering to one path, or a file below a rendered file, collide."""
    src = make_tree(tmp_path / "etc-mock", {"demo.conf": "plain", "{{ app }}.conf.j2": "tpl"})
    with pytest.raises(EtcPathError, match="collides with etc-mock/"):
        render_host(src, {"app": "demo"}, "web1")
    src = make_tree(tmp_path / "etc2", {"demo": "file", "{{ app }}/x": "under it"})
    with pytest.raises(EtcPathError, match="collides"):
        render_host(src, {"app": "demo"}, "web1")


def test_symlink_inside_etc_mock_refused(tmp_path: Path, facts: Facts) -> None:
    """A symlink anywhere in a copy of the example etc-mock/ is refused and named."""
    src = tmp_path / "etc-mock"
    shutil.copytree(EXAMPLE, src)
    (src / "nginx" / "sites-enabled").mkdir()
    (src / "nginx" / "sites-enabled" / "demo.conf").symlink_to("../sites-available/{{ app }}.conf.j2")
    with pytest.raises(EtcPathError, match=r"etc-mock/nginx/sites-enabled/demo\.conf: symlinks are not allowed"):
        render_host(src, facts("web1", workers=1, port=1), "web1")
    (src / "nginx" / "sites-enabled" / "demo.conf").unlink()
    (src / "linked").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(EtcPathError, match=r"etc-mock/linked: symlinks are not allowed"):
        render_host(src, facts("web1", workers=1, port=1), "web1")


def test_render_all_reports_every_host(facts: Facts) -> None:
    """render_all renders all hosts and lists every problem of every host in one error."""
    good = facts("web1", workers=2, port=8001)
    no_port = facts("web2", workers=2)
    no_workers = facts("web3", port=8003)
    with pytest.raises(RenderErrors) as caught:
        render_all(EXAMPLE, {"web1": good, "web2": no_port, "web3": no_workers})
    message = str(caught.value)
    assert isinstance(caught.value, DeployError)
    assert "host web1" not in message
    assert re.search(
        r"nginx/sites-available/\{\{ app \}\}\.conf\.j2 line \d+, host web2: undefined variable 'port'",
        message,
    )
    assert re.search(r"gunicorn/\{\{ app \}\}\.conf\.py\.j2 line \d+, host web3: undefined variable 'workers'", message)
    assert len(caught.value.errors) == 4  # port: nginx, gunicorn, cron; workers: gunicorn


# --- writing and packing --------------------------------------------------------------------------------


def test_write_tree_clears_stale_files(tmp_path: Path) -> None:
    """A second render into the same directory leaves exactly the new files, with their modes."""
    out = tmp_path / "build" / "etc" / "production" / "web1"
    write_tree(RenderedEtc({"a/old.conf": b"old", "b/keep": b"1", "gone/x": b"x"}), out)
    (out / "a" / "editor-backup~").write_text("junk")
    written = write_tree(RenderedEtc({"b/keep": b"2", "b/run.sh": b"#!/bin/sh\n"}, {"b/run.sh": 0o755}), out)
    assert written == [out / "b/keep", out / "b/run.sh"]
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert found == ["b", "b/keep", "b/run.sh"]
    assert (out / "b/keep").read_bytes() == b"2"
    assert (out / "b/run.sh").stat().st_mode & 0o777 == 0o755
    with pytest.raises(EtcPathError):
        write_tree(RenderedEtc({}), Path.cwd())


def test_tar_is_deterministic_and_extracts_to_release_etc(tmp_path: Path) -> None:
    """The tar is byte-identical across calls and `tar -x` gives the release etc/<relpath> with modes."""
    rendered = RenderedEtc({"z.conf": b"z", "cron.d/demo": b"* * * * * x\n", "bin/t": b"#!"}, {"bin/t": 0o755})
    again = RenderedEtc(dict(reversed(list(rendered.files.items()))), dict(rendered.modes))
    data = tar_bytes(rendered)
    assert data == tar_bytes(again)
    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-p", "-f", "-", "-C", str(release)], input=data, check=True)
    assert (release / "etc" / "cron.d" / "demo").read_bytes() == b"* * * * * x\n"
    assert (release / "etc" / "bin" / "t").stat().st_mode & 0o777 == 0o755
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(RenderedEtc()))) as tar:
        assert tar.getnames() == ["etc"]


# --- installing for real ----------------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A fake host filesystem whose path has a space and a quote, to prove the quoting."""
    root = tmp_path / "it's a host"
    (root / "etc" / "nginx").mkdir(parents=True)
    (root / "etc" / "nginx" / "nginx.conf").write_text("not ours\n")
    return root


def release(host: Path, release_id: str, files: RenderedEtc) -> str:
    """Ship a render to the fake host like the deploy does: tar streamed into releases/<id>/."""
    path = host / "srv" / "releases" / release_id
    path.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-p", "-f", "-", "-C", str(path)], input=tar_bytes(files), check=True)
    return str(path / "etc")


def install(release_etc: str, etc_root: Path, previous: str | None) -> tuple[int, str, str]:
    """Run the installer as ``publish`` does: the shipped module, its paths as words."""
    command = argv(sys.executable, "etc_install", *install_args(release_etc, str(etc_root), previous))
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    return result.returncode, result.stdout, result.stderr


def snapshot(top: Path) -> dict[str, tuple[bytes | str, int, int]]:
    """Map every path under top to (content or link target, mode, inode)."""
    found: dict[str, tuple[bytes | str, int, int]] = {}
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        content: bytes | str = (
            os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
        )
        found[path.relative_to(top).as_posix()] = (content, st.st_mode, st.st_ino)
    return found


R1 = RenderedEtc(
    {
        "nginx/sites-available/demo.conf": b"v1\n",
        "cron.d/demo": b"cron\n",
        "demo/hooks/reload.sh": b"#!/bin/sh\n",
    },
    {"demo/hooks/reload.sh": 0o755},
)
R2 = RenderedEtc(
    {
        "nginx/sites-available/demo.conf": b"v2\n",
        "demo/hooks/reload.sh": b"#!/bin/sh\n",
        "demo/new.conf": b"new\n",
    },
    {"demo/hooks/reload.sh": 0o755},
)


def test_install_update_and_rollback(host: Path) -> None:
    """Install r1, move to r2 (changed file renamed in, dropped file removed), roll back to r1."""
    etc = host / "etc"
    r1, r2 = release(host, "r1", R1), release(host, "r2", R2)

    code, out, err = install(r1, etc, None)
    assert (code, err) == (0, ""), err
    assert "etc: 3 installed, 0 unchanged, 0 removed" in out
    assert (etc / "nginx/sites-available/demo.conf").read_bytes() == b"v1\n"
    assert (etc / "demo/hooks/reload.sh").stat().st_mode & 0o777 == 0o755
    assert (etc / "cron.d/demo").stat().st_mode & 0o777 == 0o644
    assert (etc / "nginx/nginx.conf").read_text() == "not ours\n"
    before = snapshot(etc)

    code, out, err = install(r2, etc, r1)
    assert code == 0, err
    after = snapshot(etc)
    assert "etc: 2 installed, 1 unchanged, 1 removed" in out
    assert not (etc / "cron.d/demo").exists() and (etc / "cron.d").is_dir()  # files only, dirs stay
    assert after["nginx/sites-available/demo.conf"][0] == b"v2\n"
    nginx = "nginx/sites-available/demo.conf"
    assert after[nginx][2] != before[nginx][2]  # new inode: renamed into place, not written in place
    assert after["demo/hooks/reload.sh"] == before["demo/hooks/reload.sh"]  # unchanged: not rewritten
    assert after["nginx/nginx.conf"] == before["nginx/nginx.conf"]
    assert not [p for p in after if p.endswith(".tmp")]

    code, out, err = install(r1, etc, r2)  # rollback: target release's etc, leaving r2
    assert code == 0, err
    assert "etc: 2 installed, 1 unchanged, 1 removed" in out
    restored = snapshot(etc)
    assert {p: v[:2] for p, v in restored.items() if v[0] != "dir"} == {
        p: v[:2] for p, v in before.items() if v[0] != "dir"
    }
    assert "demo/new.conf" not in restored and "demo" in restored


@pytest.mark.parametrize("where", ["dir", "file"])
def test_install_refuses_symlink_escaping_etc_root(host: Path, tmp_path: Path, where: str) -> None:
    """A destination symlink leading outside etc_root aborts before anything changes."""
    etc = host / "etc"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "demo.conf").write_bytes(b"precious\n")
    if where == "dir":
        (etc / "nginx" / "sites-available").symlink_to(outside, target_is_directory=True)
    else:
        (etc / "nginx" / "sites-available").mkdir()
        (etc / "nginx" / "sites-available" / "demo.conf").symlink_to(outside / "demo.conf")
    before, before_outside = snapshot(etc), snapshot(outside)
    code, _out, err = install(release(host, "r1", R1), etc, None)
    assert code == 3  # refused before changing anything
    assert "outside" in err and "refusing, nothing changed" in err and "Traceback" not in err
    assert snapshot(etc) == before and snapshot(outside) == before_outside


def test_install_follows_symlink_inside_etc_root(host: Path) -> None:
    """A symlink that stays inside etc_root is written through (e.g. sites-enabled -> sites-available)."""
    etc = host / "etc"
    (etc / "nginx" / "real").mkdir()
    (etc / "nginx" / "sites-available").symlink_to("real")
    code, _out, err = install(release(host, "r1", R1), etc, None)
    assert code == 0, err
    assert (etc / "nginx" / "sites-available").is_symlink()
    assert (etc / "nginx" / "real" / "demo.conf").read_bytes() == b"v1\n"


def test_installer_arguments_are_absolute_paths_passed_as_words() -> None:
    """Paths are argv words (never spliced into a script), normalised; relative ones are refused."""
    assert install_args("/srv/a b/releases/r1/etc/", "/etc", "/srv/x'y/etc") == (
        "/srv/a b/releases/r1/etc",
        "/etc",
        "/srv/x'y/etc",
    )
    assert install_args("/r/etc", "/etc", None) == ("/r/etc", "/etc", "")
    with pytest.raises(EtcPathError):
        install_args("relative/etc", "/etc", None)


# --- diffing ----------------------------------------------------------------------------------------------


def test_diff_against_reports_new_changed_unchanged(host: Path) -> None:
    """One remote call reads the destinations; new, changed (content or mode) and unchanged are reported."""
    etc = host / "etc"
    make_tree(etc, {"same.conf": "same\n", "changed.conf": "workers = 2\n", "mode.sh": "#!/bin/sh\n"})
    rendered = RenderedEtc(
        {
            "same.conf": b"same\n",
            "changed.conf": b"workers = 4\n",
            "mode.sh": b"#!/bin/sh\n",
            "sub/new.conf": b"fresh",
        },
        {"mode.sh": 0o755},
    )
    diffs = {d.relpath: d for d in diff_against(Context(), str(etc), rendered)}
    assert {k: d.status for k, d in diffs.items()} == {
        "same.conf": "unchanged",
        "changed.conf": "changed",
        "mode.sh": "changed",
        "sub/new.conf": "new",
    }
    assert diffs["same.conf"].diff == ""
    assert "-workers = 2\n+workers = 4\n" in diffs["changed.conf"].diff
    assert f"--- a{etc}/changed.conf" in diffs["changed.conf"].diff
    assert diffs["mode.sh"].diff.startswith("mode 644 -> 755")
    assert "+fresh\n\\ No newline at end of file" in diffs["sub/new.conf"].diff
    text = format_diffs(list(diffs.values()), host="web1")
    assert text.endswith("web1: etc: 1 new, 2 changed, 1 unchanged\n")
    assert "same.conf" not in text


# --- backups of replaced files that no release managed --------------------------------------------------

SITE = "nginx/sites-available/demo.conf"


def hand_made(etc: Path, name: str = SITE, data: bytes = b"server { listen 80; } # by hand\n") -> bytes:
    """A file an admin made before deploytool managed it: odd mode, to prove the mode comes back too."""
    path = etc / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return data


def replaced(release_etc: str, name: str = SITE) -> Path:
    return Path(release_etc).parent / "etc.replaced" / name


def test_first_install_backs_up_a_hand_made_file_and_restore_puts_it_back(host: Path) -> None:
    """A failed first deploy's restore (empty etc, prev = the release) returns the original, mode and all."""
    etc = host / "etc"
    original = hand_made(etc)
    r1 = release(host, "r1", R1)

    code, out, err = install(r1, etc, None)
    assert (code, err) == (0, ""), err
    assert f"backed up {etc}/{SITE}\n" in out and f"installed {etc}/{SITE}\n" in out
    assert "etc: 3 installed, 0 unchanged, 0 removed, 1 backed up, 0 restored" in out
    # never widened: the hand-made file was 0600, so the release's file takes its place as 0600 (issue 17)
    assert (etc / SITE).read_bytes() == b"v1\n" and (etc / SITE).stat().st_mode & 0o777 == 0o600
    backup = replaced(r1)
    assert backup.read_bytes() == original and backup.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in backup.parent.parent.parent.rglob("*") if p.is_file()) == ["demo.conf"]

    empty = host / "srv" / "tools" / "empty-etc"
    empty.mkdir(parents=True)
    code, out, err = install(str(empty), etc, r1)
    assert (code, err) == (0, ""), err
    assert f"restored {etc}/{SITE}\n" in out and f"removed {etc}/cron.d/demo\n" in out
    assert "etc: 0 installed, 0 unchanged, 2 removed, 0 backed up, 1 restored" in out
    assert (etc / SITE).read_bytes() == original and (etc / SITE).stat().st_mode & 0o777 == 0o600
    assert not (etc / "cron.d/demo").exists() and not (etc / "demo/hooks/reload.sh").exists()
    assert (etc / "nginx/nginx.conf").read_text() == "not ours\n"
    assert not [p for p in etc.rglob("*") if p.name.endswith(".tmp")]


def test_rollback_restores_the_original_a_newer_release_had_replaced(host: Path) -> None:
    """A lacks the file, B takes it over from a hand-made original; rolling back B -> A puts it back."""
    etc = host / "etc"
    original = hand_made(etc)
    a = release(host, "a", RenderedEtc({"cron.d/demo": b"cron\n"}))
    b = release(host, "b", RenderedEtc({"cron.d/demo": b"cron\n", SITE: b"managed\n"}))
    assert "backed up /" not in install(a, etc, None)[1]
    code, out, err = install(b, etc, a)
    assert code == 0, err
    assert f"backed up {etc}/{SITE}\n" in out and (etc / SITE).read_bytes() == b"managed\n"
    assert replaced(b).read_bytes() == original and not replaced(a).exists()

    code, out, err = install(a, etc, b)
    assert (code, err) == (0, ""), err
    assert "etc: 0 installed, 1 unchanged, 0 removed, 0 backed up, 1 restored" in out
    assert (etc / SITE).read_bytes() == original and (etc / SITE).stat().st_mode & 0o777 == 0o600
    assert (etc / "cron.d/demo").read_bytes() == b"cron\n"


def test_a_file_an_earlier_release_managed_is_not_backed_up_again(host: Path) -> None:
    """R2 changes R1's file without a backup; a hand-made file R2 starts to manage is backed up in R2."""
    etc = host / "etc"
    hand_made(etc)
    r1, r2 = release(host, "r1", R1), release(host, "r2", R2)
    assert install(r1, etc, None)[0] == 0
    other = hand_made(etc, "demo/new.conf", b"an admin's\n")
    code, out, err = install(r2, etc, r1)
    assert code == 0, err
    assert out.count("backed up /") == 1 and f"backed up {etc}/demo/new.conf\n" in out
    assert not replaced(r2).exists(), "r1 managed it: the original is r1's backup, not v1"
    assert replaced(r2, "demo/new.conf").read_bytes() == other
    assert (etc / SITE).read_bytes() == b"v2\n"


def test_rerunning_an_install_keeps_the_first_backup(host: Path) -> None:
    """The oldest original wins: a re-run over a since-changed destination does not replace the backup."""
    etc = host / "etc"
    original = hand_made(etc)
    r1 = release(host, "r1", R1)
    assert install(r1, etc, None)[0] == 0
    (etc / SITE).write_bytes(b"edited after the install\n")
    code, out, err = install(r1, etc, None)
    assert code == 0, err
    assert "backed up /" not in out and "etc: 1 installed, 2 unchanged, 0 removed, 0 backed up" in out
    assert (etc / SITE).read_bytes() == b"v1\n"
    assert replaced(r1).read_bytes() == original


def test_a_symlink_in_the_backup_tree_is_refused_before_anything_changes(host: Path, tmp_path: Path) -> None:
    """etc.replaced (in a release the deploy user owns) may not lead the root installer elsewhere."""
    etc = host / "etc"
    hand_made(etc)
    r1 = release(host, "r1", R1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (Path(r1).parent / "etc.replaced").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(etc)
    code, _out, err = install(r1, etc, None)
    assert code == 3 and "etc.replaced: not a directory" in err and "nothing changed" in err
    assert snapshot(etc) == before and list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to install as root for another user's release")
def test_as_root_the_backup_directories_belong_to_the_release_owner(host: Path) -> None:
    """Run by root (sudo) for a deploy user's release: the deploy user can prune etc.replaced later."""
    etc = host / "etc"
    hand_made(etc)
    r1 = release(host, "r1", R1)
    os.chown(Path(r1).parent, 4242, 4343)
    assert install(r1, etc, None)[0] == 0
    top = Path(r1).parent / "etc.replaced"
    for directory in (top, top / "nginx", top / "nginx/sites-available"):
        assert (directory.stat().st_uid, directory.stat().st_gid) == (4242, 4343)
    backup = replaced(r1)
    assert backup.stat().st_uid == 0 and backup.stat().st_mode & 0o777 == 0o600, "root-only stays root-only"
