"""Leader election on a ``coordination.k8s.io/v1`` Lease, so one operator replica acts at a time.

The algorithm is client-go's (``tools/leaderelection``), which kube-controller-manager uses:

* a candidate takes the Lease when nobody holds it, or when the holder's record has not
  changed for ``leaseDurationSeconds`` *as measured on the candidate's own monotonic clock*
  (no comparison of wall clocks across machines);
* the leader renews every ``retry_period``; every write carries the ``resourceVersion`` it read,
  so two candidates racing for an expired Lease cannot both win (one gets HTTP 409);
* a leader that has not renewed for ``renew_deadline`` (< lease duration) stops acting before
  anyone else may take over: the process exits non-zero and restarts as a standby.

All Lease traffic runs in one dedicated thread with its own connection pool, so a busy event
loop or a saturated executor cannot delay a renewal.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from plantd_operator import naming
from plantd_operator.kube import TRANSPORT_ERRORS, ApiError, Kube

log = logging.getLogger(__name__)

API_VERSION: Final = "coordination.k8s.io/v1"
KIND: Final = "Lease"
# Exit status when leadership is lost: the pod restarts and competes again as a standby.
EXIT_LEASE_LOST: Final = 3
JITTER: Final = 0.2


class NotLeading(RuntimeError):
    """Raised instead of sending a write when this replica does not hold a valid Lease."""


@dataclass(frozen=True)
class Timing:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def validate(self) -> None:
        """Raise ValueError naming the rule a bad combination breaks."""
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")
        if self.renew_deadline <= self.retry_period * (1 + JITTER):
            raise ValueError(
                f"the renew deadline ({self.renew_deadline:g} s) must exceed the retry period "
                f"plus jitter ({self.retry_period * (1 + JITTER):g} s)"
            )
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"the lease duration ({self.lease_duration:g} s) must exceed the renew deadline "
                f"({self.renew_deadline:g} s): a leader must stop before others may take over"
            )

    @property
    def lease_seconds(self) -> int:
        """``leaseDurationSeconds`` is an integer: round up, never shorten the promise."""
        return max(1, math.ceil(self.lease_duration))


@dataclass(frozen=True)
class Record:
    """The election fields of a Lease's spec."""

    holder: str = ""
    duration: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0


def micro_time(now: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    when = now or datetime.datetime.now(datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: dict[str, Any] | None) -> Record | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return Record(
        holder=spec.get("holderIdentity") or "",
        duration=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def held_by_other(record: Record, me: str, observed_at: float, now: float) -> bool:
    """Does someone else hold a valid Lease? ``observed_at``: when *we* last saw it change."""
    if not record.holder or record.holder == me:
        return False
    return now < observed_at + record.duration


def next_record(old: Record | None, me: str, timing: Timing, now: str) -> Record:
    """The record to write to take or renew the Lease."""
    if old is None:
        return Record(me, timing.lease_seconds, now, now, 0)
    if old.holder == me:
        return replace(old, duration=timing.lease_seconds, renew_time=now)
    # A new holder: a transition (an empty holder is a released Lease, still a transition).
    return Record(me, timing.lease_seconds, now, now, old.transitions + 1)


def released(old: Record, now: str) -> Record:
    """What a leader writes when it steps down: no holder, and a 1 s lease (client-go's)."""
    return Record("", 1, now, now, old.transitions)


def spec_of(record: Record) -> dict[str, Any]:
    return {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration,
        "acquireTime": record.acquire_time,
        "renewTime": record.renew_time,
        "leaseTransitions": record.transitions,
    }


class LeaderElector:
    """Acquire the Lease, keep renewing it, and call ``on_lost`` when it cannot be kept.

    ``on_leading`` and ``on_lost`` are called from the election thread. ``check()`` is the write
    fence other code calls before acting: it raises :class:`NotLeading` once the renew deadline
    has passed without a successful renewal, even if the thread is late to notice.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing,
        *,
        on_leading: Callable[[], None],
        on_lost: Callable[[str], None],
        on_contact: Callable[[], None] = lambda: None,
    ) -> None:
        timing.validate()
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.on_leading = on_leading
        self.on_lost = on_lost
        self.on_contact = on_contact
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease: dict[str, Any] | None = None  # the last Lease we read or wrote
        self._observed: tuple[Record | None, float] = (None, 0.0)
        self._valid_until = 0.0  # monotonic: the renew deadline of our last renewal
        self._leading = False
        self._contacted = False

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    @property
    def leading(self) -> bool:
        return self._leading and time.monotonic() < self._valid_until

    def check(self) -> None:
        """The write fence: raise unless we hold the Lease and renewed it recently enough."""
        if not self.leading:
            raise NotLeading(
                f"not the leader (Lease {self.namespace}/{self.name}): refusing to write"
            )

    def stop(self, release: bool = True) -> None:
        """Stop renewing; with ``release``, hand the Lease over at once (graceful shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.retry_period * 2 + 5)
        if release and self._leading:
            self._leading = False
            self._release()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            if self._acquire_loop():
                self._renew_loop()
        except Exception as exc:  # a bug: crash-only, so the pod restarts and competes again
            log.exception("leader election failed")
            self._leading = False
            self.on_lost(f"leader election thread failed: {exc}")

    def _acquire_loop(self) -> bool:
        log.info("waiting to lead: Lease %s/%s as %r", self.namespace, self.name, self.identity)
        while not self._stop.is_set():
            started = time.monotonic()
            if self._try(started):
                self._leading = True
                log.info("became the leader (Lease %s/%s)", self.namespace, self.name)
                self.on_leading()
                return True
            self._stop.wait(self._acquire_pause())
        return False

    def _acquire_pause(self) -> float:
        """Retry period with jitter, but wake exactly when the observed Lease expires."""
        pause = self.timing.retry_period * (1 + random.random() * JITTER)
        record, seen = self._observed
        if record is not None and record.holder and record.holder != self.identity:
            pause = min(pause, max(0.05, seen + record.duration - time.monotonic()))
        return pause

    def _renew_loop(self) -> None:
        while not self._stop.is_set():
            wait = min(self.timing.retry_period, self._valid_until - time.monotonic())
            if self._stop.wait(max(0.0, wait)):
                return
            started = time.monotonic()
            if started >= self._valid_until:
                self._lose(f"no renewal within the {self.timing.renew_deadline:g} s deadline")
                return
            try:
                renewed = self._renew(started)
            except NotLeading as exc:
                self._lose(str(exc))
                return
            if not renewed and time.monotonic() >= self._valid_until:
                self._lose(f"no renewal within the {self.timing.renew_deadline:g} s deadline")
                return

    def _lose(self, why: str) -> None:
        self._leading = False
        log.critical("lost the Lease %s/%s: %s", self.namespace, self.name, why)
        self.on_lost(why)

    # ------------------------------------------------------------------ API calls
    def _timeout(self, started: float) -> float:
        left = self._valid_until - started if self._leading else self.timing.retry_period
        return max(0.2, min(self.timing.retry_period, left))

    def _get(self, timeout: float) -> dict[str, Any] | None:
        self.kube.timeout = timeout
        return self.kube.get(API_VERSION, KIND, self.namespace, self.name)

    def _write(self, lease: dict[str, Any] | None, record: Record, timeout: float) -> None:
        self.kube.timeout = timeout
        if lease is None:
            self._lease = self.kube.create(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "labels": {naming.LABEL_MANAGED_BY: naming.MANAGER},
                    },
                    "spec": spec_of(record),
                }
            )
        else:
            self._lease = self.kube.replace({**lease, "spec": spec_of(record)})

    def _observe(self, lease: dict[str, Any] | None) -> Record | None:
        record = record_of(lease)
        if record != self._observed[0]:
            self._observed = (record, time.monotonic())
        if not self._contacted:
            self._contacted = True
            self.on_contact()
        return record

    def _try(self, started: float) -> bool:
        """One acquisition attempt (get, decide, write with the read resourceVersion)."""
        timeout = self._timeout(started)
        try:
            lease = self._get(timeout)
            record = self._observe(lease)
            if record is not None and held_by_other(
                record, self.identity, self._observed[1], time.monotonic()
            ):
                return False
            wanted = next_record(record, self.identity, self.timing, micro_time())
            self._write(lease, wanted, timeout)
        except ApiError as exc:
            if exc.status != 409:  # 409: another candidate won this round
                log.warning("cannot take the Lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        except TRANSPORT_ERRORS as exc:
            log.warning("cannot reach the API server for the Lease: %s", exc)
            return False
        self._valid_until = started + self.timing.renew_deadline
        self._observed = (record_of(self._lease), time.monotonic())
        return True

    def _renew(self, started: float) -> bool:
        """Renew with the resourceVersion of our last write (one round trip); on a conflict,
        read the Lease: if someone else holds it now, we lost it (raise NotLeading)."""
        timeout = self._timeout(started)
        try:
            assert self._lease is not None
            current = record_of(self._lease)
            self._write(
                self._lease, next_record(current, self.identity, self.timing, micro_time()), timeout
            )
        except ApiError as exc:
            if exc.status == 404:
                raise NotLeading("the Lease was deleted") from exc
            if exc.status != 409:
                log.warning("cannot renew the Lease %s/%s: %s", self.namespace, self.name, exc)
                return False
            try:
                lease = self._get(timeout)
            except (ApiError, *TRANSPORT_ERRORS) as again:
                log.warning("cannot read the Lease %s/%s: %s", self.namespace, self.name, again)
                return False
            record = record_of(lease)
            if record is None or record.holder != self.identity:
                holder = record.holder if record else "nobody (deleted)"
                raise NotLeading(f"the Lease is now held by {holder!r}") from exc
            self._lease = lease
            return False  # ours after all (e.g. a label edit): renew on the next round
        except TRANSPORT_ERRORS as exc:
            log.warning("cannot reach the API server to renew the Lease: %s", exc)
            return False
        self._valid_until = started + self.timing.renew_deadline
        return True

    def _release(self) -> None:
        if self._lease is None:
            return
        record = record_of(self._lease)
        if record is None or record.holder != self.identity:
            return
        try:
            self._write(self._lease, released(record, micro_time()), self.timing.retry_period)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiError, *TRANSPORT_ERRORS) as exc:
            log.warning("could not release the Lease (it expires by itself): %s", exc)
