"""Small statistics and table helpers shared by the benchmarks (no dependencies)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def _rank(p: float, n: int) -> int:
    # Nearest rank; round first so 99.9% of 1000 is rank 999, not 1000 (float error).
    return max(0, min(n - 1, math.ceil(round(p / 100.0 * n, 9)) - 1))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by nearest rank on sorted data; NaN when empty."""
    if not values:
        return math.nan
    data = sorted(values)
    return float(data[_rank(p, len(data))])


def percentiles(values: Sequence[float], ps: Iterable[float] = (50, 99, 99.9)) -> dict[str, float]:
    """Several percentiles at once, keyed ``p50``, ``p99``, ``p99.9``."""
    data = sorted(values)
    out: dict[str, float] = {}
    for p in ps:
        key = f"p{p:g}"
        if not data:
            out[key] = math.nan
            continue
        out[key] = float(data[_rank(p, len(data))])
    return out


def median(values: Iterable[float]) -> float:
    data = [v for v in values if not math.isnan(v)]
    return float(statistics.median(data)) if data else math.nan


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or missing."""
    if not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def fmt(value: float, digits: int = 2) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with right-aligned columns (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [
        [fmt(c) if isinstance(c, float | int) and not isinstance(c, bool) else str(c) for c in r]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(len(row))
        ]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
