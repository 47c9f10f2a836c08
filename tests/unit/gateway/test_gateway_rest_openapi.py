"""The REST edge's OpenAPI 3.1 document: valid, one operation per route, every $ref resolves,
bearer security except the public identity methods, SSE for streams, proto3 JSON schemas."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, struct_pb2, wrappers_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as FDP
from google.protobuf.message_factory import GetMessageClass
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from plantd.gateway.identity_map import METHODS as IDENTITY_METHODS
from plantd.gateway.rest import proto_comments
from plantd.gateway.rest.openapi import comments_of, openapi_document
from plantd.gateway.rest.routes import Route, routes_for
from plantd.v1 import bus_pb2, identity_pb2, state_pb2

pytestmark = pytest.mark.unit

SERVICES = (
    state_pb2.DESCRIPTOR.services_by_name["StateService"],
    bus_pb2.DESCRIPTOR.services_by_name["BusService"],
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
)
ROUTES = routes_for(*SERVICES)
DOC: dict[str, Any] = openapi_document(
    ROUTES, title="plantd", version="1.2.3", server_url="https://plantd.example"
)
PUBLIC = {"Login", "RefreshToken", "ValidateToken", "GetJwks", "IssueToken"}
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]


def operations(doc: dict[str, Any] = DOC) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, verbs in doc["paths"].items():
        for verb, operation in verbs.items():
            yield path, verb, operation


def operation_of(method: str, doc: dict[str, Any] = DOC) -> dict[str, Any]:
    (found,) = [o for _, _, o in operations(doc) if o["operationId"].endswith(f"_{method}")]
    return found


def shape(template: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", template)


def _expected_ids() -> list[str]:
    ids: list[str] = []
    for route in ROUTES:
        base = f"{route.service.rsplit('.', 1)[1]}_{route.method}"
        ids.append(base if base not in ids else f"{base}{sum(i.startswith(base) for i in ids) + 1}")
    return ids


EXPECTED_IDS = _expected_ids()


def located(route: Route) -> tuple[str, str, dict[str, Any]]:
    """(path, verb, operation) of a route, found by its operationId."""
    wanted = EXPECTED_IDS[ROUTES.index(route)]
    (found,) = [(p, v, o) for p, v, o in operations() if o["operationId"] == wanted]
    return found


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, ref
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def prop(message: str, name: str) -> dict[str, Any]:
    """A property's schema without its description (the proto comment; checked apart)."""
    schema: dict[str, Any] = SCHEMAS[message]["properties"][name]
    return {k: v for k, v in schema.items() if k != "description"}


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    assert DOC["info"] == {"title": "plantd", "version": "1.2.3"}
    assert DOC["servers"] == [{"url": "https://plantd.example"}]
    validate(DOC)  # detects 3.1 from the document
    validate(DOC, cls=OpenAPIV31SpecValidator)
    assert "servers" not in openapi_document(ROUTES, title="t", version="1")


def test_it_is_deterministic_and_json() -> None:
    again = openapi_document(
        ROUTES, title="plantd", version="1.2.3", server_url="https://plantd.example"
    )
    assert json.dumps(again, sort_keys=True) == json.dumps(DOC, sort_keys=True)


def test_every_route_is_one_operation_at_its_path() -> None:
    assert sum(1 for _ in operations()) == len(ROUTES)
    ids = [o["operationId"] for _, _, o in operations()]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == sorted(EXPECTED_IDS)
    for route in ROUTES:
        path, verb, operation = located(route)
        assert (shape(path), verb) == (shape(route.template), route.verb.lower())
        assert operation["tags"] == [route.service.rsplit(".", 1)[1]]
    assert DOC["paths"]["/v1/identity/jwks"]["get"]["operationId"] == "IdentityService_GetJwks"
    assert DOC["paths"]["/.well-known/jwks.json"]["get"]["operationId"] == (
        "IdentityService_GetJwks2"
    )
    assert DOC["paths"]["/v1/state/scopes/{scope}/entries/{key}"]["get"]["operationId"] == (
        "StateService_GetEntry"
    )
    assert [t["name"] for t in DOC["tags"]] == ["BusService", "IdentityService", "StateService"]


def test_paths_convert_double_star_and_keep_custom_verbs() -> None:
    paths = set(DOC["paths"])
    assert not any("=" in p for p in paths)
    assert "/v1/state/scopes/{scope}/entries:batchGet" in paths
    assert "/v1/bus/services/{service}:call" in paths
    assert "/v1/identity/auth:login" in paths
    assert "/.well-known/jwks.json" in paths
    key = DOC["paths"]["/v1/state/scopes/{scope}/entries/{key}"]["get"]["parameters"][1]
    assert (key["name"], key["in"], key["required"]) == ("key", "path", True)
    assert '"/"' in key["description"]
    scope = DOC["paths"]["/v1/state/scopes/{scope}/entries/{key}"]["get"]["parameters"][0]
    # One segment: nothing to add to the field's own comment.
    assert scope["description"] == proto_comments.packaged()["plantd.v1.GetEntryRequest.scope"]


def test_path_parameters_match_the_templates_and_shapes_are_unique() -> None:
    shapes: set[str] = set()
    for path, _, operation in operations():
        in_path = re.findall(r"\{([^}]+)\}", path)
        declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert declared == in_path, path
    for path in DOC["paths"]:
        shape = re.sub(r"\{[^}]+\}", "{}", path)
        assert shape not in shapes, path  # OpenAPI: no two paths differing only in names
        shapes.add(shape)
    update = operation_of("UpdateUser")
    (user_id,) = [p for p in update["parameters"] if p["in"] == "path"]
    assert user_id["name"] == "user_id"  # shared with GetUser/DeleteUser's path
    assert "`user.id`" in user_id["description"]
    assert user_id["schema"] == {"type": "string", "format": "uint64"}


def test_every_ref_resolves() -> None:
    found = list(refs(DOC))
    assert len(found) > 100
    for ref in found:
        assert resolve(DOC, ref) is not None
    assert "#/components/schemas/plantd.v1.Entry" in found


def test_security_is_absent_exactly_on_the_public_identity_methods() -> None:
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token, sent as `Authorization: Bearer <JWT>`.",
    }
    assert "security" not in DOC  # per operation only
    without = {
        o["operationId"].split("_")[1].rstrip("2")
        for _, _, o in operations()
        if "security" not in o
    }
    assert without == PUBLIC
    for route in ROUTES:
        operation = located(route)[2]
        if route.method in PUBLIC:
            continue
        assert {"bearerAuth": []} in operation["security"]
        # Optional only where identity takes other credentials; required everywhere else.
        optional = route.service.endswith("IdentityService") and not (
            IDENTITY_METHODS[route.method].token_required
        )
        expected = [{"bearerAuth": []}, {}] if optional else [{"bearerAuth": []}]
        assert operation["security"] == expected, route.method


def test_streaming_routes_respond_with_server_sent_events() -> None:
    streaming = [r for r in ROUTES if r.server_streaming]
    assert {r.method for r in streaming} == {"WatchEntries", "Subscribe", "StreamCall"}
    for route in ROUTES:
        operation = located(route)[2]
        ok = operation["responses"]["200"]
        (media,) = ok["content"]
        output = route.output_type.DESCRIPTOR.full_name
        assert ok["content"][media]["schema"] == {"$ref": f"#/components/schemas/{output}"}
        if route.server_streaming:
            assert media == "text/event-stream"
            assert "WebSocket" in operation["description"]
        else:
            assert media == "application/json"
        # Every RPC is commented (buf lint COMMENTS): its first paragraph is the summary.
        method = f"{route.service}.{route.method}"
        assert operation["summary"] == proto_comments.packaged()[method].split("\n\n")[0].replace(
            "\n", " "
        )


def test_errors_are_the_aip_193_json() -> None:
    for _, _, operation in operations():
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/Error"}
    error = resolve(DOC, "#/components/responses/Error")["content"]["application/json"]
    schema = resolve(DOC, error["schema"]["$ref"])
    inner = schema["properties"]["error"]
    assert schema["required"] == ["error"]
    assert inner["required"] == ["code", "message", "status"]
    assert inner["properties"]["code"]["type"] == "integer"
    assert inner["properties"]["message"] == {"type": "string"}
    assert "NOT_FOUND" in inner["properties"]["status"]["enum"]
    item = inner["properties"]["details"]["items"]
    assert item["required"] == ["@type"] and item["properties"]["@type"] == {"type": "string"}


def test_query_parameters_and_request_bodies() -> None:
    def query(method: str) -> list[str]:
        return [p["name"] for p in operation_of(method).get("parameters", []) if p["in"] == "query"]

    assert query("ListKeys") == ["prefix", "pageSize", "pageToken"]
    assert query("WatchEntries") == [
        "keyPrefix",
        "startRevision",
        "sendSnapshot",
        "progressInterval",
    ]
    assert query("DeleteEntry") == ["expectedVersion"]
    assert query("GetEntry") == []
    assert query("SetEntry") == []
    assert query("UpdateUser") == ["updateMask"]
    subscribe = {p["name"]: p for p in operation_of("Subscribe")["parameters"]}
    assert subscribe["topicPrefixes"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert subscribe["bus"]["schema"] == {"$ref": "#/components/schemas/plantd.v1.Bus"}
    for _, verb, operation in operations():
        if verb in ("get", "delete"):
            assert "requestBody" not in operation
    body = operation_of("SetEntry")["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/plantd.v1.SetEntryRequest"}
    body = operation_of("UpdateUser")["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/plantd.v1.User"


def test_schemas_are_proto3_json() -> None:
    assert prop("plantd.v1.Entry", "version") == {"type": "string", "format": "int64"}
    assert prop("plantd.v1.ListChangesResponse", "oldestRevision")["type"] == "string"
    assert prop("plantd.v1.User", "id") == {"type": "string", "format": "uint64"}
    assert prop("plantd.v1.ListUsersResponse", "totalSize") == {
        "type": "integer",
        "format": "int32",
    }
    assert prop("plantd.v1.Entry", "expireTime") == {"type": "string", "format": "date-time"}
    assert "expire_time" not in SCHEMAS["plantd.v1.Entry"]["properties"]
    assert prop("plantd.v1.SetEntryRequest", "ttl")["type"] == "string"
    assert prop("plantd.v1.CallRequest", "frames") == {
        "type": "array",
        "items": {"type": "string", "contentEncoding": "base64"},
    }
    assert prop("plantd.v1.Change", "type") == {"$ref": "#/components/schemas/plantd.v1.ChangeType"}
    assert SCHEMAS["plantd.v1.ChangeType"]["type"] == "string"
    assert SCHEMAS["plantd.v1.ChangeType"]["enum"][:2] == [
        "CHANGE_TYPE_UNSPECIFIED",
        "CHANGE_TYPE_SET",
    ]
    assert prop("plantd.v1.Module", "publish") == {
        "type": "object",
        "additionalProperties": {"$ref": "#/components/schemas/plantd.v1.TopicPrefixes"},
    }
    (mask,) = [p for p in operation_of("UpdateUser")["parameters"] if p["in"] == "query"]
    assert mask["schema"] == {"type": "string"}  # FieldMask: "email,firstName"
    assert prop("plantd.v1.User", "createTime")["readOnly"] is True
    assert prop("plantd.v1.LoginRequest", "password")["writeOnly"] is True
    assert prop("google.rpc.Status", "details")["items"]["required"] == ["@type"]


def test_every_int64_field_is_a_string() -> None:
    int64 = {FDP.TYPE_INT64, FDP.TYPE_UINT64, FDP.TYPE_SINT64, FDP.TYPE_FIXED64, FDP.TYPE_SFIXED64}
    seen = 0
    for name, schema in SCHEMAS.items():
        if not name.startswith("plantd.v1.") or "properties" not in schema:
            continue
        message = descriptor_pool.Default().FindMessageTypeByName(name)
        for f in message.fields:
            if f.type in int64:
                value = schema["properties"][f.json_name]
                value = value["items"] if f.is_repeated else value
                assert value["type"] == "string", f.full_name
                assert value["format"] in ("int64", "uint64")
                seen += 1
    assert seen > 20


# ---- schema forms on a message with every kind of field -----------------------------------


def _kinds_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="plantd_rest_openapi_test/kinds.proto",
        package="plantdopenapitest",
        syntax="proto3",
        dependency=[struct_pb2.DESCRIPTOR.name, wrappers_pb2.DESCRIPTOR.name],
    )
    kinds = file.message_type.add(name="Kinds")
    entry = kinds.nested_type.add(name="ByNumberEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=FDP.TYPE_INT32, json_name="key")
    entry.field.add(name="value", number=2, type=FDP.TYPE_STRING, json_name="value")
    kinds.oneof_decl.add(name="choice")
    kinds.oneof_decl.add(name="_maybe")
    rep, opt = FDP.LABEL_REPEATED, FDP.LABEL_OPTIONAL

    def field(name: str, number: int, kind: int, type_name: str = "", **extra: Any) -> None:
        json_name = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
        if type_name:
            extra["type_name"] = type_name
        kinds.field.add(
            name=name,
            number=number,
            type=kind,
            json_name=json_name,
            label=extra.pop("label", opt),
            **extra,
        )

    field("ratio", 1, FDP.TYPE_DOUBLE)
    field("small", 2, FDP.TYPE_FLOAT)
    field("u32", 3, FDP.TYPE_UINT32)
    field("meta", 4, FDP.TYPE_MESSAGE, ".google.protobuf.Struct")
    field("any_value", 5, FDP.TYPE_MESSAGE, ".google.protobuf.Value")
    field("list", 6, FDP.TYPE_MESSAGE, ".google.protobuf.ListValue")
    field("wrapped", 7, FDP.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    field("by_number", 8, FDP.TYPE_MESSAGE, ".plantdopenapitest.Kinds.ByNumberEntry", label=rep)
    field("child", 9, FDP.TYPE_MESSAGE, ".plantdopenapitest.Kinds")
    field("children", 10, FDP.TYPE_MESSAGE, ".plantdopenapitest.Kinds", label=rep)
    field("a", 11, FDP.TYPE_STRING, oneof_index=0)
    field("b", 12, FDP.TYPE_INT32, oneof_index=0)
    field("c", 13, FDP.TYPE_BOOL, oneof_index=0)
    field("maybe", 14, FDP.TYPE_STRING, oneof_index=1, proto3_optional=True)
    service = file.service.add(name="KindsService")
    service.method.add(
        name="Put", input_type=".plantdopenapitest.Kinds", output_type=".plantdopenapitest.Kinds"
    )
    return file


def _kinds_routes() -> list[Route]:
    """GET (the fields as query parameters) and POST (the message as the body)."""
    pool = descriptor_pool.Default()
    try:
        message = pool.FindMessageTypeByName("plantdopenapitest.Kinds")
    except KeyError:
        pool.AddSerializedFile(_kinds_file().SerializeToString())
        message = pool.FindMessageTypeByName("plantdopenapitest.Kinds")
    kinds = GetMessageClass(message)
    common: dict[str, Any] = {
        "service": "plantdopenapitest.KindsService",
        "method": "Put",
        "input_type": kinds,
        "output_type": empty_pb2.Empty,
        "server_streaming": False,
    }
    return [
        Route(
            verb="GET", template="/v1/kinds/{child.a}", body="", path_fields=("child.a",), **common
        ),
        Route(verb="POST", template="/v1/kinds", body="*", path_fields=(), **common),
    ]


def test_every_field_kind_and_recursion() -> None:
    doc = openapi_document(_kinds_routes(), title="kinds", version="0")
    validate(doc)
    for ref in refs(doc):
        resolve(doc, ref)
    schema = doc["components"]["schemas"]["plantdopenapitest.Kinds"]
    props = schema["properties"]
    assert props["ratio"]["anyOf"][0] == {"type": "number", "format": "double"}
    assert props["small"]["anyOf"][0] == {"type": "number", "format": "float"}
    assert props["u32"]["type"] == "integer" and props["u32"]["minimum"] == 0
    assert props["meta"] == {"type": "object", "additionalProperties": True}
    assert props["anyValue"] == {}
    assert props["list"] == {"type": "array", "items": {}}
    assert props["wrapped"] == {"type": "string", "format": "int64"}
    assert props["byNumber"]["additionalProperties"] == {"type": "string"}
    assert props["byNumber"]["propertyNames"] == {"pattern": "^-?[0-9]+$"}
    self_ref = {"$ref": "#/components/schemas/plantdopenapitest.Kinds"}
    assert props["child"] == self_ref
    assert props["children"] == {"type": "array", "items": self_ref}
    # The real oneof is a constraint (at most one of a, b, c); proto3 optional is not a choice.
    (choice,) = schema["allOf"]
    pairs = [p["required"] for p in choice["not"]["anyOf"]]
    assert pairs == [["a", "b"], ["a", "c"], ["b", "c"]]
    (operation,) = doc["paths"]["/v1/kinds/{child.a}"].values()
    assert doc["paths"]["/v1/kinds"]["post"]["operationId"] == "KindsService_Put2"
    query = [p["name"] for p in operation["parameters"] if p["in"] == "query"]
    # Scalars, wrappers and repeated scalars only: no Struct/Value/maps/messages/recursion.
    assert query == ["ratio", "small", "u32", "wrapped", "a", "b", "c", "maybe"]


def test_comments_of_reads_source_info_by_full_name() -> None:
    file = _kinds_file()
    for path, text in (
        ([4, 0], " Kinds has every kind.\n"),
        ([4, 0, 2, 0], " The ratio.\n Two lines.\n"),
        ([4, 0, 3, 0], " The map entry.\n"),
        ([6, 0], " KindsService serves kinds.\n"),
        ([6, 0, 2, 0], " Put puts.\n\n More about it.\n"),
    ):
        file.source_code_info.location.add(path=path, span=[0, 0, 0], leading_comments=text)
    assert comments_of(file) == {
        "plantdopenapitest.Kinds": "Kinds has every kind.",
        "plantdopenapitest.Kinds.ratio": "The ratio.\nTwo lines.",
        "plantdopenapitest.Kinds.ByNumberEntry": "The map entry.",
        "plantdopenapitest.KindsService": "KindsService serves kinds.",
        "plantdopenapitest.KindsService.Put": "Put puts.\n\nMore about it.",
    }


_COMMENTS_SCRIPT = textwrap.dedent(
    """
    import json
    from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
    from google.protobuf import struct_pb2, wrappers_pb2  # the test proto's dependencies
    from google.protobuf.message_factory import GetMessageClass
    from plantd.gateway.rest.openapi import openapi_document
    from plantd.gateway.rest.routes import Route

    file = descriptor_pb2.FileDescriptorProto.FromString(bytes.fromhex(INPUT))
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    kinds = GetMessageClass(pool.FindMessageTypeByName("plantdopenapitest.Kinds"))
    route = Route(verb="POST", template="/v1/kinds", service="plantdopenapitest.KindsService",
                  method="Put", input_type=kinds, output_type=empty_pb2.Empty, body="*",
                  path_fields=(), server_streaming=False)
    print(json.dumps(openapi_document([route], title="t", version="1")))
    """
)


def test_comments_become_summary_and_descriptions_where_the_runtime_keeps_them() -> None:
    """upb (the default runtime) drops source info; the pure-Python runtime keeps it, so the
    path from comments to the document is checked there, in a child process."""
    file = _kinds_file()
    for path, text in (
        ([4, 0], " Kinds has every kind.\n"),
        ([4, 0, 2, 0], " The ratio.\n"),
        ([6, 0], " KindsService serves kinds.\n"),
        ([6, 0, 2, 0], " Put puts\n kinds.\n\n More about it.\n"),
    ):
        file.source_code_info.location.add(path=path, span=[0, 0, 0], leading_comments=text)
    script = f"INPUT = {file.SerializeToString().hex()!r}\n{_COMMENTS_SCRIPT}"
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    (operation,) = doc["paths"]["/v1/kinds"].values()
    assert operation["summary"] == "Put puts kinds."
    assert operation["description"] == "More about it."
    assert doc["tags"] == [{"name": "KindsService", "description": "KindsService serves kinds."}]
    schema = doc["components"]["schemas"]["plantdopenapitest.Kinds"]
    assert schema["description"] == "Kinds has every kind."
    assert schema["properties"]["ratio"]["description"] == "The ratio."
    assert "description" not in schema["properties"]["small"]


def test_duplicate_operations_are_refused() -> None:
    route = ROUTES[0]
    with pytest.raises(ValueError, match="two"):
        openapi_document([route, route], title="t", version="1")


def test_the_shipped_comments_document_the_schemas(tmp_path: Path) -> None:
    comments = proto_comments.packaged()
    assert SCHEMAS["plantd.v1.Entry"]["description"] == comments["plantd.v1.Entry"]
    entry_version = SCHEMAS["plantd.v1.Entry"]["properties"]["version"]
    assert entry_version["description"] == comments["plantd.v1.Entry.version"]
    # The runtime's own plantd.v1 descriptors have no source info: refused, not written empty.
    from plantd.v1 import state_pb2

    runtime = descriptor_pb2.FileDescriptorProto.FromString(state_pb2.DESCRIPTOR.serialized_pb)
    bare = descriptor_pb2.FileDescriptorSet(file=[runtime])
    image = tmp_path / "bare.binpb"
    image.write_bytes(bare.SerializeToString())
    assert proto_comments.write(image, tmp_path / "out.json") == 1
    assert not (tmp_path / "out.json").exists()
