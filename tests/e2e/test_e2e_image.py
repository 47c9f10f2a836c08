"""The image: built here without a Docker engine, and every component starts in it as uid 10001
with a read-only root filesystem, the way the operator's restricted pods run it."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from e2ekit import BUILD_TIMEOUT, IMAGE_DIR, ROOT, BuiltImage

import plantd
from plantd.common import contract

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_every_component_starts_as_non_root_on_a_read_only_root(image: BuiltImage) -> None:
    smoke = subprocess.run(
        [str(IMAGE_DIR / "smoke.sh"), image.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = smoke.stdout.splitlines()
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr[-2000:]
    assert f"ok uid {contract.IMAGE_UID}, read-only root" in lines
    assert "ok plantd version" in lines
    # The host's contract and the image's agree: every component answers --help in the image.
    for component in contract.COMPONENTS:
        assert f"ok plantd {component} --help" in lines, smoke.stdout
    assert "ok no pip or compiler" in lines
    assert not [line for line in lines if line.startswith("FAIL")]


def test_the_image_carries_its_contract_and_labels(image: BuiltImage) -> None:
    config = image.inspect()["OCIv1"]["config"]
    assert config["Entrypoint"] == ["plantd"]
    assert config["User"] == f"{contract.IMAGE_UID}:{contract.IMAGE_UID}"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == plantd.__version__
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode == 0:
        assert labels["org.opencontainers.image.revision"] == head.stdout.strip()
    # Stamped by this build, not inherited from a cached layer of an earlier one.
    created = datetime.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
    age = datetime.now(UTC).replace(tzinfo=None) - created
    assert timedelta(0) <= age < timedelta(seconds=BUILD_TIMEOUT + 600), age
    # Containers bind all interfaces (the operator renders the same values).
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PLANTD_BROKER_ENDPOINT"] == contract.CONTAINER_BROKER_BIND


def test_the_build_reports_the_image_size(image: BuiltImage) -> None:
    assert re.search(r"built \S+ in [\d.]+s: [\d.]+ [kMG]B", image.build_log), image.build_log
