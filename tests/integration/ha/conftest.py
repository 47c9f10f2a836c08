"""HA tests share the broker-process helpers of tests/integration/broker."""

from __future__ import annotations

import sys
from pathlib import Path

# Make `tests.*` importable under plain `pytest` too (the repo root is not on sys.path there).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
