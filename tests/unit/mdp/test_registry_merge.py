"""The broker's registry with identity's enrolments: the pure merge, the rights source that
holds the file and the last answer, identity's reply parsed, and a fetcher that fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from plantd.broker.enrolled import MAX_REPLY_BYTES, EnrolledFetcher, FetchError, parse_reply
from plantd.broker.rights import RightsSource
from plantd.common import registry as registry_mod
from plantd.common.curve import generate_keypair, write_keypair
from plantd.common.registry import (
    IN_PROCESS,
    Identity,
    Registry,
    Rights,
    merge_enrolled,
)

pytestmark = pytest.mark.unit


def key() -> str:
    return generate_keypair().public.decode()


STATE_KEY, PUMP_KEY, OTHER_KEY = key(), key(), key()
FILE = Registry(
    [Identity("state", "plantd", STATE_KEY, ("org.plantd.State",), {"state": ("",)})],
    source="registry.json",
)


def enrolled(*idents: Identity) -> Registry:
    return Registry(idents, source="org.plantd.Identity")


def test_enrolled_identities_are_added_to_the_file() -> None:
    pump = Identity("pump", "module", PUMP_KEY, ("acme.Pump",), {"event": ("acme.",)})
    m = merge_enrolled(FILE, enrolled(pump))
    assert m.added == 1 and m.ignored == ()
    assert m.registry.may_serve(PUMP_KEY, "acme.Pump")
    assert not m.registry.may_serve(PUMP_KEY, "acme.Other")
    assert m.registry.may_publish(PUMP_KEY, "event", b"acme.flow")
    assert m.registry.may_serve(STATE_KEY, "org.plantd.State")
    assert len(FILE) == 1  # the base is not changed


def test_the_file_wins_a_name_or_key_collision() -> None:
    by_name = Identity("state", "module", PUMP_KEY, ("acme.Pump",))
    by_key = Identity("evil", "plantd", STATE_KEY, ("*",))
    fine = Identity("other", "module", OTHER_KEY, ("acme.Other",))
    m = merge_enrolled(FILE, enrolled(by_name, by_key, fine))
    assert m.added == 1
    assert [name for name, _ in m.ignored] == ["evil", "state"]
    assert "registry.json" in m.ignored[0][1] and "'state'" in m.ignored[0][1]
    assert not m.registry.may_serve(PUMP_KEY, "acme.Pump")
    st = m.registry.by_key(STATE_KEY)
    assert st is not None and st.name == "state" and st.services == ("org.plantd.State",)
    assert m.registry.may_serve(OTHER_KEY, "acme.Other")


def test_a_module_never_serves_reserved_names_and_plantd_kind_from_identity_is_kept() -> None:
    # identity refuses such grants for modules; should one arrive anyway, the kind decides
    module = Identity("sneaky", "module", PUMP_KEY, ("*",))
    admin_made = Identity("logger2", "plantd", OTHER_KEY, ("org.plantd.Logger",))
    m = merge_enrolled(FILE, enrolled(module, admin_made))
    assert m.registry.may_serve(PUMP_KEY, "acme.Pump")
    assert not m.registry.may_serve(PUMP_KEY, "org.plantd.State")
    assert m.registry.may_serve(OTHER_KEY, "org.plantd.Logger")  # identity required system:admin


def test_the_merge_stays_within_the_identity_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "MAX_IDENTITIES", 2)
    a = Identity("a", "module", PUMP_KEY, ("a",))
    b = Identity("b", "module", OTHER_KEY, ("b",))
    m = merge_enrolled(FILE, enrolled(a, b))
    assert m.added == 1 and m.ignored == (("b", "over the limit of 2 identities"),)


def test_an_in_process_peer_is_the_broker() -> None:
    assert Rights(FILE).identity(None) == IN_PROCESS
    assert Rights(None, {}).identity(None) == IN_PROCESS
    assert IN_PROCESS.name == "broker" and IN_PROCESS.kind == "plantd"
    assert Rights(FILE).may_serve(None, "org.plantd.Broker")


# ---------------------------------------------------------------------- the rights source


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    for name in ("broker", "identity", "state"):
        write_keypair(d, name, generate_keypair())
    return d


def write_file(keys: Path, reg: Registry) -> None:
    path = keys / "registry.json"
    path.write_bytes(reg.to_json())
    os.chmod(path, 0o600)


def test_without_a_file_the_base_is_plantd_own_keys_in_registry_mode(keys: Path) -> None:
    src = RightsSource(keys, identity_registry=True)
    rights = src.initial()
    assert rights.registry is not None  # not the open "no registry" mode
    ident = rights.registry.by_name("identity")
    assert ident is not None and rights.may_serve(ident.public_key, "org.plantd.Identity")
    assert not rights.may_serve(PUMP_KEY, "acme.Pump")
    new = src.set_enrolled(enrolled(Identity("pump", "module", PUMP_KEY, ("acme.Pump",))))
    assert new is not None and new.may_serve(PUMP_KEY, "acme.Pump")
    assert src.describe(new)["enrolled"] == 1


def test_without_identity_registry_nothing_changes(keys: Path) -> None:
    src = RightsSource(keys)
    assert src.initial().registry is None


def test_an_unchanged_answer_changes_nothing_and_revocation_does(keys: Path) -> None:
    write_file(keys, FILE)
    src = RightsSource(keys, identity_registry=True)
    src.initial()
    pump = Identity("pump", "module", PUMP_KEY, ("acme.Pump",))
    assert src.set_enrolled(enrolled(pump)) is not None
    assert src.set_enrolled(enrolled(pump)) is None
    gone = src.set_enrolled(enrolled())
    assert gone is not None and not gone.may_serve(PUMP_KEY, "acme.Pump")


def test_a_file_reload_keeps_the_enrolments_and_collisions_are_logged_once(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_file(keys, FILE)
    src = RightsSource(keys, identity_registry=True)
    src.initial()
    clash = Identity("state", "module", OTHER_KEY, ("acme.X",))
    pump = Identity("pump", "module", PUMP_KEY, ("acme.Pump",))
    with caplog.at_level("WARNING", "plantd.broker.rights"):
        src.set_enrolled(enrolled(clash, pump))
        bigger = FILE.with_identity(Identity("echo", "plantd", key(), ("org.plantd.module.Echo",)))
        write_file(keys, bigger)
        rights = src.poll(force=True)
    assert rights is not None and rights.registry is not None
    assert rights.may_serve(PUMP_KEY, "acme.Pump") and rights.registry.by_name("echo")
    assert len(src.ignored) == 1
    assert sum("is ignored" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------- identity's reply


def reply(doc: object) -> list[bytes]:
    return [json.dumps(doc).encode()]


def test_a_good_reply_is_a_registry() -> None:
    data = {"version": 1, "identities": [Identity("pump", "module", PUMP_KEY, ("a.B",)).to_dict()]}
    reg = parse_reply(reply({"success": True, "data": data, **data}), "identity")
    assert reg.may_serve(PUMP_KEY, "a.B") and reg.source == "identity"


@pytest.mark.parametrize(
    ("frames", "reason", "words"),
    [
        (reply({"success": False, "code": "UNAUTHENTICATED", "error": "no"}), "error", "refused"),
        ([b"{", b"}"], "malformed", "2 frames"),
        ([b"not json"], "malformed", "invalid JSON"),
        (reply([1]), "malformed", "not an object"),
        (reply({"success": True, "data": {"version": 2}}), "malformed", "version"),
        (reply({"success": True, "data": {"version": 1, "identities": [{}]}}), "malformed", "name"),
        ([b" " * (MAX_REPLY_BYTES + 1)], "malformed", "over the limit"),
    ],
)
def test_unusable_replies_are_refused_with_a_reason(
    frames: list[bytes], reason: str, words: str
) -> None:
    with pytest.raises(FetchError) as info:
        parse_reply(frames, "identity")
    assert info.value.reason == reason and words in str(info.value)


async def test_a_failing_fetch_keeps_what_was_applied_and_is_counted() -> None:
    import zmq

    applied: list[Registry] = []
    now = [100.0]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        f = EnrolledFetcher(
            ctx, "inproc://x", "org.plantd.Identity", applied.append, every_s=5.0,
            clock=lambda: now[0],
        )  # fmt: skip
        answers: list[Registry | FetchError] = [enrolled(), FetchError("unreachable", "down")]

        async def fetch() -> Registry:
            a = answers.pop(0)
            if isinstance(a, FetchError):
                raise a
            return a

        f.fetch = fetch  # type: ignore[method-assign]
        assert await f.poll_once()
        now[0] += 12.0
        assert not await f.poll_once()
        assert len(applied) == 1  # nothing applied on failure: the last rights stay
        assert f.failures["unreachable"] == 1 and f.age_s() == 12.0
        d = f.describe()
        assert d["ok"] is False and d["last_error"] == "down" and d["last_success_age_s"] == 12.0
    finally:
        ctx.destroy(0)
