"""Why nothing answered: is anything there, did it take our key, which dialect does it speak?

Run only after a request timed out, to turn "no reply" into a hint that says what to fix:

- **silent**: no ZeroMQ handshake completed at the endpoint: nothing is listening (or a firewall
  drops the packets).
- **refused**: the handshake failed: the broker does not have our CURVE key, or one side uses
  CURVE and the other does not.
- **connected**: the handshake completed, so a broker is there and took our key, yet it did not
  answer. A broker drops messages it cannot parse without replying: the original Go broker
  drops MDP/0.2 and MDP/0.1 frames; majortomo 0.2.0, an independent MDP/0.2 broker, drops all
  three of ours (measured: it logs "Expecting empty frame 1" for our MDP/0.2, "Unexpected
  protocol header: MDPC01", "Unexpected command: REQUEST" for the legacy words, and replies
  nothing). So we then ask ``mmi.service`` in the other dialects, and name the one that
  answers. Our own broker answers all three.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Final, Literal

import zmq
from zmq.utils.monitor import recv_monitor_message

from plantd.common.curve import CurveClient
from plantd.mdp.client import Client
from plantd.mdp.codec import Dialect
from plantd.mdp.errors import BrokerError, MDPError

Handshake = Literal["connected", "refused", "silent"]

_EVENTS: Final = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def handshake(endpoint: str, curve: CurveClient | None, timeout: float) -> Handshake:
    """Connect a throw-away DEALER and report how its ZMTP handshake ended within ``timeout``."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve is not None:
        curve.apply(sock)
    monitor = sock.get_monitor_socket(_EVENTS)
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not monitor.poll(int(left * 1000) + 1):
                break
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return "connected"
            return "refused"  # one failed handshake says enough; libzmq would retry forever
        return "silent"
    finally:
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def answering_dialects(
    endpoint: str,
    curve: CurveClient | None,
    service: str,
    dialects: Sequence[Dialect],
    timeout: float,
) -> list[Dialect]:
    """The dialects in which the broker answers ``mmi.service`` within ``timeout`` each."""
    found = []
    for dialect in dialects:
        client = Client(endpoint, timeout=timeout, retries=0, dialect=dialect, curve=curve)
        try:
            client.mmi("mmi.service", service)
        except BrokerError:
            pass  # an error reply is an answer in this dialect
        except (MDPError, zmq.ZMQError):
            continue  # a timeout, or a reply we could not read in this dialect
        finally:
            client.close()
        found.append(dialect)
    return found
