"""Issue 7 case 3: one worker socket cannot exhaust the broker's service table or /metrics."""

from __future__ import annotations

import time

import pytest
from tests.adversarial.advkit import Bounds, MakeStack, Stack, recv_until, under_attack
from tests.kit.wait import wait_for

from plantd.mdp import BrokerError, RequestTimeout

pytestmark = pytest.mark.adversarial

FLOOD = 20_000  # READYs for distinct names, as in the issue (cheap: ~1 s to send)
LATE = "org.plantd.test.LateComer"


def _series(metrics: str) -> int:
    return sum(1 for line in metrics.splitlines() if line and not line.startswith("#"))


def test_ready_flood_for_distinct_names(make_stack: MakeStack) -> None:
    """20,000 READYs for distinct names from one worker socket. The broker refuses past its
    per-peer name limit (DISCONNECT), forgets services with no worker and no queue once the
    flooder is gone, a worker registering a new name afterwards is served, and /metrics stays
    bounded (top-N + "other"; the issue saw ~30K series and QUEUE_FULL for every new name)."""
    stack: Stack = make_stack(with_state=False)
    series_before = _series(stack.metrics())
    with under_attack(stack, "case 3", Bounds({"broker": 100})):
        sock = stack.dealer("attacker")
        t0 = time.monotonic()
        for i in range(FLOOD):
            sock.send_multipart([b"MDPW02", b"\x01", b"flood.%d" % i])
        back = recv_until(sock, 3.0, count=FLOOD)
        sent_s = time.monotonic() - t0
        sock.close(0)  # the flooder goes silent: its worker expires after liveness x heartbeat
        disconnects = sum(1 for m in back if m[:2] in ([b"MDPW02", b"\x06"],))
        late = stack.spawn_echo(LATE)
        client = stack.client("client", timeout=2.0)

        def late_served() -> bool:
            assert late.alive(), f"the late echo worker exited:\n{late.log()}"
            try:
                return client.request(LATE, b"echo", b"hi") == [b"hi"]
            except (RequestTimeout, BrokerError):
                return False

        wait_for(late_served, 30.0, f"a new worker for {LATE} to be served after the flood")
        client.close()
    metrics = stack.metrics()
    series = _series(metrics)
    print(
        f"[case 3] {FLOOD} READYs in {sent_s:.1f} s, {disconnects} DISCONNECTs back; "
        f"/metrics series {series_before} -> {series}, {len(metrics)} bytes"
    )
    assert late.alive()
    assert disconnects > 0, "the broker accepted every one of 20,000 names from one peer"
    assert series < series_before + 500, f"/metrics grew from {series_before} to {series} series"
