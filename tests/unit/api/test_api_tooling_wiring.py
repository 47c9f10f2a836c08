"""CI really runs the protos check, and the pins agree with the checked-in generated code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "services/plantd/v1"


def _recipe(target: str) -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for req in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        name, _, version = req.partition("==")
        pins[name.split("[")[0]] = version
    return pins


def test_make_lint_and_protos_check_run_the_check_and_ci_runs_make_lint() -> None:
    assert "@hack/protos/protos.sh check" in _recipe("lint")
    assert "@hack/protos/protos.sh check" in _recipe("protos-check")
    assert "@hack/protos/protos.sh gen" in _recipe("protos")
    assert re.search(r"^make lint$", (REPO / ".ci/run").read_text(), re.MULTILINE)


def test_generated_code_is_excluded_from_ruff_but_not_from_mypy() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    assert "services/plantd/v1" in config["ruff"]["extend-exclude"]
    # mypy reads the generated .pyi stubs, which are strict-clean: no override hides them.
    assert not any("plantd.v1" in str(o) for o in config["mypy"].get("overrides", []))


def test_grpc_runtime_is_at_least_the_generator_version() -> None:
    pins = _pins()
    text = (GENERATED / "state_pb2_grpc.py").read_text()
    generated = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", text)
    assert generated, "no GRPC_GENERATED_VERSION in state_pb2_grpc.py"
    assert generated.group(1) == pins["grpcio-tools"], "regenerate with the pinned grpcio-tools"
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(pins["grpcio"]) >= as_tuple(generated.group(1))


def test_protobuf_runtime_is_at_least_the_gencode_version() -> None:
    text = (GENERATED / "state_pb2.py").read_text()
    found = re.search(r"Protobuf Python Version: ([0-9.]+)", text)
    assert found
    gencode = tuple(int(x) for x in found.group(1).split("."))
    runtime = tuple(int(x) for x in _pins()["protobuf"].split("."))
    # "New gencode + old runtime = never allowed"; runtimes of major V and V+1 read V's code.
    assert gencode <= runtime
    assert runtime[0] - gencode[0] in (0, 1)
