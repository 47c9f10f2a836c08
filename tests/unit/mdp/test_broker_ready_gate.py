"""The broker's readiness gate: ready once the plant's services have workers here, or after
the wait; never unready again."""

from __future__ import annotations

import pytest

from plantd.broker.ready_gate import ReadyGate

pytestmark = pytest.mark.unit


def test_no_services_named_means_ready_at_once() -> None:
    assert ReadyGate([], 30, started=0).check(0, lambda: ())


def test_ready_once_every_named_service_has_a_worker_and_then_for_good() -> None:
    gate = ReadyGate(["org.plantd.State", "org.plantd.Identity"], 30, started=100)
    assert not gate.check(101, lambda: ["org.plantd.State", "other"])
    assert gate.missing == {"org.plantd.Identity"} and not gate.timed_out
    assert gate.check(102, lambda: ["org.plantd.State", "org.plantd.Identity"])
    assert not gate.missing
    # A worker restarting later must not take the broker out of its Service.
    assert gate.check(103, lambda: ())


def test_a_service_that_never_comes_does_not_keep_the_bus_down() -> None:
    gate = ReadyGate(["org.plantd.State"], 30, started=100)
    assert not gate.check(129.9, lambda: ())
    assert gate.check(130, lambda: ())
    assert gate.timed_out and gate.missing == {"org.plantd.State"}


def test_once_open_the_registry_is_not_asked_again() -> None:
    gate = ReadyGate(["a"], 30, started=0)
    assert gate.check(1, lambda: ["a"])

    def must_not_be_called() -> list[str]:
        raise AssertionError("asked again")

    assert gate.check(2, must_not_be_called)
