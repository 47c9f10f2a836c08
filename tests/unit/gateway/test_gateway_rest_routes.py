"""The REST edge's route table: google.api.http -> routes, the router (literal vs variable,
custom verbs, keys with slashes, percent-decoding, 405), and request dicts (body, query
conversions, path variables) that json_format.ParseDict turns into the real request messages."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, json_format
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.type import latlng_pb2

from plantd.gateway.rest.routes import (
    RESERVED_QUERY,
    RestInputError,
    Route,
    Router,
    query_fields,
    request_dict,
    routes_for,
)
from plantd.v1 import bus_pb2, identity_pb2, state_pb2

pytestmark = pytest.mark.unit

STATE = state_pb2.DESCRIPTOR.services_by_name["StateService"]
BUS = bus_pb2.DESCRIPTOR.services_by_name["BusService"]
IDENTITY = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
SERVICES = (STATE, BUS, IDENTITY)
ROUTES = routes_for(*SERVICES)
ROUTER = Router(ROUTES)


def route_of(method: str, binding: int = 0) -> Route:
    return [r for r in ROUTES if r.method == method][binding]


def find(verb: str, path: str) -> tuple[str, dict[str, str]] | None:
    found = ROUTER.find(verb, path)
    return None if found is None else (found[0].method, found[1])


def parse(route: Route, fields: dict[str, object]) -> Message:
    return json_format.ParseDict(fields, route.input_type())


def build(
    method: str,
    query: list[tuple[str, str]] | None = None,
    body: object | None = None,
    *,
    path: str | None = None,
) -> tuple[Route, dict[str, object]]:
    """The request dict for a real route, its path variables found by the router."""
    route = route_of(method)
    path_vars: dict[str, str] = {}
    if path is not None:
        found = ROUTER.find(route.verb, path)
        assert found is not None and found[0] is route, path
        path_vars = found[1]
    return route, request_dict(route, path_vars, query or [], body)


def synthetic_route(
    template: str, *, verb: str = "GET", message: type[Message] = state_pb2.GetEntryRequest
) -> Route:
    fields = tuple(re.findall(r"\{([^}=]+)", template))
    return Route(
        verb=verb,
        template=template,
        service="test.Service",
        method=f"M{abs(hash(template))}",
        input_type=message,
        output_type=empty_pb2.Empty,
        body="",
        path_fields=fields,
        server_streaming=False,
    )


_files = itertools.count()


def annotated_service(template: str) -> ServiceDescriptor:
    """A service in the default pool whose one method has ``get: template``."""
    n = next(_files)
    file = descriptor_pb2.FileDescriptorProto(
        name=f"plantd_rest_routes_test/bad{n}.proto",
        package=f"plantdresttest{n}",
        syntax="proto3",
        dependency=["google/api/annotations.proto", "google/protobuf/empty.proto"],
    )
    method = file.service.add(name="Bad").method.add(
        name="Broken", input_type=".google.protobuf.Empty", output_type=".google.protobuf.Empty"
    )
    method.options.Extensions[annotations_pb2.http].get = template
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindServiceByName(f"plantdresttest{n}.Bad")


# ---- routes_for -----------------------------------------------------------------------------


def test_every_annotated_method_and_binding_is_a_route() -> None:
    expected: list[tuple[str, str, str]] = []
    for service in SERVICES:
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(annotations_pb2.http):
                rule = options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    pattern = binding.WhichOneof("pattern")
                    assert pattern is not None
                    expected.append((service.full_name, method.name, getattr(binding, pattern)))
    assert len(expected) > 40  # the three services are annotated throughout
    assert [(r.service, r.method, r.template) for r in ROUTES] == expected
    annotated = {(s, m) for s, m, _ in expected}
    assert {(r.service, r.method) for r in ROUTES} == annotated
    assert len(annotated) == sum(len(s.methods) for s in SERVICES)  # every RPC is on REST


def test_route_fields_come_from_the_rule_and_the_descriptors() -> None:
    get = route_of("GetEntry")
    assert (get.verb, get.template, get.body) == (
        "GET",
        "/v1/state/scopes/{scope}/entries/{key=**}",
        "",
    )
    assert get.service == "plantd.v1.StateService"
    assert get.input_type is state_pb2.GetEntryRequest
    assert get.output_type is state_pb2.GetEntryResponse
    assert get.path_fields == ("scope", "key")
    assert not get.server_streaming
    put = route_of("SetEntry")
    assert (put.verb, put.body) == ("PUT", "*")
    update = route_of("UpdateUser")
    assert (update.verb, update.body, update.path_fields) == ("PATCH", "user", ("user.id",))
    assert route_of("WatchEntries").server_streaming
    assert route_of("Subscribe").server_streaming
    assert route_of("StreamCall").server_streaming
    assert [r.template for r in ROUTES if r.method == "GetJwks"] == [
        "/v1/identity/jwks",
        "/.well-known/jwks.json",
    ]
    assert {r.verb for r in ROUTES} == {"GET", "PUT", "POST", "DELETE", "PATCH"}


@pytest.mark.parametrize(
    "template",
    [
        "v1/no/leading/slash",
        "/v1/{name=shelves/*}",
        "/v1/*/anonymous",
        "/v1/{key=**}/after",
        "/v1/{bad-name}",
        "/v1//empty",
        "/v1/x:",
    ],
)
def test_unservable_templates_raise_naming_the_method(template: str) -> None:
    service = annotated_service(template)
    with pytest.raises(ValueError, match=rf"{service.full_name}\.Broken"):
        routes_for(service)


def test_route_checks_its_fields_against_the_request_message() -> None:
    with pytest.raises(ValueError, match="no field"):
        synthetic_route("/v1/{nope}")
    with pytest.raises(ValueError, match="repeated"):
        synthetic_route("/v1/{keys}", message=state_pb2.BatchGetEntriesRequest)
    with pytest.raises(ValueError, match="message"):
        synthetic_route("/v1/{user}", message=identity_pb2.UpdateUserRequest)
    with pytest.raises(ValueError, match="twice"):
        synthetic_route("/v1/{scope}/{scope}")
    with pytest.raises(ValueError, match="verb"):
        synthetic_route("/v1/{scope}", verb="HEAD")
    good = route_of("GetEntry")
    with pytest.raises(ValueError, match="path_fields"):
        Route(**{**_fields(good), "path_fields": ("key", "scope")})
    with pytest.raises(ValueError, match="body"):
        Route(**{**_fields(good), "body": "nope"})


def _fields(route: Route) -> dict[str, Any]:
    return {
        name: getattr(route, name)
        for name in (
            "verb",
            "template",
            "service",
            "method",
            "input_type",
            "output_type",
            "body",
            "path_fields",
            "server_streaming",
        )
    }


# ---- the router -----------------------------------------------------------------------------


def test_keys_with_slashes_match_double_star_and_one_segment_variables_do_not() -> None:
    assert find("GET", "/v1/state/scopes/s/entries/a/b/c") == (
        "GetEntry",
        {"scope": "s", "key": "a/b/c"},
    )
    assert find("GET", "/v1/state/scopes/s/entries/k") == ("GetEntry", {"scope": "s", "key": "k"})
    # {scope} is one segment: an extra segment is no scope.
    assert find("GET", "/v1/state/scopes/a/b/entries/k") is None
    assert find("GET", "/v1/state/scopes/s/entries") is None  # ** needs one segment at least


def test_percent_decoding_is_per_segment() -> None:
    assert find("GET", "/v1/state/scopes/my%20scope/entries/a%2Fb/%E2%9C%93") == (
        "GetEntry",
        {"scope": "my scope", "key": "a/b/\u2713"},
    )
    # An encoded "/" in a one-segment variable is part of the value, not a separator.
    assert find("GET", "/v1/state/scopes/x%2Fy/keys") == ("ListKeys", {"scope": "x/y"})
    # "+" is not a space in a path; a literal may be percent-encoded.
    assert find("GET", "/v1/st%61te/scopes/a+b/keys") == ("ListKeys", {"scope": "a+b"})
    assert find("GET", "/v1/state/scopes/%FF/keys") is None  # not UTF-8


def test_empty_segments_never_match() -> None:
    assert find("GET", "/v1/state/scopes//entries/k") is None
    assert ROUTER.allowed("/v1/state/scopes//entries/k") == ()
    assert find("GET", "/v1/state/scopes/s/entries/a//b") is None
    assert find("GET", "/v1/state/scopes/s/entries/k/") is None
    # ... but such keys are reachable encoded.
    assert find("GET", "/v1/state/scopes/s/entries/a%2F%2Fb%2F") == (
        "GetEntry",
        {"scope": "s", "key": "a//b/"},
    )


def test_custom_verbs_match_exactly() -> None:
    assert find("POST", "/v1/state/scopes/s/entries:batchGet") == (
        "BatchGetEntries",
        {"scope": "s"},
    )
    assert find("POST", "/v1/state/scopes/s/entries:batchSet")[0] == "BatchSetEntries"  # type: ignore[index]
    assert find("POST", "/v1/state/scopes/s/entries:batchget") is None
    assert ROUTER.allowed("/v1/state/scopes/s/entries:batchget") == ()
    assert find("GET", "/v1/state/scopes/s/entries:watch") == ("WatchEntries", {"scope": "s"})
    assert find("POST", "/v1/identity/auth:login") == ("Login", {})
    assert find("POST", "/v1/identity/auth:logins") is None
    assert find("POST", "/v1/identity/auth") is None
    assert find("POST", "/v1/bus/services/org.plantd.Echo:call") == (
        "Call",
        {"service": "org.plantd.Echo"},
    )
    assert find("POST", "/v1/bus:batchCall") == ("BatchCall", {})
    assert find("POST", "/v1/bus") is None


def test_a_colon_belongs_to_the_variable_when_no_verb_route_matches() -> None:
    # Keys may contain ":": a key that ends like a custom verb is still a key.
    assert find("GET", "/v1/state/scopes/s/entries/a:watch") == (
        "GetEntry",
        {"scope": "s", "key": "a:watch"},
    )
    assert find("GET", "/v1/bus/services/x:call") == ("GetService", {"service": "x:call"})
    assert ROUTER.allowed("/v1/bus/services/x:call") == ("GET", "POST")


def test_literal_segments_beat_variables_in_any_order() -> None:
    variable = synthetic_route("/v1/things/{scope}")
    literal = synthetic_route("/v1/things/special")
    deeper = synthetic_route("/v1/things/{scope}/{key=**}")
    one = synthetic_route("/v1/things/{scope}/{key}")
    for routes in itertools.permutations([variable, literal, deeper, one]):
        router = Router(routes)
        assert router.find("GET", "/v1/things/special") == (literal, {})
        assert router.find("GET", "/v1/things/other") == (variable, {"scope": "other"})
        assert router.find("GET", "/v1/things/s/k") == (one, {"scope": "s", "key": "k"})
        assert router.find("GET", "/v1/things/s/k/l") == (deeper, {"scope": "s", "key": "k/l"})


def test_a_custom_verb_beats_a_variable_that_would_swallow_it() -> None:
    plain = synthetic_route("/v1/k/{key=**}")
    watch = synthetic_route("/v1/k/{key=**}:watch")
    for routes in ([plain, watch], [watch, plain]):
        router = Router(routes)
        assert router.find("GET", "/v1/k/a/b:watch") == (watch, {"key": "a/b"})
        assert router.find("GET", "/v1/k/a:other") == (plain, {"key": "a:other"})


def test_ambiguous_routes_are_refused() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        Router([synthetic_route("/v1/x/{scope}"), synthetic_route("/v1/x/{key}")])
    Router([synthetic_route("/v1/x/{scope}"), synthetic_route("/v1/x/{key}", verb="DELETE")])


def test_allowed_lists_the_verbs_of_the_path_for_405() -> None:
    assert ROUTER.allowed("/v1/state/scopes/s/entries/a/b") == ("DELETE", "GET", "PUT")
    assert ROUTER.find("POST", "/v1/state/scopes/s/entries/a/b") is None
    assert ROUTER.allowed("/v1/state/scopes") == ("GET", "POST")
    assert ROUTER.allowed("/v1/identity/users/7") == ("DELETE", "GET", "PATCH")
    assert ROUTER.allowed("/v1/nothing/here") == ()
    assert ROUTER.find("get", "/v1/state/scopes") is not None  # verbs are case-insensitive


def test_route_match_gives_the_variables() -> None:
    route = route_of("UpdateUser")
    assert route.match("/v1/identity/users/42") == {"user.id": "42"}
    assert route.match("/v1/identity/users/42/x") is None
    assert route.match("/v1/identity/users") is None
    assert route_of("GetJwks", 1).match("/.well-known/jwks.json") == {}


# ---- request dicts --------------------------------------------------------------------------


def test_whole_body_with_path_variables() -> None:
    body = {"value": "v", "ttl": "5s", "expected_version": "3", "createScope": False}
    route, fields = build("SetEntry", body=body, path="/v1/state/scopes/s/entries/a/b")
    assert fields == {
        "value": "v",
        "ttl": "5s",
        "expectedVersion": "3",  # proto names become JSON names
        "createScope": False,
        "scope": "s",
        "key": "a/b",
    }
    message = parse(route, fields)
    expected = state_pb2.SetEntryRequest(
        scope="s", key="a/b", value="v", expected_version=3, create_scope=False
    )
    expected.ttl.seconds = 5
    assert message == expected
    assert body == {"value": "v", "ttl": "5s", "expected_version": "3", "createScope": False}


def test_whole_body_must_be_an_object_and_may_be_absent() -> None:
    for bad in ([1, 2], "text", 3):
        with pytest.raises(RestInputError) as caught:
            build("CreateScope", body=bad)
        assert caught.value.field == ""
        assert "object" in str(caught.value)
    _, fields = build("ActivateUser", body=None, path="/v1/identity/users/9:activate")
    assert fields == {"userId": 9}
    with pytest.raises(RestInputError, match="twice"):
        build(
            "SetEntry",
            body={"expectedVersion": 1, "expected_version": 2},
            path="/v1/state/scopes/s/entries/k",
        )


def test_a_route_without_body_refuses_one() -> None:
    with pytest.raises(RestInputError, match="no request body"):
        build("GetEntry", body={"scope": "s"}, path="/v1/state/scopes/s/entries/k")


def test_named_body_field_and_path_inside_it() -> None:
    body = {"email": "a@b.c", "firstName": "Ada"}
    route, fields = build(
        "UpdateUser", [("updateMask", "email,firstName")], body, path="/v1/identity/users/7"
    )
    assert fields == {
        "user": {"email": "a@b.c", "firstName": "Ada", "id": 7},
        "updateMask": "email,firstName",
    }
    message = parse(route, fields)
    assert message.user.id == 7 and message.user.first_name == "Ada"
    assert list(message.update_mask.paths) == ["email", "first_name"]
    assert body == {"email": "a@b.c", "firstName": "Ada"}  # the caller's body is not changed
    with pytest.raises(RestInputError, match="not an object"):
        build("UpdateUser", body=["x"], path="/v1/identity/users/7")


def test_path_wins_and_a_body_that_disagrees_is_refused() -> None:
    # The same value, however spelled, is fine.
    for same in ({"scope": "s"}, {"scope": "s", "key": "k"}):
        _, fields = build("SetEntry", body=same, path="/v1/state/scopes/s/entries/k")
        assert fields["scope"] == "s"
    for same_id in ("7", 7):
        _, fields = build("UpdateUser", body={"id": same_id}, path="/v1/identity/users/7")
        assert fields == {"user": {"id": 7}}
    with pytest.raises(RestInputError) as caught:
        build("SetEntry", body={"scope": "other"}, path="/v1/state/scopes/s/entries/k")
    assert caught.value.field == "scope"
    assert "other" in caught.value.message
    with pytest.raises(RestInputError, match="body says"):
        build("UpdateUser", body={"id": "8"}, path="/v1/identity/users/7")
    with pytest.raises(RestInputError, match="body says"):
        build("UpdateUser", body={"id": True}, path="/v1/identity/users/1")
    with pytest.raises(RestInputError, match="body says"):
        build("Publish", body={"bus": "BUS_EVENT"}, path="/v1/bus/buses/BUS_STATE/messages:publish")
    _, fields = build("Publish", body={"bus": 1}, path="/v1/bus/buses/BUS_STATE/messages:publish")
    assert fields["bus"] == "BUS_STATE"


def test_query_parameters_are_converted_by_field_type() -> None:
    route, fields = build(
        "WatchEntries",
        [
            ("keyPrefix", "sensors/"),
            ("start_revision", "12"),
            ("sendSnapshot", "true"),
            ("progressInterval", "1.5s"),
        ],
        path="/v1/state/scopes/s/entries:watch",
    )
    assert fields == {
        "keyPrefix": "sensors/",
        "startRevision": 12,
        "sendSnapshot": True,
        "progressInterval": "1.5s",
        "scope": "s",
    }
    message = parse(route, fields)
    assert message.start_revision == 12 and message.HasField("start_revision")
    assert (message.progress_interval.seconds, message.progress_interval.nanos) == (1, 500_000_000)

    route, fields = build(
        "Subscribe",
        [("topicPrefixes", "a"), ("topic_prefixes", "b"), ("maxBatch", "10")],
        path="/v1/bus/buses/2/messages:subscribe",
    )
    assert fields == {"topicPrefixes": ["a", "b"], "maxBatch": 10, "bus": 2}
    message = parse(route, fields)
    assert message.bus == bus_pb2.BUS_EVENT and list(message.topic_prefixes) == ["a", "b"]

    _, fields = build(
        "WatchEntries", [("sendSnapshot", "0")], path="/v1/state/scopes/s/entries:watch"
    )
    assert fields["sendSnapshot"] is False


def test_doubles_and_nested_fields_from_the_query() -> None:
    geo = Route(
        verb="GET",
        template="/v1/geo",
        service="test.Geo",
        method="Get",
        input_type=latlng_pb2.LatLng,
        output_type=empty_pb2.Empty,
        body="",
        path_fields=(),
        server_streaming=False,
    )
    fields = request_dict(geo, {}, [("latitude", "-1.5e1"), ("longitude", "Infinity")], None)
    assert fields == {"latitude": -15.0, "longitude": "Infinity"}
    assert parse(geo, fields).longitude == float("inf")
    for bad in ("abc", "1e999", "0x10", ""):
        with pytest.raises(RestInputError, match="latitude"):
            request_dict(geo, {}, [("latitude", bad)], None)

    nested = synthetic_route("/v1/users/{user.id}", message=identity_pb2.UpdateUserRequest)
    fields = request_dict(
        nested, {"user.id": "5"}, [("user.email", "a@b"), ("user.first_name", "A")], None
    )
    assert fields == {"user": {"email": "a@b", "firstName": "A", "id": 5}}
    assert parse(nested, fields).user.email == "a@b"
    with pytest.raises(RestInputError, match="set by the URL path"):
        request_dict(nested, {"user.id": "5"}, [("user.id", "6")], None)
    with pytest.raises(RestInputError, match=r"user\.roles"):
        request_dict(nested, {"user.id": "5"}, [("user.roles", "x")], None)
    with pytest.raises(RestInputError, match="set its fields"):
        request_dict(nested, {"user.id": "5"}, [("user", "x")], None)


@pytest.mark.parametrize(
    ("method", "path", "name", "value"),
    [
        ("ListKeys", "/v1/state/scopes/s/keys", "pageSize", "ten"),
        ("ListKeys", "/v1/state/scopes/s/keys", "pageSize", "2147483648"),
        ("ListKeys", "/v1/state/scopes/s/keys", "page_size", "1.5"),
        ("ListKeys", "/v1/state/scopes/s/keys", "pageSize", " 1"),
        ("ListChanges", "/v1/state/scopes/s/changes", "startRevision", "9223372036854775808"),
        ("WatchEntries", "/v1/state/scopes/s/entries:watch", "sendSnapshot", "yes"),
        ("WatchEntries", "/v1/state/scopes/s/entries:watch", "progressInterval", "5"),
        ("Subscribe", "/v1/bus/buses/BUS_STATE/messages:subscribe", "maxDelay", "soon"),
        ("ListKeys", "/v1/state/scopes/s/keys", "nope", "1"),
        ("ListKeys", "/v1/state/scopes/s/keys", "scope", "t"),  # bound by the path
        ("ListKeys", "/v1/state/scopes/s/keys", "prefix.x", "t"),
        ("ListScopes", "/v1/state/scopes", "pageSize.x", "1"),
        ("UpdateUser", "/v1/identity/users/1", "user.email", "a@b"),  # in the body
        ("UpdateUser", "/v1/identity/users/1", "user", "a@b"),
        ("SetEntry", "/v1/state/scopes/s/entries/k", "value", "v"),  # body "*": no query
    ],
)
def test_bad_query_parameters_name_the_parameter(
    method: str, path: str, name: str, value: str
) -> None:
    with pytest.raises(RestInputError) as caught:
        build(method, [(name, value)], {} if route_of(method).body else None, path=path)
    assert caught.value.field == name
    assert name in caught.value.message


def test_bad_path_variables_and_enums() -> None:
    with pytest.raises(RestInputError) as caught:
        build("GetUser", path="/v1/identity/users/abc")
    assert caught.value.field == "user_id"
    with pytest.raises(RestInputError, match="out of range"):
        build("GetUser", path="/v1/identity/users/-1")
    with pytest.raises(RestInputError, match="BUS_STATE"):  # the valid names are listed
        build("Subscribe", path="/v1/bus/buses/NOPE/messages:subscribe")
    with pytest.raises(RestInputError, match="missing"):
        request_dict(route_of("GetUser"), {}, [], None)


def test_a_singular_parameter_may_be_given_once() -> None:
    with pytest.raises(RestInputError, match="more than once"):
        build("ListScopes", [("pageSize", "1"), ("page_size", "2")])
    _, fields = build("ListServices", [("pageSize", "1"), ("pageToken", "t")])
    assert fields == {"pageSize": 1, "pageToken": "t"}


def test_access_token_is_refused_and_timeout_skipped() -> None:
    assert frozenset({"timeout", "access_token"}) == RESERVED_QUERY
    for name in ("access_token", "accessToken"):
        for method, path in (("ListScopes", None), ("Logout", None)):
            with pytest.raises(RestInputError) as caught:
                build(method, [(name, "eyJ...")], {} if method == "Logout" else None, path=path)
            assert caught.value.field == name
            assert "Authorization" in caught.value.message
    _, fields = build("ListScopes", [("timeout", "5s"), ("pageSize", "3")])
    assert fields == {"pageSize": 3}
    # The body may still carry a field called access_token (Logout names the session).
    route, fields = build("Logout", body={"accessToken": "tok"})
    assert parse(route, fields) == identity_pb2.LogoutRequest(access_token="tok")


def _sample(f: FieldDescriptor) -> str:
    if f.message_type is not None:
        name = f.message_type.full_name
        if name == "google.protobuf.Duration":
            return "2s"
        if name == "google.protobuf.Timestamp":
            return "2026-01-02T03:04:05Z"
        if name == "google.protobuf.FieldMask":
            return "a,bC"
        return _sample(f.message_type.fields_by_name["value"])
    if f.enum_type is not None:
        return f.enum_type.values[-1].name
    return {
        FieldDescriptor.TYPE_BOOL: "true",
        FieldDescriptor.TYPE_STRING: "text",
        FieldDescriptor.TYPE_BYTES: "AAE=",
        FieldDescriptor.TYPE_DOUBLE: "0.5",
        FieldDescriptor.TYPE_FLOAT: "0.5",
    }.get(f.type, "7")


def _sample_path(route: Route) -> str:
    path = route.template
    for name in route.path_fields:
        f = route.input_type.DESCRIPTOR
        field = None
        for part in name.split("."):
            field = f.fields_by_name[part]
            f = field.message_type
        assert field is not None
        value = "a/b" if f"{{{name}=**}}" in path else _sample(field)
        path = path.replace(f"{{{name}=**}}", value).replace(f"{{{name}}}", value)
    return path


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method}:{r.template}")
def test_every_route_round_trips_into_its_request_message(route: Route) -> None:
    """The router finds each route from a sample path, and every query field the route
    advertises is accepted and lands in the real request message."""
    path = _sample_path(route)
    found = ROUTER.find(route.verb, path)
    assert found is not None and found[0] is route, path
    query = [
        (".".join(f.json_name for f in fields), _sample(fields[-1]))
        for fields in query_fields(route)
    ]
    if route.body == "*":
        assert query == []
    fields = request_dict(route, found[1], query, None)
    message = parse(route, fields)
    for bound in route.path_fields:
        value: Any = message
        for part in bound.split("."):
            value = getattr(value, part)
        assert str(value) in (found[1][bound], str(_enum_number(route, bound, found[1][bound])))
    for path_fields in query_fields(route):
        holder: Any = message
        for f in path_fields[:-1]:
            holder = getattr(holder, f.name)
        leaf = path_fields[-1]
        if leaf.message_type is not None or leaf.has_presence:
            assert holder.HasField(leaf.name), leaf.full_name
        else:
            assert getattr(holder, leaf.name), leaf.full_name


def _enum_number(route: Route, bound: str, text: str) -> object:
    f = route.input_type.DESCRIPTOR.fields_by_name[bound.split(".")[0]]
    if f.enum_type is not None and text in f.enum_type.values_by_name:
        return f.enum_type.values_by_name[text].number
    return text


def test_query_fields_of_the_real_routes() -> None:
    def names(method: str) -> list[str]:
        return [".".join(f.json_name for f in p) for p in query_fields(route_of(method))]

    assert names("ListKeys") == ["prefix", "pageSize", "pageToken"]
    assert names("WatchEntries") == [
        "keyPrefix",
        "startRevision",
        "sendSnapshot",
        "progressInterval",
    ]
    assert names("Subscribe") == ["topicPrefixes", "maxBatch", "maxDelay"]
    assert names("UpdateUser") == ["updateMask"]
    assert names("GetEntry") == []
    assert names("SetEntry") == []  # body "*"
