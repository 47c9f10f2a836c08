"""Polling with a deadline: the only way tests wait for a condition (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    *,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Past ``timeout`` seconds raise AssertionError naming ``what`` and the last value seen. The
    last call always starts at or after the deadline, so a call starved on a loaded machine
    cannot fail a condition that became true meanwhile. Exceptions propagate, except those in
    ``retry_on``: they count as "not yet" and are the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        last: object
        try:
            value = predicate()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if started >= deadline:  # the last call began at or after the deadline
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last value: {last!r})"
            )
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


async def await_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float,  # noqa: ASYNC109 - a deadline for polling, not a cancel scope
    what: str,
    interval: float = 0.02,
) -> T:
    """:func:`wait_for` for an async predicate, sleeping on the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        value = await predicate()
        if value:
            return value
        if started >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last value: {value!r})"
            )
        await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
