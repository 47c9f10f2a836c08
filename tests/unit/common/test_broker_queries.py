"""org.plantd.Broker answers (pure: a fixed snapshot in, JSON frames out)."""

from __future__ import annotations

import json

import pytest

from plantd.broker.queries import handle
from plantd.mdp.stats import BrokerSnapshot, ServiceInfo, WorkerInfo

pytestmark = pytest.mark.unit

SNAP = BrokerSnapshot(
    endpoints=("tcp://*:9797",),
    uptime_s=12.3456,
    draining=False,
    services=(
        ServiceInfo("org.plantd.State", workers=2, idle=1, queued=3, in_flight=1),
        ServiceInfo("org.plantd.module.Echo", workers=1, idle=1, queued=0, in_flight=0),
    ),
    workers=(WorkerInfo("ab", "org.plantd.State", "mdp02", 1, 1, 5.0),),
)


def _ask(*frames: bytes) -> list[dict[str, object]]:
    return [json.loads(f) for f in handle(list(frames), lambda: SNAP)]


def test_service_keeps_the_original_shape_with_real_data() -> None:
    assert _ask(b"service", b'{"service": "org.plantd.State"}') == [
        {"org.plantd.State": {"workers": 2, "idle": 1, "queued": 3, "in_flight": 1}}
    ]


def test_services_lists_every_service() -> None:
    (reply,) = _ask(b"services", b"{}")
    services = reply["services"]
    assert isinstance(services, list)
    assert [s["name"] for s in services] == ["org.plantd.State", "org.plantd.module.Echo"]
    assert services[1]["workers"] == 1


def test_broker_summary() -> None:
    (reply,) = _ask(b"broker")
    assert reply["endpoints"] == ["tcp://*:9797"]
    assert reply["uptime_s"] == 12.346
    assert reply["services"] == 2
    assert reply["workers"][0]["service"] == "org.plantd.State"  # type: ignore[index]


def test_broker_summary_says_where_the_rights_come_from() -> None:
    assert _ask(b"broker")[0]["registry"] is None  # no CURVE: no rights
    status = {"mode": "registry", "enrolled": 2, "identity": {"ok": False}}
    (reply,) = [json.loads(f) for f in handle([b"broker"], lambda: SNAP, lambda: status)]
    assert reply["registry"] == status


def test_one_reply_part_per_body_part_even_when_bad() -> None:
    replies = _ask(b"service", b"{}", b"{bad", b"[1]", b'{"service": "nope"}', b"")
    assert [r.get("code") for r in replies] == [
        "bad_request",
        "bad_request",
        "bad_request",
        "not_found",
        "bad_request",
    ]


def test_type_only_request_gets_an_answer() -> None:
    (reply,) = _ask(b"services")
    assert "services" in reply


def test_unknown_type_and_empty_request() -> None:
    (reply,) = _ask(b"restart", b"{}")
    assert reply["code"] == "bad_request"
    assert "service, services, broker" in str(reply["error"])
    (reply,) = _ask()
    assert reply["code"] == "bad_request"


def test_non_utf8_body() -> None:
    (reply,) = _ask(b"service", b"\xff\xfe")
    assert reply["code"] == "bad_request"
