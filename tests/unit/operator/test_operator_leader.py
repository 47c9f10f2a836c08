"""The Lease election's pure decisions (the behaviour against a real API server: tests/k8s)."""

from __future__ import annotations

import re

import pytest

from plantd_operator.leader import (
    Record,
    Timing,
    held_by_other,
    micro_time,
    next_record,
    record_of,
    released,
    spec_of,
)

pytestmark = pytest.mark.unit
NOW = "2026-01-01T00:00:00.000000Z"
LATER = "2026-01-01T00:00:02.000000Z"


def test_client_go_defaults_are_valid_and_unsafe_combinations_are_refused() -> None:
    Timing().validate()
    with pytest.raises(ValueError, match="must exceed the renew deadline"):
        Timing(lease_duration=10, renew_deadline=10).validate()
    with pytest.raises(ValueError, match="must exceed the retry period"):
        Timing(lease_duration=15, renew_deadline=2, retry_period=2).validate()
    with pytest.raises(ValueError, match="positive"):
        Timing(retry_period=0).validate()


def test_lease_seconds_round_up() -> None:
    assert Timing(lease_duration=6.2, renew_deadline=4, retry_period=1).lease_seconds == 7
    assert Timing().lease_seconds == 15


def test_a_lease_held_by_another_is_respected_until_it_has_not_changed_for_its_duration() -> None:
    other = Record(holder="b", duration=15)
    assert held_by_other(other, "a", observed_at=100.0, now=114.9)
    assert not held_by_other(other, "a", observed_at=100.0, now=115.0)


def test_a_free_released_or_own_lease_can_be_taken() -> None:
    assert not held_by_other(Record(holder="", duration=1), "a", 100.0, 100.0)
    assert not held_by_other(Record(holder="a", duration=15), "a", 100.0, 100.0)


def test_taking_a_new_lease_renewing_and_taking_over() -> None:
    t = Timing()
    first = next_record(None, "a", t, NOW)
    assert first == Record("a", 15, NOW, NOW, 0)
    renewed = next_record(first, "a", t, LATER)
    assert renewed == Record("a", 15, NOW, LATER, 0), "renewal keeps acquireTime and count"
    taken = next_record(renewed, "b", t, LATER)
    assert taken == Record("b", 15, LATER, LATER, 1), "a new holder is a transition"


def test_release_clears_the_holder_and_shortens_the_lease() -> None:
    out = released(Record("a", 15, NOW, NOW, 4), LATER)
    assert out.holder == "" and out.duration == 1 and out.transitions == 4


def test_record_round_trips_through_the_lease_spec() -> None:
    rec = Record("a", 15, NOW, LATER, 3)
    assert record_of({"spec": spec_of(rec)}) == rec
    assert record_of(None) is None
    assert record_of({"spec": {}}) == Record()


def test_micro_time_is_rfc3339_with_microseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", micro_time())
