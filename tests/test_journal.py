"""The journal decides rollback targets and pruning: pure functions, checked on journals a host could hold."""

from __future__ import annotations

from deploytool.journal import Entry, parse, releases_to_prune, rollback_target, rolled_back_from


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


def test_damaged_lines_are_skipped() -> None:
    lines = ['{"event": "deploy", "release": "A", "status": "ok"}', '{"event": "depl', "", "[]"]
    assert [entry.release for entry in parse(lines)] == ["A"]


def test_rolling_back_over_several_releases_skips_all_of_them_later() -> None:
    entries = [deploy("A"), deploy("B", previous="A"), deploy("C", previous="B"), rollback("A", "C")]
    entries.append(deploy("D", previous="A"))
    assert rollback_target(entries, "D", ["A", "B", "C", "D"]) == "A", "B was skipped by the operator"


def test_a_step_forward_with_to_marks_nothing() -> None:
    entries = [deploy("A"), deploy("B", previous="A"), rollback("A", "B"), rollback("B", "A")]
    assert rolled_back_from(entries) == set()
    assert rollback_target(entries, "B", ["A", "B"]) == "A"
