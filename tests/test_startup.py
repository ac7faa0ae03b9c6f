"""Start-up (issue 20): the fabfile's ``import deploytool`` loads only what listing and parsing the tasks needs."""

from __future__ import annotations

import json
import subprocess
import sys

# Imported by the tasks that use them, never by the fabfile's import: the deploy flow and its host steps,
# paramiko's use (transport), the config rendering (Jinja2), the inventory (YAML checks), the mirror's index and
# requirements code (packaging, urllib/http).
LAZY = (
    "jinja2",
    "packaging",
    "urllib.request",
    "http.client",
    "deploytool.flow.deploy",
    "deploytool.flow.phases",
    "deploytool.flow.rollout",
    "deploytool.flow.publish",
    "deploytool.connection.transport",
    "deploytool.connection.fleet",
    "deploytool.connection.hostrun",
    "deploytool.supply.installer",
    "deploytool.rendering.config",
    "deploytool.inventory",
    "deploytool.inventory_schema",
    "deploytool.inventory_roles",
    "deploytool.inventory_host",
    "deploytool.supply.mirror",
    "deploytool.supply.mirror_index",
    "deploytool.supply.requirements",
    "deploytool.inspection.survey",
    "deploytool.inspection.audit",
)

PROGRAM = """
import json, sys
import fabric.main  # what `fab` has loaded before it imports the fabfile
before = set(sys.modules)
import deploytool
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_importing_deploytool_loads_none_of_what_only_some_tasks_need() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(done.stdout))
    assert "deploytool.commands.tasks" in loaded, "the fabfile's import does load the tasks"
    assert sorted(name for name in LAZY if name in loaded) == []


def test_the_lazy_names_of_the_package_still_import() -> None:
    program = "import deploytool; print(deploytool.load_inventory.__module__, deploytool.Layout.__name__)"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.split() == ["deploytool.inventory", "Layout"]
