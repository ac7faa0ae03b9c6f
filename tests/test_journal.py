"""The journal decides rollback targets and pruning: pure functions, checked on journals a host could hold."""

from __future__ import annotations

import json

import pytest

from deploytool.flow.journal import (
    DamagedJournal,
    Entry,
    incomplete_releases,
    parse,
    releases_to_prune,
    rollback_target,
    rolled_back_from,
)


def deploy(release: str, status: str = "ok", previous: str | None = None) -> Entry:
    return Entry("deploy", release, status, previous)


def rollback(release: str, previous: str, status: str = "ok") -> Entry:
    return Entry("rollback", release, status, previous)


def test_previous_good_release_skips_failed_and_rolled_back_from() -> None:
    entries = [deploy("A"), deploy("B", previous="A"), deploy("C", "failed", "B"), rollback("A", "B")]
    assert rollback_target(entries, "B", ["A", "B"]) == "A"
    assert rolled_back_from(entries) == {"B"}
    assert rollback_target(entries, "A", ["A", "B"]) is None, "never bounce back to the release just left"


def test_going_back_to_a_release_with_to_makes_it_a_target_again() -> None:
    entries = [
        deploy("A"),
        deploy("B", previous="A"),
        rollback("A", "B"),
        rollback("B", "A"),
        deploy("C", previous="B"),
    ]
    assert rolled_back_from(entries) == set(), "B went live again; the step forward to B marks nothing"
    assert rollback_target(entries, "C", ["A", "B", "C"]) == "B"
    assert releases_to_prune(entries, ["A", "B", "C"], keep=1, current="C") == ["A"]


def test_a_release_gone_from_the_host_is_not_a_target() -> None:
    entries = [deploy("A"), deploy("B", previous="A"), deploy("C", previous="B")]
    assert rollback_target(entries, "C", ["A", "C"]) == "A"


def test_prune_keeps_current_and_the_rollback_target_and_drops_failed() -> None:
    entries = [deploy(rid) for rid in "ABCDE"] + [deploy("F", "failed")]
    assert releases_to_prune(entries, list("ABCDEF"), keep=2, current="E") == ["A", "B", "C", "F"]
    # current is old (a rollback went there): it and its rollback target stay whatever keep says
    entries += [rollback("B", "E"), rollback("A", "B")]
    assert set(releases_to_prune(entries, list("ABCDE"), keep=1, current="A")) == {"B", "C", "D"}


def test_a_lost_journal_does_not_make_every_release_debris() -> None:
    assert releases_to_prune([], ["A", "B", "C"], keep=2, current="C") == ["A"]
    assert rollback_target([], "C", ["A", "B", "C"]) is None, "unknown releases are never rollback targets"


A, B, C = "20261121T093000Z-1a2b3c4", "20261122T093000Z-5d6e7f8", "20261123T093000Z-9a8b7c6"
COMMIT = "1a2b3c4" + "0" * 33


def line(**fields: object) -> str:
    return json.dumps({"event": "deploy", "release": A, "status": "ok", "commit": COMMIT, **fields})


def test_torn_and_blank_lines_are_skipped() -> None:
    lines = [line(), '{"event": "depl', "", "[]", line(release=B)[:20]]
    assert [entry.release for entry in parse(lines)] == [A]


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"commit": "--output=/tmp/x"}, "commit '--output=/tmp/x' is not a commit id"),
        ({"commit": "HEAD~1..HEAD"}, "commit 'HEAD~1..HEAD' is not a commit id"),
        ({"release": "../../etc"}, "release '../../etc' is not a release id"),
        ({"release": None}, "release None is not a release id"),
        ({"from": f"{A}\ncurrent x"}, "from '20261121T093000Z-1a2b3c4\\ncurrent x' is not a release id"),
        ({"event": "reboot"}, "event 'reboot' is not an event (deploy, rollback, unlock)"),
        ({"status": 1}, "status 1 is not a status (ok, failed)"),
        ({"user": "\x1b[2Jroot"}, "user '\\x1b[2Jroot' is not a user name"),
        ({"time": "yesterday"}, "time 'yesterday' is not a time"),
        ({"reason": ["x"]}, "reason ['x'] is not a text"),
    ],
)
def test_a_line_with_a_bad_field_is_an_error_naming_file_line_and_field(fields: dict[str, object], said: str) -> None:
    with pytest.raises(DamagedJournal) as raised:
        parse([line(), line(**fields)], "/srv/app/journal.jsonl")
    assert str(raised.value) == (
        f"/srv/app/journal.jsonl line 2: {said}; the journal is damaged or was tampered with "
        "(correct or remove that line)"
    )


def test_valid_lines_keep_every_field() -> None:
    (entry,) = parse([line(event="rollback", user="alice@laptop", time="2026-11-21T10:00:00+00:00", reason="r")])
    assert entry == Entry("rollback", A, "ok", None, COMMIT, "alice@laptop", "2026-11-21T10:00:00+00:00", "r")


def test_incomplete_releases_are_those_that_never_went_live() -> None:
    entries = [deploy(A), deploy(B, "failed", previous=A)]
    assert incomplete_releases(entries, [A, B, C], current=A) == [B, C]
    # went live without its own ok line (its journal write failed): named as "from" by the next run
    assert incomplete_releases([deploy(A), deploy(C, previous=B)], [A, B, C], current=C) == []
    assert incomplete_releases([deploy(A), rollback(B, A)], [A, B], current=A) == [], "a rollback's target went live"
    assert incomplete_releases(entries, [A, B], current=B) == [], "current is never incomplete"
    assert incomplete_releases([], [A, B, C], current=None) == [], "a lost journal makes nothing debris"


def test_rolling_back_over_several_releases_skips_all_of_them_later() -> None:
    entries = [deploy("A"), deploy("B", previous="A"), deploy("C", previous="B"), rollback("A", "C")]
    entries.append(deploy("D", previous="A"))
    assert rollback_target(entries, "D", ["A", "B", "C", "D"]) == "A", "B was skipped by the operator"


def test_a_step_forward_with_to_marks_nothing() -> None:
    entries = [deploy("A"), deploy("B", previous="A"), rollback("A", "B"), rollback("B", "A")]
    assert rolled_back_from(entries) == set()
    assert rollback_target(entries, "B", ["A", "B"]) == "A"
