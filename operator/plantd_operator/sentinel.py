"""What a replicated managed Redis's Sentinels say: its primary, replicas and quorum.

A pure core (:func:`view_from`, reading ``SENTINEL MASTER`` and ``SENTINEL REPLICAS``
replies) and a thin probe (:func:`probe`) that asks the Sentinels in turn and returns the
first answer. The operator runs the probe every few seconds for each such cluster (the
:func:`loop` task, beside the resync) and puts the answer in ``status.store`` and the
StateStoreReady condition (plantd_operator.status); a change of primary is a failover.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from plantd_operator import naming

if TYPE_CHECKING:
    from plantd_operator.reconcile import Reconciler

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class SentinelView:
    """One Sentinel's account of the master it watches (``error`` set when none answered)."""

    primary: str | None = None  # the primary's host (a pod's stable DNS name)
    primary_port: int = 0
    failing_over: bool = False
    down: bool = False  # the answering Sentinel judges the primary down (s_down/o_down)
    replicas: int = 0
    replicas_in_sync: int = 0
    sentinels: int = 0  # that know the master, the one answering included
    quorum: int = 0
    error: str | None = None


def _pairs(reply: Sequence[Any] | Mapping[Any, Any]) -> dict[str, str]:
    """``[k1, v1, k2, v2, ...]`` (how Sentinel answers in RESP2) or a map (RESP3, or
    redis-py's pairing of it) as a dict of strings."""
    if isinstance(reply, Mapping):
        return {str(k): str(v) for k, v in reply.items()}
    items = [str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


def view_from(
    master: Sequence[Any] | Mapping[Any, Any],
    replicas: Sequence[Sequence[Any] | Mapping[Any, Any]],
) -> SentinelView:
    """The view from ``SENTINEL MASTER <name>`` and ``SENTINEL REPLICAS <name>`` replies."""
    m = _pairs(master)
    flags = set(m.get("flags", "").split(","))
    in_sync = 0
    for r in replicas:
        fields = _pairs(r)
        rflags = set(fields.get("flags", "").split(","))
        if fields.get("master-link-status") == "ok" and not rflags & {"s_down", "o_down"}:
            in_sync += 1
    return SentinelView(
        primary=m.get("ip") or None,
        primary_port=int(m.get("port", "0") or 0),
        failing_over="failover_in_progress" in flags,
        down=bool(flags & {"s_down", "o_down"}),
        replicas=int(m.get("num-slaves", "0") or 0),
        replicas_in_sync=in_sync,
        sentinels=int(m.get("num-other-sentinels", "0") or 0) + 1,
        quorum=int(m.get("quorum", "0") or 0),
    )


def pod_of(host: str | None) -> str | None:
    """``NAME-redis-1.NAME-redis-headless.NS.svc`` -> ``NAME-redis-1`` (what users know);
    an IP address as it is."""
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.split(".", 1)[0]
    return host


async def probe(
    hosts: Sequence[str], master: str, password: str | None, io_timeout: float = PROBE_TIMEOUT_S
) -> SentinelView:
    """Ask each Sentinel (``host:port``) in turn; the first that answers is the view."""
    errors = []
    for address in hosts:
        host, port = address.rsplit(":", 1)
        client = aioredis.Redis(
            host=host,
            port=int(port),
            password=password,
            socket_timeout=io_timeout,
            socket_connect_timeout=io_timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),  # the next Sentinel is the retry
        )
        try:
            # Raw replies, not redis-py's sentinel_master(): its parsing turns flags into
            # booleans of its own; view_from reads what Sentinel sends.
            m = await client.execute_command("SENTINEL", "MASTER", master)  # type: ignore[no-untyped-call]
            r = await client.execute_command("SENTINEL", "REPLICAS", master)  # type: ignore[no-untyped-call]
            return view_from(m, r)
        except (TimeoutError, RedisError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            errors.append(text if host in text else f"{address}: {text}")
        finally:
            await client.aclose()
    return SentinelView(error="; ".join(errors) or "no Sentinel to ask")


async def _password(rec: Reconciler, namespace: str, cluster: str) -> str | None:
    secret = await rec.kube.aget("v1", "Secret", namespace, naming.child(cluster, naming.REDIS))
    data = (secret or {}).get("data") or {}
    if "password" not in data:
        return None
    return base64.b64decode(data["password"]).decode()


async def loop(rec: Reconciler, interval: float = PROBE_INTERVAL_S) -> None:
    """Probe every cluster with Sentinels; refresh its status when the view changed."""
    while True:
        await asyncio.sleep(interval)
        watched = [
            (key, st) for key, st in list(rec.clusters.items()) if st.ctx and st.ctx.sentinels
        ]
        await asyncio.gather(*(_probe_one(rec, ns, name, st) for (ns, name), st in watched))


async def _probe_one(rec: Reconciler, ns: str, name: str, st: Any) -> None:
    ctx = st.ctx
    if ctx is None or not ctx.managed_sentinel:
        return
    try:
        password = await _password(rec, ns, name)
        hosts, master = ctx.sentinels
        view = await probe(hosts, master, password)
    except Exception as exc:  # one cluster's failure must not stop the others' probes
        log.warning("sentinel probe of %s/%s failed: %s", ns, name, exc)
        view = SentinelView(error=str(exc))
    if view != st.sentinel:
        st.sentinel = view
        await rec.refresh_status(ns, name)
