"""CurveZMQ for the bus: key files, an allow-list, a ZAP handler and a handshake monitor.

Key files use the czmq/zmq.auth certificate format (``NAME.key`` public, mode 0644;
``NAME.key_secret`` public + secret, mode 0600), so pyzmq's ``zmq.auth`` and czmq tools read them.

libzmq fails *open* when no ZAP handler answers unless the server socket sets ``zap_domain``
and ``ZAP_ENFORCE_DOMAIN=1`` (reference identity-anchors §4.2): :meth:`CurveServer.apply` always
does both, and runs our ZAP handler on the *same* Context as the socket (one per Context, since
libzmq binds it at the fixed endpoint ``inproc://zeromq.zap.01``).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
DEFAULT_DOMAIN: Final = b"plantd"
PUBLIC_SUFFIX: Final = ".key"
SECRET_SUFFIX: Final = ".key_secret"  # noqa: S105 - a file suffix, not a secret


class CurveKeyError(ValueError):
    """A key or key file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as z85 text (40 bytes each). ``secret`` is None for a public-only cert."""

    public: bytes
    secret: bytes | None = field(default=None, repr=False)  # never printed


def _check_key(key: bytes, what: str) -> bytes:
    if len(key) != 40:
        raise CurveKeyError(f"{what} must be 40 z85 characters, got {len(key)}")
    try:
        if len(z85.decode(key)) != 32:
            raise CurveKeyError(f"{what} does not decode to 32 bytes")
    except (ValueError, KeyError, IndexError) as exc:
        raise CurveKeyError(f"{what} is not valid z85 text") from exc
    return key


def generate_keypair() -> KeyPair:
    """A fresh key pair (run at enrolment time, not inside long-running bus processes)."""
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def public_from_secret(secret: bytes) -> bytes:
    """Derive the public key of a z85 secret key."""
    return zmq.curve_public(_check_key(secret, "secret key"))


def _cert_text(pair: KeyPair, with_secret: bool) -> str:
    kind = "private" if with_secret else "public"
    lines = [
        f"#   ****  Generated on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} "
        f"by plantd  ****",
        f"#   ZeroMQ CURVE {kind.title()} Certificate",
        "",
        "metadata",
        "curve",
        f'    public-key = "{pair.public.decode()}"',
    ]
    if with_secret:
        assert pair.secret is not None
        lines.append(f'    secret-key = "{pair.secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write_file(path: Path, text: str, mode: int) -> None:
    # Create with the final mode so a secret is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_keypair(directory: str | os.PathLike[str], name: str, pair: KeyPair) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600); return both paths."""
    if pair.secret is None:
        raise CurveKeyError("write_keypair needs a secret key")
    if not name or "/" in name or name.startswith("."):
        raise CurveKeyError(f"bad key name {name!r}: use a plain file name")
    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    pub, sec = d / f"{name}{PUBLIC_SUFFIX}", d / f"{name}{SECRET_SUFFIX}"
    _write_file(sec, _cert_text(pair, True), 0o600)
    _write_file(pub, _cert_text(pair, False), 0o644)
    return pub, sec


def write_public_key(directory: str | os.PathLike[str], name: str, public: bytes) -> Path:
    """Add a public key to an allow-list directory as ``NAME.key``."""
    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}{PUBLIC_SUFFIX}"
    _write_file(path, _cert_text(KeyPair(_check_key(public, "public key")), False), 0o644)
    return path


def load_keypair(path: str | os.PathLike[str]) -> KeyPair:
    """Read a certificate file (``.key`` or ``.key_secret``), or a bare 40-character key file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise CurveKeyError(f"cannot read key file {p}: {exc.strerror}") from exc
    public: bytes | None = None
    secret: bytes | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip().strip('"').strip("'")
        if key.strip() == "public-key":
            public = value.encode()
        elif key.strip() == "secret-key":
            secret = value.encode()
    if public is None and secret is None:
        bare = text.strip().encode()
        if len(bare) == 40:
            public = bare
    if secret is not None:
        _check_key(secret, f"secret key in {p}")
        if public is None:
            public = zmq.curve_public(secret)
    if public is None:
        raise CurveKeyError(f"{p} holds no public-key entry (expected a CURVE certificate)")
    return KeyPair(_check_key(public, f"public key in {p}"), secret)


def load_allowed_keys(directory: str | os.PathLike[str]) -> set[bytes]:
    """Public keys of every ``*.key`` file in an allow-list directory."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise CurveKeyError(f"allow-list directory {d} does not exist")
    keys: set[bytes] = set()
    for path in sorted(d.glob(f"*{PUBLIC_SUFFIX}")):
        try:
            keys.add(load_keypair(path).public)
        except CurveKeyError as exc:
            log.warning("skipping unreadable public key file: %s", exc)
    return keys


# --------------------------------------------------------------------------- ZAP handler


class ZapHandler:
    """A small ZAP (RFC 27) handler for CURVE: per-domain allow-lists of client public keys.

    One per Context (libzmq binds ZAP at a fixed inproc endpoint). Get it with
    :meth:`for_context`; it binds synchronously, so a server socket configured after that call
    is never served by a missing handler. Requests are answered in one thread, in O(1).
    """

    _lock = threading.Lock()
    _by_context: dict[int, ZapHandler] = {}  # one handler per Context

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.context = context
        self._domains: dict[bytes, frozenset[bytes]] = {}
        self.accepted = 0
        self.denied = 0
        self._sock = context.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plantd-zap", daemon=True)
        self._thread.start()

    @classmethod
    def for_context(cls, context: zmq.Context[zmq.Socket[bytes]]) -> ZapHandler:
        with cls._lock:
            h = cls._by_context.get(id(context))
            if h is None or h._stop.is_set():
                h = cls(context)
                cls._by_context[id(context)] = h
            return h

    def set_domain(self, domain: bytes, allowed: set[bytes] | frozenset[bytes]) -> None:
        """Allow exactly ``allowed`` client keys on ``domain`` (replaces the previous set)."""
        self._domains[domain] = frozenset(allowed)

    def remove_domain(self, domain: bytes) -> None:
        self._domains.pop(domain, None)
        if not self._domains:
            self.stop()

    def stop(self) -> None:
        with ZapHandler._lock:
            if ZapHandler._by_context.get(id(self.context)) is self:
                del ZapHandler._by_context[id(self.context)]
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                try:
                    frames = sock.recv_multipart()
                except zmq.ZMQError:
                    continue
                sock.send_multipart(self._answer(frames))
        finally:
            sock.close(0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # Request: version, request id, domain, address, identity, mechanism, credentials...
        if len(frames) < 6 or frames[0] != b"1.0":
            version = frames[0] if frames else b"1.0"
            rid = frames[1] if len(frames) > 1 else b""
            return [version, rid, b"400", b"malformed ZAP request", b"", b""]
        rid, domain, mechanism = frames[1], frames[2], frames[5]
        allowed = self._domains.get(domain)
        if allowed is None:
            self.denied += 1
            return [b"1.0", rid, b"400", b"unknown ZAP domain", b"", b""]
        if mechanism != b"CURVE" or len(frames) < 7:
            self.denied += 1
            return [b"1.0", rid, b"400", b"CURVE required", b"", b""]
        key = z85.encode(frames[6])
        if key in allowed:
            self.accepted += 1
            return [b"1.0", rid, b"200", b"OK", key, b""]
        self.denied += 1
        return [b"1.0", rid, b"400", b"key not allowed", b"", b""]


# --------------------------------------------------------------------------- socket config


@dataclass(slots=True)
class CurveServer:
    """CURVE server settings for a bus socket (the broker's ROUTER, bus proxies).

    ``allowed`` is the set of z85 client public keys admitted; ``allow_dir`` (optional) is
    re-read by :meth:`reload`. ``domain`` is the ZAP domain (never empty: '*' is not a wildcard).
    """

    secret: bytes = field(repr=False)
    public: bytes
    allowed: set[bytes] = field(default_factory=set)
    domain: bytes = DEFAULT_DOMAIN
    allow_dir: Path | None = None
    _zap: ZapHandler | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_key(self.secret, "server secret key")
        _check_key(self.public, "server public key")
        if not self.domain:
            raise CurveKeyError("ZAP domain must not be empty (libzmq would skip ZAP)")

    @classmethod
    def from_files(
        cls, keypair_path: str | os.PathLike[str], allow_dir: str | os.PathLike[str]
    ) -> CurveServer:
        """Server key pair from a ``.key_secret`` file; allow-list from a directory of ``.key``."""
        pair = load_keypair(keypair_path)
        if pair.secret is None:
            raise CurveKeyError(f"{keypair_path} has no secret-key; pass the .key_secret file")
        d = Path(allow_dir).expanduser()
        return cls(pair.secret, pair.public, load_allowed_keys(d), allow_dir=d)

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Configure ``sock`` as a CURVE server enforced by a ZAP handler on its Context.

        Call before ``bind``.
        """
        self._zap = ZapHandler.for_context(sock.context)
        self._zap.set_domain(self.domain, self.allowed)
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.zap_domain = self.domain
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def reload(self) -> int:
        """Re-read ``allow_dir`` (if set) and push the allow-list to the ZAP handler."""
        if self.allow_dir is not None:
            self.allowed = load_allowed_keys(self.allow_dir)
        if self._zap is not None:
            self._zap.set_domain(self.domain, self.allowed)
        return len(self.allowed)

    def allow(self, public: bytes) -> None:
        """Admit one more client key (takes effect for new handshakes)."""
        self.allowed.add(_check_key(public, "client public key"))
        if self._zap is not None:
            self._zap.set_domain(self.domain, self.allowed)

    def release(self) -> None:
        """Forget this server's domain; stops the ZAP thread when no domain is left."""
        if self._zap is not None:
            self._zap.remove_domain(self.domain)
            self._zap = None


@dataclass(frozen=True, slots=True)
class CurveClient:
    """CURVE client settings: our key pair and the server's public key."""

    secret: bytes = field(repr=False)
    public: bytes
    server_public: bytes

    def __post_init__(self) -> None:
        _check_key(self.secret, "client secret key")
        _check_key(self.public, "client public key")
        _check_key(self.server_public, "server public key")

    @classmethod
    def from_files(
        cls, keypair_path: str | os.PathLike[str], server_key_path: str | os.PathLike[str]
    ) -> CurveClient:
        pair = load_keypair(keypair_path)
        if pair.secret is None:
            raise CurveKeyError(f"{keypair_path} has no secret-key; pass the .key_secret file")
        return cls(pair.secret, pair.public, load_keypair(server_key_path).public)

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Configure ``sock`` as a CURVE client. Call before ``connect``."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public


# --------------------------------------------------------------------------- monitor

_HANDSHAKE_EVENTS: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


class HandshakeMonitor:
    """Counts handshake outcomes on a server socket (a rejected client itself sees nothing).

    Poll :attr:`socket` in the owner's loop and call :meth:`drain`; all socket calls must come
    from the thread that owns the monitored socket.
    """

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self._owner = sock
        self.socket: zmq.Socket[bytes] = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        self.auth_failed = 0
        self.no_detail = 0
        self.protocol_failed = 0
        self.succeeded = 0

    def drain(self) -> int:
        """Read every pending event without blocking; return how many were read."""
        n = 0
        while True:
            try:
                event = recv_monitor_message(self.socket, zmq.NOBLOCK)
            except zmq.Again:
                return n
            except zmq.ZMQError:
                return n
            n += 1
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.auth_failed += 1
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.no_detail += 1
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.protocol_failed += 1
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded += 1

    def counts(self) -> dict[str, int]:
        return {
            "auth_failed": self.auth_failed,
            "no_detail": self.no_detail,
            "protocol_failed": self.protocol_failed,
            "succeeded": self.succeeded,
        }

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._owner.disable_monitor()
        self.socket.close(0)
