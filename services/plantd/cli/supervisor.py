"""Run child processes: forward their logs, wait for /readyz, restart crashes, stop cleanly.

Generic (knows nothing about plantd components); ``plantd up`` builds the ``ChildSpec`` list.
A child first starts once every child of a lower ``tier`` is ready (or ``ready_timeout`` has
passed: a broken dependency must not hold the rest back for ever), so a service that needs
another at start does not race it. Children run in their own session so a terminal Ctrl-C
reaches only the supervisor, which then stops them in reverse ``tier`` order (modules before
the broker). On Linux each child also gets
``PR_SET_PDEATHSIG`` so a SIGKILLed supervisor cannot leave orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

_LINE_LIMIT = 1 << 20
_READY_POLL_S = 0.1


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    ready_url: str | None = None  # None: ready as soon as it is running
    tier: int = 0  # started after the lower tiers are ready; stopped highest tier first


class Reporter(Protocol):
    """Where the supervisor's own messages and the children's log lines go."""

    def child_line(self, name: str, line: str) -> None: ...
    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass
class Backoff:
    """Exponential restart delay; resets once a child has stayed up for ``reset_after`` s."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 30.0
    _next: float = field(default=0.0, init=False)

    def delay(self, ran_for: float) -> float:
        """Delay before the next restart of a child that just ran for ``ran_for`` seconds."""
        if ran_for >= self.reset_after or self._next == 0.0:
            self._next = self.initial
        current = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return current


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# Loaded before any fork: the child between fork and exec should do as little as possible.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM us when the parent dies.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None


class Supervisor:
    """Start ``specs``; ``run()`` returns 0 after a clean stop (``request_stop`` or a signal)."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        reporter: Reporter,
        *,
        stop_timeout: float = 10.0,
        ready_timeout: float = 30.0,
        backoff: Callable[[], Backoff] = Backoff,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self._children = [_Child(spec, backoff()) for spec in specs]
        self._reporter = reporter
        self._stop_timeout = stop_timeout
        self._ready_timeout = ready_timeout
        self._on_ready = on_ready
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        if self._stopping.is_set():
            # Second Ctrl-C: the user does not want to wait for a graceful stop.
            self._reporter.warn("second interrupt: killing every child now")
            for child in self._children:
                self._signal(child, signal.SIGKILL)
            return
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        watchers = [asyncio.create_task(self._watch(c)) for c in self._children]
        announce = asyncio.create_task(self._announce_ready())
        try:
            await self._stopping.wait()
            self._reporter.info("stopping (Ctrl-C again to kill)")
            announce.cancel()
            await self._stop_all()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for task in [*watchers, announce]:
                task.cancel()
        self._reporter.info("stopped")
        return 0

    async def _announce_ready(self) -> None:
        pending = {c.spec.name: c for c in self._children}
        deadline = time.monotonic() + self._ready_timeout
        warned = False
        while pending:
            for name, child in list(pending.items()):
                if child.ready.is_set():
                    del pending[name]
            if not pending:
                break
            if not warned and time.monotonic() > deadline:
                warned = True
                self._reporter.warn(
                    f"not ready after {self._ready_timeout:.0f}s: {', '.join(sorted(pending))}; "
                    "still waiting (see their log lines above)"
                )
            await asyncio.sleep(_READY_POLL_S)
        if self._on_ready is not None:
            self._on_ready()

    async def _after_lower_tiers(self, child: _Child) -> None:
        lower = [c for c in self._children if c.spec.tier < child.spec.tier]
        if not lower:
            return
        waits: list[asyncio.Task[bool]] = [asyncio.create_task(c.ready.wait()) for c in lower]
        stop = asyncio.create_task(self._stopping.wait())
        deadline = time.monotonic() + self._ready_timeout
        try:
            for wait in waits:
                left = deadline - time.monotonic()
                done, _ = await asyncio.wait(
                    {wait, stop}, timeout=max(left, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if wait not in done:
                    return  # stopping, or the time is up: start anyway (the ready line warns)
        finally:
            for task in [*waits, stop]:
                task.cancel()
            await asyncio.gather(*waits, stop, return_exceptions=True)

    async def _watch(self, child: _Child) -> None:
        await self._after_lower_tiers(child)
        while not self._stopping.is_set():
            try:
                await self._start(child)
            except OSError as exc:
                self._reporter.warn(f"{child.spec.name}: cannot start ({exc}); retrying")
            else:
                assert child.proc is not None
                ready_task = asyncio.create_task(self._wait_ready(child))
                code = await child.proc.wait()
                ready_task.cancel()
                if child.pump is not None:
                    # Its last lines (often the reason it died) come before our verdict.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(child.pump), timeout=1.0)
                child.ready.clear()
                if self._stopping.is_set():
                    return
                self._reporter.warn(f"{child.spec.name} {describe_exit(code)}")
            delay = child.backoff.delay(time.monotonic() - child.started_at)
            child.restarts += 1
            self._reporter.warn(
                f"restarting {child.spec.name} in {delay:.1f}s (restart #{child.restarts})"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _start(self, child: _Child) -> None:
        spec = child.spec
        child.started_at = time.monotonic()
        child.proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            env=dict(spec.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=_LINE_LIMIT,
        )
        child.pump = asyncio.create_task(self._pump(spec.name, child.proc))

    async def _pump(self, name: str, proc: asyncio.subprocess.Process) -> None:
        stream = proc.stdout
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: forward what we have
                raw = await stream.read(_LINE_LIMIT)
            if not raw:
                return
            self._reporter.child_line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    async def _wait_ready(self, child: _Child) -> None:
        url = child.spec.ready_url
        if url is None:
            child.ready.set()
            return
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(_READY_POLL_S)
        child.ready.set()
        if child.restarts:
            self._reporter.info(
                f"{child.spec.name} is ready again (after {child.restarts} restarts)"
            )

    def _signal(self, child: _Child, sig: signal.Signals) -> None:
        if child.proc is not None and child.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)

    async def _stop_all(self) -> None:
        for tier in sorted({c.spec.tier for c in self._children}, reverse=True):
            group = [c for c in self._children if c.spec.tier == tier]
            await asyncio.gather(*(self._stop(c) for c in group))

    async def _stop(self, child: _Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        self._signal(child, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=self._stop_timeout)
        except TimeoutError:
            self._reporter.warn(
                f"{child.spec.name} did not stop within {self._stop_timeout:.0f}s; killing it"
            )
            self._signal(child, signal.SIGKILL)
            await proc.wait()
