"""Render the PlantdCluster CRD from the pydantic models.

``python -m plantd_operator.crd`` writes ``crds/plantd.io_plantdclusters.yaml`` and the chart's
copy; a unit test fails when either differs from what the models produce.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from plantd.common import contract
from plantd_operator import models

GROUP = contract.API_GROUP
VERSION = contract.API_VERSION
KIND = "PlantdCluster"
PLURAL = "plantdclusters"
SINGULAR = "plantdcluster"
SHORT_NAMES = ["pdc"]
CATEGORIES = ["plantd"]
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"{GROUP}_{PLURAL}.yaml"

# Longest cluster name whose child names (e.g. NAME-broker-headless) stay DNS-1035 labels.
MAX_NAME = 40

# Keys of pydantic's JSON schema that a structural CRD schema does not take.
_DROP = {"title", "additionalProperties_false", "discriminator", "$defs", "examples"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[1]]
            merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any], *, defaults: bool = True) -> dict[str, Any]:
    """Turn one resolved pydantic schema node into a structural OpenAPI v3 node.

    With ``defaults``, every non-optional nested object gets ``default: {}`` so the API server
    fills in its fields' defaults even when the user leaves the whole object out.
    """
    node = dict(node)
    optional = False
    # Optional[X] comes as anyOf [X, null]: the field is simply not required.
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            optional = True
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**branches[0], **rest}
            if node.get("default", 0) is None:
                del node["default"]
    node.pop("title", None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _structural(sub, defaults=defaults) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defaults=False)
        elif key == "default" and isinstance(value, dict):
            # An empty object default lets the API server apply the nested defaults.
            out[key] = {}
        elif key == "default" and isinstance(value, list):
            out[key] = []
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
        if defaults and not optional and "default" not in out:
            out["default"] = {}
            if "x-kubernetes-validations" in out:
                # The API server checks a default against the object's CEL rules *before*
                # nested defaulting, so give it the scalar defaults the rules read.
                out["default"] = {
                    k: v["default"]
                    for k, v in out["properties"].items()
                    if "default" in v and not isinstance(v["default"], (dict, list))
                }
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in (out)
    ):
        out.setdefault("x-kubernetes-preserve-unknown-fields", True)
    return out


def _check_descriptions(node: dict[str, Any], path: str) -> None:
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description"):
            raise ValueError(f"{path}.{name} has no description: add one to the model field")
        _check_descriptions(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _check_descriptions(node["items"], f"{path}[]")


def model_schema(model: type[BaseModel], *, defaults: bool = True) -> dict[str, Any]:
    """The structural schema of a model (every field described, defaults inline)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(_resolve(raw, defs), defaults=defaults)
    _check_descriptions(schema, model.__name__)
    return schema


def openapi_schema() -> dict[str, Any]:
    spec = model_schema(models.PlantdClusterSpec)
    status = model_schema(models.PlantdClusterStatus, defaults=False)
    spec["description"] = "Desired state of the plantd control system."
    status["description"] = "Observed state, written by the operator."
    return {
        "type": "object",
        "description": "A plantd control system: MDP broker, state service with Redis, "
        "identity service and gRPC sidecars, run by the plantd operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            # The API server allows nothing else here (not even a description).
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            models.cel(
                f"size(self.metadata.name) <= {MAX_NAME}",
                f"metadata.name must be at most {MAX_NAME} characters (child names add "
                "suffixes such as -broker-headless)",
            ),
            models.cel(
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "metadata.name must start with a letter and hold only a-z, 0-9 and '-' "
                "(it names Services)",
            ),
        ],
    }


PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "The Ready condition.",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Phase."},
    {
        "name": "Broker",
        "type": "string",
        "jsonPath": ".status.brokerReplicas",
        "description": "Broker pods ready/desired.",
    },
    {
        "name": "Version",
        "type": "string",
        "jsonPath": ".status.version",
        "description": "plantd version running.",
    },
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why Ready is what it is.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The full CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "plantd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = (
    "# Generated by `python -m plantd_operator.crd` from operator/plantd_operator/models.py.\n"
    "# Do not edit by hand. Install with: kubectl apply --server-side -f crds/\n"
)


def render() -> str:
    return HEADER + "---\n" + yaml.safe_dump(crd(), sort_keys=False, width=100)


def targets(root: Path) -> list[Path]:
    return [root / "crds" / CRD_FILE, root / "charts" / "plantd-operator" / "crds" / CRD_FILE]


def field_rows() -> list[tuple[str, str, str, str]]:
    """(path, type, default, description) for every spec field: the docs' field reference."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            p = f"{path}.{name}" if path else name
            kind = sub.get("type", "int-or-string")
            if kind == "object" and "additionalProperties" in sub:
                kind = "map"
            extra = []
            if "enum" in sub:
                extra.append(" \\| ".join(map(str, sub["enum"])))
            if "minimum" in sub:
                extra.append(f"{sub['minimum']}-{sub.get('maximum', '')}")
            if extra:
                kind += f" ({', '.join(extra)})"
            d = sub.get("default")
            default = (
                ""
                if d is None or d == {}
                else f"`{str(d).lower() if d is True or d is False else d}`"
            )
            desc = sub["description"].replace("|", "\\|")
            rows.append((p, kind, default, desc))
            if sub.get("properties"):
                walk(sub, p)
            elif isinstance(sub.get("items"), dict) and sub["items"].get("properties"):
                walk(sub["items"], p + "[]")

    walk(openapi_schema()["properties"]["spec"], "")
    return rows


def field_table() -> str:
    lines = ["| Field (under `spec`) | Type | Default | Meaning |", "|---|---|---|---|"]
    lines += [f"| `{p}` | {t} | {d} | {m} |" for p, t, d, m in field_rows()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plantd_operator.crd",
        description="Write (or --check) the PlantdCluster CRD in crds/ and the Helm chart.",
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a file differs from the models"
    )
    parser.add_argument(
        "--docs", action="store_true", help="print the spec field table for docs/operator.md"
    )
    args = parser.parse_args(argv)
    if args.docs:
        print(field_table(), end="")
        return 0
    text = render()
    stale = []
    for path in targets(args.root):
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        names = ", ".join(str(p) for p in stale)
        print(f"out of date: {names}; run `python -m plantd_operator.crd`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
