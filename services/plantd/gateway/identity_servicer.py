"""The plantd.v1.IdentityService servicer: each RPC is one org.plantd.Identity request
``[category, operation, json]`` (docs/identity.md "Operations"), translated by
:mod:`.identity_map`.

Every call goes through the shared :class:`~plantd.gateway.calls.CallGate` (token verified
offline for identity's audience where the RPC needs one, rate limits per route class, deadline,
errors, metrics); the caller's token, request id and traceparent go into the body, where
identity authorizes (``token``) and audits (``header.request_id``, ``ip_address``: the
client's address, so identity's per-source login buckets count clients, not the gateway).
Login, RefreshToken, ValidateToken, ChangePassword and GetJwks need no access token; Logout
takes the caller's token when the request names none; EnrollModule takes an admin token or a
join token. Every call shares the gateway's one bus client.

:class:`BackendHealth` keeps the ``plantd.v1.IdentityService`` health name in step with the
identity worker (its own name only: ``readiness`` stays the state service's).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, Final

import grpc
from grpc_health.v1.health import aio as health_aio

from plantd.common import contract
from plantd.gateway.calls import Bus, CallContext, Caller, CallGate, json_request
from plantd.gateway.health import NOT_SERVING, MmiBus, Readiness
from plantd.gateway.identity_map import METHODS, Call, Method, envelope_data
from plantd.gateway.state_map import Json, RpcFailure
from plantd.v1 import identity_pb2 as pb
from plantd.v1 import identity_pb2_grpc

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name

# The generated base's context type; the REST edge passes its own CallContext (all that is used).
Context = grpc.aio.ServicerContext[Any, Any]


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, bus: Bus, gate: CallGate, *, service: str = contract.SERVICE_IDENTITY):
        self.bus = bus
        self.gate = gate
        self.service = service

    async def _request(self, call: Call, caller: Caller, wait: float) -> Json:
        """One identity request with the caller's fields: the envelope's data."""
        category, operation, body = call
        frames = await json_request(
            self.bus, self.service, (category, operation), body, caller, wait
        )
        return envelope_data(frames)

    async def _unary(self, method: Method, request: Any, context: CallContext) -> Any:
        async def work(caller: Caller) -> Any:
            ids = {"request_id": caller.request_id, "source": caller.source}
            subject = caller.claims.subject if caller.claims is not None else None
            call = method.request(request, subject=subject, **ids)
            forwarded = caller if method.forward_token else dataclasses.replace(caller, token=None)
            data = await self._request(call, forwarded, self.gate.wait(context))
            follow = method.follow_up(request, **ids)
            if follow is not None:
                # The change is made: a failed read only makes the answer thinner.
                with contextlib.suppress(RpcFailure):
                    data = await self._request(follow, caller, self.gate.wait(context))
            return method.convert(request, data)

        return await self.gate.unary(
            context,
            SERVICE_NAME,
            method.name,
            work,
            audience=self.service,
            route=method.route,
            token_required=method.token_required,
        )

    # The RPCs, named as the generated servicer names them.

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        r: pb.LoginResponse = await self._unary(_M["Login"], request, context)
        return r

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Context
    ) -> pb.RefreshTokenResponse:
        r: pb.RefreshTokenResponse = await self._unary(_M["RefreshToken"], request, context)
        return r

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        r: pb.LogoutResponse = await self._unary(_M["Logout"], request, context)
        return r

    async def ValidateToken(
        self, request: pb.ValidateTokenRequest, context: Context
    ) -> pb.ValidateTokenResponse:
        r: pb.ValidateTokenResponse = await self._unary(_M["ValidateToken"], request, context)
        return r

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Context
    ) -> pb.ChangePasswordResponse:
        r: pb.ChangePasswordResponse = await self._unary(_M["ChangePassword"], request, context)
        return r

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        r: pb.GetJwksResponse = await self._unary(_M["GetJwks"], request, context)
        return r

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Context
    ) -> pb.CreateUserResponse:
        r: pb.CreateUserResponse = await self._unary(_M["CreateUser"], request, context)
        return r

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        r: pb.GetUserResponse = await self._unary(_M["GetUser"], request, context)
        return r

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: Context
    ) -> pb.UpdateUserResponse:
        r: pb.UpdateUserResponse = await self._unary(_M["UpdateUser"], request, context)
        return r

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Context
    ) -> pb.DeleteUserResponse:
        r: pb.DeleteUserResponse = await self._unary(_M["DeleteUser"], request, context)
        return r

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: Context
    ) -> pb.ListUsersResponse:
        r: pb.ListUsersResponse = await self._unary(_M["ListUsers"], request, context)
        return r

    async def ActivateUser(
        self, request: pb.ActivateUserRequest, context: Context
    ) -> pb.ActivateUserResponse:
        r: pb.ActivateUserResponse = await self._unary(_M["ActivateUser"], request, context)
        return r

    async def DeactivateUser(
        self, request: pb.DeactivateUserRequest, context: Context
    ) -> pb.DeactivateUserResponse:
        r: pb.DeactivateUserResponse = await self._unary(_M["DeactivateUser"], request, context)
        return r

    async def AssignRole(
        self, request: pb.AssignRoleRequest, context: Context
    ) -> pb.AssignRoleResponse:
        r: pb.AssignRoleResponse = await self._unary(_M["AssignRole"], request, context)
        return r

    async def IssueToken(
        self, request: pb.IssueTokenRequest, context: Context
    ) -> pb.IssueTokenResponse:
        r: pb.IssueTokenResponse = await self._unary(_M["IssueToken"], request, context)
        return r

    async def EnrollTotp(
        self, request: pb.EnrollTotpRequest, context: Context
    ) -> pb.EnrollTotpResponse:
        r: pb.EnrollTotpResponse = await self._unary(_M["EnrollTotp"], request, context)
        return r

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: Context
    ) -> pb.ConfirmTotpResponse:
        r: pb.ConfirmTotpResponse = await self._unary(_M["ConfirmTotp"], request, context)
        return r

    async def DisableTotp(
        self, request: pb.DisableTotpRequest, context: Context
    ) -> pb.DisableTotpResponse:
        r: pb.DisableTotpResponse = await self._unary(_M["DisableTotp"], request, context)
        return r

    async def UnlockUser(
        self, request: pb.UnlockUserRequest, context: Context
    ) -> pb.UnlockUserResponse:
        r: pb.UnlockUserResponse = await self._unary(_M["UnlockUser"], request, context)
        return r

    async def AssignOrganization(
        self, request: pb.AssignOrganizationRequest, context: Context
    ) -> pb.AssignOrganizationResponse:
        r: pb.AssignOrganizationResponse = await self._unary(
            _M["AssignOrganization"], request, context
        )
        return r

    async def UnassignOrganization(
        self, request: pb.UnassignOrganizationRequest, context: Context
    ) -> pb.UnassignOrganizationResponse:
        r: pb.UnassignOrganizationResponse = await self._unary(
            _M["UnassignOrganization"], request, context
        )
        return r

    async def CreateServiceAccount(
        self, request: pb.CreateServiceAccountRequest, context: Context
    ) -> pb.CreateServiceAccountResponse:
        r: pb.CreateServiceAccountResponse = await self._unary(
            _M["CreateServiceAccount"], request, context
        )
        return r

    async def ListServiceAccounts(
        self, request: pb.ListServiceAccountsRequest, context: Context
    ) -> pb.ListServiceAccountsResponse:
        r: pb.ListServiceAccountsResponse = await self._unary(
            _M["ListServiceAccounts"], request, context
        )
        return r

    async def DeleteServiceAccount(
        self, request: pb.DeleteServiceAccountRequest, context: Context
    ) -> pb.DeleteServiceAccountResponse:
        r: pb.DeleteServiceAccountResponse = await self._unary(
            _M["DeleteServiceAccount"], request, context
        )
        return r

    async def UnassignRole(
        self, request: pb.UnassignRoleRequest, context: Context
    ) -> pb.UnassignRoleResponse:
        r: pb.UnassignRoleResponse = await self._unary(_M["UnassignRole"], request, context)
        return r

    async def CreateRole(
        self, request: pb.CreateRoleRequest, context: Context
    ) -> pb.CreateRoleResponse:
        r: pb.CreateRoleResponse = await self._unary(_M["CreateRole"], request, context)
        return r

    async def GetRole(self, request: pb.GetRoleRequest, context: Context) -> pb.GetRoleResponse:
        r: pb.GetRoleResponse = await self._unary(_M["GetRole"], request, context)
        return r

    async def UpdateRole(
        self, request: pb.UpdateRoleRequest, context: Context
    ) -> pb.UpdateRoleResponse:
        r: pb.UpdateRoleResponse = await self._unary(_M["UpdateRole"], request, context)
        return r

    async def DeleteRole(
        self, request: pb.DeleteRoleRequest, context: Context
    ) -> pb.DeleteRoleResponse:
        r: pb.DeleteRoleResponse = await self._unary(_M["DeleteRole"], request, context)
        return r

    async def ListRoles(
        self, request: pb.ListRolesRequest, context: Context
    ) -> pb.ListRolesResponse:
        r: pb.ListRolesResponse = await self._unary(_M["ListRoles"], request, context)
        return r

    async def CheckPermission(
        self, request: pb.CheckPermissionRequest, context: Context
    ) -> pb.CheckPermissionResponse:
        r: pb.CheckPermissionResponse = await self._unary(_M["CheckPermission"], request, context)
        return r

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: Context
    ) -> pb.CreateOrganizationResponse:
        r: pb.CreateOrganizationResponse = await self._unary(
            _M["CreateOrganization"], request, context
        )
        return r

    async def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: Context
    ) -> pb.GetOrganizationResponse:
        r: pb.GetOrganizationResponse = await self._unary(_M["GetOrganization"], request, context)
        return r

    async def UpdateOrganization(
        self, request: pb.UpdateOrganizationRequest, context: Context
    ) -> pb.UpdateOrganizationResponse:
        r: pb.UpdateOrganizationResponse = await self._unary(
            _M["UpdateOrganization"], request, context
        )
        return r

    async def DeleteOrganization(
        self, request: pb.DeleteOrganizationRequest, context: Context
    ) -> pb.DeleteOrganizationResponse:
        r: pb.DeleteOrganizationResponse = await self._unary(
            _M["DeleteOrganization"], request, context
        )
        return r

    async def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: Context
    ) -> pb.ListOrganizationsResponse:
        r: pb.ListOrganizationsResponse = await self._unary(
            _M["ListOrganizations"], request, context
        )
        return r

    async def EnrollModule(
        self, request: pb.EnrollModuleRequest, context: Context
    ) -> pb.EnrollModuleResponse:
        r: pb.EnrollModuleResponse = await self._unary(_M["EnrollModule"], request, context)
        return r

    async def CreateJoinToken(
        self, request: pb.CreateJoinTokenRequest, context: Context
    ) -> pb.CreateJoinTokenResponse:
        r: pb.CreateJoinTokenResponse = await self._unary(_M["CreateJoinToken"], request, context)
        return r

    async def ListModules(
        self, request: pb.ListModulesRequest, context: Context
    ) -> pb.ListModulesResponse:
        r: pb.ListModulesResponse = await self._unary(_M["ListModules"], request, context)
        return r

    async def GetModule(
        self, request: pb.GetModuleRequest, context: Context
    ) -> pb.GetModuleResponse:
        r: pb.GetModuleResponse = await self._unary(_M["GetModule"], request, context)
        return r

    async def RevokeModule(
        self, request: pb.RevokeModuleRequest, context: Context
    ) -> pb.RevokeModuleResponse:
        r: pb.RevokeModuleResponse = await self._unary(_M["RevokeModule"], request, context)
        return r


_M: Final = METHODS


class BackendHealth(Readiness):
    """One backend's health names: SERVING while ``backend`` has a worker on the bus.

    Unlike the state :class:`Readiness` it owns neither ``readiness`` nor the liveness names,
    so the gateway's readiness stays tied to state alone."""

    def __init__(
        self,
        servicer: health_aio.HealthServicer,
        bus: MmiBus,
        services: Sequence[str],
        *,
        interval_s: float,
        backend: str = contract.SERVICE_IDENTITY,
    ) -> None:
        super().__init__(servicer, bus, services, interval_s=interval_s, backend=backend)
        self.names = tuple(services)

    async def start(self) -> None:
        for name in self.names:
            await self.servicer.set(name, NOT_SERVING)
