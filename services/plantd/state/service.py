"""The state worker's request path: a batch of MDP requests -> one store round trip -> replies.

``StateService.handle_batch`` is the ``batch_handler`` of an :class:`plantd.mdp.AsyncWorker`:
the worker passes every request the broker delivered at once, and this turns them into ONE
``store.execute`` (one Redis pipeline / one SQLite transaction). Bad requests are answered
without touching the store; nothing a client sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from plantd.mdp.caller import MAX_FRAME_BYTES as MAX_CALLER_FRAME
from plantd.state import events, operations
from plantd.state.auth import AllowAll, Authorizer, CallerKey
from plantd.state.errors import Code, StateError, StoreUnavailable, store_unavailable
from plantd.state.group import GroupCommit
from plantd.state.limits import Limits
from plantd.state.metrics import StateMetrics
from plantd.state.model import Change, ChangeLog, GetResult, Op, Result, SnapshotResult
from plantd.state.store import Store

log = logging.getLogger("plantd.state")

# Replies larger than this give the event loop a turn after they are built.
_YIELD_AFTER = 1024 * 1024
# Results carrying more value text than this are rendered on a worker thread. The renderers loop
# in Python per item, so the GIL passes back to the loop every few ms and heartbeats and small
# requests keep flowing: a 16 MiB snapshot rendered on the loop blocked it for 0.3-0.6 s on the
# idle 2-core box and past the probe's 1 s timeout under load (tests/adversarial, case 1).
# Below it the thread hand-off (~50-100 us) would cost more than the rendering. One thread for
# the whole service: big renders run one at a time (a reply's memory is bounded by its budget, so
# this bounds their sum too) and glibc gives it one malloc arena, not one per executor thread
# (with the default executor, 21 concurrent 3 MiB reads grew the worker's peak RSS by 41 MiB
# against 25 MiB: tests/integration/state/test_state_redis_budgets.py).
_RENDER_ON_THREAD_AFTER = 1024 * 1024
_RENDER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plantd-state-render")

# plantd.mdp.caller.split_caller: (caller, the body after the broker's caller frames).
SplitCaller = Callable[[list[bytes]], tuple[CallerKey | None, list[bytes]]]


class CallerFrames:
    """``split_caller`` with its decoded callers memoised by the identity frame's bytes.

    The broker sends the same frame for every request of one CURVE key, and decoding its JSON
    per request was the largest cost of ``--auth identity`` in the worker (measured in-process,
    100-request batches: split + decode 5-7 us of the 15-18 us per request authorization
    added). Bounded: cleared when ``max_entries`` distinct frames or ``max_bytes`` of them
    were seen (a frame carries the caller's permissions: up to 8 KiB)."""

    def __init__(
        self,
        split: SplitCaller,
        marker: bytes,
        max_entries: int = 4096,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.split = split
        self.marker = marker
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._memo: dict[bytes, CallerKey | None] = {}
        self._memo_bytes = 0

    def __call__(self, body: list[bytes]) -> tuple[CallerKey | None, list[bytes]]:
        if len(body) < 2 or body[0] != self.marker:
            return self.split(body)
        raw = body[1]
        memo = self._memo
        if raw in memo:
            return memo[raw], body[2:]
        caller, rest = self.split(body)
        if len(raw) <= MAX_CALLER_FRAME:  # never hold a frame the decoder refused
            if len(memo) >= self.max_entries or self._memo_bytes >= self.max_bytes:
                memo.clear()
                self._memo_bytes = 0
            memo[raw] = caller
            self._memo_bytes += len(raw)
        return caller, rest


class StateService:
    def __init__(
        self,
        store: Store,
        *,
        limits: Limits | None = None,
        sink: events.Sink | None = None,
        authorizer: Authorizer | None = None,
        metrics: StateMetrics | None = None,
        split_caller: SplitCaller | None = None,
    ) -> None:
        """``split_caller``: set when the worker opted in to the broker's caller frame
        (``caller=1`` at READY): every body then starts with it, and it is taken off here."""
        self.store = store
        self.limits = limits or store.limits
        self.sink = sink
        self.authorizer: Authorizer = authorizer or AllowAll()
        self.metrics = metrics
        self.split_caller = split_caller
        self.published = 0
        self._commit: GroupCommit[Op, Result | StateError] = GroupCommit(store.execute)

    async def handle_batch(self, batch: Sequence[list[bytes]]) -> list[list[bytes]]:
        """One reply (a single JSON frame) per request, in order."""
        started = time.perf_counter()
        tally: Tally[tuple[str, str]] = Tally()
        replies: list[bytes] = [b""] * len(batch)
        pending: list[tuple[int, operations.Request]] = []
        health = operations.HealthInfo(self.store.kind, self.store.available)
        limits = self.limits
        decode, reply = operations.decode, operations.reply
        # AllowAll (until identity arrives) is skipped: a call per request for a constant None.
        check = None if self.authorizer.__class__ is AllowAll else self.authorizer.check
        split = self.split_caller
        for i, frames in enumerate(batch):
            caller: CallerKey | None = None
            try:
                if split is not None:
                    caller, frames = split(frames)
                req = decode(frames, limits, health)
            except StateError as err:
                replies[i] = operations.failure(err)
                tally[(_op_label(frames), err.code)] += 1
                continue
            except Exception as exc:  # a bug in decode costs this request, never the batch
                replies[i] = _bug(frames, "reading the request", exc)
                tally[(_op_label(frames), Code.INTERNAL)] += 1
                continue
            req.context.caller = caller
            refused = check(req.context, req.permission) if check is not None else None
            if refused is not None:
                replies[i] = operations.failure(refused)
                tally[(req.name, refused.code)] += 1
            elif req.op is None:
                replies[i] = reply(req, None, limits)
                tally[(req.name, "ok")] += 1
            else:
                pending.append((i, req))
        if pending:
            results = await self._execute(pending)
            changes: list[Change] = []
            for (i, req), res in zip(pending, results, strict=True):
                try:
                    if _value_chars(res) > _RENDER_ON_THREAD_AFTER:
                        loop = asyncio.get_running_loop()
                        replies[i] = await loop.run_in_executor(
                            _RENDER_THREAD, reply, req, res, limits
                        )
                    else:
                        replies[i] = reply(req, res, limits)
                except Exception as exc:  # a renderer bug: this reply only
                    replies[i] = _bug(batch[i], "building the reply", exc)
                if len(replies[i]) > _YIELD_AFTER:
                    # Formatting costs ~6 ms per MiB (measured: 15 MiB in 95-210 ms on the
                    # loaded 2-core CI box); let heartbeats and other tasks run between big
                    # replies, so a batch of them never blocks the loop for long at a stretch.
                    await asyncio.sleep(0)
                if isinstance(res, StateError):
                    tally[(req.name, res.code)] += 1
                    if res.changes:  # NOT_REPLICATED: the primary has it, watchers hear it
                        changes.extend(res.changes)
                    continue
                tally[(req.name, "ok")] += 1
                if res is not None and res.changes:
                    changes.extend(res.changes)
            if changes:
                self._publish(changes)
        if self.metrics is not None:
            self.metrics.record(tally, time.perf_counter() - started, len(batch))
        return [[r] for r in replies]

    async def _execute(
        self, pending: list[tuple[int, operations.Request]]
    ) -> list[Result | StateError | None]:
        ops = [req.op for _, req in pending if req.op is not None]
        try:
            out: list[Result | StateError | None] = list(await self._commit.submit(ops))
            return out
        except StoreUnavailable as exc:
            if self.metrics is not None:
                self.metrics.store_errors.inc()
            err = store_unavailable(str(exc))
            # health reports "unhealthy" (None) rather than failing
            return [None if req.name == operations.HEALTH else err for _, req in pending]
        except Exception as exc:  # a store bug must cost one batch, not the worker
            log.exception("store failed on a batch", extra={"requests": len(pending)})
            bug = StateError(Code.INTERNAL, f"the store failed: {type(exc).__name__}: {exc}")
            return [bug for _ in pending]

    def _publish(self, changes: list[Change]) -> None:
        if self.sink is None:
            return
        try:
            sent = events.publish(self.sink, changes)
        except Exception:  # the bus is best effort; the write is committed regardless
            log.exception("publishing change events failed")
            return
        self.published += sent
        if self.metrics is not None and sent:
            self.metrics.events.inc(sent)

    async def sweep_once(self) -> int:
        """Delete expired keys and announce them; returns how many expired."""
        try:
            changes = await self.store.sweep_expired()
        except StoreUnavailable:
            return 0
        if changes:
            self._publish(changes)
            if self.metrics is not None:
                self.metrics.expired.inc(len(changes))
        return len(changes)

    async def run_sweeper(self, interval: float) -> None:
        """Sweep every ``interval`` seconds (immediately again while a sweep was full)."""
        while True:
            try:
                n = await self.sweep_once()
            except Exception:
                log.exception("expiry sweep failed; retrying")
                n = 0
            if n < 1000:
                await asyncio.sleep(interval)
            else:
                await asyncio.sleep(0)


def _value_chars(res: Result | StateError | None) -> int:
    """How much value text a result carries (what its reply's size grows with)."""
    match res:
        case GetResult():
            return sum(len(e.value) for e in res.entries if e is not None)
        case SnapshotResult():
            return sum(len(e.value) for _, e in res.items)
        case ChangeLog():
            return sum(len(c.value) for c in res.changes_since)
    return 0


def _bug(frames: Sequence[bytes], doing: str, exc: Exception) -> bytes:
    """The INTERNAL reply for an unexpected exception while serving one request (logged)."""
    log.error(
        "bug while %s: %s: %s", doing, type(exc).__name__, exc, extra={"op": _op_label(frames)}
    )
    return operations.failure(
        StateError(Code.INTERNAL, f"the state service failed {doing} ({type(exc).__name__})")
    )


def _op_label(frames: Sequence[bytes]) -> str:
    """Metric label for a request that failed to parse: its op if known, else 'invalid'."""
    with contextlib.suppress(Exception):
        name = frames[0].decode("ascii")
        name = operations.ALIASES.get(name, name)
        if name in operations.NAMES:
            return name
    return "invalid"
