"""plantd pub/sub buses: XSUB/XPUB proxies and publisher/subscriber helpers.

- :class:`BusProxy` (run by the broker service): publishers connect to its XSUB frontend,
  subscribers to its XPUB backend.
- :class:`Publisher`, :class:`Subscriber`, :class:`AsyncSubscriber`: ``[topic, payload]`` messages,
  prefix filtering, optional CURVE (:class:`plantd.common.curve.CurveClient`).
"""

from plantd.bus.client import (
    AsyncSubscriber,
    BusMessage,
    Publisher,
    Subscriber,
    follow_brokers,
)
from plantd.bus.proxy import BusError, BusProxy, BusStats, bus_endpoints

__all__ = [
    "AsyncSubscriber",
    "BusError",
    "BusMessage",
    "BusProxy",
    "BusStats",
    "Publisher",
    "Subscriber",
    "bus_endpoints",
    "follow_brokers",
]
