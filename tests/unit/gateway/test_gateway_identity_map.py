"""plantd.v1.IdentityService without sockets: messages <-> org.plantd.Identity operations
(built against identity's own operation table, wire records and envelopes), envelopes ->
failures -> gRPC status with ErrorInfo, and the servicer around them (the gate's token rules
per RPC, what reaches the bus, follow-up reads) with a fake bus; the identity health name."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from plantd.api.errors import GatewayCode, Origin
from plantd.common import contract
from plantd.common.auth import Verifier
from plantd.gateway import identity_map as im
from plantd.gateway.auth import Authenticator
from plantd.gateway.calls import CallGate, Decision, RouteClass, RpcMetrics
from plantd.gateway.errors import grpc_status
from plantd.gateway.health import NOT_SERVING, SERVING
from plantd.gateway.identity_servicer import SERVICE_NAME, BackendHealth, IdentityServicer
from plantd.gateway.state_map import RpcFailure
from plantd.identity import protocol
from plantd.identity.errors import Code, IdentityError
from plantd.identity.model import Module, Organization, Role, User
from plantd.identity.wire import org_json, role_json, user_json
from plantd.mdp.errors import RequestTimeout
from plantd.v1 import identity_pb2 as pb
from plantd.v1 import identity_pb2_grpc

pytestmark = pytest.mark.unit

SERVICE = pb.DESCRIPTOR.services_by_name["IdentityService"]
T0 = 1_700_000_000.25  # a record time with a fraction (identity keeps microseconds)


def ok(data: dict[str, Any]) -> list[bytes]:
    """identity's own success envelope (plantd.identity.protocol)."""
    return [protocol.success("rid", data, time.time())]


def refused(code: Code, message: str = "no", **detail: object) -> list[bytes]:
    """identity's own failure envelope."""
    return [protocol.failure("rid", IdentityError(code, message, **detail), time.time())]


def failure_of(frames: list[bytes]) -> RpcFailure:
    with pytest.raises(RpcFailure) as caught:
        im.envelope_data(frames)
    return caught.value


def info_of(status: grpc.Status) -> tuple[error_details_pb2.ErrorInfo, status_pb2.Status]:
    trailer = dict(status.trailing_metadata)
    detail = status_pb2.Status.FromString(trailer["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert detail.details[0].Unpack(info)
    return info, detail


def ts(seconds: float) -> Timestamp:
    whole = int(seconds)
    return Timestamp(seconds=whole, nanos=round((seconds - whole) * 1e9))


@pytest.fixture(scope="module")
def jwt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from plantd.identity.keys import generate

    d = tmp_path_factory.mktemp("jwt")
    generate(d)
    return d


@pytest.fixture(scope="module")
def identity_ops(jwt_dir: Path) -> frozenset[tuple[str, str]]:
    """The (category, operation) pairs the real identity service answers."""
    from plantd.identity.keys import KeyRing
    from plantd.identity.service import IdentityService

    service = IdentityService(None, KeyRing.from_dir(jwt_dir), None)  # type: ignore[arg-type]
    return frozenset(service.handlers)


def default_request(name: str) -> Any:
    return getattr(pb, SERVICE.methods_by_name[name].input_type.name)()


# ---- the table --------------------------------------------------------------------------------


def test_every_rpc_of_the_proto_has_a_method_and_a_handler() -> None:
    names = {m.name for m in SERVICE.methods}
    assert len(names) == 41
    assert set(im.METHODS) == names
    for name in names:
        assert name in vars(IdentityServicer), name  # overridden: not the generated UNIMPLEMENTED
        assert name in vars(identity_pb2_grpc.IdentityServiceServicer)
    assert SERVICE_NAME == "plantd.v1.IdentityService"


def test_every_request_is_an_operation_identity_serves(
    identity_ops: frozenset[tuple[str, str]],
) -> None:
    for name, method in im.METHODS.items():
        request = default_request(name)
        category, operation, body = method.build(request)
        assert category in protocol.CATEGORIES and category != "health", name
        assert (category, operation) in identity_ops, name
        # The caller's token is the servicer's to add (ValidateToken's is the one to check).
        assert "token" not in body or name == "ValidateToken", name
        follow = method.follow_up(request)
        if follow is not None:
            assert follow[:2] in identity_ops, name


def test_credential_rpcs_need_no_token_and_the_rest_do() -> None:
    open_ = {n for n, m in im.METHODS.items() if not m.token_required}
    assert open_ == {
        "Login",
        "RefreshToken",
        "Logout",
        "ValidateToken",
        "ChangePassword",
        "GetJwks",
        "IssueToken",  # a service account's client id and secret
        "EnrollModule",  # an admin token or a join token: identity decides
    }
    either = {n for n, m in im.METHODS.items() if m.token_optional}
    assert either == {"Logout", "ChangePassword", "EnrollModule"} and either <= open_
    kept = {n for n, m in im.METHODS.items() if not m.forward_token}
    # ValidateToken above all: the caller's token must not replace the one to check.
    assert kept == {
        "Login",
        "RefreshToken",
        "ValidateToken",
        "ChangePassword",
        "GetJwks",
        "IssueToken",
    }


def test_route_classes() -> None:
    by_route: dict[RouteClass, set[str]] = {}
    for name, method in im.METHODS.items():
        by_route.setdefault(method.route, set()).add(name)
    assert by_route[RouteClass.LOGIN] == {"Login", "RefreshToken", "ChangePassword", "IssueToken"}
    assert by_route[RouteClass.READ] == {
        n
        for n in im.METHODS
        if n.startswith(("Get", "List")) or n in ("CheckPermission", "ValidateToken")
    }
    assert set(by_route) == {RouteClass.LOGIN, RouteClass.READ, RouteClass.WRITE}


# ---- envelopes ----------------------------------------------------------------------------------


def test_success_envelope_gives_its_data() -> None:
    assert im.envelope_data(ok({"allowed": True})) == {"allowed": True}
    assert im.envelope_data([b'{"success": true, "data": null}']) == {}


@pytest.mark.parametrize(
    ("code", "grpc_code"),
    [
        (Code.LOGIN_FAILED, grpc.StatusCode.UNAUTHENTICATED),
        (Code.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
        (Code.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
        (Code.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
        (Code.CONFLICT, grpc.StatusCode.ALREADY_EXISTS),
        (Code.INVALID_REQUEST, grpc.StatusCode.INVALID_ARGUMENT),
        (Code.PASSWORD_CHANGE_REQUIRED, grpc.StatusCode.FAILED_PRECONDITION),
        (Code.UNKNOWN_OPERATION, grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_identity_refusals_keep_their_code_and_message(
    code: Code, grpc_code: grpc.StatusCode
) -> None:
    failure = failure_of(refused(code, "what failed, what to do"))
    assert (failure.origin, failure.code, failure.message) == (
        Origin.IDENTITY,
        code.value,
        "what failed, what to do",
    )
    got, status = grpc_status(failure)
    assert got == grpc_code
    info, _ = info_of(status)
    assert (info.reason, info.domain) == (code.value, "plantd.io")


def test_every_identity_code_has_its_own_row() -> None:
    for code in Code:
        got, _ = grpc_status(failure_of(refused(code)))
        assert got != grpc.StatusCode.UNKNOWN, code


def test_retry_after_becomes_whole_seconds_and_retry_info() -> None:
    failure = failure_of(refused(Code.RATE_LIMITED, "slow down", retry_after=2.2))
    assert failure.metadata == {"retry_after_s": "3"}
    got, status = grpc_status(failure)
    assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, detail = info_of(status)
    retry = error_details_pb2.RetryInfo()
    assert detail.details[1].Unpack(retry) and retry.retry_delay.seconds == 3
    tiny = failure_of(refused(Code.LOGIN_FAILED, "retry in 1 s", retry_after=0.01))
    assert tiny.metadata == {"retry_after_s": "1"}
    assert failure_of(refused(Code.LOGIN_FAILED)).metadata == {}


def test_bad_replies_are_the_gateways_bad_reply() -> None:
    for frames in ([], [b"{}", b"{}"], [b"not json"], [b"[1]"], [b"\xff"]):
        failure = failure_of(frames)
        assert (failure.origin, failure.code) == (Origin.GATEWAY, GatewayCode.BAD_REPLY), frames
    legacy = failure_of([b'{"success": false, "error": "old worker"}'])
    assert (legacy.origin, legacy.code, legacy.message) == (Origin.IDENTITY, "ERROR", "old worker")
    assert grpc_status(legacy)[0] == grpc.StatusCode.UNKNOWN


# ---- builders -----------------------------------------------------------------------------------


def test_login_sends_credentials_and_audiences_only_when_given() -> None:
    assert im.login_req(pb.LoginRequest(identifier="ann", password="pw")) == (
        "auth",
        "login",
        {"identifier": "ann", "password": "pw"},
    )
    _, _, body = im.login_req(
        pb.LoginRequest(identifier="ann", password="pw", audiences=[contract.SERVICE_STATE])
    )
    assert body["audience"] == [contract.SERVICE_STATE]  # identity's field name


def test_token_rpcs() -> None:
    assert im.refresh_req(pb.RefreshTokenRequest(refresh_token="pld_rt_x")) == (
        "auth",
        "refresh",
        {"refresh_token": "pld_rt_x"},
    )
    assert im.validate_req(pb.ValidateTokenRequest(token="jwt")) == (
        "auth",
        "validate",
        {"token": "jwt"},
    )
    assert im.logout_req(pb.LogoutRequest(access_token="jwt"))[2] == {"access_token": "jwt"}
    assert im.logout_req(pb.LogoutRequest())[2] == {}  # identity reads the caller's ``token``
    assert im.jwks_req(pb.GetJwksRequest()) == ("auth", "jwks", {})


def test_change_password_names_the_caller_when_the_request_names_nobody() -> None:
    method = im.METHODS["ChangePassword"]
    req = pb.ChangePasswordRequest(current_password="old", new_password="new")
    _, op, body = method.request(req, subject="7")
    assert op == "change_password"
    assert body == {"current_password": "old", "new_password": "new", "user_id": "7"}
    named = pb.ChangePasswordRequest(identifier="ann", current_password="o", new_password="n")
    _, _, body = method.request(named, subject="7")
    assert body["identifier"] == "ann" and "user_id" not in body
    _, _, body = method.request(req, subject=None)  # no token: identity says what is missing
    assert "user_id" not in body and "identifier" not in body
    # Only methods that mean "me" take the subject.
    _, _, body = im.METHODS["GetUser"].request(pb.GetUserRequest(user_id=3), subject="7")
    assert body == {"user_id": 3}


def test_request_carries_the_request_id_and_client_address() -> None:
    _, _, body = im.METHODS["Login"].request(
        pb.LoginRequest(identifier="a", password="p"), request_id="r-1", source="10.1.2.3"
    )
    assert body["header"] == {"request_id": "r-1"}  # identity's audit trace id
    assert body["ip_address"] == "10.1.2.3"  # identity's per-source buckets
    _, _, body = im.METHODS["GetJwks"].request(pb.GetJwksRequest(), source="unix:/" + "x" * 100)
    assert len(body["ip_address"]) == im.MAX_SOURCE_CHARS
    _, _, body = im.METHODS["GetJwks"].request(pb.GetJwksRequest())
    assert body == {}


def test_create_and_get_user() -> None:
    req = pb.CreateUserRequest(
        user=pb.User(
            username="ann", email="ann@x.example", first_name="Ann", id=9, is_active=False
        ),
        password="a long password indeed",
    )
    assert im.create_user_req(req) == (
        "user",
        "create",
        {
            "username": "ann",
            "email": "ann@x.example",
            "first_name": "Ann",
            "last_name": "",
            "password": "a long password indeed",
        },  # id and output-only fields are not sent
    )
    assert im.get_user_req(pb.GetUserRequest(user_id=4)) == ("user", "get", {"user_id": 4})
    assert im.get_user_req(pb.GetUserRequest())[2] == {}  # identity: "must provide user_id"
    assert im.delete_user_req(pb.DeleteUserRequest(user_id=4))[:2] == ("user", "delete")


def test_update_user_writes_the_mask_or_every_set_field() -> None:
    user = pb.User(id=4, email="new@x.example", username="ann", last_name="")
    _, op, body = im.update_user_req(
        pb.UpdateUserRequest(user=user, update_mask=FieldMask(paths=["email", "last_name"]))
    )
    assert op == "update"
    assert body == {"user_id": 4, "email": "new@x.example", "last_name": ""}  # "" clears it
    _, _, body = im.update_user_req(pb.UpdateUserRequest(user=user))
    assert body == {"user_id": 4, "email": "new@x.example", "username": "ann"}
    for path in ("is_active", "id", "roles", "user.email"):
        with pytest.raises(RpcFailure) as bad:
            im.update_user_req(pb.UpdateUserRequest(user=user, update_mask=FieldMask(paths=[path])))
        assert (bad.value.origin, bad.value.code) == (Origin.GATEWAY, GatewayCode.INVALID_ARGUMENT)
        assert bad.value.metadata == {"field": "update_mask"}
        assert grpc_status(bad.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_update_role_never_renames() -> None:
    role = pb.Role(id=2, name="ops", description="d", permissions=["state:data:read"])
    _, op, body = im.update_role_req(pb.UpdateRoleRequest(role=role))
    assert op == "update"
    assert body == {"role_id": 2, "description": "d", "permissions": ["state:data:read"]}
    _, _, body = im.update_role_req(
        pb.UpdateRoleRequest(role=pb.Role(id=2), update_mask=FieldMask(paths=["permissions"]))
    )
    assert body == {"role_id": 2, "permissions": []}  # an explicit mask may clear the list
    with pytest.raises(RpcFailure) as rename:
        im.update_role_req(pb.UpdateRoleRequest(role=role, update_mask=FieldMask(paths=["name"])))
    assert grpc_status(rename.value)[0] == grpc.StatusCode.UNIMPLEMENTED
    assert "rename" in rename.value.message


def test_update_organization() -> None:
    org = pb.Organization(id=5, name="Plant 2", slug="ignored", description="")
    _, op, body = im.update_org_req(pb.UpdateOrganizationRequest(organization=org))
    assert (op, body) == ("update", {"org_id": 5, "name": "Plant 2"})
    with pytest.raises(RpcFailure):
        im.update_org_req(
            pb.UpdateOrganizationRequest(organization=org, update_mask=FieldMask(paths=["slug"]))
        )


def test_pages_are_offsets_capped_at_identitys_maximum() -> None:
    assert im.list_users_req(pb.ListUsersRequest()) == ("user", "list", {})
    assert im.list_roles_req(pb.ListRolesRequest(page_size=500, page_token="100"))[2] == {
        "limit": 100,
        "offset": 100,
    }
    assert im.list_orgs_req(pb.ListOrganizationsRequest(page_size=7))[2] == {"limit": 7}
    bad_tokens = [(pb.ListUsersRequest(page_token=t), "page_token") for t in ("x", "-1", "9" * 12)]
    for bad, field in [(pb.ListUsersRequest(page_size=-1), "page_size"), *bad_tokens]:
        with pytest.raises(RpcFailure) as caught:
            im.list_users_req(bad)
        assert caught.value.metadata == {"field": field}
        assert grpc_status(caught.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_roles_and_permissions() -> None:
    assert im.create_role_req(pb.CreateRoleRequest(role=pb.Role(name="ops"))) == (
        "role",
        "create",
        {"name": "ops", "description": "", "permissions": []},  # scope: identity's default
    )
    _, _, body = im.create_role_req(
        pb.CreateRoleRequest(role=pb.Role(name="g", scope="global", permissions=["a:b"]))
    )
    assert body["scope"] == "global" and body["permissions"] == ["a:b"]
    assert im.get_role_req(pb.GetRoleRequest(role_id=3))[2] == {"role_id": 3}
    assert im.delete_role_req(pb.DeleteRoleRequest(role_id=3))[:2] == ("role", "delete")
    assert im.check_permission_req(pb.CheckPermissionRequest(permission="p:q")) == (
        "role",
        "check_permission",
        {"permission": "p:q"},
    )
    _, _, body = im.check_permission_req(
        pb.CheckPermissionRequest(permission="p:q", scope="plant1", user_id=0)
    )
    assert body == {"permission": "p:q", "scope": "plant1", "user_id": 0}


def test_assignments_carry_org_only_when_set() -> None:
    _, op, body = im.assign_role_req(pb.AssignRoleRequest(user_id=4, role_id=2))
    assert (op, body) == ("assign_role", {"user_id": 4, "role_id": 2})
    _, op, body = im.unassign_role_req(pb.UnassignRoleRequest(user_id=4, role_id=2, org_id=9))
    assert (op, body) == ("unassign_role", {"user_id": 4, "role_id": 2, "org_id": 9})
    assert im.activate_req(pb.ActivateUserRequest(user_id=4)) == (
        "user",
        "activate",
        {"user_id": 4},
    )
    assert im.deactivate_req(pb.DeactivateUserRequest(user_id=4))[1] == "deactivate"
    follow = im.METHODS["AssignRole"].follow_up(
        pb.AssignRoleRequest(user_id=4, role_id=2), request_id="r", source="10.0.0.1"
    )
    assert follow == (
        "user",
        "get",
        {"user_id": 4, "header": {"request_id": "r"}, "ip_address": "10.0.0.1"},
    )
    assert im.METHODS["GetUser"].follow_up(pb.GetUserRequest(user_id=4)) is None


def test_organizations() -> None:
    assert im.create_org_req(
        pb.CreateOrganizationRequest(organization=pb.Organization(name="P"))
    ) == (
        "organization",
        "create",
        {"name": "P", "description": ""},  # slug: made from the name by identity
    )
    assert im.get_org_req(pb.GetOrganizationRequest(org_id=5))[2] == {"org_id": 5}
    assert im.delete_org_req(pb.DeleteOrganizationRequest(org_id=5))[:2] == (
        "organization",
        "delete",
    )


KEY = "rq:cvTdl?f+s#2k-N8Ztu3pWwtJb/<c>$yEaJ6UH"  # 40 characters of Z85


def test_enroll_by_admin_sends_the_grant_and_by_join_token_only_the_key() -> None:
    module = pb.Module(
        name="plc1",
        kind="device",
        public_key=KEY,
        services=["line1.plc"],
        publish={"event": pb.TopicPrefixes(prefixes=["line1."])},
        permissions=["state:data:write:line1"],
    )
    assert im.enroll_req(pb.EnrollModuleRequest(module=module)) == (
        "modules",
        "enroll",
        {
            "name": "plc1",
            "kind": "device",
            "services": ["line1.plc"],
            "publish": {"event": ["line1."]},
            "permissions": ["state:data:write:line1"],
            "public_key": KEY,
        },
    )
    assert im.enroll_req(pb.EnrollModuleRequest(module=module, join_token="pld_jt_x"))[2] == {
        "join_token": "pld_jt_x",
        "public_key": KEY,
        "name": "plc1",
    }
    _, _, body = im.enroll_req(pb.EnrollModuleRequest(module=pb.Module(name="m", public_key=KEY)))
    assert "kind" not in body  # identity's default: module


def test_join_token_and_module_reads() -> None:
    grant = pb.Module(name="plc2", public_key=KEY)  # the key is the device's, later
    assert im.join_token_req(pb.CreateJoinTokenRequest(grant=grant, ttl_seconds=120)) == (
        "modules",
        "join-token",
        {"name": "plc2", "services": [], "publish": {}, "permissions": [], "ttl_s": 120},
    )
    assert "ttl_s" not in im.join_token_req(pb.CreateJoinTokenRequest(grant=grant))[2]
    assert im.get_module_req(pb.GetModuleRequest(name="plc2")) == (
        "modules",
        "get",
        {"name": "plc2"},
    )
    assert im.revoke_module_req(pb.RevokeModuleRequest(name="plc2"))[1] == "revoke"
    assert im.list_modules_req(pb.ListModulesRequest(page_size=5)) == ("modules", "list", {})
    with pytest.raises(RpcFailure):
        im.list_modules_req(pb.ListModulesRequest(page_size=-5))


# ---- converters (from identity's own wire records) -------------------------------------------


def records() -> tuple[User, Role, Organization]:
    role = Role(3, "ops", "operators", ["state:data:read", "user:read"], "global", T0, T0 + 1)
    org = Organization(5, "Plant 2", "plant-2", "the second", True, T0, T0 + 2)
    user = User(
        id=7,
        username="ann",
        email="ann@x.example",
        first_name="Ann",
        last_name="Lee",
        is_active=True,
        email_verified=True,
        kind="user",
        must_change_password=True,
        totp_enabled=True,
        created_at=T0,
        updated_at=T0 + 3,
        last_login_at=T0 + 4,
    )
    return user, role, org


def test_user_role_org_from_identitys_wire_records() -> None:
    user, role, org = records()
    got = im.user_pb(user_json(user, [role], [org]))
    assert (got.id, got.username, got.email, got.first_name, got.last_name, got.kind) == (
        7,
        "ann",
        "ann@x.example",
        "Ann",
        "Lee",
        "user",
    )
    assert got.is_active and got.email_verified and got.must_change_password and got.totp_enabled
    assert got.create_time == ts(T0) and got.update_time == ts(T0 + 3)
    assert got.last_login_time == ts(T0 + 4)
    assert [r.name for r in got.roles] == ["ops"]
    assert list(got.roles[0].permissions) == ["state:data:read", "user:read"]
    assert got.roles[0].scope == "global" and got.roles[0].update_time == ts(T0 + 1)
    assert (got.organizations[0].slug, got.organizations[0].update_time) == ("plant-2", ts(T0 + 2))
    never = im.user_pb(user_json(User(id=8, username="bob", email="b@x.example")))
    assert not never.HasField("last_login_time")  # null in the reply: unset
    assert im.role_pb(role_json(role)).description == "operators"
    assert im.org_pb(org_json(org)).is_active
    # The original's shape alone (no permission_list): a JSON array in a string.
    assert list(im.role_pb({"permissions": '["a:b"]'}).permissions) == ["a:b"]


def test_times_convert_exactly() -> None:
    assert im.stamp_rfc3339("2024-05-01T10:11:12.345678Z") == Timestamp(
        seconds=1714558272, nanos=345678000
    )
    assert im.stamp_rfc3339("2024-05-01T10:11:12Z") == Timestamp(seconds=1714558272)
    assert im.stamp_rfc3339(None) is None and im.stamp_rfc3339("yesterday") is None
    assert im.stamp_unix(1_700_000_900) == Timestamp(seconds=1_700_000_900)
    assert im.stamp_unix(5.9999999999) == Timestamp(seconds=6)
    assert im.stamp_unix(T0) == Timestamp(seconds=1_700_000_000, nanos=250_000_000)
    assert im.stamp_unix(True) is None and im.stamp_unix("1") is None


def test_login_refresh_validate_jwks_replies(jwt_dir: Path) -> None:
    from plantd.identity.keys import KeyRing

    user, role, org = records()
    login = im.login_resp(
        pb.LoginRequest(),
        {
            "user": user_json(user, [role], [org]),
            "access_token": "jwt",
            "expires_at": 1_700_000_900,
            "token_type": "Bearer",
            "jti": "j",
            "refresh_token": "pld_rt_x",
            "password_change_required": True,
        },
    )
    assert (login.access_token, login.refresh_token, login.token_type) == (
        "jwt",
        "pld_rt_x",
        "Bearer",
    )
    assert login.expire_time == Timestamp(seconds=1_700_000_900)
    assert login.user.username == "ann" and login.user.must_change_password
    refresh = im.refresh_resp(
        pb.RefreshTokenRequest(),
        {"access_token": "a2", "refresh_token": "r2", "expires_at": 5, "token_type": "Bearer"},
    )
    assert (refresh.access_token, refresh.refresh_token, refresh.expire_time.seconds) == (
        "a2",
        "r2",
        5,
    )
    valid = im.validate_resp(
        pb.ValidateTokenRequest(),
        {
            "valid": True,
            "user_id": 7,
            "email": "ann@x.example",
            "roles": ["ops"],
            "permissions": ["a:b"],
            "expires_at": 99,
        },
    )
    assert valid.valid and valid.user_id == 7 and list(valid.roles) == ["ops"]
    assert valid.expire_time.seconds == 99 and not valid.reason
    invalid = im.validate_resp(
        pb.ValidateTokenRequest(), {"valid": False, "reason": "TOKEN_EXPIRED"}
    )
    assert (invalid.valid, invalid.reason) == (False, "TOKEN_EXPIRED")
    # A break-glass subject is not a user id: 0, not a crash.
    assert (
        im.validate_resp(pb.ValidateTokenRequest(), {"valid": True, "user_id": "bg"}).user_id == 0
    )
    jwks = KeyRing.from_dir(jwt_dir).jwks()
    got = im.jwks_resp(pb.GetJwksRequest(), jwks)
    assert [k.kid for k in got.keys] == [k["kid"] for k in jwks["keys"]]
    assert (got.keys[0].kty, got.keys[0].crv, got.keys[0].alg, got.keys[0].use) == (
        "EC",
        "P-256",
        "ES256",
        "sig",
    )
    assert got.keys[0].x and got.keys[0].y


def test_single_record_replies_pick_their_response_type() -> None:
    user, role, org = records()
    for req in (pb.CreateUserRequest(), pb.GetUserRequest(), pb.UpdateUserRequest()):
        got = im.METHODS[type(req).__name__[: -len("Request")]].convert(
            req, {"user": user_json(user)}
        )
        assert type(got).__name__ == type(req).__name__.replace("Request", "Response")
        assert got.user.id == 7  # type: ignore[attr-defined]
    got_role = im.role_resp(pb.GetRoleRequest(), {"role": role_json(role)})
    assert isinstance(got_role, pb.GetRoleResponse) and got_role.role.id == 3
    got_org = im.org_resp(pb.UpdateOrganizationRequest(), {"organization": org_json(org)})
    assert isinstance(got_org, pb.UpdateOrganizationResponse) and got_org.organization.id == 5
    assert im.check_permission_resp(pb.CheckPermissionRequest(), {"allowed": True}).allowed
    assert not im.check_permission_resp(pb.CheckPermissionRequest(), {"allowed": "yes"}).allowed


def test_changed_user_from_the_follow_up_or_as_far_as_the_request_says() -> None:
    user, role, _ = records()
    full = im.changed_user_resp(
        pb.AssignRoleRequest(user_id=7, role_id=3), {"user": user_json(user, [role])}
    )
    assert isinstance(full, pb.AssignRoleResponse) and [r.id for r in full.user.roles] == [3]
    thin = im.changed_user_resp(pb.DeactivateUserRequest(user_id=7), {})
    assert isinstance(thin, pb.DeactivateUserResponse)
    assert (thin.user.id, thin.user.is_active) == (7, False)
    thin = im.changed_user_resp(pb.ActivateUserRequest(user_id=7), {})
    assert (thin.user.id, thin.user.is_active) == (7, True)
    thin = im.changed_user_resp(pb.UnassignRoleRequest(user_id=7), {"changed": True})
    assert isinstance(thin, pb.UnassignRoleResponse) and thin.user.id == 7


def test_list_pages_give_offsets_as_tokens_and_the_total() -> None:
    users = [user_json(User(id=i, username=f"u{i}", email=f"u{i}@x.example")) for i in (1, 2)]
    first = im.list_users_resp(pb.ListUsersRequest(page_size=2), {"users": users, "total": 5})
    assert [u.id for u in first.users] == [1, 2]
    assert (first.next_page_token, first.total_size) == ("2", 5)
    last = im.list_users_resp(
        pb.ListUsersRequest(page_size=2, page_token="4"), {"users": users[:1], "total": 5}
    )
    assert (last.next_page_token, last.total_size) == ("", 5)
    _, role, org = records()
    roles = im.list_roles_resp(pb.ListRolesRequest(), {"roles": [role_json(role)], "total": 1})
    assert [r.name for r in roles.roles] == ["ops"] and roles.next_page_token == ""
    orgs = im.list_orgs_resp(
        pb.ListOrganizationsRequest(page_size=1), {"organizations": [org_json(org)], "total": 3}
    )
    assert orgs.next_page_token == "1" and orgs.total_size == 3
    empty = im.list_orgs_resp(pb.ListOrganizationsRequest(), {"organizations": [], "total": 3})
    assert empty.next_page_token == ""  # past the end: no token that loops


def module(name: str) -> Module:
    return Module(
        name=name,
        kind="device",
        public_key=KEY,
        services=("line1.plc",),
        publish={"event": ("line1.",), "metric": ("m.",)},
        permissions=("state:data:read:line1",),
        enrolled_at=T0,
        enrolled_by="7",
    )


def test_modules_from_identitys_records_and_pages_by_name() -> None:
    got = im.module_resp(pb.GetModuleRequest(), {"module": module("plc1").doc()})
    assert isinstance(got, pb.GetModuleResponse)
    m = got.module
    assert (m.name, m.kind, m.public_key, m.enrolled_by) == ("plc1", "device", KEY, "7")
    assert list(m.services) == ["line1.plc"] and list(m.permissions) == ["state:data:read:line1"]
    assert {bus: list(p.prefixes) for bus, p in m.publish.items()} == {
        "event": ["line1."],
        "metric": ["m."],
    }
    assert m.enroll_time == ts(T0)
    enrolled = im.module_resp(pb.EnrollModuleRequest(), {"module": module("plc1").doc()})
    assert isinstance(enrolled, pb.EnrollModuleResponse)
    docs = [module(n).doc() for n in ("c", "a", "d", "b")]
    first = im.list_modules_resp(pb.ListModulesRequest(page_size=2), {"modules": docs})
    assert [x.name for x in first.modules] == ["a", "b"] and first.next_page_token == "b"
    rest = im.list_modules_resp(
        pb.ListModulesRequest(page_size=2, page_token="b"), {"modules": docs}
    )
    assert [x.name for x in rest.modules] == ["c", "d"] and rest.next_page_token == ""
    token = im.join_token_resp(
        pb.CreateJoinTokenRequest(),
        {"join_token": "pld_jt_x", "expires_at": 1_700_003_600, "name": "plc2"},
    )
    assert (token.join_token, token.name, token.expire_time.seconds) == (
        "pld_jt_x",
        "plc2",
        1_700_003_600,
    )


# ---- the servicer, with a fake bus ------------------------------------------------------------


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailer: Sequence[Any]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailer = code, details, tuple(trailer)


class FakeContext:
    def __init__(self, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._metadata = grpc.aio.Metadata(*metadata)
        self.trailers: Sequence[tuple[str, str | bytes]] = ()

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return "ipv4:10.1.2.3:5555"

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        raise Aborted(code, details, trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailers = trailing_metadata


def reason_of(err: Aborted) -> str:
    raw = dict(err.trailer)["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    detail = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert detail.details[0].Unpack(info)
    return str(info.reason)


class FakeBus:
    """Answers each request with the next scripted reply; records what was sent."""

    def __init__(self, *replies: list[bytes] | Exception) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, list[str], dict[str, Any]]] = []

    async def request(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the interface's
        idempotent: bool = False,
    ) -> list[bytes]:
        *frames, payload = (b.decode() if isinstance(b, bytes) else b for b in body)
        self.sent.append((str(service), frames, json.loads(payload)))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class Limiter:
    def __init__(self) -> None:
        self.routes: list[RouteClass] = []

    async def check(self, subject: str | None, source: str, route: RouteClass) -> Decision:
        self.routes.append(route)
        return Decision(True)


@pytest.fixture(scope="module")
def minted(jwt_dir: Path) -> tuple[Verifier, dict[str, str]]:
    from plantd.identity.keys import KeyRing
    from plantd.identity.tokens import Issuer

    ring = KeyRing.from_dir(jwt_dir)
    issuer = Issuer(ring, issuer="plantd-identity", access_ttl_s=600)

    def token(audience: str) -> str:
        return issuer.access(
            subject="7", audience=[audience], now=time.time(), claims={"permissions": []}
        ).token

    verifier = Verifier(
        issuer="plantd-identity", audience=list(contract.TOKEN_AUDIENCES), jwks=ring.jwks()
    )
    return verifier, {
        "identity": token(contract.SERVICE_IDENTITY),
        "state": token(contract.SERVICE_STATE),
    }


def servicer(
    bus: FakeBus, verifier: Verifier | None = None, limiter: Limiter | None = None
) -> IdentityServicer:
    gate = CallGate(
        Authenticator(verifier),
        RpcMetrics(CollectorRegistry()),
        default_timeout_s=1.0,
        max_timeout_s=2.0,
        limiter=limiter,
    )
    return IdentityServicer(bus, gate)  # type: ignore[arg-type]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), ("x-request-id", "req-9"))


async def test_admin_call_carries_the_callers_token_to_identity() -> None:
    user, _, _ = records()
    bus = FakeBus(ok({"user": user_json(user)}))
    limiter = Limiter()
    got = await servicer(bus, limiter=limiter).GetUser(
        pb.GetUserRequest(user_id=7),
        FakeContext(bearer("tok")),  # type: ignore[arg-type]
    )
    assert got.user.username == "ann"
    service, frames, body = bus.sent[0]
    assert (service, frames) == (contract.SERVICE_IDENTITY, ["user", "get"])
    assert body == {
        "user_id": 7,
        "header": {"request_id": "req-9"},
        "ip_address": "10.1.2.3",
        "token": "tok",
        "request_id": "req-9",
    }
    assert limiter.routes == [RouteClass.READ]


async def test_validate_checks_the_requests_token_not_the_callers() -> None:
    bus = FakeBus(ok({"valid": False, "reason": "TOKEN_EXPIRED"}))
    limiter = Limiter()
    got = await servicer(bus, limiter=limiter).ValidateToken(
        pb.ValidateTokenRequest(token="the-one-to-check"),
        FakeContext(bearer("callers")),  # type: ignore[arg-type]
    )
    assert (got.valid, got.reason) == (False, "TOKEN_EXPIRED")
    assert bus.sent[0][2]["token"] == "the-one-to-check"
    login = FakeBus(ok({"access_token": "a", "refresh_token": "r", "expires_at": 1}))
    await servicer(login, limiter=limiter).Login(
        pb.LoginRequest(identifier="ann", password="pw"),
        FakeContext(),  # type: ignore[arg-type]
    )
    assert "token" not in login.sent[0][2] and login.sent[0][1] == ["auth", "login"]
    assert limiter.routes == [RouteClass.READ, RouteClass.LOGIN]


async def test_with_auth_on_an_admin_call_without_a_token_never_reaches_identity(
    minted: tuple[Verifier, dict[str, str]],
) -> None:
    verifier, tokens = minted
    bus = FakeBus()
    for metadata in ((), bearer(tokens["state"])):  # none, and one for another audience
        with pytest.raises(Aborted) as refused_:
            await servicer(bus, verifier).ListUsers(
                pb.ListUsersRequest(),
                FakeContext(metadata),  # type: ignore[arg-type]
            )
        assert refused_.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert bus.sent == []
    # Login needs none.
    login = FakeBus(ok({"access_token": "a"}))
    got = await servicer(login, verifier).Login(
        pb.LoginRequest(identifier="a", password="p"),
        FakeContext(),  # type: ignore[arg-type]
    )
    assert got.access_token == "a"


async def test_change_password_without_identifier_is_the_verified_callers(
    minted: tuple[Verifier, dict[str, str]],
) -> None:
    verifier, tokens = minted
    bus = FakeBus(ok({"not_before": 1.0}))
    await servicer(bus, verifier).ChangePassword(
        pb.ChangePasswordRequest(current_password="old", new_password="new"),
        FakeContext(bearer(tokens["identity"])),  # type: ignore[arg-type]
    )
    body = bus.sent[0][2]
    assert body["user_id"] == "7" and "token" not in body


async def test_identity_refusal_reaches_the_client_with_its_reason() -> None:
    bus = FakeBus(refused(Code.LOGIN_FAILED, "invalid credentials", retry_after=1.5))
    with pytest.raises(Aborted) as caught:
        await servicer(bus).Login(
            pb.LoginRequest(identifier="ann", password="bad"),
            FakeContext(),  # type: ignore[arg-type]
        )
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details == "invalid credentials"
    assert reason_of(caught.value) == "LOGIN_FAILED"
    timeout = FakeBus(RequestTimeout(contract.SERVICE_IDENTITY, 1.0, 1))
    with pytest.raises(Aborted) as late:
        await servicer(timeout).GetJwks(pb.GetJwksRequest(), FakeContext())  # type: ignore[arg-type]
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_change_answers_with_the_user_read_after_it() -> None:
    user, _, _ = records()
    bus = FakeBus(ok({}), ok({"user": user_json(user)}))
    got = await servicer(bus).ActivateUser(
        pb.ActivateUserRequest(user_id=7),
        FakeContext(bearer("tok")),  # type: ignore[arg-type]
    )
    assert got.user.username == "ann"
    assert [s[1] for s in bus.sent] == [["user", "activate"], ["user", "get"]]
    assert all(s[2]["token"] == "tok" for s in bus.sent)
    # The read refused (no user:read): the change stands, the answer is thinner.
    bus = FakeBus(ok({"changed": True}), refused(Code.PERMISSION_DENIED))
    got2 = await servicer(bus).AssignRole(
        pb.AssignRoleRequest(user_id=7, role_id=3),
        FakeContext(bearer("tok")),  # type: ignore[arg-type]
    )
    assert got2.user.id == 7 and not got2.user.username
    # The change refused: no read, the refusal.
    bus = FakeBus(refused(Code.NOT_FOUND, "user not found"))
    with pytest.raises(Aborted) as caught:
        await servicer(bus).DeactivateUser(
            pb.DeactivateUserRequest(user_id=70),
            FakeContext(bearer("tok")),  # type: ignore[arg-type]
        )
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and len(bus.sent) == 1


async def test_a_bad_mask_is_refused_before_the_bus() -> None:
    bus = FakeBus()
    with pytest.raises(Aborted) as caught:
        await servicer(bus).UpdateUser(
            pb.UpdateUserRequest(user=pb.User(id=7), update_mask=FieldMask(paths=["kind"])),
            FakeContext(bearer("tok")),  # type: ignore[arg-type]
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == GatewayCode.INVALID_ARGUMENT and bus.sent == []


# ---- the identity health name -------------------------------------------------------------------


class FakeHealth:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def set(self, name: str, status: Any) -> None:
        self.status[name] = status

    async def enter_graceful_shutdown(self) -> None:
        self.status = dict.fromkeys(self.status, NOT_SERVING)


class MmiBus:
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def mmi(self, name: str, *args: bytes | str, timeout: float | None = None) -> list[bytes]:  # noqa: ASYNC109
        self.asked.append(str(args[0]))
        return [*(a.encode() if isinstance(a, str) else a for a in args), self.answer]


async def test_identity_health_follows_the_identity_worker_and_owns_nothing_else() -> None:
    health = FakeHealth()
    bus = MmiBus(b"200")
    probe = BackendHealth(health, bus, (SERVICE_NAME,), interval_s=0.01)  # type: ignore[arg-type]
    await probe.start()
    assert health.status == {SERVICE_NAME: NOT_SERVING}  # not readiness, not liveness
    assert await probe.probe() is True and bus.asked == [contract.SERVICE_IDENTITY]
    task = asyncio.create_task(probe.run())
    try:
        await wait_status(health, SERVING)
        bus.answer = b"404"  # the worker is gone
        await wait_status(health, NOT_SERVING)
    finally:
        task.cancel()
    assert set(health.status) == {SERVICE_NAME}


async def wait_status(health: FakeHealth, status: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while health.status.get(SERVICE_NAME) != status:
        assert time.monotonic() < deadline, f"{SERVICE_NAME} never became {status}"
        await asyncio.sleep(0.005)
