"""Rights in the socket-free dispatcher: who may register which name, the caller frame."""

from __future__ import annotations

import json

import pytest
import zmq

from plantd.common.registry import Registry, Rights
from plantd.mdp import caller, codec
from plantd.mdp.dispatcher import Dispatcher
from plantd.mdp.errors import ERROR_MARKER, ErrorCode

pytestmark = pytest.mark.unit

STATE_KEY = zmq.curve_keypair()[0]
PLC_KEY = zmq.curve_keypair()[0]
IMPOSTOR_KEY = zmq.curve_keypair()[0]
STATE = b"org.plantd.State"


def registry() -> Registry:
    return Registry.from_dict(
        {
            "version": 1,
            "identities": [
                {"name": "state", "kind": "plantd", "public_key": STATE_KEY.decode(),
                 "services": ["org.plantd.State"]},
                {"name": "line1-plc", "kind": "module", "public_key": PLC_KEY.decode(),
                 "services": ["org.example.line1.*"],
                 "permissions": ["state:data:write:line1"]},
            ],
        }
    )  # fmt: skip


def make(rights: Rights | None) -> Dispatcher:
    d = Dispatcher(heartbeat_s=1.0, liveness=3, request_timeout=5.0, now=0.0)
    d.rights = rights
    # What the shell learns from ZAP's User-Id for each routing id.
    d.peer_keys.update({b"W-state": STATE_KEY, b"W-plc": PLC_KEY, b"W-evil": IMPOSTOR_KEY})
    d.peer_keys.update({b"C-plc": PLC_KEY})
    return d


def ready(d: Dispatcher, wid: bytes, svc: bytes, *, wants_caller: bool = False) -> list[bytes]:
    d.handle([wid, *codec.encode_ready(svc, caller=wants_caller)], 0.0)
    out = [m for m in d.out if isinstance(m, list) and m[0] == wid]
    d.out.clear()
    return out[-1][1:] if out else []


def is_disconnect(frames: list[bytes]) -> bool:
    return isinstance(codec.decode_worker_command(frames), codec.Disconnect)


def registered(d: Dispatcher, svc: bytes) -> int:
    info = d.service_info(svc)
    return info.workers if info is not None else 0


@pytest.mark.parametrize(
    "rights", [Rights(registry()), Rights(None, {STATE_KEY.decode(): "state"})]
)
def test_impostor_cannot_register_state(rights: Rights) -> None:
    d = make(rights)
    assert is_disconnect(ready(d, b"W-evil", STATE))
    assert registered(d, STATE) == 0
    assert d.malformed["service_not_allowed"] == 1
    (event,) = d.audit
    assert event["decision"] == "deny" and event["reason"] == "RESERVED_SERVICE"
    assert event["target"] == "org.plantd.State" and event["source"] == IMPOSTOR_KEY.decode()
    assert event["action"] == "bus.register"
    # The real key registers, and its READY is answered with a heartbeat, not DISCONNECT.
    assert not is_disconnect(ready(d, b"W-state", STATE))
    assert registered(d, STATE) == 1


def test_module_registers_only_its_own_services() -> None:
    d = make(Rights(registry()))
    assert not is_disconnect(ready(d, b"W-plc", b"org.example.line1.Press"))
    d2 = make(Rights(registry()))
    assert is_disconnect(ready(d2, b"W-plc", b"org.example.line2.Press"))
    d3 = make(Rights(registry()))
    assert is_disconnect(ready(d3, b"W-plc", b"org.plantd.module.Echo"))
    assert d3.audit[0]["actor"] == "line1-plc"
    # An allowed but unregistered key serves nothing in registry mode ...
    d4 = make(Rights(registry()))
    assert is_disconnect(ready(d4, b"W-evil", b"org.example.line1.Press"))
    # ... and everything but org.plantd.* without a registry.
    d5 = make(Rights(None, {}))
    assert not is_disconnect(ready(d5, b"W-evil", b"org.example.line1.Press"))


def test_in_process_peer_without_key_may_serve_plantd_names() -> None:
    d = make(Rights(registry()))
    assert not is_disconnect(ready(d, b"W-inproc", b"org.plantd.Broker"))


def test_no_rights_keeps_everything_open() -> None:
    d = make(None)
    assert not is_disconnect(ready(d, b"W-evil", STATE))


def test_audit_events_are_rate_limited_but_every_refusal_counted() -> None:
    d = make(Rights(registry()))
    for i in range(500):
        d.handle([b"W-evil", *codec.encode_ready(b"org.plantd.X%d" % i)], 0.0)
    assert d.malformed["service_not_allowed"] == 500
    assert 0 < len(d.audit) <= 50
    assert d.malformed["audit_suppressed"] == 500 - len(d.audit)
    d.audit.clear()
    d.handle([b"W-evil", *codec.encode_ready(b"org.plantd.later")], 10.0)  # tokens refilled
    assert len(d.audit) == 1


def test_reload_revokes_workers_that_lost_their_name() -> None:
    d = make(Rights(registry()))
    ready(d, b"W-plc", b"org.example.line1.Press")
    ready(d, b"W-state", STATE)
    narrower = Registry.from_dict(
        {"version": 1, "identities": [registry().to_dict()["identities"][0]]}
    )
    assert d.set_rights(Rights(narrower)) == 1
    disc = [m for m in d.out if isinstance(m, list) and m[0] == b"W-plc"]
    assert disc and is_disconnect(disc[-1][1:])
    assert registered(d, b"org.example.line1.Press") == 0
    assert registered(d, STATE) == 1
    assert d.audit[-1]["action"] == "bus.revoke"


def _worker_body(d: Dispatcher, wid: bytes) -> list[bytes]:
    for m in d.out:
        if not isinstance(m, list) and m[0] == wid:
            return list(m[3])
    raise AssertionError("no request reached the worker")


def test_caller_frame_for_workers_that_ask() -> None:
    d = make(Rights(registry()))
    ready(d, b"W-plc", b"org.example.line1.Press", wants_caller=True)
    d.handle([b"C-plc", *codec.encode_request(b"org.example.line1.Press", [b"hello"])], 0.0)
    body = _worker_body(d, b"W-plc")
    assert body[0] == caller.MARKER
    # The identity's permissions travel with it: the broker's registry (file and enrolments
    # merged) is the one view workers need.
    perms = ["state:data:write:line1"]
    assert json.loads(body[1]) == {
        "key": PLC_KEY.decode(), "name": "line1-plc", "kind": "module", "permissions": perms
    }  # fmt: skip
    assert body[2:] == [b"hello"]
    who, rest = caller.split_caller(body)
    assert who == caller.Caller(PLC_KEY.decode(), "line1-plc", "module", tuple(perms))
    assert rest == [b"hello"]


def test_caller_frame_without_curve_key_is_null() -> None:
    d = make(None)
    ready(d, b"W-x", b"svc", wants_caller=True)
    d.handle([b"C-anon", *codec.encode_request(b"svc", [b"x"])], 0.0)
    body = _worker_body(d, b"W-x")
    assert json.loads(body[1]) == {"key": None, "name": None, "kind": None}


def test_caller_frame_of_an_in_process_client_names_the_broker() -> None:
    # With rights (CURVE on) only an inproc peer has no key: the broker's own fetch from
    # identity, which identity recognises by this frame.
    d = make(Rights(registry()))
    ready(d, b"W-state", STATE, wants_caller=True)
    d.handle([b"C-inproc", *codec.encode_request(STATE, [b"x"])], 0.0)
    body = _worker_body(d, b"W-state")
    assert json.loads(body[1]) == {
        "key": None, "name": "broker", "kind": "plantd", "permissions": []
    }  # fmt: skip


def test_caller_frame_leaves_out_permissions_past_its_size_limit() -> None:
    many = [f"state:data:read:scope-{i:04d}-{'x' * 40}" for i in range(256)]
    frame = caller.encode("k" * 40, "big", "module", many)
    assert len(frame) <= caller.MAX_FRAME_BYTES
    who, _ = caller.split_caller([caller.MARKER, frame, b"x"])
    assert who is not None and who.name == "big" and who.permissions is None  # "not said"
    small = caller.encode("k" * 40, "small", "module", ["a"])
    assert caller.split_caller([caller.MARKER, small])[0] == caller.Caller(
        "k" * 40, "small", "module", ("a",)
    )


def test_standard_workers_get_plain_mdp() -> None:
    d = make(Rights(registry()))
    ready(d, b"W-plc", b"org.example.line1.Press")
    d.handle([b"C-plc", *codec.encode_request(b"org.example.line1.Press", [b"hello"])], 0.0)
    assert _worker_body(d, b"W-plc") == [b"hello"]


@pytest.mark.parametrize("dialect", list(codec.Dialect))
def test_client_cannot_forge_the_caller_frame(dialect: codec.Dialect) -> None:
    d = make(Rights(registry()))
    ready(d, b"W-plc", b"org.example.line1.Press", wants_caller=True)
    forged = caller.encode(STATE_KEY.decode(), "state", "plantd")
    d.handle(
        [
            b"C-evil",
            *codec.encode_request(b"org.example.line1.Press", [caller.MARKER, forged], dialect),
        ],
        0.0,
    )
    assert not any(not isinstance(m, list) and m[0] == b"W-plc" for m in d.out)
    (reply,) = [m for m in d.out if not isinstance(m, list) and m[0] == b"C-evil"]
    body = list(reply[3])
    if dialect is codec.Dialect.LEGACY:
        assert json.loads(body[0])["code"] == ErrorCode.BAD_REQUEST
    else:
        assert body[0] == ERROR_MARKER and body[1] == ErrorCode.BAD_REQUEST.encode()


def test_ready_option_codec() -> None:
    for dialect in codec.Dialect:
        frames = codec.encode_ready(b"s", dialect, credit=5, caller=True)
        msg = codec.decode_inbound(frames)
        assert isinstance(msg, codec.Ready) and msg.caller and msg.credit == 5
        plain = codec.decode_inbound(codec.encode_ready(b"s", dialect))
        assert isinstance(plain, codec.Ready) and not plain.caller


def test_split_caller_never_raises() -> None:
    assert caller.split_caller([b"a", b"b"]) == (None, [b"a", b"b"])
    assert caller.split_caller([caller.MARKER]) == (None, [caller.MARKER])
    who, rest = caller.split_caller([caller.MARKER, b"{bad", b"x"])
    assert who == caller.Caller(None, None, None) and rest == [b"x"]
    who, _ = caller.split_caller([caller.MARKER, b'{"key": 5, "name": "n"}'])
    assert who == caller.Caller(None, "n", None)
    who, _ = caller.split_caller([caller.MARKER, b"x" * 5000])
    assert who == caller.Caller(None, None, None)


def test_peer_changed_forgets_the_old_keys_worker() -> None:
    d = make(Rights(registry()))
    ready(d, b"W-state", STATE)
    assert registered(d, STATE) == 1
    d.peer_keys[b"W-state"] = IMPOSTOR_KEY  # another connection took the routing id
    d.peer_changed(b"W-state")
    assert registered(d, STATE) == 0
    assert d.malformed["peer_key_changed"] == 1
    d.handle([b"C-plc", *codec.encode_request(STATE, [b"x"])], 0.0)
    assert not any(not isinstance(m, list) and m[0] == b"W-state" for m in d.out)
