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

from plantd.cli import keys
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ClientSettings, get_settings
from plantd.common.curve import CurveClient
from plantd.common.keys import KeysError, load_client
from plantd.mdp.client import Client, Frame
from plantd.mdp.errors import BrokerError, ErrorCode, RequestTimeout

_DIAGNOSE_TIMEOUT = 1.0


def curve_client(settings: ClientSettings) -> CurveClient | None:
    """Our key pair and the broker's public key from ``settings.curve_keys`` (None: no CURVE)."""
    if not settings.curve:
        return None
    directory = settings.curve_keys
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


def open_client(settings: ClientSettings | None = None) -> Client:
    """A blocking client; ``--timeout`` bounds the whole call (no retries)."""
    settings = settings or get_settings()
    return Client(
        settings.endpoint, timeout=settings.timeout, retries=0, curve=curve_client(settings)
    )


def unreachable(settings: ClientSettings) -> CliError:
    hint = "is the broker running? start it with `plantd up`"
    if settings.curve:
        hint += (
            f"; if it is, check that it has your public key ({keys.CLIENT_KEY}.key in its key "
            f"directory) and that {settings.curve_keys}/broker.key is its key"
        )
    else:
        hint += "; if it uses CURVE, drop --no-curve"
    return CliError(
        f"no reply from {settings.endpoint} within {settings.timeout:g}s",
        hint=hint,
        code=ExitCode.UNREACHABLE,
        details={"endpoint": settings.endpoint},
    )


def diagnose_timeout(client: Client, settings: ClientSettings, service: str) -> CliError:
    """Why a request timed out: broker down, service unknown, or service slow."""
    try:
        status = client.mmi("mmi.service", service, timeout=_DIAGNOSE_TIMEOUT)
    except RequestTimeout:
        return unreachable(settings)
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
            f"timeout {settings.timeout:g}s)"
        )
    try:
        yield client
    except RequestTimeout as exc:
        raise diagnose_timeout(client, settings, exc.service) from exc
    except BrokerError as exc:
        raise broker_error(exc, exc.service) from exc
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
