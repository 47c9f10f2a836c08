"""plantd.v1.IdentityService end to end, every part a real process over real sockets (CURVE on):
a broker, a real ``plantd identity`` (signing key, bootstrap admin) and ``plantd gateway``
fetching identity's JWKS over the bus (no JWKS file), driven by a real grpc.aio client through
the generated stub. Every token here is one identity issued through the gateway's Login.

Covers: Login as the bootstrap admin, then CreateUser/GetUser/ListUsers/CreateRole/AssignRole/
CheckPermission with that token; a wrong password -> UNAUTHENTICATED, reason LOGIN_FAILED; an
admin RPC without a token -> UNAUTHENTICATED before the bus; a token without the permission ->
PERMISSION_DENIED (identity's decision); RefreshToken rotating (the old refresh token then
refused); ValidateToken; GetJwks equal to identity's keys; ChangePassword for the caller and
Logout revoking its tokens at the gateway; organizations with an update mask; a role rename ->
UNIMPLEMENTED; machine identities through a join token; grpc.health.v1 for
plantd.v1.IdentityService (SERVING with an identity worker, while readiness stays state's) and
reflection listing it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import zmq
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tests.integration.gateway.gatewaykit import error_info
from tests.integration.identity.identitykit import (
    ADMIN,
    ADMIN_PASSWORD,
    identity_process,
    write_bootstrap,
)
from tests.integration.state.statekit import Broker
from tests.kit import ServiceProcess, await_for, free_port, http_get, make_keys

from plantd.common import contract
from plantd.identity.keys import KeyRing, generate
from plantd.v1 import identity_pb2 as pb
from plantd.v1 import identity_pb2_grpc

pytestmark = pytest.mark.integration

PASSWORD = "a sufficiently long passphrase for tests"
IDENTITY_SERVICE = "plantd.v1.IdentityService"
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Stack:
    gateway: ServiceProcess
    identity: ServiceProcess
    grpc_port: int
    jwt_dir: Path
    rest_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def jwks_loaded(gateway: ServiceProcess) -> bool:
    """The gateway holds identity's keys (fetched over the bus); state is absent here, so
    /readyz as a whole stays 503."""
    _, body = http_get(gateway.url + "/readyz", timeout=1.0)
    try:
        return json.loads(body).get("checks", {}).get("jwks") is True
    except ValueError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("gateway-identity")
    keys = make_keys(work / "curve", (contract.IDENTITY, contract.CLIENT, contract.GATEWAY))
    (work / "broker").mkdir()
    broker = Broker(work / "broker", keys).start()
    jwt_dir = work / "jwt"
    generate(jwt_dir)
    identity = identity_process(
        work,
        broker,
        jwt_dir=jwt_dir,
        data_dir=work / "identity-data",
        extra=[
            "--bootstrap-file", str(write_bootstrap(work / "bootstrap.json")),
            # Every login here comes from 127.0.0.1 (the gateway passes the client's address).
            "--login-source-burst", "1000",
            "--login-source-rate", "100",
        ],
    )  # fmt: skip
    grpc_port, http_port, rest_port = free_port(), free_port(), free_port()
    event_sub = broker.bus("event")[1]
    gateway = ServiceProcess(
        "plantd.gateway",
        [
            "--broker-endpoint", broker.endpoint,
            "--curve-keys", str(keys),
            "--grpc-port", str(grpc_port),
            "--rest-port", str(rest_port),
            "--http-port", str(http_port),
            "--event-sub-endpoint", event_sub,  # identity.not_before: logouts revoke here too
            "--state-sub-endpoint", broker.state_sub,
            "--jwks-refresh-s", "1",
            "--health-interval-ms", "100",
            "--default-timeout-ms", "5000",
            "--rate-limit-login-per-s", "1000",
            "--rate-limit-login-burst", "1000",
            "--rate-limit-write-per-s", "10000",
            "--log-format", "text",
        ],
        work / "gateway.log",
        http_port=http_port,
        name="gateway",
    )  # fmt: skip
    try:
        identity.start().wait_ready()
        gateway.start()
        if not gateway.start_or_exit(60, lambda: jwks_loaded(gateway)):
            raise AssertionError(f"gateway exited:\n{gateway.text()}")
        yield Stack(gateway, identity, grpc_port, jwt_dir, rest_port)
    finally:
        gateway.stop()
        identity.stop()
        broker.stop()


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[identity_pb2_grpc.IdentityServiceAsyncStub]:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        yield identity_pb2_grpc.IdentityServiceStub(channel)  # type: ignore[misc]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def reason_of(err: grpc.aio.AioRpcError) -> str:
    return str(error_info(err).reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def login(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
    identifier: str = ADMIN,
    password: str = ADMIN_PASSWORD,
) -> pb.LoginResponse:
    response: pb.LoginResponse = await stub.Login(
        pb.LoginRequest(identifier=identifier, password=password)
    )
    return response


async def new_user(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub, admin: Metadata, name: str = ""
) -> pb.User:
    name = name or unique("user")
    created = await stub.CreateUser(
        pb.CreateUserRequest(
            user=pb.User(username=name, email=f"{name}@plant.example", first_name="Test"),
            password=PASSWORD,
        ),
        metadata=admin,
    )
    user: pb.User = created.user
    return user


async def test_admin_login_then_users_roles_and_permission_checks(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    session = await login(stub)
    assert session.access_token and session.refresh_token.startswith("pld_rt_")
    assert session.token_type == "Bearer" and session.user.username == ADMIN
    assert session.expire_time.seconds > time.time()
    assert [r.name for r in session.user.roles] == ["admin"]
    admin = bearer(session.access_token)

    user = await new_user(stub, admin)
    assert user.id > 0 and user.is_active and user.first_name == "Test"
    assert user.create_time.seconds > 0 and user.kind == "user"
    got = await stub.GetUser(pb.GetUserRequest(user_id=user.id), metadata=admin)
    assert (got.user.id, got.user.username, got.user.email) == (user.id, user.username, user.email)
    assert not got.user.HasField("last_login_time")  # never logged in

    page = await stub.ListUsers(pb.ListUsersRequest(page_size=100), metadata=admin)
    assert {ADMIN, user.username} <= {u.username for u in page.users}
    assert page.total_size >= 2
    first = await stub.ListUsers(pb.ListUsersRequest(page_size=1), metadata=admin)
    assert len(first.users) == 1 and first.next_page_token == "1"
    second = await stub.ListUsers(
        pb.ListUsersRequest(page_size=1, page_token=first.next_page_token), metadata=admin
    )
    assert second.users[0].id != first.users[0].id

    role_name = unique("viewer")
    role = (
        await stub.CreateRole(
            pb.CreateRoleRequest(
                role=pb.Role(name=role_name, permissions=["user:read"], scope="global")
            ),
            metadata=admin,
        )
    ).role
    assert role.id > 0 and list(role.permissions) == ["user:read"] and role.scope == "global"
    assigned = await stub.AssignRole(
        pb.AssignRoleRequest(user_id=user.id, role_id=role.id), metadata=admin
    )
    # identity answers {"changed": true}; the gateway reads the user back for the response.
    assert assigned.user.id == user.id and role_name in {r.name for r in assigned.user.roles}

    async def allowed(permission: str) -> bool:
        reply = await stub.CheckPermission(
            pb.CheckPermissionRequest(permission=permission, user_id=user.id), metadata=admin
        )
        return bool(reply.allowed)

    assert await allowed("user:read") is True
    assert await allowed("user:delete") is False
    mine = await stub.CheckPermission(
        pb.CheckPermissionRequest(permission="anything:at:all"), metadata=admin
    )
    assert mine.allowed  # the caller: system:admin

    unassigned = await stub.UnassignRole(
        pb.UnassignRoleRequest(user_id=user.id, role_id=role.id), metadata=admin
    )
    assert role_name not in {r.name for r in unassigned.user.roles}
    off = await stub.DeactivateUser(pb.DeactivateUserRequest(user_id=user.id), metadata=admin)
    assert off.user.id == user.id and not off.user.is_active
    on = await stub.ActivateUser(pb.ActivateUserRequest(user_id=user.id), metadata=admin)
    assert on.user.is_active
    changed = await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(id=user.id, last_name="Changed", first_name="not written"),
            update_mask=FieldMask(paths=["last_name"]),
        ),
        metadata=admin,
    )
    assert (changed.user.last_name, changed.user.first_name) == ("Changed", "Test")
    await stub.DeleteUser(pb.DeleteUserRequest(user_id=user.id), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetUser(pb.GetUserRequest(user_id=user.id), metadata=admin)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and reason_of(gone.value) == "NOT_FOUND"
    await stub.DeleteRole(pb.DeleteRoleRequest(role_id=role.id), metadata=admin)


async def test_a_wrong_password_is_unauthenticated_with_login_failed(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    for identifier in (ADMIN, unique("nobody")):  # the same answer for both
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await login(stub, identifier, "not the password at all")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(refused.value) == "LOGIN_FAILED"
        assert refused.value.details() == "invalid credentials"


async def test_an_admin_rpc_without_a_token_is_unauthenticated(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    for metadata in ((), bearer("not.a.jwt")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListUsers(pb.ListUsersRequest(), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(refused.value) == "TOKEN_MALFORMED"  # the gateway's own check
        assert "plant auth login" in (refused.value.details() or "")


async def test_a_token_without_the_permission_is_denied_by_identity(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    root = await login(stub)
    admin = bearer(root.access_token)
    user = await new_user(stub, admin)
    plain = await login(stub, user.username, PASSWORD)
    assert not plain.user.roles
    md = bearer(plain.access_token)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.ListUsers(pb.ListUsersRequest(), metadata=md)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(denied.value) == "PERMISSION_DENIED"
    assert "user:list" in (denied.value.details() or "")  # identity names the permission
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetUser(pb.GetUserRequest(user_id=root.user.id), metadata=md)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Oneself needs no permission.
    me = await stub.GetUser(pb.GetUserRequest(user_id=plain.user.id), metadata=md)
    assert me.user.username == user.username and me.user.HasField("last_login_time")


async def test_refresh_rotates_and_the_old_refresh_token_is_used_up(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    user = await new_user(stub, admin)
    session = await login(stub, user.username, PASSWORD)
    fresh = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=session.refresh_token))
    assert (
        fresh.refresh_token.startswith("pld_rt_") and fresh.refresh_token != session.refresh_token
    )
    assert fresh.access_token and fresh.token_type == "Bearer"
    assert fresh.expire_time.seconds > time.time()
    me = await stub.GetUser(pb.GetUserRequest(user_id=user.id), metadata=bearer(fresh.access_token))
    assert me.user.id == user.id
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=session.refresh_token))
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(reused.value) == "REFRESH_FAILED"


async def test_validate_token_and_jwks(
    stack: Stack, stub: identity_pb2_grpc.IdentityServiceAsyncStub
) -> None:
    session = await login(stub)
    # The caller's own (different) token in the metadata must not replace the one checked.
    other = await login(stub)
    valid = await stub.ValidateToken(
        pb.ValidateTokenRequest(token=session.access_token),
        metadata=bearer(other.access_token),
    )
    assert valid.valid and valid.user_id == session.user.id
    assert "admin" in valid.roles and "system:admin" in valid.permissions
    assert valid.expire_time.seconds == session.expire_time.seconds
    invalid = await stub.ValidateToken(pb.ValidateTokenRequest(token="garbage"))
    assert not invalid.valid and invalid.reason == "TOKEN_MALFORMED"
    jwks = await stub.GetJwks(pb.GetJwksRequest())  # no token needed
    expected = KeyRing.from_dir(stack.jwt_dir).jwks()["keys"]
    assert [(k.kid, k.kty, k.crv, k.x, k.y, k.alg) for k in jwks.keys] == [
        (k["kid"], k["kty"], k["crv"], k["x"], k["y"], k["alg"]) for k in expected
    ]


async def test_change_password_for_the_caller_then_logout_revokes_at_the_gateway(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    user = await new_user(stub, admin)
    session = await login(stub, user.username, PASSWORD)
    new_password = PASSWORD + " and then some"
    # No identifier: the caller, named by its verified token.
    await stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=new_password),
        metadata=bearer(session.access_token),
    )
    with pytest.raises(grpc.aio.AioRpcError) as old:
        await login(stub, user.username, PASSWORD)
    assert reason_of(old.value) == "LOGIN_FAILED"
    session = await login(stub, user.username, new_password)
    md = bearer(session.access_token)
    assert (await stub.GetUser(pb.GetUserRequest(user_id=user.id), metadata=md)).user.id
    await stub.Logout(pb.LogoutRequest(), metadata=md)  # the caller's own sessions

    async def revoked() -> bool:
        try:
            await stub.GetUser(pb.GetUserRequest(user_id=user.id), metadata=md)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            return reason_of(err) == "TOKEN_REVOKED"
        return False

    await await_for(revoked, 10.0, "the logged-out token refused with TOKEN_REVOKED")


async def test_organizations_and_role_updates(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    name = unique("Plant")
    org = (
        await stub.CreateOrganization(
            pb.CreateOrganizationRequest(
                organization=pb.Organization(name=name, description="first")
            ),
            metadata=admin,
        )
    ).organization
    assert org.id > 0 and org.slug == name.lower() and org.is_active
    updated = await stub.UpdateOrganization(
        pb.UpdateOrganizationRequest(
            organization=pb.Organization(id=org.id, name="ignored", description="second"),
            update_mask=FieldMask(paths=["description"]),
        ),
        metadata=admin,
    )
    assert (updated.organization.name, updated.organization.description) == (name, "second")
    got = await stub.GetOrganization(pb.GetOrganizationRequest(org_id=org.id), metadata=admin)
    assert got.organization.update_time.ToNanoseconds() >= org.create_time.ToNanoseconds()
    listed = await stub.ListOrganizations(pb.ListOrganizationsRequest(), metadata=admin)
    assert org.id in {o.id for o in listed.organizations}
    await stub.DeleteOrganization(pb.DeleteOrganizationRequest(org_id=org.id), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetOrganization(pb.GetOrganizationRequest(org_id=org.id), metadata=admin)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    role = (
        await stub.CreateRole(pb.CreateRoleRequest(role=pb.Role(name=unique("r"))), metadata=admin)
    ).role
    assert role.scope == "organization"  # identity's default
    changed = await stub.UpdateRole(
        pb.UpdateRoleRequest(role=pb.Role(id=role.id, permissions=["user:read"], description="d")),
        metadata=admin,
    )
    assert list(changed.role.permissions) == ["user:read"] and changed.role.description == "d"
    assert (await stub.GetRole(pb.GetRoleRequest(role_id=role.id), metadata=admin)).role.name
    roles = await stub.ListRoles(pb.ListRolesRequest(page_size=100), metadata=admin)
    assert {"admin", role.name} <= {r.name for r in roles.roles}
    with pytest.raises(grpc.aio.AioRpcError) as rename:
        await stub.UpdateRole(
            pb.UpdateRoleRequest(
                role=pb.Role(id=role.id, name="renamed"), update_mask=FieldMask(paths=["name"])
            ),
            metadata=admin,
        )
    assert rename.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await stub.CreateRole(pb.CreateRoleRequest(role=pb.Role(name=role.name)), metadata=admin)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(taken.value) == "CONFLICT"


async def test_a_machine_identity_enrolled_with_a_join_token(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    name = unique("plc").lower()
    grant = pb.Module(
        name=name,
        kind="device",
        services=["line1.plc"],
        publish={"event": pb.TopicPrefixes(prefixes=["line1."])},
        permissions=["state:data:read:line1"],
    )
    issued = await stub.CreateJoinToken(
        pb.CreateJoinTokenRequest(grant=grant, ttl_seconds=120), metadata=admin
    )
    assert issued.join_token.startswith("pld_jt_") and issued.name == name
    assert 0 < issued.expire_time.seconds - time.time() <= 121
    public, _ = zmq.curve_keypair()
    # The device has no user token: the join token is its credential.
    enrolled = await stub.EnrollModule(
        pb.EnrollModuleRequest(
            module=pb.Module(public_key=public.decode()), join_token=issued.join_token
        )
    )
    m = enrolled.module
    assert (m.name, m.kind, m.public_key) == (name, "device", public.decode())
    assert list(m.services) == ["line1.plc"] and list(m.publish["event"].prefixes) == ["line1."]
    assert m.enrolled_by.startswith("join:") and m.enroll_time.seconds > 0
    got = await stub.GetModule(pb.GetModuleRequest(name=name), metadata=admin)
    assert got.module.public_key == public.decode()
    listed = await stub.ListModules(pb.ListModulesRequest(), metadata=admin)
    assert name in [x.name for x in listed.modules]
    with pytest.raises(grpc.aio.AioRpcError) as used:  # one redemption only
        await stub.EnrollModule(
            pb.EnrollModuleRequest(
                module=pb.Module(public_key=zmq.curve_keypair()[0].decode()),
                join_token=issued.join_token,
            )
        )
    assert used.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await stub.RevokeModule(pb.RevokeModuleRequest(name=name), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await stub.GetModule(pb.GetModuleRequest(name=name), metadata=admin)
    assert revoked.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_follows_identity_and_reflection_lists_the_service(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(name: str) -> int:
            got = await health.Check(health_pb2.HealthCheckRequest(service=name))
            return int(got.status)

        serving = health_pb2.HealthCheckResponse.SERVING

        async def identity_serving() -> bool:
            return await status(IDENTITY_SERVICE) == serving

        await await_for(identity_serving, 15.0, f"{IDENTITY_SERVICE} SERVING")
        assert await status("liveness") == serving
        # No state worker in this stack: readiness (and /readyz) stay state's, and not ready.
        assert await status("readiness") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert http_get(stack.gateway.url + "/readyz")[0] == 503
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: set[str] = set()
        async for reply in refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names |= {s.name for s in reply.list_services_response.service}
        assert {IDENTITY_SERVICE, "plantd.v1.StateService", "grpc.health.v1.Health"} <= names


async def test_rest_login_then_an_admin_read_with_the_token(stack: Stack) -> None:
    """The same IdentityService over REST: log in by JSON, use the token on a user route."""
    base = f"http://127.0.0.1:{stack.rest_port}/v1/identity"
    async with aiohttp.ClientSession() as http:
        body = {"identifier": ADMIN, "password": "wrong password for sure"}
        async with http.post(f"{base}/auth:login", json=body) as r:
            assert r.status == 401
            error = (await r.json())["error"]
            assert error["details"][0]["reason"] == "LOGIN_FAILED", error
        body = {"identifier": ADMIN, "password": ADMIN_PASSWORD}
        async with http.post(f"{base}/auth:login", json=body) as r:
            assert r.status == 200, await r.text()
            tokens = await r.json()
        headers = {"Authorization": f"Bearer {tokens['accessToken']}"}
        async with http.get(f"{base}/users", params={"pageSize": "5"}, headers=headers) as r:
            assert r.status == 200, await r.text()
            users = (await r.json())["users"]
        assert ADMIN in [u["username"] for u in users]
        async with http.get(f"{base}/users") as r:  # no token
            assert r.status == 401
        async with http.get(f"http://127.0.0.1:{stack.rest_port}/.well-known/jwks.json") as r:
            assert r.status == 200 and (await r.json())["keys"], await r.text()


def totp_code(secret: str, offset: int = 0) -> str:
    from plantd.identity import totp

    return totp.code_at(secret, int(time.time() // 30) + offset)


async def test_one_time_codes_for_the_caller_from_enrolment_to_login_and_off(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    user = await new_user(stub, admin)
    mine = bearer((await login(stub, user.username, PASSWORD)).access_token)
    enrolled = await stub.EnrollTotp(pb.EnrollTotpRequest(), metadata=mine)
    assert enrolled.secret and enrolled.otpauth_uri.startswith("otpauth://totp/")
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await stub.ConfirmTotp(pb.ConfirmTotpRequest(code="000000"), metadata=mine)
    assert wrong.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
    # Each step is accepted once (replay protection): confirm, log in, disable on rising steps.
    confirmed = await stub.ConfirmTotp(
        pb.ConfirmTotpRequest(code=totp_code(enrolled.secret, -1)), metadata=mine
    )
    assert confirmed.totp_enabled
    with pytest.raises(grpc.aio.AioRpcError) as without:
        await login(stub, user.username, PASSWORD)  # the password alone no longer does
    assert without.value.code() == grpc.StatusCode.UNAUTHENTICATED
    second = await stub.Login(
        pb.LoginRequest(
            identifier=user.username, password=PASSWORD, totp=totp_code(enrolled.secret)
        )
    )
    assert second.access_token
    await stub.DisableTotp(
        pb.DisableTotpRequest(code=totp_code(enrolled.secret, 1)),
        metadata=bearer(second.access_token),
    )
    assert (await login(stub, user.username, PASSWORD)).access_token
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.EnrollTotp(pb.EnrollTotpRequest())  # whose? a token is required
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_service_accounts_issue_tokens_until_deleted(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    name = unique("svc")
    created = await stub.CreateServiceAccount(
        pb.CreateServiceAccountRequest(name=name, description="historian"), metadata=admin
    )
    assert created.client_id == name and created.client_secret
    assert created.service_account.kind == "service"
    listed = await stub.ListServiceAccounts(pb.ListServiceAccountsRequest(), metadata=admin)
    assert name in {a.username for a in listed.service_accounts}
    issued = await stub.IssueToken(
        pb.IssueTokenRequest(client_id=name, client_secret=created.client_secret)
    )
    assert issued.token_type == "Bearer" and issued.expire_time.seconds > time.time()
    checked = await stub.ValidateToken(pb.ValidateTokenRequest(token=issued.access_token))
    assert checked.valid
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.IssueToken(pb.IssueTokenRequest(client_id=name, client_secret="wrong"))
    assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await stub.DeleteServiceAccount(
        pb.DeleteServiceAccountRequest(user_id=created.service_account.id), metadata=admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.IssueToken(
            pb.IssueTokenRequest(client_id=name, client_secret=created.client_secret)
        )
    assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_memberships_and_unlock_through_the_gateway(
    stub: identity_pb2_grpc.IdentityServiceAsyncStub,
) -> None:
    admin = bearer((await login(stub)).access_token)
    user = await new_user(stub, admin)
    org = (
        await stub.CreateOrganization(
            pb.CreateOrganizationRequest(organization=pb.Organization(name=unique("Site"))),
            metadata=admin,
        )
    ).organization
    joined = await stub.AssignOrganization(
        pb.AssignOrganizationRequest(user_id=user.id, org_id=org.id), metadata=admin
    )
    assert org.id in {o.id for o in joined.user.organizations}
    left = await stub.UnassignOrganization(
        pb.UnassignOrganizationRequest(user_id=user.id, org_id=org.id), metadata=admin
    )
    assert org.id not in {o.id for o in left.user.organizations}
    await stub.UnlockUser(pb.UnlockUserRequest(user_id=user.id), metadata=admin)
    plain = bearer((await login(stub, user.username, PASSWORD)).access_token)
    with pytest.raises(grpc.aio.AioRpcError) as denied:  # unlocking is an admin's
        await stub.UnlockUser(pb.UnlockUserRequest(user_id=user.id), metadata=plain)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
