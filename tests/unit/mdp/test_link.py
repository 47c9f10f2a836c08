"""plantd.mdp.link's pure core: when a dropped connection is the request's."""

from __future__ import annotations

import struct

import zmq

from plantd.mdp.link import LinkState, parse_event

UP, DOWN = zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED
A, B = b"tcp://10.0.0.1:9797", b"tcp://10.0.0.2:9797"


def state(*events: tuple[int, bytes]) -> LinkState:
    s = LinkState()
    for e in events:
        s.apply(*e)
    return s


def test_a_drop_after_the_send_on_the_only_link_is_the_requests() -> None:
    s = state((UP, A))
    token = s.sent()
    assert not s.lost(token)
    s.apply(DOWN, A)
    assert s.lost(token)


def test_a_drop_before_the_send_is_not() -> None:
    s = state((UP, A), (DOWN, A), (UP, A))
    token = s.sent()
    assert not s.lost(token)


def test_a_request_queued_while_down_is_lost_with_the_link_it_went_out_on() -> None:
    s = state()  # one broker, not connected yet: the request waits in the socket
    token = s.sent()
    s.apply(UP, A)
    assert not s.lost(token)
    s.apply(DOWN, A)
    assert s.lost(token)


def test_with_several_links_up_a_drop_is_not_attributed() -> None:
    s = state((UP, A), (UP, B))
    token = s.sent()
    assert token is None
    s.apply(DOWN, A)
    assert not s.lost(token)  # the request may be on the link that stayed
    assert s.sent() is not None  # one link left: the next request's drop would be its


def test_a_link_that_came_up_after_the_send_is_not_the_requests() -> None:
    """A broker set: the request went out on the one link up; another connects, then drops."""
    s = state((UP, A))
    token = s.sent()
    s.apply(UP, B)
    s.apply(DOWN, B)
    assert not s.lost(token)
    s.apply(DOWN, A)
    assert s.lost(token)


def test_a_failed_handshake_is_no_drop() -> None:
    s = state()
    token = s.sent()
    s.apply(DOWN, A)  # a wrong CURVE key: DISCONNECTED without HANDSHAKE_SUCCEEDED
    assert not s.lost(token)
    assert s.up == {}


def test_history_is_bounded() -> None:
    s = LinkState(history=4)
    for _ in range(100):
        s.apply(UP, A)
        s.apply(DOWN, A)
    assert len(s._log) == 4 and s.up == {}


def test_parse_event_reads_the_id_and_endpoint_and_refuses_garbage() -> None:
    frame = struct.pack("=hi", DOWN, 7)
    assert parse_event([frame, A]) == (DOWN, A)
    assert parse_event([b"short", b""]) is None
    assert parse_event([frame]) is None
