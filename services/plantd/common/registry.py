"""The registry of machine identities: which CURVE key may serve which names and publish where.

A JSON file (``registry.json``, by default in the CURVE key directory; the broker's
``--registry`` / ``PLANTD_BROKER_REGISTRY``)::

    {"version": 1, "identities": [
      {"name": "state", "kind": "plantd", "public_key": "<Z85, 40 chars>",
       "services": ["org.plantd.State"], "publish": {"state": [""]}, "permissions": []}]}

``kind`` is ``plantd`` (our own components), ``module``, ``device`` or ``client``. ``services``
are exact names or a trailing ``.*`` prefix (``*`` alone: every name); ``publish`` maps a bus
name to topic prefixes (``""`` = every topic). Names starting ``org.plantd.`` may only be served
by an identity of kind ``plantd``, whatever its patterns say.

Everything here is pure (no sockets); :meth:`Registry.load` and :func:`own_keys` are the only
file reads. :class:`Rights` is what the broker and the buses ask: a registry, or, without one,
the "no registry" mode (``org.plantd.*`` for plantd's own component keys only, the rest open).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from zmq.utils import z85

from plantd.common.files import GROUP_OTHER_WRITE, insecure_reason

log = logging.getLogger(__name__)

VERSION: Final = 1
FILE_NAME: Final = "registry.json"
RESERVED_PREFIX: Final = "org.plantd."
KINDS: Final = ("plantd", "module", "device", "client")
PLANTD_KIND: Final = "plantd"
# plantd's own components: in "no registry" mode the keys NAME.key of these (in the broker's
# key directory) are the only ones that may serve org.plantd.* names.
OWN_COMPONENTS: Final = ("broker", "state", "identity", "echo", "gateway", "logger")

# Budgets of the file (a registry is written by an operator or `plant module enroll`, but a
# broker must not be taken down by a huge or deep one): past any of them load() refuses it.
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_IDENTITIES: Final = 10_000
MAX_PATTERNS: Final = 256  # services per identity, topic prefixes per bus, permissions
MAX_BUSES: Final = 16
MAX_NAME_CHARS: Final = 255


class RegistryError(ValueError):
    """A registry file or document is unusable; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One machine identity: a CURVE public key and what it may do on the bus."""

    name: str
    kind: str
    public_key: str
    services: tuple[str, ...] = ()
    publish: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    permissions: tuple[str, ...] = ()

    def may_serve(self, service: str) -> bool:
        if service.startswith(RESERVED_PREFIX) and self.kind != PLANTD_KIND:
            return False
        return any(_matches(p, service) for p in self.services)

    def may_publish(self, bus: str, topic: str | bytes) -> bool:
        prefixes = self.publish.get(bus)
        if not prefixes:
            return False
        t = topic.decode("utf-8", "replace") if isinstance(topic, bytes) else topic
        return any(t.startswith(p) for p in prefixes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "public_key": self.public_key,
            "services": list(self.services),
            "publish": {bus: list(p) for bus, p in self.publish.items()},
            "permissions": list(self.permissions),
        }


def _matches(pattern: str, service: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return service.startswith(pattern[:-1])  # keep the dot: "a.*" never matches "ab"
    return pattern == service


class Registry:
    """Identities by public key. Immutable once built; reload builds a new one."""

    __slots__ = ("_by_key", "_by_name", "_prefixes", "source")

    def __init__(self, identities: Iterable[Identity] = (), *, source: str = "<memory>") -> None:
        self.source = source
        self._by_key: dict[str, Identity] = {}
        self._by_name: dict[str, Identity] = {}
        # Topic prefixes as bytes per (key, bus): the bus forwarder checks raw topics.
        self._prefixes: dict[bytes, dict[str, tuple[bytes, ...]]] = {}
        for ident in identities:
            if ident.public_key in self._by_key:
                other = self._by_key[ident.public_key].name
                raise RegistryError(
                    f"{source}: identities {other!r} and {ident.name!r} share one public_key; "
                    "each key belongs to one identity"
                )
            if ident.name in self._by_name:
                raise RegistryError(f"{source}: identity name {ident.name!r} appears twice")
            self._by_key[ident.public_key] = ident
            self._by_name[ident.name] = ident
            self._prefixes[ident.public_key.encode()] = {
                bus: tuple(p.encode() for p in ps) for bus, ps in ident.publish.items()
            }

    # ------------------------------------------------------------------ building

    @classmethod
    def empty(cls) -> Registry:
        return cls(source="<empty>")

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<document>") -> Registry:
        """Validate a parsed document (clear errors name ``source`` and the field)."""
        if not isinstance(doc, dict):
            raise RegistryError(f"{source}: expected a JSON object with 'version' and 'identities'")
        version = doc.get("version")
        if version != VERSION:
            raise RegistryError(f"{source}: version must be {VERSION}, got {version!r}")
        raw = doc.get("identities", [])
        if not isinstance(raw, list):
            raise RegistryError(f"{source}: 'identities' must be a list")
        if len(raw) > MAX_IDENTITIES:
            raise RegistryError(
                f"{source}: {len(raw)} identities, more than the limit of {MAX_IDENTITIES}"
            )
        return cls(
            (_identity(item, f"{source}: identities[{i}]") for i, item in enumerate(raw)),
            source=source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Registry:
        """Read ``path``; refused when group/other can write it or its directory, or too big."""
        p = Path(path).expanduser()
        try:
            st = p.stat()
        except OSError as exc:
            raise RegistryError(f"cannot read registry {p}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"registry {p} is not a regular file")
        reason = insecure_reason(p.parent)
        if reason is None and st.st_mode & GROUP_OTHER_WRITE and not _read_only(p):
            reason = f"{p} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
        if reason is not None:
            raise RegistryError(
                f"refusing registry {p}: {reason}; anyone who can write it can grant a key "
                f"any service. Run `chmod go-w {p} {p.parent}`"
            )
        if st.st_size > MAX_FILE_BYTES:
            raise RegistryError(
                f"registry {p} is {st.st_size} bytes, more than the limit of {MAX_FILE_BYTES}"
            )
        try:
            with p.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            doc = json.loads(data)
        except OSError as exc:
            raise RegistryError(f"cannot read registry {p}: {exc.strerror}") from None
        except (ValueError, RecursionError) as exc:
            raise RegistryError(f"registry {p} is not valid JSON: {exc}") from None
        return cls.from_dict(doc, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "identities": [i.to_dict() for i in self._by_key.values()]}

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()

    def with_identity(self, ident: Identity) -> Registry:
        """A copy with ``ident`` added or replacing the one of the same name."""
        rest = [i for i in self._by_key.values() if i.name != ident.name]
        return Registry([*rest, ident], source=self.source)

    # ------------------------------------------------------------------ questions

    def __len__(self) -> int:
        return len(self._by_key)

    def identities(self) -> list[Identity]:
        return list(self._by_key.values())

    def by_key(self, public_key_z85: str | bytes) -> Identity | None:
        k = (
            public_key_z85.decode("ascii", "replace")
            if isinstance(public_key_z85, bytes)
            else (public_key_z85)
        )
        return self._by_key.get(k)

    def by_name(self, name: str) -> Identity | None:
        return self._by_name.get(name)

    def may_serve(self, public_key_z85: str | bytes, service: str | bytes) -> bool:
        ident = self.by_key(public_key_z85)
        if ident is None:
            return False
        s = service.decode("utf-8", "replace") if isinstance(service, bytes) else service
        return ident.may_serve(s)

    def publish_prefixes(self, public_key_z85: str, bus: str) -> tuple[bytes, ...]:
        """The topic prefixes (bytes) ``public_key_z85`` may publish on ``bus`` (() = none)."""
        buses = self._prefixes.get(public_key_z85.encode("ascii", "replace"))
        return buses.get(bus, ()) if buses is not None else ()

    def may_publish(self, public_key_z85: str | bytes, bus: str, topic: str | bytes) -> bool:
        k = public_key_z85.encode() if isinstance(public_key_z85, str) else public_key_z85
        buses = self._prefixes.get(k)
        if buses is None:
            return False
        prefixes = buses.get(bus)
        if not prefixes:
            return False
        t = topic.encode() if isinstance(topic, str) else topic
        return t.startswith(prefixes)


def _strings(value: Any, where: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RegistryError(f"{where} must be a list of strings")
    if len(value) > MAX_PATTERNS:
        raise RegistryError(f"{where} has {len(value)} entries, more than {MAX_PATTERNS}")
    out: list[str] = []
    for j, v in enumerate(value):
        if not isinstance(v, str) or (not v and not allow_empty) or len(v) > MAX_NAME_CHARS:
            raise RegistryError(
                f"{where}[{j}] must be a {'' if allow_empty else 'non-empty '}string of at most "
                f"{MAX_NAME_CHARS} characters, got {v!r:.60}"
            )
        out.append(v)
    return tuple(out)


def _identity(item: Any, where: str) -> Identity:
    if not isinstance(item, dict):
        raise RegistryError(f"{where} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise RegistryError(f"{where}.name must be a non-empty string (<= {MAX_NAME_CHARS})")
    where = f"{where} ({name!r})"
    kind = item.get("kind")
    if kind not in KINDS:
        raise RegistryError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r:.40}")
    key = item.get("public_key")
    if not isinstance(key, str) or not valid_key(key):
        raise RegistryError(f"{where}.public_key must be a Z85 CURVE public key (40 characters)")
    services = _strings(item.get("services", []), f"{where}.services")
    for s in services:
        if "*" in s and s != "*" and not (s.endswith(".*") and "*" not in s[:-1]):
            raise RegistryError(
                f"{where}.services: {s!r} is neither an exact name nor a 'prefix.*' pattern"
            )
    pub = item.get("publish", {})
    if not isinstance(pub, dict) or len(pub) > MAX_BUSES:
        raise RegistryError(f"{where}.publish must map at most {MAX_BUSES} bus names to lists")
    publish = {
        str(bus): _strings(p, f"{where}.publish.{bus}", allow_empty=True) for bus, p in pub.items()
    }
    perms = _strings(item.get("permissions", []), f"{where}.permissions")
    return Identity(name, kind, key, services, publish, perms)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def valid_key(key: str) -> bool:
    if len(key) != 40:
        return False
    try:
        return len(z85.decode(key.encode("ascii"))) == 32
    except (ValueError, KeyError, IndexError, UnicodeError):
        return False


# ---------------------------------------------------------------------- what the broker asks

# Who an in-process peer of the broker is, as the caller frame names it (key null). Identity
# trusts this name for one operation, modules/registry (docs/identity.md "Where the broker's
# registry comes from").
IN_PROCESS: Final = Identity("broker", PLANTD_KIND, "")


@dataclass(frozen=True, slots=True)
class Rights:
    """The broker's and buses' policy: a registry, or the "no registry" mode.

    ``registry`` None: ``org.plantd.*`` may be served only by ``own`` (public key -> component
    name, plantd's own keys found in the key directory), every other name by any allowed key,
    and any key may publish anywhere (as before registries). With a registry: only what it
    grants. A peer with no key (``None``) is in-process (inproc has no CURVE; every TCP peer of
    a CURVE socket has one), i.e. the broker itself: always allowed.
    """

    registry: Registry | None = None
    own: Mapping[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "registry" if self.registry is not None else "no registry"

    def identity(self, key: str | None) -> Identity | None:
        if key is None:
            # Rights exist only with CURVE on, where only an inproc peer lacks a key: the
            # broker itself (its own worker, its fetch of enrolments from identity).
            return IN_PROCESS
        if self.registry is not None:
            return self.registry.by_key(key)
        name = self.own.get(key)
        return Identity(name, PLANTD_KIND, key) if name is not None else None

    def may_serve(self, key: str | None, service: str) -> bool:
        if key is None:
            return True
        if self.registry is not None:
            return self.registry.may_serve(key, service)
        if service.startswith(RESERVED_PREFIX):
            return key in self.own
        return True

    def may_publish(self, key: bytes | None, bus: str, topic: bytes) -> bool:
        if key is None or self.registry is None:
            return True
        return self.registry.may_publish(key, bus, topic)


def own_keys(keys_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Public key -> component name of plantd's own ``NAME.key`` files in ``keys_dir``."""
    from plantd.common.curve import CurveKeyError, load_keypair  # curve imports zmq.auth bits

    d = Path(keys_dir).expanduser()
    out: dict[str, str] = {}
    for name in OWN_COMPONENTS:
        path = d / f"{name}.key"
        if not path.is_file():
            continue
        try:
            out[load_keypair(path).public.decode()] = name
        except CurveKeyError as exc:
            log.warning("skipping unreadable own key file: %s", exc)
    return out


# What plantd's own components serve and publish (`plantd up` writes these on first run).
OWN_GRANTS: Final[Mapping[str, tuple[tuple[str, ...], Mapping[str, tuple[str, ...]]]]] = {
    "broker": (("org.plantd.Broker",), {"event": ("audit",)}),
    "state": (("org.plantd.State",), {"state": ("",), "event": ("audit",)}),
    "identity": (("org.plantd.Identity",), {"event": ("audit", "identity.")}),
    "echo": (("org.plantd.module.Echo",), {}),
    # ext.: what BusService.Publish relays for users (bus:publish:<bus>), nothing of plantd's own.
    "gateway": ((), {"event": ("audit", "ext."), "metric": ("ext.",)}),
    "logger": (("org.plantd.Logger",), {"event": ("audit",)}),
}


def plantd_registry(own: Mapping[str, str]) -> Registry:
    """A registry of plantd's own components (``own``: public key -> component name)."""
    idents = []
    for key, name in sorted(own.items(), key=lambda kv: kv[1]):
        services, publish = OWN_GRANTS.get(name, ((), {}))
        idents.append(Identity(name, PLANTD_KIND, key, services, dict(publish), ()))
    return Registry(idents)


def enrol_own(existing: Registry | None, own: Mapping[str, str]) -> Registry | None:
    """``existing`` plus plantd's own components (``own``: public key -> name) it lacks, by
    name; None when nothing is missing. A component whose key changed is replaced (its key
    pair was regenerated); ``client`` is enrolled as kind ``client`` with no services."""
    reg = existing if existing is not None else Registry(source="<new>")
    changed = existing is None
    for key, name in sorted(own.items(), key=lambda kv: kv[1]):
        have = reg.by_name(name)
        if have is not None and have.public_key == key:
            continue
        if have is None and reg.by_key(key) is not None:
            continue  # the key is enrolled under another name: leave the operator's choice
        if name in OWN_GRANTS:
            services, publish = OWN_GRANTS[name]
            ident = Identity(name, PLANTD_KIND, key, services, dict(publish), ())
        else:
            ident = Identity(name, "client", key)
        reg = reg.with_identity(ident)
        changed = True
    return reg if changed else None


# ---------------------------------------------------------------------- enrolled identities


@dataclass(frozen=True, slots=True)
class Merged:
    """:func:`merge_enrolled`'s answer: the registry to use and what was left out, and why."""

    registry: Registry
    added: int
    ignored: tuple[tuple[str, str], ...]  # (enrolled name, why it was left out)


def merge_enrolled(base: Registry, enrolled: Registry) -> Merged:
    """``base`` (the file: plantd's own components) plus the identities enrolled in
    org.plantd.Identity that do not collide with it.

    The file wins every collision: an enrolment with a file identity's name or public key is
    left out, so enrolling cannot take over a component's key or name. Kind ``plantd`` from
    identity is kept: identity enrols it only for a ``system:admin``. Past
    :data:`MAX_IDENTITIES` in all, the rest (by name) are left out.
    """
    out = list(base.identities())
    ignored: list[tuple[str, str]] = []
    for ident in sorted(enrolled.identities(), key=lambda i: i.name):
        by_name = base.by_name(ident.name)
        by_key = base.by_key(ident.public_key)
        if by_name is not None:
            why = f"the name is taken by {by_name.kind} identity {by_name.name!r} of {base.source}"
            ignored.append((ident.name, why))
        elif by_key is not None:
            why = f"its public key is {by_key.name!r}'s in {base.source}"
            ignored.append((ident.name, why))
        elif len(out) >= MAX_IDENTITIES:
            ignored.append((ident.name, f"over the limit of {MAX_IDENTITIES} identities"))
        else:
            out.append(ident)
    source = f"{base.source} + {enrolled.source}"
    return Merged(Registry(out, source=source), len(out) - len(base), tuple(ignored))
