"""The REST edge's route table, read from the ``google.api.http`` annotations. Pure.

:func:`routes_for` turns every annotated method (and its ``additional_bindings``) into a
:class:`Route`; :class:`Router` finds the route of a request; :func:`request_dict` merges the
body, the query string and the path variables into the proto3 JSON dict that
``json_format.ParseDict(route.input_type)`` reads.

Path templates follow ``google/api/http.proto``: literal segments, ``{field}`` (one segment),
``{field=*}`` and ``{field=**}`` (one or more segments, the last variable only), dotted field
paths (``{user.id}``) and a custom verb (``:batchGet``). Not supported, refused when the table
is built: anonymous wildcards (``/v1/*/x``), variables with a sub-pattern (``{name=shelves/*}``),
``response_body``, custom HTTP verbs other than the five, client-streaming methods.

Matching works on the **raw** (still percent-encoded) path, without the query string
(aiohttp: ``request.rel_url.raw_path``): it splits on ``/`` first and then percent-decodes each
segment, so ``a%2Fb`` is one segment whose value is ``a/b``. A decoded ``/`` lets a key with
slashes reach a one-segment variable, and keys with empty parts (``a//b``, a trailing ``/``)
reach ``{key=**}`` as ``a%2F%2Fb`` (a raw empty segment never matches).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, cast
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

VERBS: Final = ("GET", "PUT", "POST", "DELETE", "PATCH")
# Query parameters that are not request fields: the server reads `timeout` (the deadline);
# `access_token` is refused (a token in a URL ends up in access logs and browser history).
RESERVED_QUERY: Final = frozenset({"timeout", "access_token"})
_TOKEN_PARAMS: Final = frozenset({"access_token", "accessToken"})
_AUTH_HEADER_HINT: Final = "send it as an `Authorization: Bearer <token>` header instead"

_LITERAL, _ONE, _MANY = 2, 1, 0  # segment kinds; a higher kind is more specific
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE: Final = re.compile(rf"\{{({_IDENT}(?:\.{_IDENT})*)(?:=([^{{}}]*))?\}}")
# RFC 3986 pchar without "%" (literals are compared with decoded segments), ":" (the verb),
# "*" (wildcards) and braces.
_LITERAL_TEXT: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;=@]+")

_INT: Final = re.compile(r"-?[0-9]+")
_FLOAT: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_NAMES: Final = frozenset({"NaN", "Infinity", "-Infinity"})  # proto3 JSON's spellings
_FLOAT32_MAX: Final = 3.4028234663852886e38
_BOOLS: Final = {"true": True, "false": False, "1": True, "0": False}
_F = FieldDescriptor
_INT_RANGES: Final[Mapping[int, tuple[int, int]]] = {
    **dict.fromkeys((_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_F.TYPE_UINT32, _F.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_F.TYPE_UINT64, _F.TYPE_FIXED64), (0, 2**64 - 1)),
}
# Well-known messages whose proto3 JSON form is a string.
_STRING_MESSAGES: Final[Mapping[str, Callable[[str], object]]] = {
    "google.protobuf.Timestamp": lambda text: timestamp_pb2.Timestamp().FromJsonString(text),
    "google.protobuf.Duration": lambda text: duration_pb2.Duration().FromJsonString(text),
    "google.protobuf.FieldMask": lambda text: field_mask_pb2.FieldMask().FromJsonString(text),
}
WRAPPERS: Final = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_SCALAR_MESSAGES: Final = WRAPPERS | _STRING_MESSAGES.keys()


class RestInputError(ValueError):
    """A request the route cannot turn into its message: ``field`` names the culprit (a query
    parameter as the client spelled it, a path field, or ``""`` for the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class _Template:
    kinds: tuple[int, ...]  # per segment: _LITERAL, _ONE or _MANY (last only)
    texts: tuple[str, ...]  # the literal, or the variable's field path
    verb: str  # the custom verb without ":", "" when none

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(t for k, t in zip(self.kinds, self.texts, strict=True) if k != _LITERAL)

    @property
    def shape(self) -> tuple[object, ...]:
        """The template without its variable names: two routes of one verb and one shape
        would be ambiguous."""
        texts = tuple(
            t if k == _LITERAL else "" for k, t in zip(self.kinds, self.texts, strict=True)
        )
        return (self.kinds, texts, self.verb)

    def match(self, path: str) -> tuple[dict[str, str], tuple[int, ...]] | None:
        """(the variables, the kind of every path segment) or None."""
        if self.verb:
            suffix = ":" + self.verb
            if not path.endswith(suffix):
                return None
            path = path[: -len(suffix)]
        if not path.startswith("/"):
            return None
        raw = path[1:].split("/")
        count = len(self.kinds)
        many = bool(count) and self.kinds[-1] == _MANY
        if len(raw) < count or (len(raw) > count and not many):
            return None
        segments: list[str] = []
        for part in raw:
            if not part:
                return None
            try:
                segments.append(unquote(part, errors="strict"))
            except UnicodeDecodeError:
                return None
        values: dict[str, str] = {}
        for i, (kind, text) in enumerate(zip(self.kinds, self.texts, strict=True)):
            if kind == _LITERAL:
                if segments[i] != text:
                    return None
            elif kind == _ONE:
                values[text] = segments[i]
            else:
                values[text] = "/".join(segments[i:])
        ranks = self.kinds + (_MANY,) * (len(segments) - count)
        return values, ranks


def _parse(template: str) -> _Template:
    if not template.startswith("/") or len(template) < 2:
        raise ValueError(f"path template {template!r} must start with '/' and name a path")
    body, verb = template, ""
    last = template.rfind("/")
    tail = template[last + 1 :]
    colon = tail.find(":", tail.rfind("}") + 1)
    if colon >= 0:
        verb = tail[colon + 1 :]
        body = template[: last + 1 + colon]
        if not _LITERAL_TEXT.fullmatch(verb):
            raise ValueError(f"path template {template!r}: bad custom verb {verb!r}")
    kinds: list[int] = []
    texts: list[str] = []
    for segment in body[1:].split("/"):
        variable = _VARIABLE.fullmatch(segment)
        if variable is not None:
            name, pattern = variable.group(1), variable.group(2)
            if pattern not in (None, "*", "**"):
                raise ValueError(
                    f"path template {template!r}: variable {name!r} has the sub-pattern "
                    f"{pattern!r}; only {{{name}}}, {{{name}=*}} and {{{name}=**}} are supported"
                )
            if any(k != _LITERAL and t == name for k, t in zip(kinds, texts, strict=True)):
                raise ValueError(f"path template {template!r} binds {name!r} twice")
            kinds.append(_MANY if pattern == "**" else _ONE)
            texts.append(name)
        elif segment in ("*", "**"):
            raise ValueError(
                f"path template {template!r}: anonymous wildcards are not supported; "
                "bind the segment to a field"
            )
        elif _LITERAL_TEXT.fullmatch(segment):
            kinds.append(_LITERAL)
            texts.append(segment)
        else:
            raise ValueError(f"path template {template!r}: cannot parse segment {segment!r}")
    if _MANY in kinds[:-1]:
        raise ValueError(f"path template {template!r}: '**' must be the last segment")
    return _Template(tuple(kinds), tuple(texts), verb)


@functools.cache
def _names(message: Descriptor) -> Mapping[str, FieldDescriptor]:
    """A message's fields by proto name and by lowerCamelCase JSON name."""
    names: dict[str, FieldDescriptor] = {}
    for f in message.fields:
        names[f.name] = f
        names.setdefault(f.json_name, f)
    return names


def descriptor_of(message: type[Message]) -> Descriptor:
    """A message class's descriptor (the stubs also admit upb's own class, which is one)."""
    return cast(Descriptor, message.DESCRIPTOR)


def message_of(f: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    if f.message_type is None:
        raise TypeError(f"{f.full_name} is not a message field")
    return f.message_type


def enum_of(f: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    if f.enum_type is None:
        raise TypeError(f"{f.full_name} is not an enum field")
    return f.enum_type


def is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def _field_path(message: Descriptor, path: str) -> list[FieldDescriptor]:
    """The fields of a dotted proto-name path bound by a template (ValueError if unusable)."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in path.split("."):
        f = None if current is None else current.fields_by_name.get(part)
        if f is None:
            raise ValueError(f"path variable {path!r}: {message.full_name} has no field {path!r}")
        if f.is_repeated:
            raise ValueError(f"path variable {path!r} is a repeated or map field")
        fields.append(f)
        current = f.message_type
    if fields[-1].message_type is not None:
        raise ValueError(f"path variable {path!r} is a message, not a scalar field")
    return fields


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one RPC."""

    verb: str  # "GET" | "PUT" | "POST" | "DELETE" | "PATCH"
    template: str  # as written in the proto: "/v1/state/scopes/{scope}/entries/{key=**}"
    service: str  # "plantd.v1.StateService"
    method: str  # "GetEntry"
    input_type: type[Message]
    output_type: type[Message]
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    path_fields: tuple[str, ...]  # field paths bound by the path, in order
    server_streaming: bool
    _template: _Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"HTTP verb {self.verb!r} is not one of {', '.join(VERBS)}")
        template = _parse(self.template)
        if template.variables != self.path_fields:
            raise ValueError(
                f"path_fields {self.path_fields} are not the template's {template.variables}"
            )
        message = descriptor_of(self.input_type)
        if self.body not in ("", "*") and self.body not in message.fields_by_name:
            raise ValueError(f"body {self.body!r} is not a field of {message.full_name}")
        for path in self.path_fields:
            _field_path(message, path)
        object.__setattr__(self, "_template", template)

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables (percent-decoded) of a raw path, or None if it does not match."""
        found = self._template.match(path)
        return None if found is None else found[0]


def _route(service: ServiceDescriptor, rpc_name: str, rule: http_pb2.HttpRule) -> Route:
    method = service.methods_by_name[rpc_name]
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError("the google.api.http rule has no verb and path")
    if pattern == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
        if verb not in VERBS:
            raise ValueError(f"custom HTTP verb {rule.custom.kind!r} is not supported")
    else:
        verb, template = pattern.upper(), getattr(rule, pattern)
    if rule.response_body:
        raise ValueError("response_body is not supported: the response is the whole message")
    if method.client_streaming:
        raise ValueError("a client-streaming method cannot be served over REST")
    return Route(
        verb=verb,
        template=template,
        service=service.full_name,
        method=method.name,
        input_type=GetMessageClass(method.input_type),
        output_type=GetMessageClass(method.output_type),
        body=rule.body,
        path_fields=_parse(template).variables,
        server_streaming=method.server_streaming,
    )


def routes_for(*services: ServiceDescriptor) -> tuple[Route, ...]:
    """Every HTTP binding of the services' methods, in declaration order (a method's primary
    binding first, then its ``additional_bindings``). ValueError naming the method for a rule
    that cannot be served."""
    routes: list[Route] = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            try:
                for extra in rule.additional_bindings:
                    if extra.additional_bindings:
                        raise ValueError("additional_bindings must not nest")
                for binding in (rule, *rule.additional_bindings):
                    routes.append(_route(service, method.name, binding))
            except ValueError as exc:
                raise ValueError(f"{method.full_name}: {exc}") from None
    return tuple(routes)


class Router:
    """Finds the route of a request: literal segments beat variables (compared segment by
    segment from the left), ``{x}`` beats ``{x=**}``, and a custom verb beats a variable that
    would swallow the ``:verb``. Two routes of one verb with the same shape are refused."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._by_verb: dict[str, list[Route]] = {}
        shapes: dict[tuple[str, tuple[object, ...]], Route] = {}
        for route in routes:
            key = (route.verb, route._template.shape)
            other = shapes.setdefault(key, route)
            if other is not route:
                raise ValueError(
                    f"{route.verb} {route.template} ({route.service}.{route.method}) is "
                    f"ambiguous with {other.template} ({other.service}.{other.method})"
                )
            self._by_verb.setdefault(route.verb, []).append(route)

    def find(self, verb: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for ``verb`` on the raw ``path`` and its variables, or None."""
        best: tuple[tuple[tuple[int, ...], bool], Route, dict[str, str]] | None = None
        for route in self._by_verb.get(verb.upper(), ()):
            found = route._template.match(path)
            if found is None:
                continue
            rank = (found[1], bool(route._template.verb))
            if best is None or rank > best[0]:
                best = (rank, route, found[0])
        return None if best is None else (best[1], best[2])

    def allowed(self, path: str) -> tuple[str, ...]:
        """The verbs some route serves on ``path``, sorted (for a 405's ``Allow``)."""
        return tuple(
            sorted(
                verb
                for verb, routes in self._by_verb.items()
                if any(r._template.match(path) is not None for r in routes)
            )
        )


# ---- request messages ---------------------------------------------------------------------


def _convert(f: FieldDescriptor, text: str, name: str) -> object:
    """A query or path string as the proto3 JSON value of one (non-repeated) field."""
    kind = f.type
    if f.message_type is not None:
        full = f.message_type.full_name
        if full in WRAPPERS:
            return _convert(f.message_type.fields_by_name["value"], text, name)
        parse = _STRING_MESSAGES.get(full)
        if parse is None:
            raise RestInputError(name, f"{name!r} (a {full}) cannot be set from a string")
        try:
            parse(text)
        except ValueError as exc:
            raise RestInputError(name, f"{name}={text!r} is not a {full}: {exc}") from None
        return text
    if kind in (_F.TYPE_STRING, _F.TYPE_BYTES):  # bytes: base64, as in proto3 JSON
        return text
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if not _INT.fullmatch(text):
            raise RestInputError(name, f"{name}={text[:40]!r} is not an integer")
        number = int(text)
        if not low <= number <= high:
            raise RestInputError(name, f"{name}={text[:40]} is out of range [{low}, {high}]")
        return number
    if kind == _F.TYPE_BOOL:
        value = _BOOLS.get(text.lower())
        if value is None:
            raise RestInputError(name, f"{name}={text[:40]!r} is not true or false")
        return value
    if kind == _F.TYPE_ENUM:
        if _INT.fullmatch(text) and -(2**31) <= int(text) < 2**31:
            return int(text)
        if text not in enum_of(f).values_by_name:
            names = ", ".join(v.name for v in enum_of(f).values)
            raise RestInputError(name, f"{name}={text[:40]!r} is not one of {names}")
        return text
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        if text in _FLOAT_NAMES:
            return text
        if not _FLOAT.fullmatch(text):
            raise RestInputError(name, f"{name}={text[:40]!r} is not a number")
        real = float(text)
        limit = _FLOAT32_MAX if kind == _F.TYPE_FLOAT else math.inf
        if not math.isfinite(real) or abs(real) > limit:
            raise RestInputError(name, f"{name}={text[:40]} is out of range")
        return real
    raise RestInputError(name, f"{name!r} cannot be set from a string")  # groups


def _enum_number(f: FieldDescriptor, value: object) -> object:
    values = enum_of(f).values_by_name
    if isinstance(value, str) and value in values:
        return values[value].number
    return value


def _same(f: FieldDescriptor, existing: object, value: object) -> bool:
    """Whether a body's value for a path-bound field says what the path says."""
    if isinstance(existing, str) and f.type not in (_F.TYPE_STRING, _F.TYPE_BYTES):
        try:
            existing = _convert(f, existing, f.name)
        except RestInputError:
            return False
    if f.type == _F.TYPE_ENUM:
        existing, value = _enum_number(f, existing), _enum_number(f, value)
    if isinstance(existing, bool) != isinstance(value, bool):
        return False
    return existing == value


def _key(target: Mapping[str, object], f: FieldDescriptor, name: str) -> str | None:
    """The key ``target`` holds ``f`` under (its JSON or its proto name), None when absent;
    RestInputError when it holds both."""
    keys = [k for k in dict.fromkeys((f.json_name, f.name)) if k in target]
    if len(keys) > 1:
        raise RestInputError(name, f"the body sets {f.name!r} twice (as {' and '.join(keys)})")
    return keys[0] if keys else None


def _normalized(message: Descriptor, body: Mapping[str, object]) -> dict[str, object]:
    """A copy of a body object with its known top-level keys as JSON names."""
    result: dict[str, object] = {}
    names = _names(message)
    for key, value in body.items():
        f = names.get(key)
        name = key if f is None else f.json_name
        if name in result:
            raise RestInputError(name, f"the body sets {name!r} twice")
        result[name] = value
    return result


def _set_path(result: dict[str, object], message: Descriptor, path: str, value_text: str) -> None:
    """Put a path variable into ``result`` (copying nested objects, never changing the
    caller's body); RestInputError when the body says something else."""
    fields = _field_path(message, path)
    value = _convert(fields[-1], value_text, path)
    target = result
    for f in fields[:-1]:
        key = _key(target, f, path) or f.json_name
        child = target.get(key, {})
        if not isinstance(child, dict):
            raise RestInputError(path, f"the body's {f.json_name!r} is not an object")
        copy = dict(child)
        target[key] = copy
        target = copy
    leaf = fields[-1]
    given = _key(target, leaf, path)
    if given is not None:
        if not _same(leaf, target[given], value):
            raise RestInputError(
                path,
                f"the path sets {path} to {value_text!r} but the body says {target[given]!r}",
            )
        del target[given]
    target[leaf.json_name] = value


def _is_object(f: FieldDescriptor) -> bool:
    """A message field whose JSON form is an object (not a wrapper or a string type)."""
    return f.message_type is not None and f.message_type.full_name not in _SCALAR_MESSAGES


def query_fields(route: Route) -> tuple[tuple[FieldDescriptor, ...], ...]:
    """The fields :func:`request_dict` reads from the query string, as field paths in
    declaration order: every field not bound by the path or the body whose value is a scalar,
    a repeated scalar or a string-valued well-known type (Timestamp, Duration, FieldMask,
    wrappers), reached through singular message fields (``a.b``). None for ``body: "*"``."""
    return tuple(_query_index(route).values())


@functools.cache
def _query_index(route: Route) -> Mapping[tuple[str, ...], tuple[FieldDescriptor, ...]]:
    index: dict[tuple[str, ...], tuple[FieldDescriptor, ...]] = {}
    if route.body == "*":
        return index

    def walk(
        message: Descriptor, prefix: tuple[FieldDescriptor, ...], seen: frozenset[str]
    ) -> None:
        for f in message.fields:
            path = (*prefix, f)
            names = tuple(p.name for p in path)
            if (not prefix and f.name == route.body) or ".".join(names) in route.path_fields:
                continue
            if is_map(f):
                continue
            if _is_object(f):
                nested = message_of(f)
                if (
                    f.is_repeated
                    or nested.full_name in seen
                    or nested.full_name.startswith("google.protobuf.")  # Struct, Any, Empty
                ):
                    continue
                walk(nested, path, seen | {nested.full_name})
            else:
                index[names] = path

    message = descriptor_of(route.input_type)
    walk(message, (), frozenset({message.full_name}))
    return index


def _query_field(route: Route, name: str) -> tuple[FieldDescriptor, ...]:
    """The fields a query parameter name (dotted; JSON or proto names) sets."""
    fields: list[FieldDescriptor] = []
    message: Descriptor | None = descriptor_of(route.input_type)
    for part in name.split("."):
        f = None if message is None else _names(message).get(part)
        if f is None:
            raise RestInputError(name, f"unknown query parameter {name!r}")
        fields.append(f)
        message = message_of(f) if _is_object(f) and not f.is_repeated else None
    found = _query_index(route).get(tuple(f.name for f in fields))
    if found is not None:
        return found
    if route.body == "*":
        why = f"query parameter {name!r}: {route.verb} {route.template} takes every field "
        why += "in the body, none in the query"
    elif route.body and fields[0].name == route.body:
        why = f"{name!r} is in the request body, not the query"
    elif ".".join(f.name for f in fields) in route.path_fields:
        why = f"{name!r} is set by the URL path"
    elif is_map(fields[-1]):
        why = f"the map {name!r} cannot be set from the query string"
    elif _is_object(fields[-1]):
        why = f"{name!r} is a message: set its fields as {name}.<field>"
    else:
        why = f"{name!r} cannot be set from the query string"
    raise RestInputError(name, why)


def request_dict(
    route: Route,
    path_vars: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: object | None,
) -> dict[str, object]:
    """The proto3 JSON dict of a request, for ``json_format.ParseDict(route.input_type)``.

    The body first (the whole request for ``body: "*"``, one field otherwise), then the query
    parameters (every field not bound by the path or the body; JSON or proto names, dotted for
    nested fields, repeated parameters for repeated fields), then the path variables, which
    win (a body that says otherwise is refused). ``timeout`` is skipped (the server reads it);
    ``access_token`` is refused: tokens go in the Authorization header."""
    message = descriptor_of(route.input_type)
    result: dict[str, object] = {}
    if route.body == "*":
        if body is not None and not isinstance(body, dict):
            raise RestInputError("", "the request body must be a JSON object")
        if body is not None:
            result = _normalized(message, body)
    elif route.body:
        if body is not None:
            result[message.fields_by_name[route.body].json_name] = body
    elif body is not None:
        raise RestInputError("", f"{route.verb} {route.template} takes no request body")

    singular: set[tuple[str, ...]] = set()
    for name, text in query:
        if name in _TOKEN_PARAMS:
            raise RestInputError(
                name, f"an access token is not accepted in the URL; {_AUTH_HEADER_HINT}"
            )
        if name in RESERVED_QUERY:
            continue
        fields = _query_field(route, name)
        target = result
        for f in fields[:-1]:
            child = target.setdefault(f.json_name, {})
            assert isinstance(child, dict)
            target = child
        leaf = fields[-1]
        if leaf.is_repeated:
            values = target.setdefault(leaf.json_name, [])
            assert isinstance(values, list)
            values.append(_convert(leaf, text, name))
            continue
        path = tuple(f.name for f in fields)
        if path in singular:
            raise RestInputError(name, f"{name!r} is given more than once")
        singular.add(path)
        target[leaf.json_name] = _convert(leaf, text, name)

    for bound in route.path_fields:
        if bound not in path_vars:
            raise RestInputError(bound, f"the path variable {bound!r} is missing")
        _set_path(result, message, bound, path_vars[bound])
    return result
