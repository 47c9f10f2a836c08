"""Packaging, checked statically (the e2e tier builds and runs the image itself: tests/e2e)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from plantd.common import contract
from plantd_operator.models import parse_spec

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def test_dockerfile_runs_plantd_as_the_contract_uid() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert f"ARG UID={contract.IMAGE_UID}" in text
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", text, re.M)
    assert 'ENTRYPOINT ["plantd"]' in text
    assert text.count("FROM ") >= 2, "multi-stage"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"!services/**", "!operator/**", "!pyproject.toml"} <= set(ignore)


def test_skaffold_builds_the_image_and_deploys_the_chart() -> None:
    doc = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert doc["apiVersion"].startswith("skaffold/v4")
    artifact = doc["build"]["artifacts"][0]
    # The custom builder is `make image`'s script, so skaffold builds without Docker too.
    script = ROOT / artifact["custom"]["buildCommand"]
    assert script.exists() and os.access(script, os.X_OK), script
    assert "build.sh" in script.read_text()
    release = doc["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
    assert {p["name"] for p in doc["profiles"]} == {"dev", "testenv"}
    for path in doc["manifests"]["rawYaml"]:
        assert (ROOT / path).exists(), path


def test_chart_default_image_matches_the_dockerfile_image() -> None:
    values = yaml.safe_load((ROOT / "charts/plantd-operator/values.yaml").read_text())
    doc = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert values["image"]["repository"] == doc["build"]["artifacts"][0]["image"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_with_the_models(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "PlantdCluster"
    parse_spec(doc["spec"])


def test_chart_crds_are_exactly_the_repository_crds() -> None:
    """crds/ is the single source; the chart ships an identical copy and nothing else."""
    chart = ROOT / "charts" / "plantd-operator" / "crds"
    assert sorted(p.name for p in chart.iterdir()) == sorted(
        p.name for p in (ROOT / "crds").iterdir()
    )
    for path in (ROOT / "crds").iterdir():
        assert (chart / path.name).read_bytes() == path.read_bytes(), path.name
