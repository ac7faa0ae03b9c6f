"""Where things live on a host: the one place that knows the remote directory layout.

<root>/repo.git               bare repository the laptop pushes into
<root>/releases/<id>/         checkout + venv/ + etc/ + .deploytool.json (the manifest)
                              + .deploytool/env.json (the app's env, 0600)
<root>/shared/<dir>/          persistent directories linked into every release
<root>/current -> releases/<id>
<root>/tools/venv/            the pip used to fill release virtualenvs (installer pip; made once per host)
<root>/tools/uv-<version>/uv  the pinned uv, unpacked from its wheel (installer uv; once per host and version)
<root>/tools/uv-cache/        uv's cache
<root>/deploy.lock/owner.json present while a deploy or rollback runs
<root>/journal.jsonl          append-only record of deploys and rollbacks
<root>/deploy-logs/<id>.jsonl every step of every run of release <id>, whole output (``fab log``)
"""

from __future__ import annotations

from dataclasses import dataclass
from posixpath import join

MANIFEST_NAME = ".deploytool.json"
ENV_FILE = ".deploytool/env.json"  # the app's env of a release: JSON, mode 0600 in a 0700 directory


@dataclass(frozen=True)
class Layout:
    """The paths of one host's deploy root."""

    root: str

    @property
    def repo(self) -> str:
        return join(self.root, "repo.git")

    @property
    def releases(self) -> str:
        return join(self.root, "releases")

    @property
    def shared(self) -> str:
        return join(self.root, "shared")

    @property
    def current(self) -> str:
        return join(self.root, "current")

    @property
    def tools(self) -> str:
        return join(self.root, "tools")

    @property
    def tools_venv(self) -> str:
        return join(self.tools, "venv")

    def uv_bin(self, version: str) -> str:
        """The binary of uv ``version``: written whole (complete whenever it exists), never changed after."""
        return join(self.tools, f"uv-{version}", "uv")

    @property
    def uv_cache(self) -> str:
        return join(self.tools, "uv-cache")

    @property
    def trash(self) -> str:
        """Pruned releases wait here for their deletion, which runs after the lock is released."""
        return join(self.root, "trash")

    @property
    def lock(self) -> str:
        return join(self.root, "deploy.lock")

    @property
    def lock_owner(self) -> str:
        return join(self.lock, "owner.json")

    @property
    def switch_record(self) -> str:
        """Inside the lock: where the host-side publish step says how far it got (for a run that lost the host)."""
        return join(self.lock, "switch.json")

    @property
    def journal(self) -> str:
        return join(self.root, "journal.jsonl")

    @property
    def deploy_logs(self) -> str:
        return join(self.root, "deploy-logs")

    def deploy_log(self, release_id: str) -> str:
        """Where the host-side modules log each step of the runs that deploy (or return to) ``release_id``."""
        return join(self.deploy_logs, f"{release_id}.jsonl")

    def release(self, release_id: str) -> str:
        return join(self.releases, release_id)

    def release_link(self, release_id: str) -> str:
        """The target of ``current`` for a release: relative, so the root can be moved."""
        return join("releases", release_id)

    def venv(self, release_id: str) -> str:
        return join(self.release(release_id), "venv")

    def etc(self, release_id: str) -> str:
        return join(self.release(release_id), "etc")

    def manifest(self, release_id: str) -> str:
        return join(self.release(release_id), MANIFEST_NAME)

    def env_file(self, release_id: str) -> str:
        """The app's ``env`` of a release, as deployed (0600): every command run for the app reads it."""
        return join(self.release(release_id), ENV_FILE)

    def shared_dir(self, name: str) -> str:
        return join(self.shared, name)
