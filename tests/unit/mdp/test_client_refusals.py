"""The policy for requests refused unrun (SHUTTING_DOWN, SERVICE_UNAVAILABLE): sent again,
within the deadline."""

from __future__ import annotations

import pytest

from plantd.mdp.client import _Refusals
from plantd.mdp.errors import BrokerError, ErrorCode, RequestTimeout


def refused() -> BrokerError:
    return BrokerError(ErrorCode.SHUTTING_DOWN, "broker is shutting down", "svc")


def test_no_worker_here_is_refused_unrun_and_sent_again() -> None:
    # A broker whose workers for the service left (orphan_wait_ms): another may have them.
    error = BrokerError(ErrorCode.SERVICE_UNAVAILABLE, "the workers left this broker", "svc")
    policy = _Refusals(timeout=10.0, rng=lambda: 1.0)
    assert policy.pause_after(error) == 0.05
    assert policy.explain(RequestTimeout("svc", 0.1, 1)) is error
    # Once: a name no broker serves must not keep the caller waiting for its whole timeout.
    again = BrokerError(ErrorCode.SERVICE_UNAVAILABLE, "no worker", "svc")
    with pytest.raises(BrokerError) as info:
        policy.pause_after(again)
    assert info.value is again


def test_a_refusal_is_sent_again_with_growing_pauses() -> None:
    policy = _Refusals(timeout=10.0, rng=lambda: 1.0)
    assert [policy.pause_after(refused()) for _ in range(3)] == [0.05, 0.1, 0.2]
    assert 9.0 < policy.remaining() <= 10.0


def test_each_pause_is_jittered_between_half_and_all_of_it() -> None:
    least = _Refusals(timeout=10.0, rng=lambda: 0.0)
    assert [least.pause_after(refused()) for _ in range(3)] == [0.025, 0.05, 0.1]
    pauses = {_Refusals(timeout=10.0).pause_after(refused()) for _ in range(50)}
    assert len(pauses) > 1 and all(0.025 <= p <= 0.05 for p in pauses)


@pytest.mark.parametrize("code", [ErrorCode.WORKER_LOST, ErrorCode.DEADLINE_EXCEEDED])
def test_an_error_that_may_have_run_is_never_sent_again(code: str) -> None:
    error = BrokerError(code, "maybe it ran", "svc")
    with pytest.raises(BrokerError) as info:
        _Refusals(timeout=10.0).pause_after(error)
    assert info.value is error


def test_no_pause_past_the_deadline_and_the_refusal_explains_a_later_timeout() -> None:
    policy = _Refusals(timeout=0.12, rng=lambda: 1.0)
    accepted = refused()
    assert policy.pause_after(accepted) == 0.05  # 0.05 s fits in 0.12 s
    late = refused()
    policy._pauses = iter([0.5])  # a pause longer than what is left
    with pytest.raises(BrokerError) as info:
        policy.pause_after(late)
    assert info.value is late
    assert policy.explain(RequestTimeout("svc", 0.1, 1)) is accepted
    plain = RequestTimeout("svc", 0.1, 1)
    assert _Refusals(timeout=1.0).explain(plain) is plain
