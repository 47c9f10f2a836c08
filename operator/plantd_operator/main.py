"""``plantd operator`` / ``python -m plantd_operator``: run the PlantdCluster operator."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Final

import click
import kopf

from plantd.common import contract
from plantd_operator import admission, handlers, kube, leader, shipped
from plantd_operator.http import Probe, serve
from plantd_operator.metrics import Metrics
from plantd_operator.reconcile import Reconciler, Settings

log = logging.getLogger("plantd_operator")
DEFAULT_LEASE: Final = "plantd-operator"
SA_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _version() -> str:
    try:
        return metadata.version("plantd")
    except metadata.PackageNotFoundError:
        return "0.1.0"


@dataclass(frozen=True)
class Election:
    """Where and how replicas elect the one that acts (None in Options: election off)."""

    namespace: str
    name: str
    identity: str
    timing: leader.Timing


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...]
    election: Election | None
    http_host: str
    http_port: int
    drift_interval: float
    settings: Settings


def _exit_lost(why: str) -> None:
    """Leadership lost: stop acting *now*. Exiting (not a graceful stop, which would run
    handlers to completion) is what client-go's controllers do; the pod restarts as a standby."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(leader.EXIT_LEASE_LOST)


async def _lead(
    opts: Election, probe: Probe, metrics: Metrics, stop: asyncio.Event
) -> leader.LeaderElector | None:
    """Block until this replica holds the Lease; None if asked to stop first."""
    loop = asyncio.get_running_loop()
    became = asyncio.Event()

    def on_contact() -> None:
        # A standby is ready: it talks to the API server and can take over at once.
        loop.call_soon_threadsafe(probe.set_role, "standby")

    def on_leading() -> None:
        loop.call_soon_threadsafe(became.set)

    elector = leader.LeaderElector(
        kube.Kube(pool_size=2),  # its own pool: a burst of applies cannot delay a renewal
        opts.namespace,
        opts.name,
        opts.identity,
        opts.timing,
        on_leading=on_leading,
        on_lost=_exit_lost,
        on_contact=on_contact,
    )
    elector.start()
    waiters = [asyncio.create_task(became.wait()), asyncio.create_task(stop.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    if not became.is_set():
        await asyncio.to_thread(elector.stop, False)
        return None
    return elector


async def run(opts: Options) -> None:
    kube.load_config()
    # Blocking API calls run in the default executor: size it for bursts of applies
    # (the stock one has cores + 4 threads, which serialises a 20-cluster burst).
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="kube")
    )
    metrics = Metrics()
    probe = Probe()
    runner = await serve(metrics, probe, opts.http_host, opts.http_port)
    e = opts.election
    log.info(
        "plantd operator %s: %s, %s, HTTP on %s:%d",
        _version(),
        f"namespaces {', '.join(opts.namespaces)}" if opts.namespaces else "all namespaces",
        f"leader election on Lease {e.namespace}/{e.name} as {e.identity!r}"
        if e
        else "no leader election (run a single replica)",
        opts.http_host,
        opts.http_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    elector: leader.LeaderElector | None = None
    try:
        if e is not None:
            elector = await _lead(e, probe, metrics, stop)
            if elector is None:
                return
        await _operate(opts, metrics, probe, stop, elector)
    finally:
        if elector is not None:
            # Hand over only now that nothing acts any more: the standby starts at once.
            await asyncio.to_thread(elector.stop, True)
        await runner.cleanup()


async def _operate(
    opts: Options,
    metrics: Metrics,
    probe: Probe,
    stop: asyncio.Event,
    elector: leader.LeaderElector | None,
) -> None:
    """Run kopf (the handlers act): only ever in the replica that holds the Lease."""
    fence = elector.check if elector is not None else None
    metrics.leader.set(1)
    rec = Reconciler(kube.Kube(fence=fence), metrics, opts.settings)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, rec, opts.drift_interval)
    kopf_settings = kopf.OperatorSettings()
    handlers.configure(kopf_settings)
    ready = asyncio.Event()

    async def mark_ready() -> None:
        await ready.wait()
        probe.set_role("leader" if elector is not None else "single")

    ready_task = asyncio.create_task(mark_ready())
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            clusterwide=not opts.namespaces,
            namespaces=list(opts.namespaces),
            # The Lease decides who acts; kopf's peering (no lease, a start-up window where
            # two replicas both act) is not used.
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        ready_task.cancel()


def _own_namespace() -> str:
    """The namespace this pod runs in (downward API or the ServiceAccount mount), else default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SA_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


@click.command(
    name="operator",
    context_settings={"auto_envvar_prefix": "PLANTD_OPERATOR", "show_default": True},
)
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable). Default: all namespaces.",
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    help="Act only while holding a coordination.k8s.io Lease, so that of several replicas "
    "exactly one acts. Turn off only when a single replica can ever run.",
)
@click.option(
    "--leader-elect-namespace",
    default=None,
    help="Namespace of the Lease. Default: the operator's own ($POD_NAMESPACE, or the "
    "ServiceAccount's namespace in a pod), else 'default'.",
)
@click.option(
    "--leader-elect-lease-name",
    default=DEFAULT_LEASE,
    help="Name of the Lease the replicas share.",
)
@click.option(
    "--leader-elect-identity",
    default=None,
    help="This replica's name in the Lease. Default: $HOSTNAME (the pod name) plus a random "
    "suffix, unique per process.",
)
@click.option(
    "--leader-elect-lease-duration",
    type=click.FloatRange(1, 3600),
    default=15.0,
    help="Seconds a standby waits after the last renewal it saw before taking over "
    "(the failover time after a crash).",
)
@click.option(
    "--leader-elect-renew-deadline",
    type=click.FloatRange(0.5, 3600),
    default=10.0,
    help="Seconds the leader keeps acting without a successful renewal before it exits "
    "(must be shorter than the lease duration).",
)
@click.option(
    "--leader-elect-retry-period",
    type=click.FloatRange(0.1, 600),
    default=2.0,
    help="Seconds between renewals, and between a standby's attempts.",
)
@click.option("--http-host", default="0.0.0.0", help="Address of /healthz, /readyz, /metrics.")
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=contract.HTTP_PORTS[contract.OPERATOR],
    help="Port of /healthz, /readyz and /metrics.",
)
@click.option(
    "--drift-interval",
    type=click.FloatRange(1, 86400),
    default=300.0,
    help="Seconds between full re-applies of each cluster (repairs children that are not "
    "watched, e.g. PodDisruptionBudgets and NetworkPolicies).",
)
@click.option(
    "--apply-concurrency",
    type=click.IntRange(1, 64),
    default=16,
    help="API writes in flight at once, across all clusters.",
)
@click.option(
    "--default-image-repository",
    default="plantd/plantd",
    help="Image repository used when a PlantdCluster sets spec.version (or nothing).",
)
@click.option(
    "--default-version",
    default=_version(),
    help="plantd version run when a PlantdCluster sets no version.",
)
@click.option(
    "--default-redis-image",
    default=shipped.DEFAULT_REDIS_IMAGE,
    show_default=True,
    help="Managed Redis image used when a PlantdCluster names none "
    "(spec.state.redis.managed.image), e.g. a mirror in an air-gapped registry.",
)
@click.option(
    "--runbook-url",
    default="https://plantd.dev/docs/operator",
    help="Base URL of alert runbooks in rendered PrometheusRules.",
)
@click.option(
    "--allowed-images",
    default="",
    help="Comma-separated image patterns (shell-style, * also matches /) a PlantdCluster may "
    "run, e.g. 'registry.example.com/plantd/*,redis:7.4*'. Empty: any image. A cluster "
    "asking for another gets Ready=False, reason ImageNotAllowed, and nothing applied.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    help="Least severe level logged.",
)
def cli(
    namespaces: tuple[str, ...],
    leader_elect: bool,
    leader_elect_namespace: str | None,
    leader_elect_lease_name: str,
    leader_elect_identity: str | None,
    leader_elect_lease_duration: float,
    leader_elect_renew_deadline: float,
    leader_elect_retry_period: float,
    http_host: str,
    http_port: int,
    drift_interval: float,
    apply_concurrency: int,
    default_image_repository: str,
    default_version: str,
    default_redis_image: str,
    runbook_url: str,
    allowed_images: str,
    log_level: str,
) -> None:
    """Run the plantd operator: turn PlantdCluster objects into running plantd clusters.

    Credentials come from the pod's ServiceAccount in a cluster, else from $KUBECONFIG.
    Every option can also be set as PLANTD_OPERATOR_<OPTION> (e.g.
    PLANTD_OPERATOR_LEADER_ELECT_LEASE_NAME). Exit status 3: the Lease was lost (the replica
    stopped acting at once; restart it and it competes again as a standby).
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handler start/finish at INFO; keep them unless asked for debug.
    logging.getLogger("kopf").setLevel(logging.DEBUG if log_level == "debug" else logging.WARNING)
    try:
        allowed = admission.parse_allowed_images([allowed_images])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allowed-images") from exc
    election = None
    if leader_elect:
        timing = leader.Timing(
            leader_elect_lease_duration, leader_elect_renew_deadline, leader_elect_retry_period
        )
        try:
            timing.validate()
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--leader-elect-*") from exc
        host = os.environ.get("HOSTNAME") or "plantd-operator"
        election = Election(
            namespace=leader_elect_namespace or _own_namespace(),
            name=leader_elect_lease_name,
            identity=leader_elect_identity or f"{host}_{secrets.token_hex(4)}",
            timing=timing,
        )
    asyncio.run(
        run(
            Options(
                namespaces=namespaces,
                election=election,
                http_host=http_host,
                http_port=http_port,
                drift_interval=drift_interval,
                settings=Settings(
                    default_repository=default_image_repository,
                    default_version=default_version,
                    default_redis_image=default_redis_image,
                    runbook_url=runbook_url,
                    apply_concurrency=apply_concurrency,
                    allowed_images=allowed,
                ),
            )
        )
    )
