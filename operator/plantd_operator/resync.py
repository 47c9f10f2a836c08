"""The periodic resync: re-apply every cluster that has not been reconciled for a while.

Children that are not watched (PDBs, NetworkPolicies, Istio and monitoring objects, Secrets'
consumers) are repaired here; for unchanged objects server-side apply is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from plantd_operator.reconcile import Reconciler

log = logging.getLogger(__name__)


async def loop(rec: Reconciler, interval: float) -> None:
    tick = min(1.0, interval / 3)
    while True:
        await asyncio.sleep(tick)
        due = rec.due_for_resync(interval)
        if due:
            await asyncio.gather(*(_one(rec, body) for body in due))


async def _one(rec: Reconciler, body: dict[str, Any]) -> None:
    try:
        await rec.reconcile(dict(body), trigger="timer")
    except kopf.TemporaryError:
        pass  # blocked: the status already says why, and the next resync retries
    except Exception:  # one cluster's failure must not stop the others' resync
        log.exception("resync failed")
