"""Does a live object still carry everything we applied? (Pure; used on child watch events.)

Server-side apply makes re-applying safe, but a no-op apply is still an API call: we apply a
child again only when a field we set is missing or different. Fields others added (defaults,
annotations, status) are ignored, which is the point of field ownership.
"""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity


def _leaf_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        # The API server normalises quantities ("0.5" -> "500m"); compare their values.
        try:
            return bool(parse_quantity(want) == parse_quantity(have))  # type: ignore[no-untyped-call]
        except (ValueError, TypeError):
            return str(want) == str(have)
    return False


def diff(want: Any, have: Any, path: str = "") -> str | None:
    """The first path where ``have`` does not contain ``want``; None when it does."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return path or "."
        for key, value in want.items():
            if key not in have:
                if value in ({}, [], None):
                    continue  # empty values are dropped by the API server
                return f"{path}.{key}"
            found = diff(value, have[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return path
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            found = diff(w, h, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if _leaf_equal(want, have) else path
