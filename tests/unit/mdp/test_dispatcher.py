"""Dispatch without sockets: frames into ``Dispatcher.handle``/``tick``, frames out of ``out``.

As majortomo tests its services container: no sockets, no threads, time passed in explicitly,
so every deadline and expiry is exact. Frames are built with the codec, the way peers send
them; what the broker sends is read back as whole frame lists.
"""

from __future__ import annotations

import json

import pytest

from plantd.mdp import codec
from plantd.mdp.budgets import Limits
from plantd.mdp.codec import Dialect
from plantd.mdp.dispatcher import OTHER, Dispatcher
from plantd.mdp.errors import ERROR_MARKER, ErrorCode, ProtocolError

pytestmark = pytest.mark.unit

HB = 1.0  # heartbeat interval (s); liveness 3 -> a worker expires after 3 s of silence
TIMEOUT = 5.0  # request_timeout (s)
SVC = b"echo"
D02, D01, LEG = Dialect.MDP02, Dialect.MDP01, Dialect.LEGACY


def make(**limits: object) -> Dispatcher:
    return Dispatcher(
        Limits(**limits),  # type: ignore[arg-type]
        heartbeat_s=HB,
        liveness=3,
        request_timeout=TIMEOUT,
        max_credit=500,
        now=0.0,
    )


def take(d: Dispatcher) -> list[list[bytes]]:
    """The outbox as whole messages (routing id first), emptied."""
    msgs: list[list[bytes]] = []
    for m in d.out:
        if isinstance(m, list):
            msgs.append(list(m))
        else:
            to, head, addr, body, delimit = m
            msgs.append([to, *head, addr, *([b""] if delimit else []), *body])
    d.out.clear()
    return msgs


def ready(d: Dispatcher, wid: bytes, svc: bytes = SVC, dialect: Dialect = D02, credit: int = 1,
          now: float = 0.0) -> None:  # fmt: skip
    d.handle([wid, *codec.encode_ready(svc, dialect, credit)], now)


def request(d: Dispatcher, cid: bytes, *body: bytes, svc: bytes = SVC, dialect: Dialect = D02,
            now: float = 0.0) -> None:  # fmt: skip
    d.handle([cid, *codec.encode_request(svc, list(body), dialect)], now)


def final(d: Dispatcher, wid: bytes, cid: bytes, *body: bytes, dialect: Dialect = D02,
          now: float = 0.0) -> None:  # fmt: skip
    d.handle([wid, *codec.encode_worker_reply(cid, list(body), True, dialect)], now)


def partial(d: Dispatcher, wid: bytes, cid: bytes, *body: bytes, now: float = 0.0) -> None:
    d.handle([wid, *codec.encode_worker_reply(cid, list(body), False, D02)], now)


def requests_to(msgs: list[list[bytes]], wid: bytes) -> list[list[bytes]]:
    """(client, body) of each REQUEST sent to ``wid``, as [client, *body]."""
    out = []
    for m in msgs:
        if m[0] != wid:
            continue
        try:
            cmd = codec.decode_worker_command(m[1:])
        except ProtocolError:  # a reply to a client, not a worker command
            continue
        if isinstance(cmd, codec.WorkerRequest):
            out.append([cmd.client, *cmd.body])
    return out


def reply_to(msgs: list[list[bytes]], cid: bytes) -> codec.Reply:
    got = [codec.decode_reply(m[1:]) for m in msgs if m[0] == cid]
    assert len(got) == 1, f"expected one reply to {cid!r}, got {got}"
    return got[0]


def error_code(r: codec.Reply) -> str | None:
    err = codec.parse_error_reply(r.body)
    return err[0] if err else None


def error_message(r: codec.Reply) -> str:
    err = codec.parse_error_reply(r.body)
    return err[1] if err else ""


def is_disconnect(m: list[bytes]) -> bool:
    return isinstance(codec.decode_worker_command(m[1:]), codec.Disconnect)


# --------------------------------------------------------------------------- the round trip


@pytest.mark.parametrize("wd", list(Dialect))
@pytest.mark.parametrize("cd", list(Dialect))
def test_round_trip_in_each_dialect(cd: Dialect, wd: Dialect) -> None:
    d = make()
    ready(d, b"W", dialect=wd)
    hb = take(d)
    assert len(hb) == 1 and isinstance(codec.decode_worker_command(hb[0][1:]), codec.Heartbeat)
    request(d, b"C", b"hello", b"world", dialect=cd)
    assert requests_to(take(d), b"W") == [[b"C", b"hello", b"world"]]
    final(d, b"W", b"C", b"hi", dialect=wd, now=0.25)
    r = reply_to(take(d), b"C")
    assert (r.service, r.body, r.final, r.dialect) == (SVC, [b"hi"], True, cd)
    s = d.stats()
    assert s.requests == {("echo", cd.label): 1} and s.replies == {("echo", cd.label): 1}
    assert s.latency.count == 1 and s.latency.sum == pytest.approx(0.25)
    assert d.client_usage(b"C") == (0, 0)  # answered: out of its budget


def test_request_waits_for_a_worker_then_goes_to_it() -> None:
    d = make()
    request(d, b"C", b"x")
    assert take(d) == [] and d.service_info(SVC) is not None
    ready(d, b"W", now=1.0)
    assert requests_to(take(d), b"W") == [[b"C", b"x"]]


def test_credit_window_and_release() -> None:
    d = make()
    ready(d, b"W", credit=3)
    take(d)
    for i in range(4):
        request(d, b"C%d" % i, b"%d" % i)
    assert [r[0] for r in requests_to(take(d), b"W")] == [b"C0", b"C1", b"C2"]
    assert d.service_info(SVC).queued == 1  # type: ignore[union-attr]
    final(d, b"W", b"C1", b"ok")
    msgs = take(d)
    assert reply_to(msgs, b"C1").body == [b"ok"]
    assert requests_to(msgs, b"W") == [[b"C3", b"3"]]


def test_credit_is_capped_so_a_burst_stays_under_the_send_hwm() -> None:
    d = make()
    ready(d, b"W", credit=10_000)
    assert d.worker_infos()[0].credit == 500


def test_lru_longest_waiting_worker_first() -> None:
    d = make()
    ready(d, b"W1")
    ready(d, b"W2")
    take(d)
    request(d, b"A", b"1")
    request(d, b"B", b"2")
    msgs = take(d)
    assert requests_to(msgs, b"W1") == [[b"A", b"1"]]
    assert requests_to(msgs, b"W2") == [[b"B", b"2"]]
    final(d, b"W2", b"B")
    final(d, b"W1", b"A")
    take(d)
    request(d, b"C", b"3")  # W2 has waited longest now
    assert requests_to(take(d), b"W2") == [[b"C", b"3"]]


def test_credit_worker_keeps_one_wakeups_burst_then_rotates() -> None:
    d = make()
    ready(d, b"W1", credit=10)
    ready(d, b"W2", credit=10)
    take(d)
    for i in range(3):
        request(d, b"C%d" % i, b"x")
    assert len(requests_to(take(d), b"W1")) == 3  # one batch to the front worker
    d.end_wakeup()
    request(d, b"D", b"y")
    assert requests_to(take(d), b"W2") == [[b"D", b"y"]]


# --------------------------------------------------------------------------- deadlines, expiry


def test_queue_deadline_without_worker_is_service_unavailable() -> None:
    d = make()
    request(d, b"C", b"x")
    d.tick(TIMEOUT - 0.01)
    assert take(d) == []
    d.tick(TIMEOUT + 0.01)
    r = reply_to(take(d), b"C")
    assert error_code(r) == ErrorCode.SERVICE_UNAVAILABLE
    assert d.service_info(SVC) is None  # a name only a client mentioned is forgotten at once
    assert d.client_usage(b"C") == (0, 0)


def test_queue_deadline_with_busy_worker_is_deadline_exceeded() -> None:
    d = make()
    ready(d, b"W")
    request(d, b"A", b"1")
    request(d, b"B", b"2")
    take(d)
    d.handle([b"W", *codec.encode_worker_heartbeat()], TIMEOUT)
    d.tick(TIMEOUT + 0.01)
    assert error_code(reply_to(take(d), b"B")) == ErrorCode.DEADLINE_EXCEEDED


ORPHAN = 1.0  # orphan_timeout (s): how long a request waits for workers that left


def orphaned(**kw: float) -> Dispatcher:
    """A dispatcher with orphan_timeout whose only echo worker has left (at t=1)."""
    d = Dispatcher(Limits(), heartbeat_s=HB, liveness=3, request_timeout=TIMEOUT,
                   orphan_timeout=ORPHAN, now=0.0, **kw)  # fmt: skip
    ready(d, b"W")
    d.handle([b"W", *codec.encode_worker_disconnect()], 1.0)
    take(d)
    return d


def test_workers_that_left_make_requests_wait_only_the_orphan_timeout() -> None:
    d = orphaned()
    request(d, b"C", b"x", now=2.0)
    d.tick(2.0 + ORPHAN - 0.01)
    assert take(d) == []
    d.tick(2.0 + ORPHAN + 0.01)
    r = reply_to(take(d), b"C")
    assert error_code(r) == ErrorCode.SERVICE_UNAVAILABLE
    assert "left this broker" in error_message(r) and "not run" in error_message(r)
    assert d.client_usage(b"C") == (0, 0)


def test_a_worker_back_within_the_orphan_timeout_takes_the_request() -> None:
    d = orphaned()
    request(d, b"C", b"x", now=2.0)
    ready(d, b"W2", now=2.5)
    assert requests_to(take(d), b"W2") == [[b"C", b"x"]]
    # With a worker again, new requests wait the whole request timeout, as before.
    d.handle([b"W2", *codec.encode_worker_heartbeat()], 2.6)
    request(d, b"D", b"y", now=2.6)
    d.tick(2.6 + ORPHAN + 0.5)
    assert [m for m in take(d) if m[0] == b"D"] == []


def test_requests_queued_when_the_last_worker_leaves_wait_no_longer_than_new_ones() -> None:
    d = Dispatcher(Limits(), heartbeat_s=HB, liveness=3, request_timeout=TIMEOUT,
                   orphan_timeout=ORPHAN, now=0.0)  # fmt: skip
    ready(d, b"W")
    request(d, b"A", b"1")  # taken by W
    request(d, b"B", b"2")  # queued behind it: deadline 5.0
    take(d)
    d.handle([b"W", *codec.encode_worker_disconnect()], 1.0)
    msgs = take(d)
    assert error_code(reply_to(msgs, b"A")) == ErrorCode.WORKER_LOST
    request(d, b"C", b"3", now=1.5)  # orphaned: deadline 2.5
    d.tick(2.01)  # B's deadline was cut to 1.0 + ORPHAN
    assert error_code(reply_to(take(d), b"B")) == ErrorCode.SERVICE_UNAVAILABLE
    d.tick(2.51)
    assert error_code(reply_to(take(d), b"C")) == ErrorCode.SERVICE_UNAVAILABLE


def test_without_orphan_timeout_requests_wait_the_request_timeout() -> None:
    d = make()
    ready(d, b"W")
    d.handle([b"W", *codec.encode_worker_disconnect()], 1.0)
    take(d)
    request(d, b"C", b"x", now=2.0)
    d.tick(2.0 + TIMEOUT - 0.01)
    assert take(d) == []
    d.tick(2.0 + TIMEOUT + 0.01)
    r = reply_to(take(d), b"C")
    assert error_code(r) == ErrorCode.SERVICE_UNAVAILABLE and "left" not in error_message(r)


def test_silent_worker_expires_and_its_requests_fail_worker_lost() -> None:
    d = make()
    ready(d, b"W")
    request(d, b"C", b"x")
    take(d)
    d.tick(2.9)  # heartbeat at 1.0 s... silent until 3.0 s is still alive
    assert d.worker_count == 1
    take(d)
    d.tick(3.5)  # silent for 3.5 s, but expiry is checked with each heartbeat round
    assert d.worker_count == 1
    d.tick(4.0)
    msgs = take(d)
    assert error_code(reply_to(msgs, b"C")) == ErrorCode.WORKER_LOST
    assert any(m[0] == b"W" and is_disconnect(m) for m in msgs)
    assert d.worker_count == 0


def test_heartbeats_go_to_every_worker_busy_or_idle() -> None:
    d = make()
    ready(d, b"W1")
    ready(d, b"W2")
    request(d, b"C", b"x")
    take(d)
    d.tick(HB + 0.01)
    beats = [
        m[0] for m in take(d) if isinstance(codec.decode_worker_command(m[1:]), codec.Heartbeat)
    ]
    assert sorted(beats) == [b"W1", b"W2"]


def test_heartbeat_from_unknown_worker_gets_disconnect() -> None:
    d = make()
    d.handle([b"W", *codec.encode_worker_heartbeat(LEG)], 0.0)
    (m,) = take(d)
    assert m == [b"W", codec.MDPW02, codec.L_DISCONNECT]


def test_worker_disconnect_fails_its_requests() -> None:
    d = make()
    ready(d, b"W")
    request(d, b"C", b"x")
    take(d)
    d.handle([b"W", *codec.encode_worker_disconnect()], 0.1)
    r = reply_to(take(d), b"C")
    assert error_code(r) == ErrorCode.WORKER_LOST and d.worker_count == 0


def test_service_table_expiry_after_ttl() -> None:
    d = make(service_ttl=10.0)
    ready(d, b"W")
    d.handle([b"W", *codec.encode_worker_disconnect()], 1.0)
    d.tick(10.9)
    assert d.service_info(SVC) is not None  # kept a while: a restarting worker comes back
    d.tick(11.1)
    assert d.service_info(SVC) is None and d.service_count == 0


# --------------------------------------------------------------------------- streams


def test_partials_are_forwarded_and_mdp01_clients_get_one_reply() -> None:
    d = make()
    ready(d, b"W", credit=2)
    request(d, b"A", b"q")
    request(d, b"B", b"q", dialect=D01)
    take(d)
    partial(d, b"W", b"A", b"p1")
    partial(d, b"W", b"B", b"p1")
    r = reply_to(take(d), b"A")  # B (MDP/0.1) gets nothing yet
    assert (r.final, r.body) == (False, [b"p1"])
    final(d, b"W", b"A", b"f")
    final(d, b"W", b"B", b"f")
    msgs = take(d)
    assert reply_to(msgs, b"A").body == [b"f"]
    b = reply_to(msgs, b"B")
    assert (b.dialect, b.body) == (D01, [b"p1", b"f"])


def test_stream_over_the_limit_fails_once_and_final_returns_credit() -> None:
    d = make(max_frame_size=1024, max_message_size=2048)
    ready(d, b"W")
    request(d, b"C", b"q", dialect=D01)
    take(d)
    partial(d, b"W", b"C", b"x" * 1500)
    assert take(d) == []
    partial(d, b"W", b"C", b"x" * 1000)  # 2500 buffered > 2048
    assert error_code(reply_to(take(d), b"C")) == ErrorCode.MESSAGE_TOO_LARGE
    partial(d, b"W", b"C", b"more")
    final(d, b"W", b"C", b"end")
    assert take(d) == []  # one error, never a reply after it
    request(d, b"D", b"next")
    assert requests_to(take(d), b"W") == [[b"D", b"next"]]  # credit came back


# --------------------------------------------------------------------------- budgets


def test_too_many_frames_is_refused_cheaply() -> None:
    d = make(max_frames=16)
    ready(d, b"W")
    take(d)
    d.handle([b"C", *codec.encode_request(SVC, [b""] * 17)], 0.0)
    r = reply_to(take(d), b"C")
    assert error_code(r) == ErrorCode.MESSAGE_TOO_LARGE
    assert "20 frames" in codec.parse_error_reply(r.body)[1]  # type: ignore[index]
    assert d.malformed["message_too_large"] == 1
    d.handle([b"C", *codec.encode_request(SVC, [b""] * 13)], 0.0)  # 16 frames: at the limit
    assert len(requests_to(take(d), b"W")) == 1


def test_message_too_large_by_bytes() -> None:
    d = make(max_frame_size=1024, max_message_size=2048)
    request(d, b"C", b"x" * 1024, b"y" * 1024, b"z")
    assert error_code(reply_to(take(d), b"C")) == ErrorCode.MESSAGE_TOO_LARGE


def test_queue_full_by_count_and_by_bytes() -> None:
    d = make(max_queue=2, max_queue_bytes=3000, newcomer_bytes=0)
    ready(d, b"W")
    request(d, b"A", b"busy")
    request(d, b"B", b"1")
    request(d, b"C", b"2")
    request(d, b"D", b"3")  # count
    msgs = take(d)
    assert error_code(reply_to(msgs, b"D")) == ErrorCode.QUEUE_FULL
    d2 = make(max_queue_bytes=3000, newcomer_bytes=0)
    ready(d2, b"W")
    request(d2, b"A", b"busy")
    request(d2, b"B", b"x" * 2000)
    request(d2, b"C", b"x" * 1001)  # 3001 bytes queued > 3000
    assert error_code(reply_to(take(d2), b"C")) == ErrorCode.QUEUE_FULL


def test_client_in_flight_cap_by_count_and_bytes() -> None:
    d = make(max_client_requests=3, max_client_bytes=4096)
    ready(d, b"W")
    for i in range(4):
        request(d, b"C", b"%d" % i)
    msgs = take(d)
    errs = [codec.decode_reply(m[1:]) for m in msgs if m[0] == b"C"]
    assert [error_code(r) for r in errs] == [ErrorCode.TOO_MANY_REQUESTS]
    assert d.client_usage(b"C") == (3, 3)
    request(d, b"OTHER", b"fine")  # another client is not affected
    assert not [m for m in take(d) if m[0] == b"OTHER"]
    d2 = make(max_client_bytes=4096)
    request(d2, b"C", b"x" * 3000)
    request(d2, b"C", b"x" * 1500)
    assert error_code(reply_to(take(d2), b"C")) == ErrorCode.TOO_MANY_REQUESTS


def test_client_budget_follows_the_curve_key_across_sockets() -> None:
    d = make(max_client_requests=2)
    d.peer_keys.update({b"s1": b"KEY", b"s2": b"KEY"})
    request(d, b"s1", b"a")
    request(d, b"s2", b"b")
    request(d, b"s2", b"c")
    assert error_code(reply_to(take(d), b"s2")) == ErrorCode.TOO_MANY_REQUESTS
    assert d.client_usage(b"KEY") == (2, 2)


def test_broker_wide_byte_budget_is_overloaded_but_newcomers_get_in() -> None:
    d = make(max_queued_bytes=10_000, newcomer_bytes=100)
    for i in range(5):
        request(d, b"A", b"x" * 2000, svc=b"s%d" % i)
    request(d, b"A", b"x" * 10, svc=b"s9")
    assert error_code(reply_to(take(d), b"A")) == ErrorCode.OVERLOADED
    assert d.queued_bytes == 10_000
    request(d, b"NEW", b"probe", svc=b"s9")  # nothing outstanding, small: queued anyway
    assert take(d) == [] and d.client_usage(b"NEW") == (1, 5)
    request(d, b"BIG", b"x" * 101, svc=b"s9")  # a newcomer, but not small
    assert error_code(reply_to(take(d), b"BIG")) == ErrorCode.OVERLOADED


# --------------------------------------------------------------------------- fairness


def test_fair_queuing_across_clients_of_a_service() -> None:
    d = make()
    ready(d, b"W")
    for _ in range(50):
        request(d, b"HOG", b"x" * 1000)  # the first goes to W at once, 49 queue
    request(d, b"NICE", b"n")
    take(d)
    order: list[bytes] = []
    client = b"HOG"
    for _ in range(4):
        final(d, b"W", client)
        (nxt,) = requests_to(take(d), b"W")
        client = nxt[0]
        order.append(client)
    # NICE waits for about one quantum of each client ahead of it, not 49 of HOG's requests.
    assert b"NICE" in order[:2], order


def test_fair_queuing_is_by_bytes() -> None:
    """A client of big requests gets fewer of them per round than one of small requests."""
    d = make()
    for _ in range(20):
        request(d, b"BIG", b"x" * 20_000)
        request(d, b"SMALL", b"s")
    ready(d, b"W", credit=20)
    got = [c for c, *_ in requests_to(take(d), b"W")]
    assert got.count(b"SMALL") >= 15, got


def test_fair_queuing_keeps_each_clients_order() -> None:
    d = make()
    for c in (b"A", b"B"):
        for i in range(3):
            request(d, c, b"%d" % i)
    ready(d, b"W", credit=6)
    got = requests_to(take(d), b"W")
    assert got[:2] == [[b"A", b"0"], [b"B", b"0"]]
    for c in (b"A", b"B"):
        assert [b for k, b in got if k == c] == [b"0", b"1", b"2"]


# --------------------------------------------------------------------------- the table


def test_reserved_mmi_names_are_refused() -> None:
    d = make()
    ready(d, b"W", svc=b"mmi.service")
    (m,) = take(d)
    assert is_disconnect(m) and d.malformed["reserved_service"] == 1 and d.worker_count == 0


def test_second_ready_from_the_same_worker_disconnects_it() -> None:
    d = make()
    ready(d, b"W")
    request(d, b"C", b"x")
    take(d)
    ready(d, b"W", svc=b"other")
    msgs = take(d)
    assert any(m[0] == b"W" and is_disconnect(m) for m in msgs)
    assert error_code(reply_to(msgs, b"C")) == ErrorCode.WORKER_LOST
    assert d.worker_count == 0


def test_max_services() -> None:
    d = make(max_services=2)
    ready(d, b"W1", svc=b"a")
    ready(d, b"W2", svc=b"b")
    take(d)
    ready(d, b"W3", svc=b"c")
    (m,) = take(d)
    assert is_disconnect(m) and d.malformed["too_many_services"] == 1
    request(d, b"C", b"x", svc=b"new")
    assert error_code(reply_to(take(d), b"C")) == ErrorCode.QUEUE_FULL


def test_max_workers() -> None:
    d = make(max_workers=2)
    for w in (b"W1", b"W2", b"W3"):
        ready(d, w)
    msgs = take(d)
    assert is_disconnect(msgs[-1]) and msgs[-1][0] == b"W3"
    assert d.malformed["too_many_workers"] == 1 and d.worker_count == 2


def test_name_flood_from_one_peer_is_bounded_and_expires() -> None:
    """Issue 7 item 3: one socket sends READYs for 20,000 distinct names."""
    d = make(max_names_per_peer=8, service_ttl=10.0)
    for i in range(20_000):
        ready(d, b"FLOOD", svc=b"junk.%d" % i, now=0.5)
    take(d)
    assert d.service_count <= 8
    assert d.malformed["too_many_names"] >= 20_000 - 2 * 8
    ready(d, b"GOOD", svc=b"real", now=0.6)  # another peer registers at once
    assert len(take(d)) == 1 and d.worker_count >= 1
    request(d, b"C", b"x", svc=b"brand.new", now=0.6)
    assert take(d) == []  # queued, not QUEUE_FULL
    d.tick(11.0)
    take(d)
    assert d.service_info(b"junk.0") is None
    ready(d, b"FLOOD2", svc=b"junk.0", now=11.0)  # its names are forgotten with the entries
    assert not is_disconnect(take(d)[0])


def test_metrics_labels_are_bounded_top_n_plus_other() -> None:
    d = make(metrics_top_services=5)
    for i in range(50):
        ready(d, b"W%d" % i, svc=b"s%02d" % i)
        for _ in range(i):
            request(d, b"C", b"x", svc=b"s%02d" % i)
            final(d, b"W%d" % i, b"C")
    s = d.stats()
    names = {svc for svc, _ in s.requests}
    assert names == {"s45", "s46", "s47", "s48", "s49", OTHER}
    assert sum(s.requests.values()) == sum(range(50))
    assert set(s.workers) == names and s.workers[OTHER] == 45


# --------------------------------------------------------------------------- errors, MMI, drain


def test_legacy_clients_get_errors_in_the_original_envelope() -> None:
    d = make()
    request(d, b"C", b"x", svc=b"mmi.nope", dialect=LEG)
    take(d)
    d.draining = True
    request(d, b"C", b"x", dialect=LEG)
    (m,) = take(d)
    assert m[:3] == [b"C", codec.MDPC02, codec.L_FINAL] and len(m) == 5
    doc = json.loads(m[4])
    assert doc == {"success": False, "error": "broker is shutting down", "code": "SHUTTING_DOWN"}


@pytest.mark.parametrize("cd", list(Dialect))
def test_worker_handler_error_reaches_each_client_in_its_form(cd: Dialect) -> None:
    d = make()
    ready(d, b"W")
    request(d, b"C", b"x", dialect=cd)
    take(d)
    final(d, b"W", b"C", ERROR_MARKER, b"HANDLER_ERROR", b"KeyError: 'k'")
    r = reply_to(take(d), b"C")
    assert codec.parse_error_reply(r.body) == ("HANDLER_ERROR", "KeyError: 'k'")
    if cd is LEG:
        assert len(r.body) == 1 and json.loads(r.body[0])["code"] == "HANDLER_ERROR"
    else:
        assert r.body[0] == ERROR_MARKER


def test_mmi_reads_the_public_view() -> None:
    d = make()
    ready(d, b"W")
    take(d)
    request(d, b"C", SVC, svc=b"mmi.service")
    assert reply_to(take(d), b"C").body == [b"200"]
    request(d, b"C", b"nope", svc=b"mmi.service")
    assert reply_to(take(d), b"C").body == [b"404"]
    request(d, b"C", svc=b"mmi.workers")
    body = reply_to(take(d), b"C").body
    assert json.loads(body[1]) == {
        "echo": {"workers": 1, "idle": 1, "busy": 0, "queued": 0, "in_flight": 0}
    }


def test_drain_fails_queued_requests_and_disconnects_workers() -> None:
    d = make()
    ready(d, b"W")
    request(d, b"A", b"1")
    request(d, b"B", b"2", svc=b"nobody")
    take(d)
    assert d.drain_step(1.0, 2.0) is False  # A is in flight
    assert error_code(reply_to(take(d), b"B")) == ErrorCode.SHUTTING_DOWN
    request(d, b"C", b"3")
    assert error_code(reply_to(take(d), b"C")) == ErrorCode.SHUTTING_DOWN
    assert d.drain_step(3.5, 2.0) is True
    msgs = take(d)
    # A was with a worker and may have run: not "refused" but lost, as with a dead worker.
    assert error_code(reply_to(msgs, b"A")) == ErrorCode.WORKER_LOST
    assert any(m[0] == b"W" and is_disconnect(m) for m in msgs)


def test_drain_closes_only_after_a_quiet_period_without_client_requests() -> None:
    d = make()
    ready(d, b"W")
    take(d)
    assert d.drain_step(10.0, 5.0, quiet=1.0) is False  # nothing in flight, but just started
    assert d.drain_step(10.6, 5.0, quiet=1.0) is False
    request(d, b"C", b"1", now=10.8)  # refused: the quiet period starts again
    assert error_code(reply_to(take(d), b"C")) == ErrorCode.SHUTTING_DOWN
    assert d.drain_step(11.5, 5.0, quiet=1.0) is False
    assert d.drain_step(11.9, 5.0, quiet=1.0) is True  # 1.1 s since the refusal


def test_drain_deadline_bounds_the_quiet_period() -> None:
    d = make()
    assert d.drain_step(0.0, 2.0, quiet=1.0) is False
    for t in (0.5, 1.0, 1.5):
        request(d, b"C", b"again", now=t)  # a client that keeps sending to a draining broker
        take(d)
        assert d.drain_step(t, 2.0, quiet=1.0) is False
    assert d.drain_step(2.0, 2.0, quiet=1.0) is True


def test_replies_held_unread_count_in_the_client_budget() -> None:
    """The shell holds sends to a peer whose pipe is full; those bytes are the client's."""
    d = make(max_client_bytes=10_000, max_queued_bytes=20_000, newcomer_bytes=0)
    ready(d, b"W")
    take(d)
    d.held[b"SLOW"] = 9_990
    d.held_total = 9_990
    request(d, b"SLOW", b"x" * 20)  # nothing in flight, but 9,990 bytes it has not read
    assert error_code(reply_to(take(d), b"SLOW")) == ErrorCode.TOO_MANY_REQUESTS
    request(d, b"OK", b"x" * 20)  # another client is served
    assert requests_to(take(d), b"W") == [[b"OK", b"x" * 20]]
    d.held_total = 19_990  # held for many slow peers: the broker-wide budget
    request(d, b"OK2", b"y" * 20)  # W is busy: this one would queue
    assert error_code(reply_to(take(d), b"OK2")) == ErrorCode.OVERLOADED
