"""The generated plantd.v1 code: it imports, every RPC follows the conventions, and every
request message can be built, serialized and rendered as proto3 JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor

from plantd.v1 import (
    bus_pb2,
    bus_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)

pytestmark = pytest.mark.unit

MODULES: list[tuple[ModuleType, ModuleType]] = [
    (bus_pb2, bus_pb2_grpc),
    (state_pb2, state_pb2_grpc),
    (identity_pb2, identity_pb2_grpc),
]
EXPECTED_SERVICES = {"plantd.v1.BusService", "plantd.v1.StateService", "plantd.v1.IdentityService"}
GENERATED = Path(bus_pb2.__file__).parent
VERBS = ("get", "put", "post", "delete", "patch")


def _methods() -> Iterator[descriptor.MethodDescriptor]:
    for pb2, _ in MODULES:
        for service in pb2.DESCRIPTOR.services_by_name.values():
            yield from service.methods


METHODS = {m.full_name: m for m in _methods()}


def test_the_three_services_are_generated_with_stubs_and_servicers() -> None:
    services = {s.full_name for pb2, _ in MODULES for s in pb2.DESCRIPTOR.services_by_name.values()}
    assert services == EXPECTED_SERVICES
    for pb2, grpc_mod in MODULES:
        assert pb2.DESCRIPTOR.package == "plantd.v1"
        for name in pb2.DESCRIPTOR.services_by_name:
            assert hasattr(grpc_mod, f"{name}Stub")
            assert hasattr(grpc_mod, f"{name}Servicer")
            assert hasattr(grpc_mod, f"add_{name}Servicer_to_server")


def test_typed_stubs_are_generated_for_every_module() -> None:
    for pb2, grpc_mod in MODULES:
        for mod in (pb2, grpc_mod):
            stub = Path(str(mod.__file__)).with_suffix(".pyi")
            assert stub.is_file(), f"no typed stub {stub.name}: run make protos"


def test_the_surface_of_the_issue_is_there() -> None:
    bus = {m.name for m in bus_pb2.DESCRIPTOR.services_by_name["BusService"].methods}
    assert bus == {
        "Call",
        "StreamCall",
        "BatchCall",
        "GetService",
        "ListServices",
        "Subscribe",
        "Publish",
    }
    state = {m.name for m in state_pb2.DESCRIPTOR.services_by_name["StateService"].methods}
    assert {
        "GetEntry",
        "SetEntry",
        "DeleteEntry",
        "BatchGetEntries",
        "BatchSetEntries",
        "ListKeys",
        "ListChanges",
        "WatchEntries",
        "CreateScope",
        "DeleteScope",
        "ListScopes",
    } <= state
    identity = {m.name for m in identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].methods}
    assert {
        "Login",
        "RefreshToken",
        "Logout",
        "ValidateToken",
        "ChangePassword",
        "GetJwks",
        "CheckPermission",
        "EnrollModule",
        "ListModules",
        "GetModule",
        "RevokeModule",
        "CreateJoinToken",
    } <= identity
    for noun in ("User", "Role", "Organization"):
        plural = "Users" if noun == "User" else f"{noun}s"
        for verb in ("Create", "Get", "Update", "Delete"):
            assert f"{verb}{noun}" in identity
        assert f"List{plural}" in identity


def test_streams_are_server_streams_where_the_surface_says() -> None:
    streaming = {m.full_name for m in METHODS.values() if m.server_streaming}
    assert streaming == {
        "plantd.v1.BusService.StreamCall",
        "plantd.v1.BusService.Subscribe",
        "plantd.v1.StateService.WatchEntries",
    }
    assert not any(m.client_streaming for m in METHODS.values())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_rpc_has_its_own_request_and_response(name: str) -> None:
    method = METHODS[name]
    assert method.input_type.name == f"{method.name}Request"
    assert method.output_type.name == f"{method.name}Response"
    users = [m for m in METHODS.values() if method.input_type in (m.input_type, m.output_type)]
    assert users == [method]


def _http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule:
    options = method.GetOptions()
    assert options.HasExtension(annotations_pb2.http), f"{method.full_name}: no google.api.http"
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def _field_path_exists(msg: descriptor.Descriptor, path: str) -> bool:
    for part in path.split("."):
        field = msg.fields_by_name.get(part)
        if field is None:
            return False
        if field.message_type is not None:
            msg = field.message_type
    return True


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_rpc_has_an_http_binding_whose_variables_are_request_fields(name: str) -> None:
    method = METHODS[name]
    top = _http_rule(method)
    for rule in [top, *top.additional_bindings]:
        verb = rule.WhichOneof("pattern")
        assert verb in VERBS, f"{name}: binding without a verb"
        path = getattr(rule, verb)
        assert path.startswith(("/v1/", "/.well-known/")), f"{name}: {path}"
        for var in re.findall(r"\{([a-z_.]+)(?:=[^}]*)?\}", path):
            assert _field_path_exists(method.input_type, var), f"{name}: {{{var}}} is not a field"
        if verb in ("get", "delete"):
            assert rule.body == "", f"{name}: {verb} with a body"
        elif rule.body != "*":
            assert rule.body in method.input_type.fields_by_name, f"{name}: body {rule.body}"


def test_http_bindings_do_not_collide() -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, method in METHODS.items():
        top = _http_rule(method)
        for rule in [top, *top.additional_bindings]:
            verb = rule.WhichOneof("pattern")
            assert verb is not None
            key = (verb, re.sub(r"\{[^}]*\}", "{}", getattr(rule, verb)))
            assert key not in seen, f"{name} and {seen.get(key)} share {key}"
            seen[key] = name


_SAMPLES: dict[int, object] = {
    FieldDescriptor.TYPE_STRING: "line1",
    FieldDescriptor.TYPE_BYTES: b"\x00frame",
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_INT32: 7,
    FieldDescriptor.TYPE_INT64: 2**40,
    FieldDescriptor.TYPE_UINT64: 2**40,
    FieldDescriptor.TYPE_UINT32: 7,
}


def _fill(msg: object, desc: descriptor.Descriptor, depth: int = 0) -> None:
    """Set every field of ``msg`` (recursing into messages, two levels deep) to a sample."""
    for field in desc.fields:
        repeated = field.is_repeated
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                entry = getattr(msg, field.name)
                if value_field.message_type is None:
                    entry["k"] = _SAMPLES[value_field.type]
                else:
                    _fill(entry["k"], value_field.message_type, depth + 1)
                continue
            if depth >= 2 or field.message_type.full_name.startswith("google.rpc."):
                continue
            if field.message_type.full_name == "google.protobuf.FieldMask":
                getattr(msg, field.name).paths.append("email")
                continue
            if field.message_type.full_name in (
                "google.protobuf.Duration",
                "google.protobuf.Timestamp",
            ):
                getattr(msg, field.name).FromSeconds(5)
                continue
            child = getattr(msg, field.name).add() if repeated else getattr(msg, field.name)
            _fill(child, field.message_type, depth + 1)
        elif field.enum_type is not None:
            value = field.enum_type.values[-1].number
            getattr(msg, field.name).append(value) if repeated else setattr(msg, field.name, value)
        else:
            sample = _SAMPLES[field.type]
            if repeated:
                getattr(msg, field.name).append(sample)
            else:
                setattr(msg, field.name, sample)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_request_builds_serializes_and_round_trips_through_json(name: str) -> None:
    desc = METHODS[name].input_type
    cls = message_factory.GetMessageClass(desc)
    msg = cls()
    _fill(msg, desc)
    required = [
        f.name
        for f in desc.fields
        if field_behavior_pb2.REQUIRED
        in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    ]
    for field_name in required:
        f = desc.fields_by_name[field_name]
        if f.is_repeated:
            assert len(getattr(msg, field_name)) > 0
        elif f.message_type is not None or f.has_presence:
            assert msg.HasField(field_name)
    assert cls.FromString(msg.SerializeToString()) == msg
    as_json = json_format.MessageToJson(msg)
    assert json_format.Parse(as_json, cls()) == msg


def test_compare_and_set_distinguishes_unset_from_zero() -> None:
    # expected_version 0 means "only if absent"; unset means unconditional: presence matters.
    unconditional = state_pb2.SetEntryRequest(scope="s", key="k", value="v")
    only_if_absent = state_pb2.SetEntryRequest(scope="s", key="k", value="v", expected_version=0)
    assert not unconditional.HasField("expected_version")
    assert only_if_absent.HasField("expected_version")
    back = state_pb2.SetEntryRequest.FromString(only_if_absent.SerializeToString())
    assert back.HasField("expected_version")
    assert back.expected_version == 0


def test_int64_versions_render_as_json_strings() -> None:
    entry = state_pb2.Entry(scope="s", key="k", value="v", version=3)
    assert json_format.MessageToDict(entry)["version"] == "3"


def test_generated_package_holds_only_generated_files() -> None:
    names = sorted(p.name for p in GENERATED.iterdir() if p.name != "__pycache__")
    stems = {"bus", "state", "identity"}
    expected = sorted(
        ["__init__.py", "comments.json"]  # the proto comments (plantd.gateway.rest.proto_comments)
        + [f"{s}{suffix}" for s in stems for suffix in ("_pb2.py", "_pb2.pyi")]
        + [f"{s}{suffix}" for s in stems for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi")]
    )
    assert names == expected
