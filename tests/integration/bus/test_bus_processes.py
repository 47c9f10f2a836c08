"""Bus delivery across three processes: publisher -> broker service's proxy -> subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.broker.brokerkit import (
    BrokerPorts,
    ServiceProcess,
    broker_process,
    http_get,
    metric_value,
    wait_for,
)

from plantd.common import contract

pytestmark = pytest.mark.integration

# Each prints one JSON line per event, so the test can follow them.
SUBSCRIBER = r"""
import json, sys
from plantd.bus import Subscriber
endpoint, prefix, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
sub = Subscriber(endpoint, [prefix])
print(json.dumps({"subscribed": True}), flush=True)
got = []
while len(got) < want:
    msg = sub.recv(timeout=30)
    if msg is None:
        break
    got.append([msg.topic.decode(), msg.payload.decode()])
print(json.dumps({"got": got}), flush=True)
"""

PUBLISHER = r"""
import json, sys
from plantd.bus import Publisher
endpoint, wait_topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pub = Publisher(endpoint)
if not pub.wait_for_subscriber(wait_topic, timeout=30):
    sys.exit("no subscriber")
for i in range(n):
    pub.publish("org.plantd.event.other", b"noise-%d" % i)   # nobody subscribed: filtered
    pub.publish("org.plantd.state.key%d" % i, b"value-%d" % i)
pub.close()
print(json.dumps({"published": pub.published}), flush=True)
"""


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, BrokerPorts]]:
    ports = BrokerPorts()
    proc = broker_process(tmp_path_factory.mktemp("bus"), ports).start()
    try:
        proc.wait_ready()
        yield proc, ports
    finally:
        proc.stop()


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_delivery_across_processes_with_filtering(
    broker: tuple[ServiceProcess, BrokerPorts], tmp_path: Path
) -> None:
    proc, ports = broker
    pub_ep, sub_ep = ports.bus("state")
    n = 20
    metrics = proc.url + contract.PATH_METRICS
    before = metric_value(http_get(metrics)[1], "plantd_bus_messages_total", {"bus": "state"})

    sub = _spawn(SUBSCRIBER, sub_ep, "org.plantd.state.", str(n))
    assert sub.stdout is not None
    assert json.loads(sub.stdout.readline()) == {"subscribed": True}
    pub = _spawn(PUBLISHER, pub_ep, "org.plantd.state.key0", str(n))
    pub_out, pub_err = pub.communicate(timeout=60)
    assert pub.returncode == 0, pub_err
    assert json.loads(pub_out) == {"published": 2 * n}
    sub_out, sub_err = sub.communicate(timeout=60)
    assert sub.returncode == 0, sub_err
    got = json.loads(sub_out)["got"]
    assert got == [[f"org.plantd.state.key{i}", f"value-{i}"] for i in range(n)]

    def counted() -> bool:
        text = http_get(metrics)[1]
        return metric_value(text, "plantd_bus_messages_total", {"bus": "state"}) >= before + n

    wait_for(counted, 10, "the state bus message count to rise in /metrics")
    # The event-topic noise was filtered at the publisher (nobody subscribed to it).
    text = http_get(metrics)[1]
    assert metric_value(text, "plantd_bus_messages_total", {"bus": "state"}) == before + n


def test_buses_are_separate(broker: tuple[ServiceProcess, BrokerPorts]) -> None:
    """A message published on the metric bus never appears on the event bus."""
    from plantd.bus import Publisher, Subscriber

    _, ports = broker
    metric_pub, metric_sub = ports.bus("metric")
    _, event_sub = ports.bus("event")
    on_metric = Subscriber(metric_sub)
    on_event = Subscriber(event_sub)
    pub = Publisher(metric_pub)
    try:
        assert pub.wait_for_subscriber(b"m", timeout=15)
        pub.publish(b"m", b"1")
        msg = on_metric.recv(timeout=5)
        assert msg is not None and msg.payload == b"1"
        assert on_event.recv(timeout=0.5) is None
    finally:
        for s in (on_metric, on_event, pub):
            s.close()
