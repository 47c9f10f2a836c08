"""The shared test kit: one implementation of each helper the integration tests need.

Import from the package (``from tests.kit import wait_for, http_get``); the repository root is on
pytest's ``pythonpath``. The API (kept stable; add, do not change):

Prerequisites (:mod:`.prereq`)
    ``in_ci() -> bool``: ``CI`` is set (and not ``0``/``false``/``no``).
    ``require(condition, reason)``: skip when false locally; **fail** under CI.

Timing (:mod:`.timing`): both sides of every test use these.
    ``HEARTBEAT_MS``: the heartbeat of every broker and every peer/worker under test.
    ``LIVENESS``, ``expiry_s(heartbeat_ms=HEARTBEAT_MS)``: when a silent peer is surely expired.
    ``START_TIMEOUT``: how long a process may take to become ready on the loaded box.

Waiting (:mod:`.wait`)
    ``wait_for(predicate, timeout, what, interval=0.05, *, retry_on=()) -> value``: poll until
    truthy; else AssertionError naming ``what`` and the last value seen (exceptions of the types
    in ``retry_on`` count as "not yet").
    ``await_for(async_predicate, timeout, what, interval=0.02) -> value``: the same, async.

Network (:mod:`.net`)
    ``free_port() -> int``, ``free_ports(n) -> list[int]`` (distinct).
    ``http_get(url, timeout=2.0) -> (status, body)``: ``(0, reason)`` when nothing answers.
    ``metric_value(text, name, labels=None) -> float``: one Prometheus sample (0.0 if absent).

Processes (:mod:`.procs`, :mod:`.broker`)
    ``ServiceProcess(module, args, log_path, *, env, http_port, name)``: ``python -m module``
    with output in a log; ``start()``, ``wait_ready()``, ``start_or_exit()``, ``ready()``,
    ``alive()``, ``pid``, ``url``, ``wait_exit()``, ``signal()``, ``stop() -> code``, ``kill9()``,
    ``text()``, ``log(tail)``, ``json_lines()``.
    ``base_env(extra)``: the environment without ``PLANTD_*``. ``stop_process(popen)``.
    ``BrokerPorts()``: free MDP/HTTP/bus ports (``endpoint``, ``bus(name)``, ``args()``).
    ``broker_process(tmp, ports=None, *, curve_keys, extra, env, heartbeat_ms) -> BrokerProcess``
    (not started); ``start_broker(tmp, ...) -> BrokerProcess`` (started, ready, retried on a
    port race). ``BrokerProcess``: a ServiceProcess with ``ports``, ``endpoint``, ``bus(name)``,
    ``state_pub``, ``state_sub``, ``keys_dir``, ``start_ready()``.
    ``echo_process(tmp, endpoint, *, curve_keys, extra, heartbeat_ms)`` (not started).
    ``make_keys(directory, names=("state", "client"))``: CURVE pairs for the broker and names.

Redis (:mod:`.redis`)
    ``REDIS_SERVER``, ``INSTALL_HINT``, ``require_redis() -> path``.
    ``RedisServer(workdir, *, appendonly, fsync, password, tls_dir, replica_of)``:
    ``start()``, ``stop()``, ``kill()``, ``url``, ``port``, ``ping()``, ``answering()``,
    ``command(*args)``. ``RedisSentinels(workdir, primary, *, count, master, down_after_ms)``:
    ``start()``, ``stop()``, ``url`` (redis+sentinel://), ``primary_port()``.

TLS (:mod:`.tls`)
    ``make_certs(directory) -> directory``: a throwaway CA (``ca.crt``) and a server certificate
    for 127.0.0.1 (``server.crt``/``server.key``), RedisServer's ``tls_dir`` layout; needs openssl.
"""

from __future__ import annotations

from .broker import (
    BrokerPorts,
    BrokerProcess,
    broker_process,
    echo_process,
    make_keys,
    start_broker,
)
from .net import free_port, free_ports, http_get, metric_value
from .prereq import in_ci, require
from .procs import PYTHON, ServiceProcess, base_env, stop_process
from .redis import INSTALL_HINT, REDIS_SERVER, RedisSentinels, RedisServer, require_redis
from .timing import HEARTBEAT_MS, LIVENESS, START_TIMEOUT, expiry_s
from .tls import make_certs
from .wait import await_for, wait_for

__all__ = [
    "HEARTBEAT_MS",
    "INSTALL_HINT",
    "LIVENESS",
    "PYTHON",
    "REDIS_SERVER",
    "START_TIMEOUT",
    "BrokerPorts",
    "BrokerProcess",
    "RedisSentinels",
    "RedisServer",
    "ServiceProcess",
    "await_for",
    "base_env",
    "broker_process",
    "echo_process",
    "expiry_s",
    "free_port",
    "free_ports",
    "http_get",
    "in_ci",
    "make_certs",
    "make_keys",
    "metric_value",
    "require",
    "require_redis",
    "start_broker",
    "stop_process",
    "wait_for",
]
