"""skaffold.yaml against skaffold's own published JSON schema for its apiVersion."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from e2ekit import ROOT
from tests.kit import require

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def schema(skaffold: dict[str, Any]) -> dict[str, Any]:
    require(shutil.which("go") is not None, "go not found: skaffold's schema is in its Go module")
    api = skaffold["apiVersion"].removeprefix("skaffold/")
    fetched = subprocess.run(
        [str(ROOT / "hack" / "tools" / "skaffold-schema.sh"), api],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert fetched.returncode == 0, fetched.stderr
    loaded: dict[str, Any] = json.loads(Path(fetched.stdout.strip()).read_text())
    return loaded


def test_skaffold_yaml_matches_the_published_schema(
    skaffold: dict[str, Any], schema: dict[str, Any]
) -> None:
    jsonschema.Draft7Validator(schema).validate(skaffold)


def test_the_schema_check_catches_a_wrong_field(
    skaffold: dict[str, Any], schema: dict[str, Any]
) -> None:
    # The check has teeth: a misspelt builder field is an error, not ignored.
    bad = copy.deepcopy(skaffold)
    bad["build"]["artifacts"][0]["custom"]["buildComand"] = "make image"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)
