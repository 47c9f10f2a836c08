"""The CRD in crds/ is generated from the models, complete, and the chart's copy is identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from plantd_operator import crd

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def test_crd_files_match_the_models() -> None:
    assert crd.main(["--root", str(ROOT), "--check"]) == 0, "run: python -m plantd_operator.crd"
    a, b = crd.targets(ROOT)
    assert a.read_text() == b.read_text()


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural_and_described() -> None:
    doc = yaml.safe_load(crd.render())
    version = doc["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "title" not in node, path
        if path.count(".") >= 1 and not path.endswith(("{}", "[]", ".metadata")):
            assert node.get("description"), f"{path} has no description"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
    assert version["subresources"] == {"status": {}}
    names = doc["spec"]["names"]
    assert names["shortNames"] == ["pdc"] and names["categories"] == ["plantd"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Ready", "Phase", "Broker", "Version"] and "Age" in columns


def test_defaults_enums_bounds_and_cel_are_in_the_schema() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]
    broker = spec["properties"]["broker"]
    assert broker["default"] == {}
    assert broker["properties"]["replicas"] == {
        **broker["properties"]["replicas"],
        "default": 1,
        "minimum": 1,
        "maximum": 5,
    }
    redis = spec["properties"]["state"]["properties"]["redis"]
    assert redis["properties"]["mode"]["enum"] == ["managed", "external"]
    rules = [v["rule"] for v in redis["x-kubernetes-validations"]]
    assert any("has(self.external)" in r for r in rules)
    assert any("oldSelf" in r for r in rules), "mode must be immutable"
    # Optional objects get no default (a default {} would make has() true).
    assert "default" not in redis["properties"]["external"]
    mesh = spec["properties"]["mesh"]["properties"]["istio"]["properties"]["mtlsMode"]
    assert mesh["enum"] == ["STRICT", "PERMISSIVE"] and mesh["default"] == "STRICT"
    root_rules = crd.openapi_schema()["x-kubernetes-validations"]
    assert any("metadata.name" in r["rule"] for r in root_rules)


def test_status_conditions_are_a_map_list() -> None:
    status = crd.openapi_schema()["properties"]["status"]
    conds = status["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    assert "default" not in status


def test_docs_describe_every_spec_field() -> None:
    docs = (ROOT / "docs" / "operator.md").read_text()
    missing = [p for p, *_ in crd.field_rows() if f"`{p}`" not in docs]
    assert not missing, (
        f"docs/operator.md lacks {missing}: run python -m plantd_operator.crd --docs"
    )
