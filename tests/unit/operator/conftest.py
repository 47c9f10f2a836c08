"""Fixtures for the operator's pure unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plantd_operator.context import Capabilities, ClusterContext
from plantd_operator.models import parse_spec

ALL_CAPS = Capabilities(istio=True, service_monitor=True, prometheus_rule=True)


def make_ctx(spec: dict[str, Any] | None = None, **kw: Any) -> ClusterContext:
    return ClusterContext(
        name=kw.pop("name", "demo"),
        namespace=kw.pop("namespace", "plant"),
        uid=kw.pop("uid", "uid-1"),
        spec=parse_spec(spec or {}),
        capabilities=kw.pop("capabilities", ALL_CAPS),
        **kw,
    )


@pytest.fixture
def ctx_factory() -> Callable[..., ClusterContext]:
    return make_ctx
