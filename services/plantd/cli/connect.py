"""Open an MDP client from the resolved settings and turn failures into clear ``CliError``s.

Public for every ``plant`` subcommand, including groups registered from other packages::

    from plantd.cli.connect import request
    reply = request("org.plantd.State", "list-scopes", "{}")   # -> list[bytes]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from plantd.cli import keys, probe
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ClientSettings, get_settings
from plantd.common.curve import CurveClient
from plantd.common.keys import InsecureKeysDirError, KeysError, check_keys_dir, load_client
from plantd.mdp.client import Client, Frame
from plantd.mdp.codec import Dialect
from plantd.mdp.errors import BrokerError, EndpointError, ErrorCode, RequestTimeout

# After a timeout: how long the MMI check, the handshake probe and each other-dialect probe may
# take (at most ~1 + 0.5 + 2 x 0.5 s on top of --timeout, and only when something is wrong).
_DIAGNOSE_TIMEOUT = 1.0
_PROBE_TIMEOUT = 0.5

DIALECTS: dict[str, Dialect] = {d.label: d for d in Dialect}


def dialect(settings: ClientSettings) -> Dialect:
    """The ``plantd.mdp`` dialect for ``settings.dialect`` (validated by the settings)."""
    return DIALECTS[settings.dialect]


def curve_client(settings: ClientSettings) -> CurveClient | None:
    """Our key pair and the broker's public key from ``settings.curve_keys`` (None: no CURVE)."""
    if not settings.curve:
        return None
    directory = settings.curve_keys
    try:
        check_keys_dir(directory)
    except InsecureKeysDirError as exc:
        raise CliError(str(exc), hint="then run the command again", code=ExitCode.CONFIG) from exc
    missing = keys.missing_client_files(directory)
    if missing:
        raise CliError(
            f"CURVE key file(s) missing: {', '.join(str(p) for p in missing)}",
            hint="run `plantd up` once (it creates them), or `plantd keys generate --dir "
            f"{directory}`, or pass --curve-keys DIR; for a broker started with --no-curve "
            "use --no-curve",
            code=ExitCode.CONFIG,
        )
    try:
        return load_client(directory, keys.CLIENT_KEY)
    except KeysError as exc:
        raise CliError(
            f"unusable CURVE key: {exc}",
            hint=f"fix the file, or regenerate with `plantd keys generate --dir {directory} "
            "--force` and restart the stack",
            code=ExitCode.CONFIG,
        ) from exc


def bad_endpoint(exc: EndpointError | zmq.ZMQError, settings: ClientSettings) -> CliError:
    """A malformed or refused endpoint: a usage error (exit 2), never a traceback."""
    message = (
        str(exc)
        if isinstance(exc, EndpointError)
        else (f"cannot connect to {settings.endpoint!r}: {exc.strerror}")
    )
    return CliError(
        message,
        hint=f"fix --endpoint (it came from: {settings.sources.get('endpoint', 'flag')}); "
        "e.g. tcp://127.0.0.1:9797",
        code=ExitCode.USAGE,
        details={"endpoint": settings.endpoint},
    )


def open_client(settings: ClientSettings | None = None) -> Client:
    """A blocking client; ``--timeout`` bounds the whole call (no retries)."""
    settings = settings or get_settings()
    curve = curve_client(settings)
    try:
        return Client(
            settings.endpoint,
            timeout=settings.timeout,
            retries=0,
            dialect=dialect(settings),
            curve=curve,
        )
    except EndpointError as exc:
        raise bad_endpoint(exc, settings) from exc


def unreachable(settings: ClientSettings, service: str = "mmi.service") -> CliError:
    """No reply at all: say whether anything is there, took our key, or speaks another dialect."""
    curve = curve_client(settings)
    shake = probe.handshake(settings.endpoint, curve, _PROBE_TIMEOUT)
    message = f"no reply from {settings.endpoint} within {settings.timeout:g}s"
    details: dict[str, object] = {"endpoint": settings.endpoint, "handshake": shake}
    if shake == "connected":
        ours = dialect(settings)
        others = [d for d in Dialect if d is not ours]
        answers = probe.answering_dialects(
            settings.endpoint, curve, service, others, _PROBE_TIMEOUT
        )
        details["answers_dialects"] = [d.label for d in answers]
        if answers:
            labels = " or ".join(d.label for d in answers)
            return CliError(
                f"the broker at {settings.endpoint} answered, but not in the {ours.label} "
                f"dialect: it answers {labels}",
                hint=f"pass --dialect {answers[0].label} (or set `dialect` in your profile, or "
                "PLANTD_CLIENT_DIALECT); --dialect legacy talks to an original Go plantd broker",
                code=ExitCode.UNREACHABLE,
                details=details,
            )
        hint = (
            f"a broker accepted the connection{' and our CURVE key' if curve else ''} but "
            f"answered no MDP request in any dialect (tried {ours.label} and "
            f"{', '.join(d.label for d in others)}); it may be overloaded, or not a Majordomo "
            "broker"
        )
    elif shake == "refused":
        if settings.curve:
            hint = (
                "the broker refused the CURVE handshake: it does not have your public key "
                f"({keys.CLIENT_KEY}.key in its key directory), {settings.curve_keys}/broker.key "
                "is not its key, or it runs without CURVE (then use --no-curve)"
            )
        else:
            hint = "the broker refused a plaintext connection: it uses CURVE, so drop --no-curve"
    else:
        hint = (
            "nothing answered there (no ZeroMQ handshake): is the broker running? start it "
            "with `plantd up`; check the host and port (a name that does not resolve looks "
            "the same)"
        )
    return CliError(message, hint=hint, code=ExitCode.UNREACHABLE, details=details)


def diagnose_timeout(client: Client, settings: ClientSettings, service: str) -> CliError:
    """Why a request timed out: broker down, key refused, dialect, service unknown, or slow."""
    try:
        status = client.mmi("mmi.service", service, timeout=_DIAGNOSE_TIMEOUT)
    except RequestTimeout:
        return unreachable(settings, service)
    except BrokerError:
        status = []
    code = status[-1] if status else b""
    if code == b"404":
        return CliError(
            f"service {service!r} is not registered at {settings.endpoint} (no worker)",
            hint="`plant services` lists the registered services; start the module that "
            "provides it, or check the name",
            code=ExitCode.UNREACHABLE,
            details={"service": service},
        )
    return CliError(
        f"service {service!r} did not reply within {settings.timeout:g}s "
        "(it is registered; it may be busy or stuck)",
        hint="retry with a larger --timeout, or check the module's logs",
        code=ExitCode.UNREACHABLE,
        details={"service": service},
    )


def broker_error(exc: BrokerError, service: str) -> CliError:
    if exc.code == ErrorCode.BROKER_LOST:
        return CliError(
            f"the connection to the broker dropped while {service} handled the request; "
            "it may have run",
            hint="check its effect (e.g. read the value back) before sending it again",
            code=ExitCode.UNREACHABLE,
            details={"service": service, "code": exc.code},
        )
    if exc.code == ErrorCode.WORKER_LOST:
        return CliError(
            f"the {service} worker went away while handling the request: {exc.message}",
            hint="it may be restarting; retry in a moment",
            code=ExitCode.UNREACHABLE,
            details={"service": service, "code": exc.code},
        )
    if exc.code in (
        ErrorCode.SERVICE_UNAVAILABLE,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.QUEUE_FULL,
        ErrorCode.SHUTTING_DOWN,
    ):
        return CliError(
            f"service {service!r} is unavailable: {exc.message}",
            hint="`plant services` lists the registered services",
            code=ExitCode.UNREACHABLE,
            details={"service": service, "code": exc.code},
        )
    return CliError(
        f"{service} answered with an error: {exc.code}: {exc.message}",
        code=ExitCode.ERROR_REPLY,
        details={"service": service, "code": exc.code},
    )


@contextmanager
def session(settings: ClientSettings | None = None) -> Iterator[Client]:
    """A client whose MDP failures leave as ``CliError`` with the right exit code."""
    settings = settings or get_settings()
    client = open_client(settings)
    start = time.perf_counter()
    if settings.verbose:
        curve = f"CURVE keys {settings.curve_keys}" if settings.curve else "no CURVE"
        _note(
            f"{settings.endpoint} (profile {settings.profile}, {curve}, "
            f"dialect {settings.dialect}, timeout {settings.timeout:g}s)"
        )
    try:
        yield client
    except RequestTimeout as exc:
        raise diagnose_timeout(client, settings, exc.service) from exc
    except BrokerError as exc:
        raise broker_error(exc, exc.service) from exc
    except (EndpointError, zmq.ZMQError) as exc:  # libzmq refused the endpoint at connect
        raise bad_endpoint(exc, settings) from exc
    finally:
        client.close()
        if settings.verbose:
            _note(f"done in {(time.perf_counter() - start) * 1000:.1f} ms")


def _note(message: str) -> None:
    sys.stderr.write(f"plant: {message}\n")


def request(service: str, *frames: Frame, settings: ClientSettings | None = None) -> list[bytes]:
    """One request with the invocation's settings; returns the FINAL reply frames."""
    with session(settings) as client:
        return client.request(service, *frames)
