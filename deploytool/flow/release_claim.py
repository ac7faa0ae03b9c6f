"""Release ids this laptop has minted: never the same id for two deploys.

A release id is the deploy's second and its commit (`Release.mint`). Two deploys of one commit in the same second
(a retry right after a failure, two ``fab deploy`` started together) would share it, and the second would make
live a release id that the first one's journal entry marks failed (soak seed 2207, run 57). So each id is claimed
as an empty file under the laptop's state directory (``$XDG_STATE_HOME/deploytool/<app>/release-ids/<id>``,
created exclusively); an id already claimed waits for the next second and mints again. Claims older than an hour
are removed. A state directory that cannot be written to claims nothing (the deploy goes on, as before).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..errors import DeployError
from ..reporting.deploylog import NAME, state_home
from .release import Release, utc_now

KEEP_SECONDS = 3600  # claims older than this are removed: a second an hour ago cannot be minted again
TRIES = 5


def claims_directory(app: str) -> Path:
    return state_home() / "deploytool" / NAME.sub("_", app) / "release-ids"


def claim(directory: Path, release_id: str) -> bool:
    """Claim ``release_id``: False when this laptop has minted it already; True when claimed, or when claims
    cannot be kept here (best effort)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(directory / release_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    _prune(directory, time.time() - KEEP_SECONDS)
    return True


def _prune(directory: Path, before: float) -> None:
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < before:
                    os.unlink(entry.path)


def mint_unclaimed(
    app: str,
    commit: str,
    now: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Release:
    """`Release.mint` for ``commit``, with an id this laptop has not minted before (waiting for the next second
    when it has)."""
    directory, clock, wait = claims_directory(app), now or utc_now, sleep or time.sleep
    for _ in range(TRIES):
        moment = clock()
        release = Release.mint(commit, moment)
        if claim(directory, release.id):
            return release
        wait(1.0 - moment.microsecond / 1_000_000)  # to the next second
    raise DeployError(
        f"release id {release.id} was already minted on this machine and the clock did not move on; "
        f"check the clock, or remove {directory}"
    )
