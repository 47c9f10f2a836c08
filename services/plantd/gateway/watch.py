"""``WatchEntries``: a scope's changes in revision order, gap-free, over an at-most-once bus.

The state bus can lose events (slow joiners, high-water marks, a slow watch's full buffer), so
the stream never trusts it alone. It subscribes to the scope's topic first, then reads where
to start (a snapshot, the history after ``start_revision``, or the current revision), then
takes live events, sending one only when its revision is exactly the next. A gap is filled
from ``changes-since``; a history that no longer reaches back is answered with ``compacted``
and a fresh snapshot. Silence for ``resync_s`` re-verifies the token (``recheck``: expiry,
revocation) and reads the history once for the scope: on the gateway's shared subscription
(:mod:`.fanout`) one watch of the scope does it for all, so 5,000 silent watches cost one
``changes-since`` per ``resync_s``, not 5,000. Every ``changes-since``/``snapshot`` carries
the caller's token, and the state service authorizes it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from plantd.api.errors import Origin
from plantd.bus import BusMessage
from plantd.gateway.fanout import Reader, SourceClosed
from plantd.gateway.state_map import Json, RpcFailure, change_pb, parse_event, wanted
from plantd.mdp.errors import ErrorCode as BusCode
from plantd.v1 import state_pb2 as pb

Call = Callable[[str, Json], Awaitable[Json]]


class _RecentEvents:
    """The last few state bus payloads, found by identity, with what every watch makes of
    them: the parsed JSON and the live response.

    The fan-out hands the same payload object to every watch of a scope. Parsing it and
    building its response once, not once per watch, takes ``json.loads`` and the protobuf
    construction (~15 us together for a small change; 5,000 watches in ``bench.gateway``) off
    each watcher's cost per update, and the edge then finds the response's rendered frame by
    identity too. Identity, not equality: a hit costs no hashing or comparing; at most
    ``slots`` payloads stay alive here (the latest, which the readers' buffers mostly still
    hold). Results are shared by the watches: read-only.
    """

    def __init__(self, slots: int = 8) -> None:
        self.slots = slots
        # [payload, parsed JSON, live response or None until a watch asks]
        self._recent: list[list[object]] = []

    def _slot(self, payload: bytes) -> list[object]:
        for slot in self._recent:
            if slot[0] is payload:
                return slot
        slot = [payload, parse_event(payload), None]
        self._recent.insert(0, slot)
        del self._recent[self.slots :]
        return slot

    def __call__(self, payload: bytes) -> Json | None:
        doc = self._slot(payload)[1]
        return doc if isinstance(doc, dict) else None

    def response(self, payload: bytes, scope: str) -> pb.WatchEntriesResponse:
        """The live response for this (valid) event of ``scope``: the same object for every
        watch that sends it."""
        slot = self._slot(payload)
        cached = slot[2]
        if isinstance(cached, pb.WatchEntriesResponse):
            return cached
        event = slot[1]
        assert isinstance(event, dict), "response() of a payload that is no event"
        made = pb.WatchEntriesResponse(
            changes=[change_pb(scope, event)], revision=int(event["revision"])
        )
        slot[2] = made
        return made


_parsed = _RecentEvents()


# A live response packs at most this many changes, or this much event payload (the largest
# response then stays far below the gRPC message limit of 4 MiB, values included).
PACK_CHANGES: Final = 500
PACK_BYTES: Final = 1024 * 1024


class Subscriber(Protocol):
    async def recv(self) -> BusMessage: ...


class Watch:
    def __init__(
        self,
        request: pb.WatchEntriesRequest,
        call: Call,
        subscriber: Subscriber,
        *,
        recheck: Callable[[], None],
        resync_s: float,
        page: int = 1000,
        sink: Callable[[pb.WatchEntriesResponse], bool] | None = None,
    ) -> None:
        self.scope = request.scope
        self.prefix = request.key_prefix
        self.request = request
        self.call = call
        self.sub = subscriber
        self.recheck = recheck
        self.resync_s = resync_s
        self.page = page
        p = request.progress_interval
        self.progress_s = (
            p.seconds + p.nanos / 1e9 if request.HasField("progress_interval") else 0.0
        )
        self.last = 0
        self.behind = False  # the history holds more than the shared catch-up delivered
        self._held: BusMessage | None = None  # read by _pack_ready, not yet handled
        self._dropped_seen = 0  # the reader's drops this watch has read the history for
        self.sent_at = time.monotonic()
        self.checked_at = time.monotonic()  # when the token was last verified
        self.sink = sink
        if sink is not None and isinstance(subscriber, Reader):
            subscriber.direct = self._direct

    def _direct(self, msg: BusMessage) -> bool:
        """The next live event, handled synchronously when it needs nothing but sending: True
        when done (sent, or skipped as ``responses`` would skip it), False to leave it to
        ``responses`` (a gap, a burst to pack, a sink that cannot take it at once).

        A stream consumer's sink (the REST edge's WebSocket) writes the shared frame straight
        to its socket: no task wakes per watcher per update. Measured in ``bench.gateway``,
        5,000 WebSocket watchers of one key: 36 -> 18 us of gateway CPU per watcher per
        update (a socket write alone is ~8 us here), p99 206 -> 96 ms."""
        if self._held is not None or self.sub.dropped != self._dropped_seen:  # type: ignore[attr-defined]
            return False
        if self._recheck_due():
            return False  # the task verifies the token first
        if msg.topic != self.scope.encode():
            return True
        event = _parsed(msg.payload)
        if event is None or event["revision"] <= self.last:
            return True
        if event["revision"] != self.last + 1:
            return False
        if wanted(self.prefix, event):
            assert self.sink is not None
            if not self.sink(_parsed.response(msg.payload, self.scope)):
                return False
            self.sent_at = time.monotonic()
        self.last = event["revision"]
        return True

    async def _snapshot(self) -> tuple[int, list[pb.Entry]]:
        d = await self.call("snapshot", {"service": self.scope})
        if d.get("truncated") is True:  # a partial snapshot would silently lose entries
            raise RpcFailure(
                Origin.STATE,
                "REPLY_TOO_LARGE",
                f"scope {self.scope!r} holds more entries than one snapshot: watch without "
                "send_snapshot and read the scope with ListKeys and BatchGetEntries",
            )
        items = [i for i in d.get("items", ()) if str(i.get("key", "")).startswith(self.prefix)]
        entries = [
            pb.Entry(
                scope=self.scope,
                key=str(i.get("key", "")),
                value=str(i.get("value", "")),
                version=int(i.get("version", 0)),
            )
            for i in items
        ]
        return int(d.get("revision", 0)), entries

    async def _catch_up(self) -> AsyncIterator[pb.WatchEntriesResponse]:
        """The history after ``last``, page by page; a snapshot when it was compacted."""
        while True:
            d = await self.call(
                "changes-since", {"service": self.scope, "revision": self.last, "limit": self.page}
            )
            if d.get("compacted") is True:
                self.last, entries = await self._snapshot()
                yield pb.WatchEntriesResponse(revision=self.last, compacted=True, snapshot=entries)
                continue
            changes = [c for c in d.get("changes", ()) if int(c.get("revision", 0)) > self.last]
            if changes:
                self.last = int(changes[-1]["revision"])
                out = [change_pb(self.scope, c) for c in changes if wanted(self.prefix, c)]
                if out:
                    yield pb.WatchEntriesResponse(changes=out, revision=self.last)
            if d.get("more") is not True:
                return

    async def _history_events(self) -> list[BusMessage]:
        """One page of the history after ``last``, as the scope's bus events (what the shared
        subscription hands to every watch of the scope); ``behind`` when that is not all."""
        d = await self.call(
            "changes-since", {"service": self.scope, "revision": self.last, "limit": self.page}
        )
        self.behind = d.get("compacted") is True or d.get("more") is True
        topic = self.scope.encode()
        changes = d.get("changes", ())
        return [BusMessage(topic, json.dumps(c).encode()) for c in changes if isinstance(c, dict)]

    async def _start(self) -> AsyncIterator[pb.WatchEntriesResponse]:
        r = self.request
        if r.send_snapshot:
            self.last, entries = await self._snapshot()
            yield pb.WatchEntriesResponse(created=True, revision=self.last, snapshot=entries)
        elif r.HasField("start_revision"):
            self.last = r.start_revision
            yield pb.WatchEntriesResponse(created=True, revision=self.last)
            async for resp in self._catch_up():
                yield resp
        else:
            d = await self.call("snapshot", {"service": self.scope, "limit": 1})
            self.last = int(d.get("revision", 0))
            yield pb.WatchEntriesResponse(created=True, revision=self.last)

    async def responses(self) -> AsyncIterator[pb.WatchEntriesResponse]:
        async for resp in self._start():
            yield resp
        while True:
            try:
                if self._held is not None:
                    msg, self._held = self._held, None
                elif self._overflowed_and_drained():
                    # What the buffer dropped may be the tail of a burst, with no later event
                    # to reveal the gap: read it now, not after resync_s of silence (a 1 s
                    # stall in about one bench run in seven before).
                    self._dropped_seen = self.sub.dropped  # type: ignore[attr-defined]
                    async for resp in self._catch_up():
                        yield resp
                    continue
                elif isinstance(self.sub, Reader):
                    msg = await self.sub.recv(self._wait())  # a cheaper bound (fanout.py)
                else:
                    async with asyncio.timeout(self._wait()):
                        msg = await self.sub.recv()
            except SourceClosed as exc:
                raise RpcFailure(
                    Origin.BUS,
                    BusCode.SHUTTING_DOWN,
                    f"{exc}: watch again from revision "
                    f"{self.last} (start_revision) to resume without a gap",
                ) from None
            except TimeoutError:
                self._recheck()  # the token may have expired or been revoked meanwhile
                # A lost last event is not missed long. On the shared subscription one watch
                # of the scope reads the history for all of them (fanout.py); past one page,
                # or a compacted history, it reads the rest for itself. So does a watch whose
                # own buffer overflowed: the shared read starts where its reader is, which
                # may be far ahead of this one (a stalled client would then wait forever).
                self.behind = not isinstance(self.sub, Reader)
                if isinstance(self.sub, Reader):
                    if self.sub.dropped != self._dropped_seen:
                        self._dropped_seen = self.sub.dropped
                        self.behind = True
                    else:
                        await self.sub.shared_catch_up(self._history_events, self.resync_s)
                if self.behind:
                    async for resp in self._catch_up():
                        yield resp
                if self.progress_s and time.monotonic() - self.sent_at >= self.progress_s:
                    self.sent_at = time.monotonic()
                    yield pb.WatchEntriesResponse(revision=self.last)
                continue
            if self._recheck_due():  # a busy scope is never silent: verify on events too
                self._recheck()
            if msg.topic != self.scope.encode():
                continue  # a subscription is a prefix: "plant1" also hears "plant10"
            event = _parsed(msg.payload)
            if event is None or event["revision"] <= self.last:
                continue
            if event["revision"] != self.last + 1:
                async for resp in self._catch_up():  # a gap: read what was lost
                    yield resp
                continue
            self.last = event["revision"]
            head = wanted(self.prefix, event)
            packed = self._pack_ready()
            if not head and not packed:
                continue
            self.sent_at = time.monotonic()
            if not packed:  # the usual case: one change, the response every watch shares
                yield _parsed.response(msg.payload, self.scope)
            else:
                changes = [change_pb(self.scope, event)] if head else []
                yield pb.WatchEntriesResponse(changes=changes + packed, revision=self.last)

    def _recheck_due(self) -> bool:
        return time.monotonic() - self.checked_at >= self.resync_s

    def _recheck(self) -> None:
        self.checked_at = time.monotonic()
        self.recheck()

    def _overflowed_and_drained(self) -> bool:
        """This watch's own buffer dropped events since it last looked, and is now empty."""
        sub = self.sub
        return isinstance(sub, Reader) and sub.dropped != self._dropped_seen and not sub.pending

    def _pack_ready(self) -> list[pb.Change]:
        """The in-order events already waiting behind the one just read, for one response.

        A watch that fell behind by a burst (a batch write, a slow client) then sends its
        changes in a few large messages rather than one per change, as catch-up pages do:
        bounded by PACK_CHANGES and PACK_BYTES of payload. A gap stops the packing; that
        message is read next (``_held``), and its history then fills the gap.
        """
        if not isinstance(self.sub, Reader):
            return []
        out: list[pb.Change] = []
        size = 0
        topic = self.scope.encode()
        while len(out) < PACK_CHANGES and size < PACK_BYTES:
            msg = self.sub.poll()
            if msg is None:
                break
            if msg.topic != topic:
                continue
            event = _parsed(msg.payload)
            if event is None or event["revision"] <= self.last:
                continue
            if event["revision"] != self.last + 1:
                self._held = msg
                break
            self.last = event["revision"]
            size += len(msg.payload)
            if wanted(self.prefix, event):
                out.append(change_pb(self.scope, event))
        return out

    def _wait(self) -> float:
        if not self.progress_s:
            return self.resync_s
        return max(0.0, min(self.resync_s, self.progress_s - (time.monotonic() - self.sent_at)))
