"""``plant echo``, ``plant services`` and ``plant request``: thin layers over ``mdp.Client``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from typing import Any

import click

from plantd.cli import output
from plantd.cli.connect import session
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ClientSettings, get_settings
from plantd.common import contract
from plantd.common.discovery import resolve_brokers
from plantd.mdp.client import Client


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


# What the original (Go) `plant echo` sent as the body: kept for --envelope.
ENVELOPE_SERVICE = "org.plantd.Client"


def _envelope(message: str) -> str:
    """The original CLI's echo body for ``message``."""
    return json.dumps({"service": ENVELOPE_SERVICE, "message": message})


def unwrap(frame: bytes) -> str:
    """The ``message`` of an echoed envelope, else the frame as text."""
    try:
        doc = json.loads(frame)
    except ValueError:
        return output.frame_text(frame)
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return output.frame_text(frame)


@click.command("echo")
@click.argument("messages", nargs=-1, required=True, metavar="MSG...")
@click.option(
    "--envelope",
    is_flag=True,
    help='wrap each MSG as the original plantd CLI did: {"service": "org.plantd.Client", '
    '"message": MSG} (printed unwrapped)',
)
def echo(messages: tuple[str, ...], envelope: bool) -> None:
    """Send MSG... to the echo module (org.plantd.module.Echo); print each reply frame.

    The request is the frames ["echo", MSG...]; the module answers with the MSG frames, so
    each MSG comes back on its own line. With or without --envelope, this module and the
    original Go echo module both answer: they echo whatever frames they get.
    """
    settings = get_settings()
    start = time.perf_counter()
    frames = [_envelope(m) for m in messages] if envelope else list(messages)
    with session(settings) as client:
        reply = client.request(contract.SERVICE_ECHO, "echo", *frames)
    if settings.json_output:
        output.print_json(
            {
                "service": contract.SERVICE_ECHO,
                "reply": output.frames_json(reply),
                "elapsed_ms": _ms_since(start),
            }
        )
    elif envelope:
        for frame in reply:
            sys.stdout.write(unwrap(frame) + "\n")
        sys.stdout.flush()
    else:
        output.print_frames(reply)


def _mmi_json(client: Client, name: str) -> Any:
    reply = client.mmi(name)
    if not reply or reply[0] != b"200" or len(reply) < 2:
        code = reply[-1].decode(errors="replace") if reply else "empty reply"
        raise CliError(
            f"the broker does not answer {name} ({code})",
            hint="it may be an original (Go) plantd broker, which only knows mmi.service",
            code=ExitCode.ERROR_REPLY,
        )
    try:
        return json.loads(reply[1])
    except ValueError as exc:
        raise CliError(
            f"the broker's {name} reply is not JSON: {exc}", code=ExitCode.ERROR_REPLY
        ) from exc


@click.command("services")
def services() -> None:
    """List the services registered with the broker and their workers (mmi.services/workers).

    With a broker set (``-e tcp://a,tcp://b`` or ``dns:...``) each broker is asked on its own
    and shown under its endpoint: which broker answered is part of the answer (docs/ha.md)."""
    settings = get_settings()
    brokers = resolve_brokers(settings.endpoint)
    if len(brokers) <= 1:
        rows = _services_at(settings)
        if settings.json_output:
            output.print_json({"endpoint": settings.endpoint, "services": rows})
            return
        _print_services(settings.endpoint, rows)
        return
    answers: list[dict[str, Any]] = []
    for endpoint in brokers:
        try:
            answers.append(
                {
                    "endpoint": endpoint,
                    "services": _services_at(replace(settings, endpoint=endpoint)),
                }
            )
        except CliError as exc:
            answers.append({"endpoint": endpoint, "error": exc.message, "exit": int(exc.code)})
    if settings.json_output:
        output.print_json({"endpoint": settings.endpoint, "brokers": answers})
    else:
        for answer in answers:
            if "error" in answer:
                output.stdout_console().print(f"{answer['endpoint']}: {answer['error']}")
            else:
                _print_services(answer["endpoint"], answer["services"])
    failed = [a for a in answers if "error" in a]
    if failed:
        raise CliError(
            f"{len(failed)} of {len(answers)} brokers did not answer: "
            + ", ".join(a["endpoint"] for a in failed),
            hint="the others' services are listed above",
            code=ExitCode(failed[0]["exit"]),
        )


def _services_at(settings: ClientSettings) -> list[dict[str, Any]]:
    """The rows of one broker (both MMI questions to the same broker)."""
    with session(settings) as client:
        names = _mmi_json(client, "mmi.services")
        workers = _mmi_json(client, "mmi.workers")
    if not isinstance(names, list) or not isinstance(workers, dict):
        raise CliError(
            "the broker's MMI replies have an unexpected shape", code=ExitCode.ERROR_REPLY
        )
    rows = []
    for name in names:
        info = workers.get(name, {}) if isinstance(workers.get(name), dict) else {}
        rows.append(
            {
                "service": name,
                **{k: info.get(k, 0) for k in ("workers", "idle", "busy", "queued")},
            }
        )
    return rows


def _print_services(endpoint: str, rows: list[dict[str, Any]]) -> None:
    console = output.stdout_console()
    if not rows:
        console.print(f"no services registered at {endpoint}")
        return
    columns = ["service", "workers", "idle", "busy", "queued"]
    console.print(
        output.table(f"services at {endpoint}", columns, [[r[c] for c in columns] for r in rows])
    )


@click.command("request")
@click.argument("service")
@click.argument("frames", nargs=-1, metavar="[FRAME]...")
@click.option(
    "--stream",
    is_flag=True,
    help="print each PARTIAL reply as it arrives, then the FINAL one",
)
def request(service: str, frames: tuple[str, ...], stream: bool) -> None:
    """Send FRAME... (UTF-8 text) to SERVICE and print the reply frames, one per line.

    Binary reply frames are shown as 0x-prefixed hex. With --json: {"frames": [...]}, or with
    --stream one JSON object per reply part: {"final": bool, "frames": [...]}. Example:

        plant request org.plantd.State list-scopes '{}'
    """
    settings = get_settings()
    with session(settings) as client:
        if not stream:
            reply = client.request(service, *frames)
            if settings.json_output:
                output.print_json({"service": service, "frames": output.frames_json(reply)})
            else:
                output.print_frames(reply)
            return
        for part in client.stream_parts(service, *frames):  # each printed as it arrives
            if settings.json_output:
                output.print_json({"final": part.final, "frames": output.frames_json(part.frames)})
            else:
                output.print_frames(part.frames)
