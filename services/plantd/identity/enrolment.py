"""Enrolment of machine identities (pure): validate a grant, build the registry document.

A grant says what one CURVE key may do on the bus: the MDP service names it may serve (exact,
or a trailing ``.*`` prefix), the topic prefixes it may publish per bus, and the permissions its
requests carry. The registry document is interface 1 of issue 8 (``plantd.common.registry``):
``{"version": 1, "identities": [{name, kind, public_key, services, publish, permissions}]}``.

Reserved for kind ``plantd`` (our own components), so that a module key can neither hijack a
platform service nor forge platform events:

- service names under ``org.plantd.`` (and any pattern that would cover them, like ``org.*``);
- the ``state`` bus (state change events);
- event-bus topics ``identity.`` (revocations) and ``audit``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from zmq.utils import z85

from plantd.common import contract
from plantd.common.auth.permissions import valid_permission
from plantd.identity.errors import Code, IdentityError
from plantd.identity.model import Module

REGISTRY_VERSION: Final = 1
KINDS: Final = ("plantd", "module", "device", "client")
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SERVICE_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.:/-]{0,254}$")
RESERVED_SERVICE_PREFIX: Final = "org.plantd."
RESERVED_BUSES: Final = frozenset({"state"})
RESERVED_TOPICS: Final = {"event": ("identity.", "audit")}
MAX_SERVICES: Final = 64
MAX_BUSES: Final = len(contract.BUS_PORTS)
MAX_TOPICS_PER_BUS: Final = 32
MAX_TOPIC_CHARS: Final = 255
MAX_PERMISSIONS: Final = 256
MAX_ENTRY_BYTES: Final = 4096  # one registry entry as JSON: 4096 of them fit a 16 MiB frame


def _bad(msg: str) -> IdentityError:
    return IdentityError(Code.INVALID_REQUEST, msg)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad("field 'name' must be 1-63 characters of a-z 0-9 . _ - (starting a-z 0-9)")
    return name


def check_key(key: object) -> str:
    """A CURVE public key in Z85: 40 characters that decode to 32 bytes."""
    if not isinstance(key, str) or len(key) != 40:
        raise _bad("field 'public_key' must be a CURVE public key in Z85 (40 characters)")
    try:
        raw = z85.decode(key.encode("ascii"))
    except (ValueError, KeyError, UnicodeEncodeError, IndexError):
        raise _bad("field 'public_key' is not valid Z85") from None
    if len(raw) != 32:
        raise _bad("field 'public_key' must decode to 32 bytes")
    return key


def covers_reserved(pattern: str) -> bool:
    """Could ``pattern`` match a name under ``org.plantd.``?"""
    if pattern.endswith(".*"):
        stem = pattern[:-1]  # "org." of "org.*"
        return RESERVED_SERVICE_PREFIX.startswith(stem) or stem.startswith(RESERVED_SERVICE_PREFIX)
    return pattern.startswith(RESERVED_SERVICE_PREFIX)


def _list(value: object, what: str, limit: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > limit:
        raise _bad(f"field {what!r} must be a list of at most {limit} strings")
    if not all(isinstance(v, str) for v in value):
        raise _bad(f"field {what!r} must hold strings")
    return list(dict.fromkeys(value))


def check_services(value: object, kind: str) -> tuple[str, ...]:
    out = _list(value, "services", MAX_SERVICES)
    for s in out:
        stem = s[:-2] if s.endswith(".*") else s
        if "*" in stem or not SERVICE_RE.match(stem):
            raise _bad(f"service {s[:80]!r}: an exact name, or a prefix ending '.*'")
        if kind != "plantd" and covers_reserved(s):
            raise _bad(
                f"service {s[:80]!r} is reserved: names under {RESERVED_SERVICE_PREFIX} are "
                "served only by plantd's own components (kind 'plantd')"
            )
    return tuple(out)


def check_publish(value: object, kind: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_BUSES:
        raise _bad(f"field 'publish' must map at most {MAX_BUSES} bus names to topic prefixes")
    out: dict[str, tuple[str, ...]] = {}
    for bus, topics in value.items():
        if bus not in contract.BUS_PORTS:
            raise _bad(f"publish: no bus {str(bus)[:40]!r}; one of {', '.join(contract.BUS_PORTS)}")
        prefixes = _list(topics, f"publish.{bus}", MAX_TOPICS_PER_BUS)
        for t in prefixes:
            if len(t) > MAX_TOPIC_CHARS or not t.isprintable():
                raise _bad(f"publish.{bus}: a topic prefix is printable, at most 255 characters")
        if kind != "plantd":
            if bus in RESERVED_BUSES:
                raise _bad(f"only plantd's own components publish on the {bus} bus")
            for t in prefixes:
                for r in RESERVED_TOPICS.get(bus, ()):
                    if t.startswith(r) or r.startswith(t):  # "" and "id" would cover "identity."
                        raise _bad(f"publish.{bus}: topic prefix {t!r} covers reserved {r!r}")
        out[str(bus)] = tuple(prefixes)
    return out


def check_permissions(value: object) -> tuple[str, ...]:
    out = _list(value, "permissions", MAX_PERMISSIONS)
    bad = [p for p in out if not valid_permission(p)]
    if bad:
        raise _bad(f"invalid permission {bad[0][:80]!r}")
    return tuple(out)


def grant_from(data: Mapping[str, Any]) -> dict[str, Any]:
    """The validated grant fields of a request (everything but the public key)."""
    kind = data.get("kind", "module")
    if kind not in KINDS:
        raise _bad(f"field 'kind' must be one of {', '.join(KINDS)}")
    grant = {
        "name": check_name(data.get("name")),
        "kind": kind,
        "services": list(check_services(data.get("services"), kind)),
        "publish": {b: list(t) for b, t in check_publish(data.get("publish"), kind).items()},
        "permissions": list(check_permissions(data.get("permissions"))),
    }
    check_size(grant)
    return grant


def check_size(grant: Mapping[str, Any]) -> None:
    size = len(json.dumps({**grant, "public_key": "k" * 40}, separators=(",", ":")))
    if size > MAX_ENTRY_BYTES:
        raise _bad(f"the grant is {size} bytes as JSON, over {MAX_ENTRY_BYTES}: use prefixes")


def module_from_grant(grant: Mapping[str, Any], public_key: str, now: float, by: str) -> Module:
    return Module(
        name=grant["name"],
        kind=grant["kind"],
        public_key=check_key(public_key),
        services=tuple(grant["services"]),
        publish={b: tuple(t) for b, t in grant["publish"].items()},
        permissions=tuple(grant["permissions"]),
        enrolled_at=now,
        enrolled_by=by,
    )


def registry_document(modules: Iterable[Module]) -> dict[str, Any]:
    """Interface 1's JSON shape, identities sorted by name (a stable file for diffs)."""
    entries = sorted((m.registry_entry() for m in modules), key=lambda e: str(e["name"]))
    return {"version": REGISTRY_VERSION, "identities": entries}
