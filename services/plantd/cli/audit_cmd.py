"""``plant audit tail``: identity's audit events from the event bus topic ``audit``.

The bus keeps no history: tail shows events from the moment it subscribes (identity also logs
each one, the ``audit`` log line). The payloads come from the bus, so they are treated as
hostile: each is size-checked before parsing, strictly decoded, printed with control
characters escaped, and checked against its producer's hash chain (``prev``/``hash``, see
``plantd.common.audit``): a gap or an altered event is flagged, never hidden. The chain
detects drops and edits, not forgery by a key that may publish on the event bus.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

import click
import zmq

from plantd.cli import output
from plantd.cli.connect import curve_client
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import get_settings
from plantd.common import contract

TOPIC: Final = b"audit"
MAX_EVENT_BYTES: Final = 64 * 1024  # an event is a few hundred bytes; bigger is not identity's
MAX_PRODUCERS: Final = 1024  # chains followed at once; the oldest is forgotten past it
ENV_EVENT_BUS: Final = contract.env_key(contract.CLIENT, "event_bus_endpoint")
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FIELDS: Final = ("action", "decision", "reason", "actor", "target", "source", "jti", "trace_id")


# ---- pure: decoding, filtering, the chain ------------------------------------------------------


def decode_event(payload: bytes) -> dict[str, Any] | None:
    """An audit event, or None when the payload is not one (too big, not JSON, wrong types)."""
    if len(payload) > MAX_EVENT_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    if not all(isinstance(doc.get(k, ""), str) for k in (*_FIELDS, "producer", "prev", "hash")):
        return None
    if doc.get("decision") not in ("allow", "deny") or not doc.get("action"):
        return None
    t, seq = doc.get("time", 0), doc.get("seq", 0)
    if isinstance(t, bool) or not isinstance(t, int | float):
        return None
    if isinstance(seq, bool) or not isinstance(seq, int):
        return None
    return doc


@dataclass(frozen=True)
class Filter:
    actor: str | None = None
    decision: str | None = None
    action: str | None = None  # a prefix: auth. matches auth.login and auth.refresh
    target: str | None = None

    def matches(self, ev: dict[str, Any]) -> bool:
        return (
            (self.actor is None or ev.get("actor") == self.actor)
            and (self.decision is None or ev.get("decision") == self.decision)
            and (self.action is None or str(ev.get("action", "")).startswith(self.action))
            and (self.target is None or ev.get("target") == self.target)
        )


@dataclass
class ChainCheck:
    """Follows each producer's hash chain; ``check`` says what is wrong with an event, if any."""

    last: OrderedDict[str, tuple[int, str]] = field(default_factory=OrderedDict)
    problems: int = 0

    def check(self, ev: dict[str, Any]) -> str | None:
        from plantd.common.audit import chain_hash

        producer, seq = str(ev.get("producer", "")), int(ev.get("seq", 0))
        body = {k: v for k, v in ev.items() if k != "hash"}
        problem: str | None = None
        if chain_hash(str(ev.get("prev", "")), body) != ev.get("hash"):
            problem = "hash mismatch: the event was altered"
        elif producer in self.last:
            seen_seq, seen_hash = self.last[producer]
            if ev.get("prev") != seen_hash:
                problem = f"chain gap after seq {seen_seq}: events were dropped or reordered"
        if problem is not None:
            self.problems += 1
        if problem is None or producer in self.last:
            self.last[producer] = (seq, str(ev.get("hash", "")))
            self.last.move_to_end(producer)
            while len(self.last) > MAX_PRODUCERS:
                self.last.popitem(last=False)
        return problem


def printable(text: object) -> str:
    """Control characters escaped: an event must not move the cursor or retitle the terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def event_line(ev: dict[str, Any], problem: str | None = None) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(float(ev.get("time", 0))))
    parts = [when, str(ev.get("decision", "")).upper(), str(ev.get("action", ""))]
    parts += [f"{k}={ev[k]}" for k in ("actor", "target", "reason", "source") if ev.get(k)]
    line = printable(" ".join(parts))
    return f"{line}  !! {problem}" if problem else line


def event_bus_endpoint(broker_endpoint: str) -> str:
    """The event bus subscriber port on the broker's host, shifted as the broker port is."""
    sub = contract.BUS_PORTS["event"][1]
    m = re.match(r"^tcp://(.+):(\d+)$", broker_endpoint)
    if m is None:
        return f"tcp://127.0.0.1:{sub}"
    port = sub + int(m.group(2)) - contract.MDP_PORT
    return f"tcp://{m.group(1)}:{port if 1 <= port <= 65535 else sub}"


# ---- the command ------------------------------------------------------------------------------


@click.group("audit")
def audit() -> None:
    """Identity's audit trail: who did what, allowed or denied, and why.

    Events come from the event bus topic `audit` (CURVE, like `plant state watch`).
    """


@audit.command("tail")
@click.option("-f", "--follow", is_flag=True, help="keep printing until Ctrl-C (or --count)")
@click.option("--actor", default=None, help="only events of this actor (a user id)")
@click.option("--decision", type=click.Choice(["allow", "deny"]), default=None)
@click.option("--action", default=None, help="only actions starting with this, e.g. auth.login")
@click.option("--target", default=None, help="only events about this target")
@click.option("-n", "--count", type=click.IntRange(min=1), default=None, help="stop after N")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.01),
    default=3.0,
    show_default=True,
    metavar="SECONDS",
    help="without --follow: stop when no event came for this long",
)
@click.option(
    "--bus-endpoint",
    envvar=ENV_EVENT_BUS,
    default=None,
    metavar="URL",
    help=f"event bus subscriber endpoint [env {ENV_EVENT_BUS}; default: the broker's host, "
    f"port {contract.BUS_PORTS['event'][1]} shifted as the broker's is from {contract.MDP_PORT}]",
)
def tail(
    follow: bool,
    actor: str | None,
    decision: str | None,
    action: str | None,
    target: str | None,
    count: int | None,
    idle_timeout: float,
    bus_endpoint: str | None,
) -> None:
    """Print audit events as they happen: TIME DECISION ACTION actor= target= reason= source=.

    The bus keeps no history, so events from before tail started are not shown. A line ending
    in `!!` broke its producer's hash chain (dropped, reordered or altered events). --json: one
    event per line, with "chain_problem" when there is one.
    """
    from plantd.bus import Subscriber

    settings = get_settings()
    endpoint = bus_endpoint or event_bus_endpoint(settings.endpoint)
    wanted = Filter(actor=actor, decision=decision, action=action, target=target)
    chain = ChainCheck()
    shown = skipped = 0
    curve = curve_client(settings)
    try:
        subscriber = Subscriber(endpoint, [TOPIC], curve=curve)
    except zmq.ZMQError as exc:  # libzmq refused the endpoint (malformed, unknown transport)
        raise CliError(
            f"cannot subscribe to {endpoint!r}: {exc.strerror}",
            hint="fix --bus-endpoint (e.g. tcp://127.0.0.1:12001)",
            code=ExitCode.USAGE,
        ) from exc
    if settings.verbose:
        sys.stderr.write(f"plant: listening on {endpoint} for topic audit\n")
    try:
        while count is None or shown < count:
            msg = subscriber.recv(timeout=None if follow else idle_timeout)
            if msg is None:
                break
            if msg.topic != TOPIC:
                continue  # prefix subscription: audit.* topics are not events
            ev = decode_event(msg.payload)
            if ev is None:
                skipped += 1
                continue
            problem = chain.check(ev)
            if not wanted.matches(ev):
                continue
            shown += 1
            if settings.json_output:
                output.print_json({**ev, **({"chain_problem": problem} if problem else {})})
            else:
                sys.stdout.write(event_line(ev, problem) + "\n")
                sys.stdout.flush()
    finally:
        subscriber.close()
        if skipped:
            sys.stderr.write(f"plant: skipped {skipped} bus message(s) that were not events\n")
        if chain.problems:
            sys.stderr.write(f"plant: warning: {chain.problems} event(s) broke a hash chain\n")
