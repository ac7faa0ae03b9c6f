"""With ``sudo: true`` the hosts.yml commands run as root, and the app's env still reaches them from the release's
env file (the host-side ``envexec`` under sudo), never on a command line."""

from __future__ import annotations

from tests.conftest import Project
from tests.test_sudo import PASSWORD, deploy, etc_root, pytestmark, sudo_project, sudo_user  # noqa: F401

CANARY = "CANARY-sudo-5e1d-secret"


def test_commands_run_as_root_with_the_apps_env(sudo_project: Project) -> None:  # noqa: F811
    secrets = sudo_project.path.parent / "secrets.env"
    secrets.write_text(f"TOKEN={CANARY}\n")
    test = sudo_project.inventory["stages"]["test"]
    etc = etc_root(sudo_project)
    test["secrets"] = {"file": str(secrets)}
    test["env"] = {"APP_TOKEN": "{{ secrets.TOKEN }}"}
    host = test["hosts"]["web1"]
    host["after_switch"] = [*host["after_switch"], f'printf "%s %s" "$(id -u)" "$APP_TOKEN" > {etc}/env-as-root']
    sudo_project.write_inventory()
    sudo_project.commit("env under sudo", {"hosts.yml": (sudo_project.path / "hosts.yml").read_text()})
    deploy(sudo_project, PASSWORD)
    assert (etc / "env-as-root").read_text() == f"0 {CANARY}"
