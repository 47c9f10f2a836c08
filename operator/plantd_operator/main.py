"""``plantd operator`` / ``python -m plantd_operator``: run the PlantdCluster operator."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import signal
from importlib import metadata

import click
import kopf

from plantd.common import contract
from plantd_operator import handlers, kube
from plantd_operator.http import Probe, serve
from plantd_operator.metrics import Metrics
from plantd_operator.reconcile import Reconciler, Settings

log = logging.getLogger("plantd_operator")


def _version() -> str:
    try:
        return metadata.version("plantd")
    except metadata.PackageNotFoundError:
        return "0.1.0"


async def run(
    *,
    namespaces: tuple[str, ...],
    peering: str | None,
    priority: int,
    peering_lifetime: int,
    http_host: str,
    http_port: int,
    drift_interval: float,
    settings: Settings,
) -> None:
    kube.load_config()
    # Blocking API calls run in the default executor: size it for bursts of applies
    # (the stock one has cores + 4 threads, which serialises a 20-cluster burst).
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="kube")
    )
    metrics = Metrics()
    probe = Probe()
    rec = Reconciler(kube.Kube(), metrics, settings)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, rec, drift_interval)
    kopf_settings = kopf.OperatorSettings()
    handlers.configure(kopf_settings)
    kopf_settings.peering.lifetime = peering_lifetime
    kopf_settings.peering.stealth = True
    runner = await serve(metrics, probe, http_host, http_port)
    log.info(
        "plantd operator %s: %s, peering %s (priority %d), HTTP on %s:%d",
        _version(),
        f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces",
        peering or "off (standalone)",
        priority,
        http_host,
        http_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()

    async def mark_ready() -> None:
        await ready.wait()
        probe.ready = True

    ready_task = asyncio.create_task(mark_ready())
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        ready_task.cancel()
        await runner.cleanup()


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
    "--peering",
    default=None,
    help="Name of the (Cluster)KopfPeering object shared by replicas; only the highest "
    "priority one acts. Unset: standalone (run a single replica).",
)
@click.option(
    "--priority",
    type=int,
    default=None,
    help="Peering priority; the highest live one is active. Default: random, so two replicas "
    "never tie.",
)
@click.option(
    "--peering-lifetime",
    type=click.IntRange(5, 600),
    default=30,
    help="Seconds after which a silent peer counts as dead (failover time).",
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
    help="Seconds between full re-applies of each cluster (children not watched for drift).",
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
    "--runbook-url",
    default="https://plantd.dev/docs/operator",
    help="Base URL of alert runbooks in rendered PrometheusRules.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    help="Least severe level logged.",
)
def cli(
    namespaces: tuple[str, ...],
    peering: str | None,
    priority: int | None,
    peering_lifetime: int,
    http_host: str,
    http_port: int,
    drift_interval: float,
    default_image_repository: str,
    default_version: str,
    runbook_url: str,
    log_level: str,
) -> None:
    """Run the plantd operator: turn PlantdCluster objects into running plantd clusters.

    Credentials come from the pod's ServiceAccount in a cluster, else from $KUBECONFIG.
    Every option can also be set as PLANTD_OPERATOR_<OPTION> (e.g. PLANTD_OPERATOR_PEERING).
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handler start/finish at INFO; keep them unless asked for debug.
    logging.getLogger("kopf").setLevel(logging.DEBUG if log_level == "debug" else logging.WARNING)
    chosen = priority if priority is not None else secrets.randbelow(2**31 - 1) + 1
    os.environ.setdefault("POD_ID", os.environ.get("HOSTNAME", "") or f"plantd-operator-{chosen}")
    asyncio.run(
        run(
            namespaces=namespaces,
            peering=peering,
            priority=chosen,
            peering_lifetime=peering_lifetime,
            http_host=http_host,
            http_port=http_port,
            drift_interval=drift_interval,
            settings=Settings(
                default_repository=default_image_repository,
                default_version=default_version,
                runbook_url=runbook_url,
            ),
        )
    )
