"""Going live across a stage, batch by batch: publish (switch, restart, health check), then finish everywhere.

    for each batch (hosts.yml ``batch_size``, every host at once by default):
        publish on the batch's hosts in parallel (at most ``parallel``): config, current, after-switch,
        restart, health check; every host keeps its lock
    all batches passed  -> finish everywhere: journal ok, prune, unlock
    a batch failed      -> every host switched in this run goes back to the release it had (config included,
                           restarted, health-checked), the others drop the new release, and every host's journal
                           marks the new release failed, so it is never a rollback target

A deploy calls `deploy_batches`, a rollback `rollback_batches` (a failed batch stops a rollback: the hosts
already rolled back stay there, as the operator asked). Each host's publish shows as up to three events,
``publish`` (or ``revert``), ``restart`` and ``health``: the phase each step the host reported carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..connection.fleet import Interrupted, Results, describe_failures, interruption, on_each
from ..connection.transport import ConnectionLost, resume
from ..errors import DeployError
from ..reporting.events import FAILED, INTERRUPTED, OK, Event, EventLog, reason_of
from . import journal, phases
from .golive import batches
from .publish import Published, PublishFailed, config_switch, publish, steps_output
from .release import Release
from .target import Target, read_state


def entry_for(
    target: Target, event: str, release_id: str, commit: str | None, failure: object = None, **fields: str
) -> journal.Entry:
    """A journal line for ``target``: ok, or failed with the reason ``failure`` (``fields`` override)."""
    previous = target.state.current
    if failure is None:
        entry = journal.Entry.ok(event, release_id, previous, commit)
    else:
        entry = journal.Entry.failed(event, release_id, previous, commit, reason_of(target.name, failure))
    return replace(entry, **fields)


def failed_deploy(release: Release, target: Target, error: object) -> journal.Entry:
    return entry_for(target, "deploy", release.id, release.commit, error)


def abort_all(targets: Sequence[Target], release: Release | None = None, reason: str = "", limit: int = 16) -> str:
    """Clean up every host this run still holds: the half-built ``release`` removed and its failure journaled
    (for a deploy), the lock released. Hosts it does not hold (never locked, already cleaned up) are left alone.
    Returns a note naming the hosts that could not be cleaned up (not answering), or ""."""

    def clean(target: Target) -> None:
        resume(target.c)  # after an interruption: cleaning up reconnects where it must
        if release is None:
            phases.abort(target, None, None)
        else:
            phases.abort(target, release.id, failed_deploy(release, target, reason))

    on_each(targets, clean, lambda t: t.name, limit=limit)
    stuck = [target for target in targets if target.locked]
    if not stuck:
        return ""
    names = ",".join(target.name for target in stuck)
    return (
        f"\nStill locked by this run (could not be reached to clean up): {names.replace(',', ', ')}; once they "
        f"answer: fab unlock --stage {stuck[0].host.stage} --hosts {names}"
    )


def _log_steps(
    log: EventLog, host: str, main: str, started: float, published: Published, failure: Exception | None
) -> None:
    """One event per phase the host's steps belong to: the main phase takes the wall time not spent restarting
    and checking (the SSH round trip included); a failed step fails its phase, with the error as the reason."""
    end = time.time()
    grouped: dict[str, list[Any]] = {main: [], phases.RESTART: [], phases.HEALTH: []}
    for step in published.steps:
        grouped[main if step.phase == phases.PUBLISH else step.phase].append(step)
    spent = {name: sum(step.seconds for step in steps) for name, steps in grouped.items() if name != main}
    start, main_end = started, max(started, end - sum(spent.values()))
    for name, steps in grouped.items():
        if name != main and not steps:
            continue
        stop = main_end if name == main else min(end, start + spent[name])
        failed = any(not step.ok for step in steps) or (
            name == main and failure is not None and all(step.ok for step in published.steps)
        )
        reason = reason_of(host, failure) if failed and failure is not None else None
        output = steps_output(steps)
        log.add(Event(host, name, FAILED if failed else OK, start, stop, reason, output))
        start = stop


def publish_logged(
    log: EventLog,
    target: Target,
    phase: str,
    release_id: str | None,
    previous: str | None,
    entry: journal.Entry | None = None,
) -> Published:
    """`switch.publish` with the config switch of ``release_id`` over ``previous``, logged as events."""
    started = time.time()
    try:
        published = publish(target, release_id, previous, config_switch(target, release_id, previous), entry=entry)
    except PublishFailed as error:
        _log_steps(log, target.name, phase, started, error.published, error)
        raise
    except Exception as error:
        output = str(getattr(error, "output", "") or "")
        log.add(Event(target.name, phase, FAILED, started, time.time(), reason_of(target.name, error), output))
        raise
    except BaseException:
        log.add(Event(target.name, phase, INTERRUPTED, started, time.time(), "interrupted"))
        raise
    _log_steps(log, target.name, phase, started, published, None)
    return published


def lost_in_switch(target: Target, error: ConnectionLost) -> str:
    """The host's connection dropped (or it stopped answering) during its switch. Its ``publish`` runs to its end
    there whatever happens to the connection (a restart, a health check still going), so this run's lock is kept:
    `fab unlock` reads how far it got (``deploy.lock/switch.json``) and journals it. Say where ``current`` points
    now if the host can be reached again."""
    unlock = f"fab unlock --stage {target.host.stage} --hosts {target.name}"
    try:
        now_on = read_state(target).current or "no release"
    except DeployError:
        return f"{error}; where {target.name} stands is unknown and its lock is kept: once it answers, {unlock}"
    return (
        f"{error}; {target.name} is on {now_on} now and its lock is kept (its publish step may still be running): "
        f"check it with fab releases, then {unlock}"
    )


@dataclass
class Rollout:
    """One run going live on ``targets`` (all prepared and locked): what it has switched so far."""

    targets: Sequence[Target]
    log: EventLog
    batch_size: int | str | None
    limit: int
    finished: set[str] = field(default_factory=set)  # hosts this run finished on (journaled, unlocked)

    def __post_init__(self) -> None:
        self.previous = {target.name: target.state.current for target in self.targets}
        self.switched: list[Target] = []  # current moved to the new release in this run

    def each(self, items: Sequence[Target], func: Callable[[Target], Any]) -> Results[Any, Any]:
        return on_each(items, func, lambda t: t.name, limit=self.limit)

    def in_batches(self, publish_one: Callable[[Target], Published]) -> tuple[list[Any], int, int]:
        """Publish batch by batch until one fails: (that batch's failures, its number, how many batches)."""
        cut = batches(self.targets, self.batch_size)
        for number, batch in enumerate(cut, 1):
            results = self.each(batch, publish_one)
            self.switched += [target for target, _ in results.done]
            if results.failed:
                return results.failed, number, len(cut)
        return [], len(cut), len(cut)


def deploy_batches(rollout: Rollout, release: Release, note: str | None = None) -> None:
    """Make ``release`` live on every host, batch by batch (``rollout.finished`` names the hosts finished). On a
    failed batch, put every host back and raise the `DeployError` that says where each host stands. ``note`` goes
    into each host's journal line (``reason``: a skipped migrate)."""
    notes = {"reason": note} if note else {}
    entries = {t.name: entry_for(t, "deploy", release.id, release.commit, **notes) for t in rollout.targets}

    def publish_one(target: Target) -> Published:
        return publish_logged(
            rollout.log, target, phases.PUBLISH, release.id, target.state.current, entries[target.name]
        )

    failures, number, count = rollout.in_batches(publish_one)
    if failures:
        raise DeployError(_revert_run(rollout, release, failures, number, count))

    def finish(target: Target) -> None:
        entry = entries[target.name]
        with rollout.log.phase(target.name, phases.FINISH):
            phases.finish(target, entry, prune=_prune_list(target, entry))
        rollout.finished.add(target.name)

    finished = rollout.each(rollout.targets, finish)
    if finished.failed:
        raise DeployError(
            describe_failures("finish", [(t.name, e) for t, e in finished.failed])
            + f"\nThose hosts are live on {release.id} all the same, and their lock is kept: check their journal, "
            f"then fab unlock --stage {rollout.targets[0].host.stage} --hosts "
            + ",".join(t.name for t, _ in finished.failed)
        )


def _prune_list(target: Target, entry: journal.Entry) -> list[str]:
    entries = [*target.state.entries, entry]
    present = [*target.state.releases, entry.release]
    return journal.releases_to_prune(entries, present, target.host.keep_releases, current=entry.release)


def _revert_run(
    rollout: Rollout, release: Release, failures: list[tuple[Target, DeployError]], number: int, count: int
) -> str:
    """Batch ``number`` failed: switch back every host this run switched (the failed ones whose current moved
    included), drop the release on the others, mark it failed in every journal; the message for the user."""
    why = f"batch {number} of {count} failed ({', '.join(t.name for t, _ in failures)})"
    errors = {t.name: e for t, e in failures}
    back = list(rollout.switched)
    back += [t for t, e in failures if isinstance(e, PublishFailed) and e.published.switched]
    lost = [t for t, e in failures if isinstance(e, ConnectionLost)]
    left = [t for t in rollout.targets if t not in back and t not in lost]
    lines = {name: _said(name, error) for name, error in errors.items()}
    lines |= {t.name: lost_in_switch(t, errors[t.name]) for t in lost}  # type: ignore[arg-type]

    def revert(target: Target) -> str:
        failure = errors.get(target.name, f"not kept: {why}")
        return _switch_back(rollout, target, release, rollout.previous[target.name], failure)

    reverted = rollout.each(back, revert)
    for target, where in reverted.done:
        lines[target.name] = (lines[target.name] + "; " if target.name in lines else f"{target.name}: ") + where
    for target, error in reverted.failed:
        lines[target.name] = (lines[target.name] + "; " if target.name in lines else "") + _said(target.name, error)
    for target in left:
        reason = errors.get(target.name) or f"not switched: {why}"
        phases.abort(target, release.id, failed_deploy(release, target, reason))
        still = f"{target.name} is still on {target.state.current or 'no release'}"
        lines[target.name] = f"{lines[target.name]}; {still}" if target.name in errors else f"{still} (not switched)"
    ordered = [lines[t.name] for t in rollout.targets if t.name in lines]
    back_note = "; every host this run switched was switched back" if back else ""
    return (
        f"deploy failed: {why}{back_note}:\n  "
        + "\n  ".join(ordered)
        + f"\nRelease {release.id} is marked failed in every host's journal (never a rollback target)."
    )


def _said(name: str, error: object) -> str:
    """An error's text starting with ``<name>: `` once."""
    text = str(error)
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


def _switch_back(rollout: Rollout, target: Target, release: Release, previous: str | None, failure: object) -> str:
    """Point ``current`` at ``previous`` again, with its config, restarted and checked; journal the revert and
    the failure, drop the release, unlock. Returns where the host stands; raises if it could not go back."""
    name, problem, back = target.name, "", False
    try:
        publish_logged(rollout.log, target, phases.REVERT, previous, release.id)
        back = True
    except PublishFailed as again:
        back, problem = again.published.switched, reason_of(name, again)  # current moved back even if a check failed
    except DeployError as again:
        problem = reason_of(name, again)
    if not back:
        phases.abort(target, None, failed_deploy(release, target, f"{failure}; switching back failed"))
        raise DeployError(
            f"{name}: switching back to {previous or 'no release'} failed too ({problem}): {name} is on "
            f"{release.id} (check the host, then fab rollback or fab deploy)"
        )
    back_entry = (
        []
        if previous is None
        else [entry_for(target, "rollback", previous, None, previous=release.id, reason="switch back")]
    )
    try:
        phases.finish(
            target, *back_entry, failed_deploy(release, target, failure), remove=[release.id], unlock="always"
        )
    except DeployError as error:
        problem = (problem + "; " if problem else "") + reason_of(name, error)
    on_the_way = f" (on the way back: {problem})" if problem else ""
    return f"back on {previous or 'no release'}{on_the_way}"


def rollback_batches(rollout: Rollout, chosen: str, note: str | None = None) -> None:
    """Switch every host to ``chosen``, batch by batch, restarted and checked (``rollout.finished`` names the
    hosts finished). A failed batch stops the rollback: the hosts already on ``chosen`` stay there, the rest are
    left as they were. ``note`` goes into each host's journal line (``reason``: a forced rollback)."""
    entries: dict[str, journal.Entry] = {}
    notes = {"reason": note} if note else {}

    def publish_one(target: Target) -> Published:
        current = target.state.current
        commit = next((e.commit for e in target.state.entries if e.release == chosen and e.commit), None)
        entries[target.name] = entry_for(target, "rollback", chosen, commit, **notes)
        if current == chosen:
            return Published(True, False, current, None, ())
        return publish_logged(rollout.log, target, phases.PUBLISH, chosen, current, entries[target.name])

    failures, number, count = rollout.in_batches(publish_one)

    def finish(target: Target) -> None:
        with rollout.log.phase(target.name, phases.FINISH):
            if rollout.previous[target.name] == chosen:
                phases.finish(target)
            else:
                phases.finish(target, entries[target.name])
        rollout.finished.add(target.name)

    finished = rollout.each(rollout.switched, finish)
    if not failures:
        finished.raise_if_failed("rollback", lambda t: t.name)
        return
    lines = []
    for target, error in failures:
        if isinstance(error, ConnectionLost):
            lines.append(lost_in_switch(target, error))
            continue
        moved = isinstance(error, PublishFailed) and error.published.switched
        # The journal records where current points: a rollback whose restart or check failed did move it
        # (status ok, with the failure as the reason); one whose config was rejected did not.
        entry = entries.get(target.name)
        if entry is not None:
            entry = replace(entry, status="ok" if moved else "failed", reason=reason_of(target.name, error))
        phases.abort(target, None, entry)
        where = f"current is now {chosen}" if moved else f"current is still {rollout.previous[target.name]}"
        lines.append(f"{error}; {where}")
    failed_names = {t.name for t, _ in failures}
    rest = [t for t in rollout.targets if t not in rollout.switched and t.name not in failed_names]
    abort_all(rest, limit=rollout.limit)
    done = [t.name for t in rollout.switched]
    summary = f"rollback stopped: batch {number} of {count} failed"
    summary += f"; on {chosen} now: {', '.join(done)}" if done else "; no host was rolled back"
    if rest:
        summary += f"; not switched (still where they were): {', '.join(t.name for t in rest)}"
    raise DeployError(summary + ":\n  " + "\n  ".join(lines))


def interrupted_batches(stop: KeyboardInterrupt, rollout: Rollout, live_on: str, release: Release | None) -> str:
    """Ctrl-C or SIGTERM between or during batches: hosts already live are finished there (journaled, unlocked),
    the others cleaned up; say where every host stands."""
    results: Results[Target, object] = stop.results if isinstance(stop, Interrupted) else Results([], [], [])
    live = list(rollout.switched) + [t for t, _ in results.done if t not in rollout.switched]
    failed = {t.name: error for t, error in results.failed}
    reason = f"{interruption(stop)} on the laptop before this host switched"
    rest = [t for t in rollout.targets if t not in live and t.name not in failed]
    stuck = abort_all(rest, release, reason, limit=rollout.limit)
    if live:

        def end(target: Target) -> None:
            resume(target.c)
            commit = release.commit if release is not None else None
            event = "deploy" if release is not None else "rollback"
            entry = entry_for(target, event, live_on, commit)
            phases.finish(target, replace(entry, previous=rollout.previous[target.name]))
            rollout.finished.add(target.name)

        rollout.each(live, end)
    where = {t.name: f"{t.name}: live on {live_on}" for t in live}
    where |= {name: _said(name, error) for name, error in failed.items()}
    where |= {t.name: f"{t.name}: still on {rollout.previous[t.name] or 'no release'} (not switched)" for t in rest}
    lines = [where[t.name] for t in rollout.targets if t.name in where]
    return f"{interruption(stop)} during the switch; where each host stands:\n  " + "\n  ".join(lines) + stuck
