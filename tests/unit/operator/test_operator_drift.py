from __future__ import annotations

import pytest

from plantd_operator.drift import diff

pytestmark = pytest.mark.unit


def test_subset_ignores_fields_others_added() -> None:
    want = {"spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b"}}}}}
    have = {
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b", "x": "y"}}}},
        "status": {"readyReplicas": 2},
    }
    assert diff(want, have) is None


def test_changed_owned_field_is_reported_with_its_path() -> None:
    assert diff({"spec": {"replicas": 2}}, {"spec": {"replicas": 5}}) == ".spec.replicas"
    assert diff({"a": [{"n": 1}]}, {"a": [{"n": 1}, {"n": 2}]}) == ".a"
    assert diff({"a": {"b": 1}}, {"a": {}}) == ".a.b"


def test_normalised_quantities_are_equal() -> None:
    assert diff({"cpu": "0.5", "mem": "1Gi"}, {"cpu": "500m", "mem": "1024Mi"}) is None
    assert diff({"cpu": "1"}, {"cpu": "2"}) == ".cpu"


def test_empty_values_dropped_by_the_server_are_not_drift() -> None:
    assert diff({"a": {}, "b": [], "c": 1}, {"c": 1}) is None
