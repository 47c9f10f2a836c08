"""plantd.v1.BusService's pure rules: which services a generic call may reach, frame and topic
limits, permission names, batching defaults and caps, what the gateway may publish, and the
broker directory's replies turned into pages."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from google.protobuf.duration_pb2 import Duration

from plantd.api.errors import GatewayCode, Origin
from plantd.common import contract
from plantd.gateway import bus_map as bm
from plantd.gateway.state_map import RpcFailure
from plantd.v1 import bus_pb2 as pb

pytestmark = pytest.mark.unit


def refusal(call: Callable[[], object]) -> RpcFailure:
    """The RpcFailure ``call`` raises (the test fails when it returns)."""
    with pytest.raises(RpcFailure) as info:
        call()
    assert info.value.origin is Origin.GATEWAY
    return info.value


def invalid_field(call: Callable[[], object], field: str) -> RpcFailure:
    """``call`` is refused as INVALID_ARGUMENT naming ``field`` in its metadata."""
    failure = refusal(call)
    assert failure.code == GatewayCode.INVALID_ARGUMENT
    assert failure.metadata.get("field") == field
    return failure


# ---- check_service ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "service", ["org.plantd.module.Echo", "a", "x" * bm.MAX_SERVICE_CHARS, "mmi", "org.mmi.x"]
)
def test_a_printable_service_name_up_to_the_limit_passes(service: str) -> None:
    """Names of 1 to MAX_SERVICE_CHARS printable ASCII characters come back unchanged."""
    assert bm.check_service(service) == service


def test_an_empty_service_name_is_refused_naming_the_field() -> None:
    failure = invalid_field(lambda: bm.check_service(""), "service")
    assert "service" in failure.message
    failure = invalid_field(
        lambda: bm.check_service("", field="calls[3].service"), "calls[3].service"
    )
    assert "calls[3].service" in failure.message


@pytest.mark.parametrize(
    "service",
    [
        "x" * (bm.MAX_SERVICE_CHARS + 1),
        "with space",
        "tab\there",
        "new\nline",
        "nul\x00",
        "caf\u00e9",
        "\u2603",
    ],
)
def test_an_overlong_or_unprintable_service_name_is_refused(service: str) -> None:
    """One character over the limit, whitespace, control and non-ASCII characters."""
    failure = invalid_field(lambda: bm.check_service(service), "service")
    assert "service" in failure.message
    assert str(bm.MAX_SERVICE_CHARS) in failure.message


@pytest.mark.parametrize(
    ("service", "typed"),
    [
        (contract.SERVICE_STATE, "plantd.v1.StateService"),
        (contract.SERVICE_IDENTITY, "plantd.v1.IdentityService"),
    ],
)
def test_services_with_a_typed_api_are_reserved(service: str, typed: str) -> None:
    """A generic call to state or identity would run with the gateway's identity: refused."""
    assert bm.RESERVED_SERVICES[service] == typed
    failure = refusal(lambda: bm.check_service(service, field="calls[0].service"))
    assert failure.code == GatewayCode.RESERVED_SERVICE
    assert failure.metadata == {"field": "calls[0].service", "use": typed}
    assert typed in failure.message


@pytest.mark.parametrize("service", ["mmi.service", "mmi.services", "mmi."])
def test_the_broker_management_interface_is_reserved(service: str) -> None:
    failure = refusal(lambda: bm.check_service(service))
    assert failure.code == GatewayCode.RESERVED_SERVICE
    assert failure.metadata == {"field": "service", "use": "plantd.v1.BusService"}
    assert "mmi." in failure.message


def test_reserved_names_match_exactly() -> None:
    """Only the exact reserved names are refused, not names that merely contain them."""
    assert bm.check_service(contract.SERVICE_STATE + "2") == contract.SERVICE_STATE + "2"
    assert bm.check_service("org.plantd.state") == "org.plantd.state"


# ---- check_frames, bus_name, permissions ------------------------------------------------------


def test_frames_up_to_the_limit_pass_as_a_list() -> None:
    frames = tuple(b"f%d" % i for i in range(bm.MAX_CALL_FRAMES))
    assert bm.check_frames(frames) == list(frames)
    assert bm.check_frames([]) == []


def test_one_frame_over_the_limit_is_refused_naming_the_field() -> None:
    frames = [b""] * (bm.MAX_CALL_FRAMES + 1)
    failure = invalid_field(lambda: bm.check_frames(frames), "frames")
    assert "frames" in failure.message
    assert str(bm.MAX_CALL_FRAMES + 1) in failure.message
    failure = invalid_field(lambda: bm.check_frames(frames, "calls[1].frames"), "calls[1].frames")
    assert "calls[1].frames" in failure.message


@pytest.mark.parametrize(
    ("bus", "name"), [(pb.BUS_STATE, "state"), (pb.BUS_EVENT, "event"), (pb.BUS_METRIC, "metric")]
)
def test_each_bus_has_its_name(bus: int, name: str) -> None:
    assert bm.bus_name(bus) == name


@pytest.mark.parametrize("bus", [pb.BUS_UNSPECIFIED, 4, -1])
def test_an_unset_or_unknown_bus_is_refused(bus: int) -> None:
    failure = invalid_field(lambda: bm.bus_name(bus), "bus")
    assert "bus" in failure.message


def test_permission_names() -> None:
    assert bm.call_permission("org.plantd.module.Echo") == "bus:call:org.plantd.module.Echo"
    assert bm.subscribe_permission("event") == "bus:subscribe:event"
    assert bm.publish_permission("metric") == "bus:publish:metric"
    assert bm.SERVICES_READ == "bus:services:read"


# ---- check_topic_prefixes ---------------------------------------------------------------------


def test_no_prefix_means_every_topic() -> None:
    assert bm.check_topic_prefixes([]) == (b"",)


def test_prefixes_come_back_as_utf8_bytes_in_order() -> None:
    assert bm.check_topic_prefixes(["b.", "a", "\u00e9t\u00e9"]) == (
        b"b.",
        b"a",
        "\u00e9t\u00e9".encode(),
    )


def test_prefix_count_up_to_the_limit_passes_and_one_over_is_refused() -> None:
    at_limit = [f"p{i}" for i in range(bm.MAX_TOPIC_PREFIXES)]
    assert len(bm.check_topic_prefixes(at_limit)) == bm.MAX_TOPIC_PREFIXES
    failure = invalid_field(
        lambda: bm.check_topic_prefixes([*at_limit, "one-more"]), "topic_prefixes"
    )
    assert "topic prefixes" in failure.message
    assert str(bm.MAX_TOPIC_PREFIXES) in failure.message


def test_prefix_length_is_counted_in_utf8_bytes() -> None:
    """Exactly MAX_TOPIC_BYTES bytes passes; one byte more is refused, whatever the characters."""
    assert bm.check_topic_prefixes(["x" * bm.MAX_TOPIC_BYTES]) == (b"x" * bm.MAX_TOPIC_BYTES,)
    invalid_field(
        lambda: bm.check_topic_prefixes(["x" * (bm.MAX_TOPIC_BYTES + 1)]), "topic_prefixes"
    )
    # 128 two-byte characters: under the limit in characters, 256 bytes.
    two_byte = "\u00e9" * ((bm.MAX_TOPIC_BYTES + 1) // 2)
    assert len(two_byte) <= bm.MAX_TOPIC_BYTES < len(two_byte.encode())
    failure = invalid_field(lambda: bm.check_topic_prefixes(["ok", two_byte]), "topic_prefixes")
    assert "topic prefix" in failure.message
    assert str(bm.MAX_TOPIC_BYTES) in failure.message


# ---- batching ---------------------------------------------------------------------------------


def test_batching_defaults_when_unset() -> None:
    assert bm.batching(pb.SubscribeRequest()) == (bm.DEFAULT_MAX_BATCH, bm.DEFAULT_MAX_DELAY_S)
    assert bm.DEFAULT_MAX_BATCH == 100
    assert bm.DEFAULT_MAX_DELAY_S == 0.010


@pytest.mark.parametrize(
    ("asked", "got"),
    [(1, 1), (37, 37), (bm.MAX_BATCH, bm.MAX_BATCH), (bm.MAX_BATCH + 1, bm.MAX_BATCH)],
)
def test_max_batch_is_taken_up_to_its_cap(asked: int, got: int) -> None:
    size, delay = bm.batching(pb.SubscribeRequest(max_batch=asked))
    assert (size, delay) == (got, bm.DEFAULT_MAX_DELAY_S)


def test_a_negative_max_batch_is_refused() -> None:
    failure = invalid_field(lambda: bm.batching(pb.SubscribeRequest(max_batch=-1)), "max_batch")
    assert "max_batch" in failure.message


@pytest.mark.parametrize(
    ("delay", "got"),
    [
        (Duration(), 0.0),  # set to zero: send at once, not the default
        (Duration(nanos=2_500_000), 0.0025),
        (Duration(seconds=1), bm.MAX_DELAY_S),
        (Duration(seconds=1, nanos=1), bm.MAX_DELAY_S),
        (Duration(seconds=60), bm.MAX_DELAY_S),
    ],
)
def test_max_delay_is_taken_up_to_its_cap(delay: Duration, got: float) -> None:
    size, seconds = bm.batching(pb.SubscribeRequest(max_batch=5, max_delay=delay))
    assert size == 5
    assert seconds == pytest.approx(got)


@pytest.mark.parametrize("delay", [Duration(nanos=-1), Duration(seconds=-1)])
def test_a_negative_max_delay_is_refused(delay: Duration) -> None:
    request = pb.SubscribeRequest(max_delay=delay)
    failure = invalid_field(lambda: bm.batching(request), "max_delay")
    assert "max_delay" in failure.message


# ---- check_publish ----------------------------------------------------------------------------


@pytest.mark.parametrize("bus", ["event", "metric"])
def test_publishing_an_ext_topic_with_one_frame_passes(bus: str) -> None:
    assert bm.check_publish(bus, "ext.line1.started", [b"{}"]) == (b"ext.line1.started", b"{}")


def test_the_state_bus_is_never_published_to() -> None:
    failure = refusal(lambda: bm.check_publish("state", "ext.x", [b"p"]))
    assert failure.code == GatewayCode.PERMISSION_DENIED
    assert failure.metadata.get("field") == "bus"
    assert "state bus" in failure.message
    assert "plantd.v1.StateService" in failure.message


@pytest.mark.parametrize("bus", ["", "events", "STATE"])
def test_an_unknown_bus_name_is_not_publishable(bus: str) -> None:
    failure = refusal(lambda: bm.check_publish(bus, "ext.x", [b"p"]))
    assert failure.code == GatewayCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "topic", ["", "ext", "Ext.x", "identity.revoked", "state.x", "x.ext.y", " ext.x"]
)
def test_a_topic_outside_the_ext_prefix_is_refused(topic: str) -> None:
    failure = invalid_field(lambda: bm.check_publish("event", topic, [b"p"]), "topic")
    assert "topic" in failure.message
    assert repr(bm.PUBLISH_PREFIX) in failure.message


def test_the_published_topic_is_limited_in_utf8_bytes() -> None:
    at_limit = "ext." + "x" * (bm.MAX_TOPIC_BYTES - len("ext."))
    assert bm.check_publish("metric", at_limit, [b""]) == (at_limit.encode(), b"")
    invalid_field(lambda: bm.check_publish("metric", at_limit + "x", [b""]), "topic")
    # Under the limit in characters, over it in bytes.
    wide = "ext." + "\u00e9" * ((bm.MAX_TOPIC_BYTES - len("ext.")) // 2 + 1)
    assert len(wide) <= bm.MAX_TOPIC_BYTES < len(wide.encode())
    failure = invalid_field(lambda: bm.check_publish("metric", wide, [b""]), "topic")
    assert str(bm.MAX_TOPIC_BYTES) in failure.message


def test_a_non_ascii_topic_is_sent_as_utf8() -> None:
    topic, payload = bm.check_publish("event", "ext.\u00e9t\u00e9", [b"\xff"])
    assert (topic, payload) == ("ext.\u00e9t\u00e9".encode(), b"\xff")


@pytest.mark.parametrize("frames", [[], [b"a", b"b"], [b""] * 3])
def test_a_published_message_has_exactly_one_payload_frame(frames: list[bytes]) -> None:
    failure = invalid_field(lambda: bm.check_publish("event", "ext.x", frames), "frames")
    assert "frame" in failure.message
    assert str(len(frames)) in failure.message


# ---- the directory: mmi.service, mmi.services, pages --------------------------------------------


def test_service_available_reads_the_last_frame() -> None:
    assert bm.service_available([b"200"]) is True
    assert bm.service_available([b"404"]) is False
    assert bm.service_available([b"org.plantd.x", b"200"]) is True
    assert bm.service_available([b"200", b"404"]) is False
    assert bm.service_available([b"501"]) is False


def test_service_available_without_frames_is_a_bad_reply() -> None:
    failure = refusal(lambda: bm.service_available([]))
    assert failure.code == GatewayCode.BAD_REPLY
    assert "mmi.service" in failure.message


def test_service_names_come_back_sorted() -> None:
    reply = [b"200", json.dumps(["org.b", "org.a", "mmi.x"]).encode()]
    assert bm.service_names(reply) == ["mmi.x", "org.a", "org.b"]
    assert bm.service_names([b"200", b"[]"]) == []


@pytest.mark.parametrize(
    "reply",
    [
        [],
        [b"200"],
        [b"404", b"[]"],
        [b"200", b"[]", b"extra"],
        [b"200", b"not json"],
        [b"200", b"\xff\xfe\x00"],
        [b"200", b'{"a": 1}'],
        [b"200", b'"org.a"'],
    ],
)
def test_a_bad_mmi_services_reply_is_a_bad_reply(reply: list[bytes]) -> None:
    failure = refusal(lambda: bm.service_names(reply))
    assert failure.code == GatewayCode.BAD_REPLY
    assert "mmi.services" in failure.message


def page(names: list[str], size: int = 0, token: str = "") -> tuple[list[str], str]:
    """(services, next_page_token) of one services_page call."""
    response = bm.services_page(names, pb.ListServicesRequest(page_size=size, page_token=token))
    return list(response.services), response.next_page_token


def test_pages_walk_the_sorted_names_with_the_last_name_as_token() -> None:
    names = ["a", "b", "c", "d", "e"]
    assert page(names, 2) == (["a", "b"], "b")
    assert page(names, 2, "b") == (["c", "d"], "d")
    assert page(names, 2, "d") == (["e"], "")


def test_a_page_that_holds_the_rest_exactly_has_no_token() -> None:
    assert page(["a", "b"], 2) == (["a", "b"], "")
    assert page(["a", "b", "c"], 2, "a") == (["b", "c"], "")
    assert page([], 5) == ([], "")


def test_a_token_past_the_end_gives_an_empty_last_page() -> None:
    assert page(["a", "b"], 1, "b") == ([], "")
    assert page(["a", "b"], 1, "zzz") == ([], "")


def test_a_token_that_is_no_name_starts_after_where_it_would_sort() -> None:
    """A service that went away between pages does not restart or skip the listing."""
    assert page(["a", "c", "e"], 1, "b") == (["c"], "c")


def test_page_size_defaults_to_and_is_capped_at_the_maximum() -> None:
    names = [f"s{i:05d}" for i in range(bm.MAX_SERVICES_PAGE + 5)]
    first = names[: bm.MAX_SERVICES_PAGE]
    assert page(names) == (first, first[-1])
    assert page(names, bm.MAX_SERVICES_PAGE + 1) == (first, first[-1])
    assert page(names, bm.MAX_SERVICES_PAGE) == (first, first[-1])
    assert page(names[: bm.MAX_SERVICES_PAGE]) == (first, "")
    assert page(names, token=first[-1]) == (names[bm.MAX_SERVICES_PAGE :], "")


def test_a_negative_page_size_is_refused() -> None:
    failure = invalid_field(lambda: page(["a"], -1), "page_size")
    assert "page_size" in failure.message
