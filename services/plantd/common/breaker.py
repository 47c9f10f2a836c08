"""Circuit breakers: stop sending to a dependency that keeps failing, probe it, come back.

A pure core (time and randomness are passed in), used by the gateway for each bus service
(``plantd.gateway.guarded_bus``) and unit-tested without I/O.

- **closed**: requests go through; ``failures`` failures in a row (no success between) open it.
- **open**: requests are refused at once, for a pause that doubles with each opening in a row
  (``base_s``, then twice, four times ... up to ``cap_s``) with jitter (each pause is 50 to
  100 % of that, so many gateways that saw one outage do not probe in step).
- **half-open**: after the pause one request goes through as the probe; the others are still
  refused until it ends. Its success closes the breaker (and resets the pause); its failure
  opens it again with the next pause. A probe that ends with no verdict (the caller went away)
  lets the next request probe.

A success at any time closes the breaker: the dependency answered, whatever else happened.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final


class BreakerState(IntEnum):
    """Values of the state gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5  # in a row, to open; 0 = never open
    base_s: float = 0.5  # the first pause
    cap_s: float = 30.0  # the longest pause

    def __post_init__(self) -> None:
        if self.failures < 0 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("a breaker needs failures >= 0 and 0 < base_s <= cap_s")


@dataclass(frozen=True, slots=True)
class Admission:
    """``allowed``, and if so whether this request is the half-open probe; if not, how long
    until the breaker lets a probe through."""

    allowed: bool
    probe: bool = False
    retry_after_s: float = 0.0


_PASS: Final = Admission(True)


class CircuitBreaker:
    __slots__ = ("_failures", "_opens", "_policy", "_probing", "_random", "_until", "state")

    def __init__(self, policy: BreakerPolicy, rng: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._random = rng
        self.state = BreakerState.CLOSED
        self._failures = 0  # in a row, while closed
        self._opens = 0  # openings in a row (the pause's exponent)
        self._until = 0.0  # while open: when a probe may go
        self._probing = False

    def admit(self, now: float) -> Admission:
        if self.state is BreakerState.CLOSED:
            return _PASS
        if self.state is BreakerState.OPEN:
            if now < self._until:
                return Admission(False, retry_after_s=self._until - now)
            self.state = BreakerState.HALF_OPEN
        if self._probing:  # half-open, the probe still out
            return Admission(False, retry_after_s=self._policy.base_s)
        self._probing = True
        return Admission(True, probe=True)

    def pausing(self, now: float) -> bool:
        """Open and still in its pause (after it, the next request is a probe)."""
        return self.state is BreakerState.OPEN and now < self._until

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opens = 0
        self._probing = False

    def failure(self, now: float, probe: bool = False) -> bool:
        """Count the failure of a request (``probe``: the one :meth:`admit` said was the
        probe); True when it opened the breaker."""
        if self.state is BreakerState.OPEN:
            return False  # a request from before it opened: the pause stands
        if self.state is BreakerState.HALF_OPEN:
            if not probe:
                return False  # admitted before it opened; only the probe's verdict counts
            self._open(now)
            return True
        self._failures += 1
        if self._policy.failures and self._failures >= self._policy.failures:
            self._open(now)
            return True
        return False

    def abandon(self, probe: bool) -> None:
        """A request ended with no verdict (the caller went away); if it was the probe, the
        next request may probe."""
        if probe:
            self._probing = False

    def _open(self, now: float) -> None:
        pause = min(self._policy.cap_s, self._policy.base_s * 2.0**self._opens)
        self._opens = min(self._opens + 1, 32)
        self.state = BreakerState.OPEN
        self._until = now + pause * (0.5 + 0.5 * self._random())
        self._failures = 0
        self._probing = False


class Breakers:
    """One breaker per name, at most ``max_names`` of them: a caller naming a new dependency
    on every request cannot grow it. When full, the longest-unused closed breaker goes (an
    open one only when every one is open)."""

    def __init__(
        self,
        policy: BreakerPolicy,
        max_names: int = 64,
        rng: Callable[[], float] = random.random,
        on_evict: Callable[[str], None] | None = None,
        on_create: Callable[[str], None] | None = None,
    ) -> None:
        if max_names < 1:
            raise ValueError("max_names must be at least 1")
        self.policy = policy
        self.max_names = max_names
        self._random = rng
        self._on_evict = on_evict
        self._on_create = on_create
        self._by_name: OrderedDict[str, CircuitBreaker] = OrderedDict()

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._by_name.get(name)
        if breaker is not None:
            self._by_name.move_to_end(name)
            return breaker
        if len(self._by_name) >= self.max_names:
            self._evict()
        breaker = self._by_name[name] = CircuitBreaker(self.policy, self._random)
        if self._on_create is not None:
            self._on_create(name)
        return breaker

    def pausing(self, name: str, now: float) -> bool:
        breaker = self._by_name.get(name)
        return breaker is not None and breaker.pausing(now)

    def state(self, name: str) -> BreakerState:
        breaker = self._by_name.get(name)
        return BreakerState.CLOSED if breaker is None else breaker.state

    def items(self) -> Iterator[tuple[str, CircuitBreaker]]:
        return iter(list(self._by_name.items()))

    def _evict(self) -> None:
        victim = next(
            (n for n, b in self._by_name.items() if b.state is BreakerState.CLOSED),
            next(iter(self._by_name)),
        )
        del self._by_name[victim]
        if self._on_evict is not None:
            self._on_evict(victim)
