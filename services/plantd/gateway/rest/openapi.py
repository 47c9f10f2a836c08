"""The REST edge's OpenAPI 3.1 document, generated from the route table and the message
descriptors only (so it cannot drift from what is served). Pure.

Schemas are the proto3 JSON forms: lowerCamelCase names, 64-bit integers as strings, bytes as
base64 strings, enums as their value names, Timestamp/Duration/FieldMask as strings,
Struct/Value/ListValue free-form, maps as objects, repeated fields as arrays; every message is
one ``components/schemas`` entry under its full name (so recursive messages are ``$ref`` s).

Summaries and descriptions come from the proto comments: from the descriptors when they carry
source info, else (the generated ``*_pb2`` modules never do: protoc strips it) from
``plantd/v1/comments.json``, which ``make protos`` writes from the same protos
(:mod:`plantd.gateway.rest.proto_comments`). Nothing is made up where a proto has no comment.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.rpc import code_pb2

from plantd.gateway.identity_map import METHODS as IDENTITY_METHODS
from plantd.gateway.rest import proto_comments
from plantd.gateway.rest.routes import (
    WRAPPERS,
    Route,
    descriptor_of,
    is_map,
    message_of,
    query_fields,
)

OPENAPI_VERSION: Final = "3.1.0"
BEARER: Final = "bearerAuth"
ERROR_SCHEMA: Final = "ErrorResponse"
ERROR_RESPONSE: Final = "Error"
_SCHEMAS: Final = "#/components/schemas/"
_IDENTITY: Final = "plantd.v1.IdentityService"
_VARIABLE: Final = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
_F = FieldDescriptor
_ANY_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {"@type": {"type": "string"}},
    "required": ["@type"],
    "additionalProperties": True,
}
_FLOAT_NAMES: Final = ["NaN", "Infinity", "-Infinity"]
# Well-known types with a JSON form of their own.
_WELL_KNOWN: Final[Mapping[str, Mapping[str, Any]]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": _ANY_SCHEMA,
}


def _scalar(kind: int) -> dict[str, Any]:
    if kind in (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32):
        return {"type": "integer", "format": "int32"}
    if kind in (_F.TYPE_UINT32, _F.TYPE_FIXED32):
        return {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1}
    if kind in (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64):
        return {"type": "string", "format": "int64"}
    if kind in (_F.TYPE_UINT64, _F.TYPE_FIXED64):
        return {"type": "string", "format": "uint64"}
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        number = {"type": "number", "format": "double" if kind == _F.TYPE_DOUBLE else "float"}
        return {"anyOf": [number, {"type": "string", "enum": list(_FLOAT_NAMES)}]}
    if kind == _F.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == _F.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


# ---- comments (source info) ---------------------------------------------------------------


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    return "\n".join(line.rstrip() for line in lines).strip()


def comments_of(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """The leading (else trailing) comments of a file's elements by full name: messages,
    fields, enums, services, methods; an enum value as ``<enum full name>.<value name>``."""
    paths: dict[tuple[int, ...], str] = {}
    scope = f"{proto.package}." if proto.package else ""

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], outer: str) -> None:
        full = outer + e.name
        paths[path] = full
        for i, v in enumerate(e.value):
            paths[(*path, 2, i)] = f"{full}.{v.name}"

    def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], outer: str) -> None:
        full = outer + m.name
        paths[path] = full
        for i, f in enumerate(m.field):
            paths[(*path, 2, i)] = f"{full}.{f.name}"
        for i, n in enumerate(m.nested_type):
            message(n, (*path, 3, i), f"{full}.")
        for i, e in enumerate(m.enum_type):
            enum(e, (*path, 4, i), f"{full}.")

    for i, m in enumerate(proto.message_type):
        message(m, (4, i), scope)
    for i, e in enumerate(proto.enum_type):
        enum(e, (5, i), scope)
    for i, s in enumerate(proto.service):
        paths[(6, i)] = scope + s.name
        for j, rpc in enumerate(s.method):
            paths[(6, i, 2, j)] = f"{scope}{s.name}.{rpc.name}"
    found: dict[str, str] = {}
    for location in proto.source_code_info.location:
        name = paths.get(tuple(location.path))
        text = _clean(location.leading_comments or location.trailing_comments)
        if name is not None and text:
            found[name] = text
    return found


@functools.cache
def _file_comments(file: FileDescriptor) -> Mapping[str, str]:
    own = comments_of(descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb))
    # The runtime descriptors carry no source info; plantd.v1's comments ship beside the
    # generated code (make protos writes them).
    return own or proto_comments.packaged()


def _comment(
    element: Descriptor | FieldDescriptor | EnumDescriptor | ServiceDescriptor | MethodDescriptor,
) -> str:
    """The element's comment ("" without source info)."""
    if isinstance(element, MethodDescriptor):
        file = element.containing_service.file
    elif isinstance(element, FieldDescriptor):
        if element.containing_type is None:  # an extension: not documented here
            return ""
        file = element.containing_type.file
    else:
        file = element.file
    return _file_comments(file).get(element.full_name, "")


def _split(comment: str) -> tuple[str, str]:
    """(summary: the first paragraph on one line, description: the rest)."""
    first, _, rest = comment.partition("\n\n")
    return " ".join(line.strip() for line in first.splitlines()), rest.strip()


# ---- schemas --------------------------------------------------------------------------------


def _behaviors(f: FieldDescriptor) -> set[int]:
    return set(f.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _synthetic(oneof: Any) -> bool:
    """A proto3 ``optional`` field's oneof (not a real choice)."""
    fields = oneof.fields
    return len(fields) == 1 and oneof.name == f"_{fields[0].name}"


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def message(self, message: Descriptor) -> dict[str, Any]:
        """The schema of a message value: a ``$ref`` or a well-known type's own form."""
        full = message.full_name
        if full in _WELL_KNOWN:
            return copy.deepcopy(dict(_WELL_KNOWN[full]))
        if full in WRAPPERS:
            return self.value(message.fields_by_name["value"])
        if full not in self.components:
            self.components[full] = {}  # taken before the fields: recursion meets the $ref
            self.components[full] = self._object(message)
        return {"$ref": _SCHEMAS + full}

    def enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        full = enum.full_name
        if full == "google.protobuf.NullValue":
            return {"type": "null"}
        if full not in self.components:
            schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.values]}
            comment = _comment(enum)
            if comment:
                schema["description"] = comment
            self.components[full] = schema
        return {"$ref": _SCHEMAS + full}

    def value(self, f: FieldDescriptor) -> dict[str, Any]:
        """One value of a field (an item of a repeated field)."""
        if f.message_type is not None:
            return self.message(f.message_type)
        if f.enum_type is not None:
            return self.enum(f.enum_type)
        return _scalar(f.type)

    def field(self, f: FieldDescriptor, *, documented: bool = True) -> dict[str, Any]:
        if is_map(f):
            entry = message_of(f)
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.value(entry.fields_by_name["value"]),
            }
            key = entry.fields_by_name["key"].type
            if key == _F.TYPE_BOOL:
                schema["propertyNames"] = {"enum": ["true", "false"]}
            elif key not in (_F.TYPE_STRING, _F.TYPE_BYTES):
                schema["propertyNames"] = {"pattern": "^-?[0-9]+$"}
        elif f.is_repeated:
            schema = {"type": "array", "items": self.value(f)}
        else:
            schema = self.value(f)
        if documented:
            comment = _comment(f)
            if comment:
                schema["description"] = comment
            behaviors = _behaviors(f)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.INPUT_ONLY in behaviors:
                schema["writeOnly"] = True
        return schema

    def _object(self, message: Descriptor) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.json_name: self.field(f) for f in message.fields},
        }
        comment = _comment(message)
        if comment:
            schema["description"] = comment
        # A oneof: at most one of its fields is set.
        choices = [
            {"not": {"anyOf": [{"required": [a, b]} for a, b in itertools.combinations(names, 2)]}}
            for names in (
                [f.json_name for f in oneof.fields]
                for oneof in message.oneofs
                if not _synthetic(oneof)
            )
            if len(names) > 1
        ]
        if choices:
            schema["allOf"] = choices
        return schema


def _error_schema() -> dict[str, Any]:
    """AIP-193's HTTP form of google.rpc.Status."""
    codes = [v.name for v in code_pb2.Code.DESCRIPTOR.values]
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "status"],
                "properties": {
                    "code": {"type": "integer", "format": "int32"},
                    "message": {"type": "string"},
                    "status": {"type": "string", "enum": codes},
                    "details": {"type": "array", "items": copy.deepcopy(dict(_ANY_SCHEMA))},
                },
            }
        },
    }


# ---- paths ------------------------------------------------------------------------------------


def _openapi_path(route: Route, names: Sequence[str]) -> str:
    """The template with ``{x=**}`` as ``{x}`` and the variables named ``names``."""
    given = iter(names)
    return _VARIABLE.sub(lambda _: "{" + next(given) + "}", route.template)


def _shape(route: Route) -> str:
    return _VARIABLE.sub("{}", route.template)


def _parameter_names(routes: Sequence[Route]) -> dict[int, tuple[str, ...]]:
    """OpenAPI forbids two paths that differ only in their variable names
    (``/users/{user_id}`` and ``/users/{user.id}``): per shape, every position takes the
    name most routes of the shape use (the first on a tie). By route index."""
    shapes: dict[str, list[int]] = {}
    for i, route in enumerate(routes):
        shapes.setdefault(_shape(route), []).append(i)
    names: dict[int, tuple[str, ...]] = {}
    for members in shapes.values():
        columns = zip(*(routes[i].path_fields for i in members), strict=True)
        chosen = tuple(Counter(column).most_common(1)[0][0] for column in columns)
        for i in members:
            names[i] = chosen
    return names


def _security(route: Route) -> list[dict[str, list[str]]] | None:
    """Bearer auth as the gate applies it: identity's table says which RPCs take credentials
    in the request instead (none), or either (optional); every other RPC needs a token."""
    method = IDENTITY_METHODS.get(route.method) if route.service == _IDENTITY else None
    if method is not None and not method.token_required:
        return [{BEARER: []}, {}] if method.token_optional else None
    return [{BEARER: []}]


def _method(route: Route) -> MethodDescriptor | None:
    pool = descriptor_of(route.input_type).file.pool
    try:
        service = pool.FindServiceByName(route.service)
    except KeyError:
        return None
    method: MethodDescriptor | None = service.methods_by_name.get(route.method)
    return method


class _Operations:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = routes
        self.schemas = _Schemas()
        self.names = _parameter_names(routes)
        self.operation_ids: set[str] = set()
        self.bindings: Counter[tuple[str, str]] = Counter()

    def operation_id(self, route: Route) -> str:
        key = (route.service, route.method)
        self.bindings[key] += 1
        count = self.bindings[key]
        base = f"{route.service.rpartition('.')[2]}_{route.method}"
        operation_id = base if count == 1 else f"{base}{count}"
        if operation_id in self.operation_ids:
            raise ValueError(f"two operations are named {operation_id}")
        self.operation_ids.add(operation_id)
        return operation_id

    def parameters(self, route: Route, names: Sequence[str]) -> list[dict[str, Any]]:
        message = descriptor_of(route.input_type)
        multi = {m.group(1) for m in _VARIABLE.finditer(route.template) if m.group(2) == "**"}
        parameters: list[dict[str, Any]] = []
        for bound, name in zip(route.path_fields, names, strict=True):
            fields: list[FieldDescriptor] = []
            current = message
            for part in bound.split("."):
                fields.append(current.fields_by_name[part])
                if fields[-1].message_type is not None:
                    current = message_of(fields[-1])
            notes = [_comment(fields[-1])]
            if name != bound:
                notes.append(f"Binds the request field `{bound}`.")
            if bound in multi:
                notes.append('May contain "/" (it matches one or more path segments).')
            parameter: dict[str, Any] = {
                "name": name,
                "in": "path",
                "required": True,
                "schema": self.schemas.value(fields[-1]),
            }
            description = "\n\n".join(n for n in notes if n)
            if description:
                parameter["description"] = description
            parameters.append(parameter)
        for path in query_fields(route):
            parameter = {
                "name": ".".join(f.json_name for f in path),
                "in": "query",
                "schema": self.schemas.field(path[-1], documented=False),
            }
            if all(field_behavior_pb2.REQUIRED in _behaviors(f) for f in path):
                parameter["required"] = True
            comment = _comment(path[-1])
            if comment:
                parameter["description"] = comment
            parameters.append(parameter)
        return parameters

    def operation(self, index: int, route: Route) -> dict[str, Any]:
        output = self.schemas.message(descriptor_of(route.output_type))
        operation: dict[str, Any] = {
            "operationId": self.operation_id(route),
            "tags": [route.service.rpartition(".")[2]],
        }
        method = _method(route)
        summary, description = _split(_comment(method)) if method is not None else ("", "")
        if route.server_streaming:
            stream = (
                f"Server streaming: each Server-Sent Event's data is one {output_name(route)} "
                "(proto3 JSON). A WebSocket upgrade on the same path carries the same "
                "messages as JSON text frames."
            )
            description = f"{description}\n\n{stream}" if description else stream
        if summary:
            operation["summary"] = summary
        if description:
            operation["description"] = description
        parameters = self.parameters(route, self.names[index])
        if parameters:
            operation["parameters"] = parameters
        if route.body:
            message = descriptor_of(route.input_type)
            schema = (
                self.schemas.message(message)
                if route.body == "*"
                else self.schemas.field(message.fields_by_name[route.body])
            )
            operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        if route.server_streaming:
            ok = {
                "description": f"A stream of {output_name(route)} messages.",
                "content": {"text/event-stream": {"schema": output}},
            }
        else:
            ok = {"description": "OK", "content": {"application/json": {"schema": output}}}
        operation["responses"] = {
            "200": ok,
            "default": {"$ref": f"#/components/responses/{ERROR_RESPONSE}"},
        }
        security = _security(route)
        if security is not None:
            operation["security"] = security
        return operation


def output_name(route: Route) -> str:
    return descriptor_of(route.output_type).full_name


def openapi_document(
    routes: Sequence[Route], *, title: str, version: str, server_url: str | None = None
) -> dict[str, object]:
    """The OpenAPI 3.1 document of ``routes``: one operation per route, ``operationId``
    ``<Service>_<Method>`` (``<Service>_<Method>2`` ... for additional bindings)."""
    operations = _Operations(routes)
    paths: dict[str, dict[str, Any]] = {}
    services: dict[str, str] = {}
    for index, route in enumerate(routes):
        path = _openapi_path(route, operations.names[index])
        verbs = paths.setdefault(path, {})
        verb = route.verb.lower()
        if verb in verbs:
            raise ValueError(f"two routes serve {route.verb} {path}")
        verbs[verb] = operations.operation(index, route)
        method = _method(route)
        services.setdefault(
            route.service.rpartition(".")[2],
            _comment(method.containing_service) if method is not None else "",
        )
    schemas = operations.schemas.components
    if ERROR_SCHEMA in schemas:
        raise ValueError(f"a message is named {ERROR_SCHEMA}, the error schema's name")
    schemas[ERROR_SCHEMA] = _error_schema()
    tags: list[dict[str, str]] = []
    for name, comment in sorted(services.items()):
        tag = {"name": name}
        if comment:
            tag["description"] = comment
        tags.append(tag)
    document: dict[str, object] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                ERROR_RESPONSE: {
                    "description": "An error: google.rpc.Status in AIP-193's HTTP JSON form.",
                    "content": {"application/json": {"schema": {"$ref": _SCHEMAS + ERROR_SCHEMA}}},
                }
            },
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token, sent as `Authorization: Bearer <JWT>`.",
                }
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
