"""plantd.v1.IdentityService messages <-> org.plantd.Identity operations. Pure: no sockets.

Each RPC has a request builder (message -> ``(category, operation, JSON body)``: identity's
frames ``[category, operation, json]``, docs/identity.md "Operations"; the body without the
caller's ``token``, which the servicer adds) and a reply converter (the envelope's ``data`` ->
response message, built field by field: no ``json_format`` on this path). Validation is
identity's (one authority): a builder only translates, so a bad field comes back as identity's
``INVALID_REQUEST`` with identity's message. What the gateway checks itself is what only it can
see: update masks and page tokens (``INVALID_ARGUMENT`` from the gateway). Envelopes are
unwrapped by :func:`envelope_data`, which raises :class:`RpcFailure` with identity's stable
``code``; no message text is ever matched.

Where identity's reply holds less than the response message (``user/activate``,
``assign_role``, ... answer ``{}`` or ``{"changed": ...}`` while the RPC returns the user), the
method names a follow-up read (:attr:`Method.then`); see the servicer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from plantd.api.errors import GatewayCode, Origin
from plantd.gateway.calls import RouteClass
from plantd.gateway.errors import RETRY_AFTER_KEY
from plantd.gateway.state_map import Json, RpcFailure
from plantd.v1 import identity_pb2 as pb

Call = tuple[str, str, Json]  # (category, operation, body)

MAX_SOURCE_CHARS: Final = 64  # identity's limit on ``ip_address``
MAX_PAGE: Final = 100  # identity's ``limit`` on users, roles and organizations
MAX_MODULES_PAGE: Final = 1000
MAX_OFFSET: Final = 10**9  # identity's ``offset`` bound


# ---- envelopes ---------------------------------------------------------------------------------


def envelope_data(frames: Sequence[bytes]) -> Json:
    """The ``data`` of an identity success envelope; :class:`RpcFailure` for anything else.

    A refusal keeps identity's code and message; ``detail.retry_after`` (login backoff, rate
    limits) becomes ``retry_after_s`` in whole seconds, at least 1 (RetryInfo, HTTP
    Retry-After)."""
    if len(frames) != 1:
        raise RpcFailure(
            Origin.GATEWAY, GatewayCode.BAD_REPLY, f"identity sent {len(frames)} frames, not one"
        )
    try:
        doc = json.loads(frames[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcFailure(
            Origin.GATEWAY, GatewayCode.BAD_REPLY, f"identity's reply is not JSON: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise RpcFailure(Origin.GATEWAY, GatewayCode.BAD_REPLY, "identity's reply is not an object")
    if doc.get("success") is True:
        data = doc.get("data")
        return data if isinstance(data, dict) else {}
    code = doc.get("code")
    message = str(doc.get("error") or "the identity service refused the request")
    if not isinstance(code, str) or not code:
        code = "ERROR"  # no code: UNKNOWN (the table's fallback), identity's text as the message
    meta: dict[str, str] = {}
    detail = doc.get("detail")
    retry = detail.get("retry_after") if isinstance(detail, dict) else None
    if isinstance(retry, int | float) and not isinstance(retry, bool) and math.isfinite(retry):
        meta[RETRY_AFTER_KEY] = str(max(1, math.ceil(retry)))
    raise RpcFailure(Origin.IDENTITY, code, message, meta)


# ---- small conversions ------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def stamp_rfc3339(value: Any) -> Timestamp | None:
    """identity's record times (RFC 3339 strings, ``Z``) -> Timestamp; None when null or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def stamp_unix(value: Any) -> Timestamp | None:
    """Unix seconds (``expires_at``, ``enrolled_at``; int or float) -> Timestamp."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return Timestamp(seconds=value)
    if not math.isfinite(value):
        return None
    seconds = math.floor(value)
    nanos = round((value - seconds) * 1e9)  # the fraction alone: exact to the nanosecond
    if nanos >= 10**9:
        seconds, nanos = seconds + 1, 0
    return Timestamp(seconds=int(seconds), nanos=nanos)


def _uint(value: Any) -> int:
    """An id from the reply: a non-negative integer, or its decimal string; 0 otherwise."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 <= value < 2**64 else 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _dicts(value: Any) -> Iterable[Mapping[str, Any]]:
    return (v for v in value if isinstance(v, dict)) if isinstance(value, list) else ()


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def role_pb(d: Mapping[str, Any]) -> pb.Role:
    perms = d.get("permission_list")
    if perms is None:  # the original's shape only: a JSON array in a string
        raw = d.get("permissions")
        try:
            perms = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            perms = []
    return pb.Role(
        id=_uint(d.get("id")),
        name=_str(d.get("name")),
        description=_str(d.get("description")),
        permissions=_strs(perms),
        scope=_str(d.get("scope")),
        create_time=stamp_rfc3339(d.get("created_at")),
        update_time=stamp_rfc3339(d.get("updated_at")),
    )


def org_pb(d: Mapping[str, Any]) -> pb.Organization:
    return pb.Organization(
        id=_uint(d.get("id")),
        name=_str(d.get("name")),
        slug=_str(d.get("slug")),
        description=_str(d.get("description")),
        is_active=d.get("is_active") is True,
        create_time=stamp_rfc3339(d.get("created_at")),
        update_time=stamp_rfc3339(d.get("updated_at")),
    )


def user_pb(d: Mapping[str, Any]) -> pb.User:
    return pb.User(
        id=_uint(d.get("id")),
        email=_str(d.get("email")),
        username=_str(d.get("username")),
        first_name=_str(d.get("first_name")),
        last_name=_str(d.get("last_name")),
        is_active=d.get("is_active") is True,
        email_verified=d.get("email_verified") is True,
        last_login_time=stamp_rfc3339(d.get("last_login_at")),
        create_time=stamp_rfc3339(d.get("created_at")),
        update_time=stamp_rfc3339(d.get("updated_at")),
        roles=[role_pb(r) for r in _dicts(d.get("roles"))],
        organizations=[org_pb(o) for o in _dicts(d.get("organizations"))],
        kind=_str(d.get("kind")),
        must_change_password=d.get("must_change_password") is True,
        totp_enabled=d.get("totp_enabled") is True,
    )


def module_pb(d: Mapping[str, Any]) -> pb.Module:
    publish = {
        str(bus): pb.TopicPrefixes(prefixes=_strs(prefixes))
        for bus, prefixes in _obj(d.get("publish")).items()
    }
    return pb.Module(
        name=_str(d.get("name")),
        kind=_str(d.get("kind")),
        public_key=_str(d.get("public_key")),
        services=_strs(d.get("services")),
        publish=publish,
        permissions=_strs(d.get("permissions")),
        enroll_time=stamp_unix(d.get("enrolled_at")),
        enrolled_by=_str(d.get("enrolled_by")),
    )


def jwk_pb(d: Mapping[str, Any]) -> pb.Jwk:
    return pb.Jwk(
        kty=_str(d.get("kty")),
        crv=_str(d.get("crv")),
        x=_str(d.get("x")),
        y=_str(d.get("y")),
        kid=_str(d.get("kid")),
        alg=_str(d.get("alg")),
        use=_str(d.get("use")),
    )


def invalid(field: str, message: str) -> RpcFailure:
    """A field only the gateway reads (masks, page tokens) is unusable: INVALID_ARGUMENT."""
    return RpcFailure(Origin.GATEWAY, GatewayCode.INVALID_ARGUMENT, message, {"field": field})


def masked(
    mask: FieldMask, values: Mapping[str, Any], *, what: str, keep: Callable[[Any], bool] = bool
) -> Json:
    """The fields an Update* writes: the mask's paths (relative to the resource: ``email``),
    or, with an empty mask, every field of ``values`` that is set (``keep``)."""
    if not mask.paths:
        return {k: v for k, v in values.items() if keep(v)}
    out: Json = {}
    for path in mask.paths:
        if path not in values:
            raise invalid(
                "update_mask",
                f"update_mask path {path!r} is not a field {what} can change; "
                f"one of {', '.join(values)}",
            )
        out[path] = values[path]
    return out


def page(size: int, token: str, maximum: int = MAX_PAGE) -> Json:
    """``page_size``/``page_token`` -> identity's ``limit``/``offset``: the token is the offset
    of the next page, as a decimal; a size over ``maximum`` is that maximum (AIP-158)."""
    if size < 0:
        raise invalid("page_size", "page_size must not be negative")
    body: Json = {}
    if size:
        body["limit"] = min(size, maximum)
    if token:
        if not (token.isascii() and token.isdigit() and int(token) <= MAX_OFFSET):
            raise invalid("page_token", "page_token is not one this API returned")
        body["offset"] = int(token)
    return body


def next_token(r: Any, d: Json, items: int) -> tuple[str, int]:
    """(next_page_token, total_size) of an offset page with ``items`` items."""
    total = d.get("total")
    total = total if isinstance(total, int) and not isinstance(total, bool) else 0
    offset = int(r.page_token) if r.page_token else 0
    end = offset + items
    return (str(end) if items and end < total else ""), min(total, 2**31 - 1)


def _id(value: int) -> int | None:
    """An id field to send, or None for 0 (unset: identity says it is required)."""
    return value or None


def _clean(**fields: Any) -> Json:
    return {k: v for k, v in fields.items() if v is not None}


# ---- auth ----------------------------------------------------------------------------------------


def login_req(r: pb.LoginRequest) -> Call:
    return (
        "auth",
        "login",
        _clean(
            identifier=r.identifier,
            password=r.password,
            audience=list(r.audiences) or None,
            totp=r.totp or None,
        ),
    )


def login_resp(r: pb.LoginRequest, d: Json) -> pb.LoginResponse:
    return pb.LoginResponse(
        access_token=_str(d.get("access_token")),
        refresh_token=_str(d.get("refresh_token")),
        expire_time=stamp_unix(d.get("expires_at")),
        token_type=_str(d.get("token_type")) or "Bearer",
        user=user_pb(_obj(d.get("user"))),
    )


def refresh_req(r: pb.RefreshTokenRequest) -> Call:
    return "auth", "refresh", {"refresh_token": r.refresh_token}


def refresh_resp(r: pb.RefreshTokenRequest, d: Json) -> pb.RefreshTokenResponse:
    return pb.RefreshTokenResponse(
        access_token=_str(d.get("access_token")),
        refresh_token=_str(d.get("refresh_token")),
        expire_time=stamp_unix(d.get("expires_at")),
        token_type=_str(d.get("token_type")) or "Bearer",
    )


def logout_req(r: pb.LogoutRequest) -> Call:
    # Empty: identity reads the caller's own token (the body's ``token``, from the metadata).
    return "auth", "logout", _clean(access_token=r.access_token or None)


def logout_resp(r: pb.LogoutRequest, d: Json) -> pb.LogoutResponse:
    return pb.LogoutResponse()


def validate_req(r: pb.ValidateTokenRequest) -> Call:
    return "auth", "validate", {"token": r.token}


def validate_resp(r: pb.ValidateTokenRequest, d: Json) -> pb.ValidateTokenResponse:
    if d.get("valid") is not True:
        return pb.ValidateTokenResponse(valid=False, reason=_str(d.get("reason")))
    return pb.ValidateTokenResponse(
        valid=True,
        user_id=_uint(d.get("user_id")),
        email=_str(d.get("email")),
        roles=_strs(d.get("roles")),
        permissions=_strs(d.get("permissions")),
        expire_time=stamp_unix(d.get("expires_at")),
    )


def change_password_req(r: pb.ChangePasswordRequest) -> Call:
    # No identifier: the servicer names the verified caller (Method.self_field).
    return (
        "auth",
        "change_password",
        _clean(
            identifier=r.identifier or None,
            current_password=r.current_password,
            new_password=r.new_password,
            totp=r.totp or None,
        ),
    )


def change_password_resp(r: pb.ChangePasswordRequest, d: Json) -> pb.ChangePasswordResponse:
    return pb.ChangePasswordResponse()


def jwks_req(r: pb.GetJwksRequest) -> Call:
    return "auth", "jwks", {}


def jwks_resp(r: pb.GetJwksRequest, d: Json) -> pb.GetJwksResponse:
    return pb.GetJwksResponse(keys=[jwk_pb(k) for k in _dicts(d.get("keys"))])


def issue_token_req(r: pb.IssueTokenRequest) -> Call:
    return (
        "auth",
        "token",
        _clean(
            client_id=r.client_id,
            client_secret=r.client_secret,
            audience=list(r.audiences) or None,
        ),
    )


def issue_token_resp(r: pb.IssueTokenRequest, d: Json) -> pb.IssueTokenResponse:
    return pb.IssueTokenResponse(
        access_token=_str(d.get("access_token")),
        expire_time=stamp_unix(d.get("expires_at")),
        token_type=_str(d.get("token_type")) or "Bearer",
    )


# TOTP: identity acts on the token's own user (the forwarded ``token``), never on a named one.


def enroll_totp_req(r: pb.EnrollTotpRequest) -> Call:
    return "auth", "totp_enroll", {}


def enroll_totp_resp(r: pb.EnrollTotpRequest, d: Json) -> pb.EnrollTotpResponse:
    return pb.EnrollTotpResponse(
        secret=_str(d.get("secret")), otpauth_uri=_str(d.get("otpauth_uri"))
    )


def confirm_totp_req(r: pb.ConfirmTotpRequest) -> Call:
    return "auth", "totp_confirm", {"code": r.code}


def confirm_totp_resp(r: pb.ConfirmTotpRequest, d: Json) -> pb.ConfirmTotpResponse:
    return pb.ConfirmTotpResponse(totp_enabled=d.get("totp_enabled") is True)


def disable_totp_req(r: pb.DisableTotpRequest) -> Call:
    return "auth", "totp_disable", {"code": r.code}


def disable_totp_resp(r: pb.DisableTotpRequest, d: Json) -> pb.DisableTotpResponse:
    return pb.DisableTotpResponse()


# ---- users ---------------------------------------------------------------------------------------


def create_user_req(r: pb.CreateUserRequest) -> Call:
    u = r.user
    return (
        "user",
        "create",
        {
            "username": u.username,
            "email": u.email,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "password": r.password,
        },
    )


def user_resp(r: Any, d: Json) -> Any:
    """The response types of the user RPCs all carry ``user`` only."""
    out = _USER_RESPONSES[type(r)]()
    out.user.CopyFrom(user_pb(_obj(d.get("user"))))
    return out


def get_user_req(r: pb.GetUserRequest) -> Call:
    return "user", "get", _clean(user_id=_id(r.user_id))


USER_FIELDS: Final = ("email", "username", "first_name", "last_name")


def update_user_req(r: pb.UpdateUserRequest) -> Call:
    u = r.user
    values = {name: getattr(u, name) for name in USER_FIELDS}
    body = masked(r.update_mask, values, what="UpdateUser")
    return "user", "update", {**_clean(user_id=_id(u.id)), **body}


def delete_user_req(r: pb.DeleteUserRequest) -> Call:
    return "user", "delete", _clean(user_id=_id(r.user_id))


def delete_user_resp(r: pb.DeleteUserRequest, d: Json) -> pb.DeleteUserResponse:
    return pb.DeleteUserResponse()


def list_users_req(r: pb.ListUsersRequest) -> Call:
    return "user", "list", page(r.page_size, r.page_token)


def list_users_resp(r: pb.ListUsersRequest, d: Json) -> pb.ListUsersResponse:
    users = [user_pb(u) for u in _dicts(d.get("users"))]
    token, total = next_token(r, d, len(users))
    return pb.ListUsersResponse(users=users, next_page_token=token, total_size=total)


def activate_req(r: pb.ActivateUserRequest) -> Call:
    return "user", "activate", _clean(user_id=_id(r.user_id))


def deactivate_req(r: pb.DeactivateUserRequest) -> Call:
    return "user", "deactivate", _clean(user_id=_id(r.user_id))


def read_user_then(r: Any) -> Call:
    """The follow-up of a change that answers without the user: read it."""
    return "user", "get", {"user_id": r.user_id}


def changed_user_resp(r: Any, d: Json) -> Any:
    """The user after activate/deactivate/assign/unassign: the follow-up read's ``user``; if
    that read failed (the change itself succeeded), the user as far as the request says."""
    if isinstance(d.get("user"), dict):
        return user_resp(r, d)
    out = _USER_RESPONSES[type(r)]()
    out.user.id = r.user_id
    if isinstance(r, pb.ActivateUserRequest | pb.DeactivateUserRequest):
        out.user.is_active = isinstance(r, pb.ActivateUserRequest)
    return out


def assign_role_req(r: pb.AssignRoleRequest) -> Call:
    return (
        "user",
        "assign_role",
        _clean(
            user_id=_id(r.user_id),
            role_id=_id(r.role_id),
            org_id=r.org_id if r.HasField("org_id") else None,
        ),
    )


def unassign_role_req(r: pb.UnassignRoleRequest) -> Call:
    return (
        "user",
        "unassign_role",
        _clean(
            user_id=_id(r.user_id),
            role_id=_id(r.role_id),
            org_id=r.org_id if r.HasField("org_id") else None,
        ),
    )


def unlock_req(r: pb.UnlockUserRequest) -> Call:
    return "user", "unlock", _clean(user_id=_id(r.user_id))


def unlock_resp(r: pb.UnlockUserRequest, d: Json) -> pb.UnlockUserResponse:
    return pb.UnlockUserResponse()


def assign_org_req(r: pb.AssignOrganizationRequest) -> Call:
    return "user", "assign_organization", _clean(user_id=_id(r.user_id), org_id=_id(r.org_id))


def unassign_org_req(r: pb.UnassignOrganizationRequest) -> Call:
    return "user", "unassign_organization", _clean(user_id=_id(r.user_id), org_id=_id(r.org_id))


_USER_RESPONSES: Final[Mapping[type, type]] = {
    pb.CreateUserRequest: pb.CreateUserResponse,
    pb.GetUserRequest: pb.GetUserResponse,
    pb.UpdateUserRequest: pb.UpdateUserResponse,
    pb.ActivateUserRequest: pb.ActivateUserResponse,
    pb.DeactivateUserRequest: pb.DeactivateUserResponse,
    pb.AssignRoleRequest: pb.AssignRoleResponse,
    pb.UnassignRoleRequest: pb.UnassignRoleResponse,
    pb.AssignOrganizationRequest: pb.AssignOrganizationResponse,
    pb.UnassignOrganizationRequest: pb.UnassignOrganizationResponse,
}


# ---- service accounts ----------------------------------------------------------------------------


def create_sa_req(r: pb.CreateServiceAccountRequest) -> Call:
    return (
        "service_account",
        "create",
        _clean(name=r.name, description=r.description or None, roles=list(r.roles) or None),
    )


def create_sa_resp(r: pb.CreateServiceAccountRequest, d: Json) -> pb.CreateServiceAccountResponse:
    return pb.CreateServiceAccountResponse(
        service_account=user_pb(_obj(d.get("service_account"))),
        client_id=_str(d.get("client_id")),
        client_secret=_str(d.get("client_secret")),
    )


def list_sa_req(r: pb.ListServiceAccountsRequest) -> Call:
    return "service_account", "list", {}


def list_sa_resp(r: pb.ListServiceAccountsRequest, d: Json) -> pb.ListServiceAccountsResponse:
    accounts = [user_pb(u) for u in _dicts(d.get("service_accounts"))]
    return pb.ListServiceAccountsResponse(service_accounts=accounts)


def delete_sa_req(r: pb.DeleteServiceAccountRequest) -> Call:
    return "service_account", "delete", _clean(user_id=_id(r.user_id))


def delete_sa_resp(r: pb.DeleteServiceAccountRequest, d: Json) -> pb.DeleteServiceAccountResponse:
    return pb.DeleteServiceAccountResponse()


# ---- roles ---------------------------------------------------------------------------------------


def create_role_req(r: pb.CreateRoleRequest) -> Call:
    role = r.role
    return (
        "role",
        "create",
        _clean(
            name=role.name,
            description=role.description,
            permissions=list(role.permissions),
            scope=role.scope or None,  # identity's default: organization
        ),
    )


def role_resp(r: Any, d: Json) -> Any:
    out = _ROLE_RESPONSES[type(r)]()
    out.role.CopyFrom(role_pb(_obj(d.get("role"))))
    return out


def get_role_req(r: pb.GetRoleRequest) -> Call:
    return "role", "get", _clean(role_id=_id(r.role_id))


def update_role_req(r: pb.UpdateRoleRequest) -> Call:
    role = r.role
    if "name" in r.update_mask.paths:
        raise RpcFailure(
            Origin.IDENTITY,
            "UNKNOWN_OPERATION",
            "identity cannot rename a role (role/update changes description and permissions): "
            "create a role with the new name, move the assignments, delete the old one",
            {"field": "update_mask"},
        )
    # The name is never written (identity has no rename); with an empty mask it is ignored.
    values = {"description": role.description, "permissions": list(role.permissions)}
    body = masked(r.update_mask, values, what="UpdateRole (no rename)")
    return "role", "update", {**_clean(role_id=_id(role.id)), **body}


def delete_role_req(r: pb.DeleteRoleRequest) -> Call:
    return "role", "delete", _clean(role_id=_id(r.role_id))


def delete_role_resp(r: pb.DeleteRoleRequest, d: Json) -> pb.DeleteRoleResponse:
    return pb.DeleteRoleResponse()


def list_roles_req(r: pb.ListRolesRequest) -> Call:
    return "role", "list", page(r.page_size, r.page_token)


def list_roles_resp(r: pb.ListRolesRequest, d: Json) -> pb.ListRolesResponse:
    roles = [role_pb(x) for x in _dicts(d.get("roles"))]
    token, total = next_token(r, d, len(roles))
    return pb.ListRolesResponse(roles=roles, next_page_token=token, total_size=total)


def check_permission_req(r: pb.CheckPermissionRequest) -> Call:
    return (
        "role",
        "check_permission",
        _clean(
            permission=r.permission,
            scope=r.scope or None,
            user_id=r.user_id if r.HasField("user_id") else None,
        ),
    )


def check_permission_resp(r: pb.CheckPermissionRequest, d: Json) -> pb.CheckPermissionResponse:
    return pb.CheckPermissionResponse(allowed=d.get("allowed") is True)


_ROLE_RESPONSES: Final[Mapping[type, type]] = {
    pb.CreateRoleRequest: pb.CreateRoleResponse,
    pb.GetRoleRequest: pb.GetRoleResponse,
    pb.UpdateRoleRequest: pb.UpdateRoleResponse,
}


# ---- organizations -------------------------------------------------------------------------------


def create_org_req(r: pb.CreateOrganizationRequest) -> Call:
    o = r.organization
    return (
        "organization",
        "create",
        _clean(name=o.name, slug=o.slug or None, description=o.description),
    )


def org_resp(r: Any, d: Json) -> Any:
    out = _ORG_RESPONSES[type(r)]()
    out.organization.CopyFrom(org_pb(_obj(d.get("organization"))))
    return out


def get_org_req(r: pb.GetOrganizationRequest) -> Call:
    return "organization", "get", _clean(org_id=_id(r.org_id))


def update_org_req(r: pb.UpdateOrganizationRequest) -> Call:
    o = r.organization
    values = {"name": o.name, "description": o.description}
    body = masked(r.update_mask, values, what="UpdateOrganization")
    return "organization", "update", {**_clean(org_id=_id(o.id)), **body}


def delete_org_req(r: pb.DeleteOrganizationRequest) -> Call:
    return "organization", "delete", _clean(org_id=_id(r.org_id))


def delete_org_resp(r: pb.DeleteOrganizationRequest, d: Json) -> pb.DeleteOrganizationResponse:
    return pb.DeleteOrganizationResponse()


def list_orgs_req(r: pb.ListOrganizationsRequest) -> Call:
    return "organization", "list", page(r.page_size, r.page_token)


def list_orgs_resp(r: pb.ListOrganizationsRequest, d: Json) -> pb.ListOrganizationsResponse:
    orgs = [org_pb(o) for o in _dicts(d.get("organizations"))]
    token, total = next_token(r, d, len(orgs))
    return pb.ListOrganizationsResponse(organizations=orgs, next_page_token=token, total_size=total)


_ORG_RESPONSES: Final[Mapping[type, type]] = {
    pb.CreateOrganizationRequest: pb.CreateOrganizationResponse,
    pb.GetOrganizationRequest: pb.GetOrganizationResponse,
    pb.UpdateOrganizationRequest: pb.UpdateOrganizationResponse,
}


# ---- machine identities --------------------------------------------------------------------------


def grant_body(m: pb.Module) -> Json:
    """A grant as identity reads it (``enrolment.grant_from``): kind defaults to module."""
    return _clean(
        name=m.name,
        kind=m.kind or None,
        services=list(m.services),
        publish={bus: list(p.prefixes) for bus, p in sorted(m.publish.items())},
        permissions=list(m.permissions),
    )


def enroll_req(r: pb.EnrollModuleRequest) -> Call:
    m = r.module
    if r.join_token:
        # The grant is the token's: only the key (and the name, checked against it) is read.
        return (
            "modules",
            "enroll",
            _clean(join_token=r.join_token, public_key=m.public_key, name=m.name or None),
        )
    return "modules", "enroll", {**grant_body(m), "public_key": m.public_key}


def module_resp(r: Any, d: Json) -> Any:
    out = _MODULE_RESPONSES[type(r)]()
    out.module.CopyFrom(module_pb(_obj(d.get("module"))))
    return out


def join_token_req(r: pb.CreateJoinTokenRequest) -> Call:
    return (
        "modules",
        "join-token",
        {
            **grant_body(r.grant),
            **_clean(ttl_s=r.ttl_seconds or None),  # 0: identity's default (and maximum)
        },
    )


def join_token_resp(r: pb.CreateJoinTokenRequest, d: Json) -> pb.CreateJoinTokenResponse:
    return pb.CreateJoinTokenResponse(
        join_token=_str(d.get("join_token")),
        expire_time=stamp_unix(d.get("expires_at")),
        name=_str(d.get("name")),
    )


def list_modules_req(r: pb.ListModulesRequest) -> Call:
    if r.page_size < 0:
        raise invalid("page_size", "page_size must not be negative")
    return "modules", "list", {}


def list_modules_resp(r: pb.ListModulesRequest, d: Json) -> pb.ListModulesResponse:
    # modules/list has no paging: the gateway pages the list sorted by name; the token is the
    # last name of the previous page, so a page stays right when identities come and go.
    docs = sorted(_dicts(d.get("modules")), key=lambda m: _str(m.get("name")))
    if r.page_token:
        docs = [m for m in docs if _str(m.get("name")) > r.page_token]
    size = min(r.page_size or MAX_MODULES_PAGE, MAX_MODULES_PAGE)
    chunk = docs[:size]
    more = len(docs) > size
    return pb.ListModulesResponse(
        modules=[module_pb(m) for m in chunk],
        next_page_token=_str(chunk[-1].get("name")) if more else "",
    )


def get_module_req(r: pb.GetModuleRequest) -> Call:
    return "modules", "get", {"name": r.name}


def revoke_module_req(r: pb.RevokeModuleRequest) -> Call:
    return "modules", "revoke", {"name": r.name}


def revoke_module_resp(r: pb.RevokeModuleRequest, d: Json) -> pb.RevokeModuleResponse:
    return pb.RevokeModuleResponse()


_MODULE_RESPONSES: Final[Mapping[type, type]] = {
    pb.EnrollModuleRequest: pb.EnrollModuleResponse,
    pb.GetModuleRequest: pb.GetModuleResponse,
}


# ---- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: how to build identity's request, read its reply, and what the gate asks.

    ``token_required``: the gate refuses a call without a valid token for identity's audience
    (False: credentials are in the request; a token sent anyway is still verified).
    ``token_optional``: of those, the ones where a token is one of two ways to say who you are
    (the OpenAPI document lists bearer auth as optional there, and absent on the others).
    ``forward_token``: the caller's token goes into the body's ``token`` (False where identity
    reads ``token`` as something else, e.g. the token ValidateToken checks).
    ``self_field``: when the request names nobody (none of ``names`` in the body), the verified
    caller's subject goes into this field. ``then``: a read made after the operation, whose
    data the converter gets instead (the operation's own data if the read fails)."""

    name: str
    build: Callable[[Any], Call]
    convert: Callable[[Any, Json], Message]
    route: RouteClass
    token_required: bool = True
    token_optional: bool = False
    forward_token: bool = True
    self_field: str | None = None
    names: tuple[str, ...] = ()
    then: Callable[[Any], Call] | None = None

    def request(
        self,
        r: Any,
        *,
        subject: str | None = None,
        request_id: str | None = None,
        source: str | None = None,
    ) -> Call:
        """The bus request for ``r``: the builder's, plus the caller's subject where the RPC
        means "me", identity's ``header.request_id`` (its audit trace id) and ``ip_address``
        (the client's address: identity's per-source login buckets and audit source)."""
        category, operation, body = self.build(r)
        if self.self_field and subject and not any(n in body for n in self.names):
            body[self.self_field] = subject
        return category, operation, caller_fields(body, request_id, source)

    def follow_up(
        self, r: Any, *, request_id: str | None = None, source: str | None = None
    ) -> Call | None:
        """The read made after the operation succeeded (:attr:`then`), or None."""
        if self.then is None:
            return None
        category, operation, body = self.then(r)
        return category, operation, caller_fields(body, request_id, source)


def caller_fields(body: Json, request_id: str | None, source: str | None) -> Json:
    """``body`` with identity's ``header.request_id`` and the client's ``ip_address``."""
    if request_id:
        body["header"] = {"request_id": request_id}
    if source:
        body["ip_address"] = source[:MAX_SOURCE_CHARS]
    return body


_R, _W, _L = RouteClass.READ, RouteClass.WRITE, RouteClass.LOGIN

METHODS: Final[Mapping[str, Method]] = {
    m.name: m
    for m in (
        # Credentials: no access token needed.
        Method("Login", login_req, login_resp, _L, token_required=False, forward_token=False),
        Method(
            "RefreshToken", refresh_req, refresh_resp, _L, token_required=False, forward_token=False
        ),
        # A token is optional: Logout, the caller's or one named in the body; ChangePassword,
        # the caller or an identifier plus the current password.
        Method("Logout", logout_req, logout_resp, _W, token_required=False, token_optional=True),
        Method(
            "ValidateToken",
            validate_req,
            validate_resp,
            _R,
            token_required=False,
            forward_token=False,
        ),
        Method(
            "ChangePassword",
            change_password_req,
            change_password_resp,
            _L,
            token_required=False,
            token_optional=True,
            forward_token=False,
            self_field="user_id",
            names=("identifier", "user_id"),
        ),
        Method("GetJwks", jwks_req, jwks_resp, _R, token_required=False, forward_token=False),
        Method(
            "IssueToken",
            issue_token_req,
            issue_token_resp,
            _L,
            token_required=False,
            forward_token=False,
        ),
        # One-time codes: the caller's own, so the caller's token.
        Method("EnrollTotp", enroll_totp_req, enroll_totp_resp, _W),
        Method("ConfirmTotp", confirm_totp_req, confirm_totp_resp, _W),
        Method("DisableTotp", disable_totp_req, disable_totp_resp, _W),
        # Users.
        Method("CreateUser", create_user_req, user_resp, _W),
        Method("GetUser", get_user_req, user_resp, _R),
        Method("UpdateUser", update_user_req, user_resp, _W),
        Method("DeleteUser", delete_user_req, delete_user_resp, _W),
        Method("ListUsers", list_users_req, list_users_resp, _R),
        Method("ActivateUser", activate_req, changed_user_resp, _W, then=read_user_then),
        Method("DeactivateUser", deactivate_req, changed_user_resp, _W, then=read_user_then),
        Method("AssignRole", assign_role_req, changed_user_resp, _W, then=read_user_then),
        Method("UnassignRole", unassign_role_req, changed_user_resp, _W, then=read_user_then),
        Method("UnlockUser", unlock_req, unlock_resp, _W),
        Method("AssignOrganization", assign_org_req, changed_user_resp, _W, then=read_user_then),
        Method(
            "UnassignOrganization", unassign_org_req, changed_user_resp, _W, then=read_user_then
        ),
        # Service accounts.
        Method("CreateServiceAccount", create_sa_req, create_sa_resp, _W),
        Method("ListServiceAccounts", list_sa_req, list_sa_resp, _R),
        Method("DeleteServiceAccount", delete_sa_req, delete_sa_resp, _W),
        # Roles.
        Method("CreateRole", create_role_req, role_resp, _W),
        Method("GetRole", get_role_req, role_resp, _R),
        Method("UpdateRole", update_role_req, role_resp, _W),
        Method("DeleteRole", delete_role_req, delete_role_resp, _W),
        Method("ListRoles", list_roles_req, list_roles_resp, _R),
        Method("CheckPermission", check_permission_req, check_permission_resp, _R),
        # Organizations.
        Method("CreateOrganization", create_org_req, org_resp, _W),
        Method("GetOrganization", get_org_req, org_resp, _R),
        Method("UpdateOrganization", update_org_req, org_resp, _W),
        Method("DeleteOrganization", delete_org_req, delete_org_resp, _W),
        Method("ListOrganizations", list_orgs_req, list_orgs_resp, _R),
        # Machine identities. EnrollModule: an admin token or a join token (identity decides).
        Method(
            "EnrollModule", enroll_req, module_resp, _W, token_required=False, token_optional=True
        ),
        Method("CreateJoinToken", join_token_req, join_token_resp, _W),
        Method("ListModules", list_modules_req, list_modules_resp, _R),
        Method("GetModule", get_module_req, module_resp, _R),
        Method("RevokeModule", revoke_module_req, revoke_module_resp, _W),
    )
}
