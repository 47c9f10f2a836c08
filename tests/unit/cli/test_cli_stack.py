"""Pure parts of `plantd up`'s secured stack: identity's and state's wiring, tiers, the first
admin's files and the commands the banner prints."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from plantd.cli import first_admin, stack
from plantd.cli.errors import CliError
from plantd.cli.up import drop_gateway_without_state, resolve_auth, try_hint
from plantd.common import contract
from plantd.common.config import BrokerSettings
from plantd.gateway.settings import GatewaySettings
from plantd.identity.bootstrap import read_bootstrap_file
from plantd.identity.settings import DEFAULT_ISSUER, IdentitySettings
from plantd.state.config import StateSettings

pytestmark = pytest.mark.unit

ALL = list(stack.STACK_COMPONENTS)


def _plan(**kw: object) -> stack.StackPlan:
    return stack.StackPlan(state_dir=Path("/s"), **kw)  # type: ignore[arg-type]


def test_identity_runs_by_default_between_broker_and_state() -> None:
    assert stack.STACK_COMPONENTS == ("broker", "identity", "echo", "state", "gateway")
    # The gateway starts once state (its /readyz needs a state worker) is ready.
    assert [stack.tier(c) for c in stack.STACK_COMPONENTS] == [0, 1, 2, 2, 3]


def test_gateway_settings_follow_the_port_offset_and_trust_identity() -> None:
    s = stack.component_settings(_plan(port_offset=100), contract.GATEWAY)
    assert s["grpc_port"] == str(contract.GRPC_PORT + 100)
    assert s["grpc_host"] == "127.0.0.1"
    assert s["rest_port"] == str(contract.REST_PORT + 100) and s["rest_host"] == "127.0.0.1"
    assert s["http_port"] == str(contract.HTTP_PORTS[contract.GATEWAY] + 100)
    assert s["broker_endpoint"] == "tcp://127.0.0.1:9897"
    assert s["state_sub_endpoint"] == "tcp://127.0.0.1:11101"
    assert s["curve"] == "true" and s["curve_keys"] == "/s/keys"
    # Tokens of this stack's identity, its JWKS fetched over the bus (no file), revocations
    # from the event bus.
    assert s["auth"] == "identity" and s["auth_issuer"] == DEFAULT_ISSUER
    assert "jwks_file" not in s
    assert s["event_sub_endpoint"] == "tcp://127.0.0.1:12101"
    assert stack.component_settings(_plan(listen="0.0.0.0"), contract.GATEWAY)["grpc_host"] == (
        "0.0.0.0"
    )
    off = stack.component_settings(_plan(auth="off"), contract.GATEWAY)
    assert off["auth"] == "off" and "auth_issuer" not in off


def test_gateway_ports_are_checked_before_start() -> None:
    plan = _plan(port_offset=3)
    assert {contract.GRPC_PORT + 3, contract.REST_PORT + 3} <= set(plan.all_ports())
    assert plan.grpc_address == f"127.0.0.1:{contract.GRPC_PORT + 3}"
    assert plan.rest_url == f"http://127.0.0.1:{contract.REST_PORT + 3}"
    alone = _plan(components=("broker", "state"))
    assert not {contract.GRPC_PORT, contract.REST_PORT} & set(alone.all_ports())


def test_gateway_commands_take_the_stored_token() -> None:
    lines = stack.gateway_commands(_plan(port_offset=1))
    # The login's profile is for this stack's broker: the same --endpoint fetches its token.
    assert (
        lines[0] == "TOKEN=$(plant --endpoint tcp://127.0.0.1:9798 --curve-keys /s/keys auth token)"
    )
    assert stack.gateway_commands(_plan())[0].endswith(" auth token)")
    rest = f"http://127.0.0.1:{contract.REST_PORT + 1}/v1/state/scopes/demo"
    get, watch, grpc = (shlex.split(line) for line in lines[1:])
    assert get == ["curl", "-H", "authorization: Bearer $TOKEN", f"{rest}/entries/key"]
    assert watch == ["curl", "-N", "-H", "authorization: Bearer $TOKEN", f"{rest}/entries:watch"]
    assert grpc[:4] == ["grpcurl", "-plaintext", "-H", "authorization: Bearer $TOKEN"]
    assert json.loads(grpc[5]) == {"scope": "demo", "key": "key"}
    assert grpc[6:] == [f"127.0.0.1:{contract.GRPC_PORT + 1}", "plantd.v1.StateService/GetEntry"]
    # Without auth there is no token to fetch or send.
    plain = stack.gateway_commands(_plan(auth="off"))
    plain_rest = f"http://127.0.0.1:{contract.REST_PORT}/v1/state/scopes/demo"
    assert plain[0] == f"curl {plain_rest}/entries/key" and "TOKEN" not in " ".join(plain)


def test_gateway_without_state_is_left_out() -> None:
    class Quiet:
        warned: list[str] = []

        def warn(self, message: str) -> None:
            self.warned.append(message)

    quiet = Quiet()
    kept = drop_gateway_without_state(["broker", "echo", "gateway"], quiet)  # type: ignore[arg-type]
    assert kept == ["broker", "echo"] and "--without gateway" in quiet.warned[0]
    assert drop_gateway_without_state(ALL, quiet) == ALL  # type: ignore[arg-type]


def test_identity_settings_follow_the_state_dir_and_the_port_offset() -> None:
    s = stack.component_settings(_plan(port_offset=100), contract.IDENTITY)
    assert s["data_dir"] == "/s/identity"
    assert s["jwt_keys_dir"] == "/s/jwt"
    assert s["bootstrap_file"] == "/s/identity/bootstrap.json"
    assert s["bus_endpoint"] == "tcp://127.0.0.1:12100"  # the event bus's publisher port
    assert s["http_port"] == str(contract.HTTP_PORTS[contract.IDENTITY] + 100)
    assert s["broker_endpoint"] == "tcp://127.0.0.1:9897"
    assert s["curve"] == "true" and s["curve_keys"] == "/s/keys"
    assert s["issuer"] == DEFAULT_ISSUER


def test_state_verifies_tokens_of_this_stacks_identity() -> None:
    s = stack.component_settings(_plan(port_offset=100), contract.STATE)
    assert s["auth"] == "identity"
    assert s["auth_issuer"] == DEFAULT_ISSUER
    assert s["event_bus_endpoint"] == "tcp://127.0.0.1:12100"
    assert s["event_sub_endpoint"] == "tcp://127.0.0.1:12101"
    assert s["registry"] == "/s/keys/registry.json"
    # The audience state demands is one identity issues by default: a plain login fits.
    assert s["auth_audience"] in IdentitySettings.model_fields["audiences"].default
    plain = stack.component_settings(_plan(curve=False), contract.STATE)
    assert plain["auth"] == "identity" and "registry" not in plain  # no keys, no key rights
    off = stack.component_settings(_plan(auth="off"), contract.STATE)
    assert off["auth"] == "off" and "auth_issuer" not in off


def test_the_settings_parse_as_the_children_read_them(tmp_path: Path) -> None:
    # Every key the stack sets is a real setting of the child (a typo would be ignored there).
    plan = stack.StackPlan(state_dir=tmp_path, port_offset=7)
    env = stack.child_env(plan, contract.IDENTITY, {})
    ident = IdentitySettings.load(environ=env)
    assert ident.data_dir == tmp_path / "identity" and ident.bootstrap_file is not None
    state = StateSettings.load(environ=stack.child_env(plan, contract.STATE, {}))
    assert state.auth == "identity" and state.registry == tmp_path / "keys" / "registry.json"
    assert state.auth_issuer == ident.issuer
    broker = BrokerSettings.load(environ=stack.child_env(plan, contract.BROKER, {}))
    assert broker.identity_registry and broker.registry == str(tmp_path / "keys/registry.json")
    gateway = GatewaySettings.load(environ=stack.child_env(plan, contract.GATEWAY, {}))
    assert gateway.grpc_port == contract.GRPC_PORT + 7 and gateway.auth == "identity"
    assert gateway.rest_port == contract.REST_PORT + 7 and gateway.rest
    assert gateway.auth_issuer == ident.issuer and gateway.jwks_file is None
    assert gateway.event_sub_endpoint == state.event_sub_endpoint
    # Every key set is a real gateway setting: a typo would be silently ignored there.
    fixed = stack.component_settings(plan, contract.GATEWAY)
    assert set(fixed) <= set(GatewaySettings.model_fields)
    for key, value in fixed.items():
        got = getattr(gateway, key)
        assert (str(got).lower() if isinstance(got, bool) else str(got)) == value, key


def test_broker_takes_identitys_enrolments_when_identity_runs_with_curve() -> None:
    broker = stack.component_settings(_plan(), contract.BROKER)
    assert broker["identity_registry"] == "true"
    assert broker["registry"] == "/s/keys/registry.json"  # the stack's own keys stay
    alone = _plan(components=("broker", "state"))
    assert "identity_registry" not in stack.component_settings(alone, contract.BROKER)
    plain = _plan(curve=False)  # the broker refuses a registry without CURVE
    assert "identity_registry" not in stack.component_settings(plain, contract.BROKER)


def test_resolve_auth() -> None:
    assert resolve_auth(None, ALL) == "identity"
    assert resolve_auth("off", ALL) == "off"
    assert resolve_auth(None, ["broker", "echo", "state"]) == "off"
    with pytest.raises(CliError, match="needs the identity service"):
        resolve_auth("identity", ["broker", "state"])
    assert resolve_auth("identity", ["broker", "echo"]) == "off"  # no state: nothing to secure


def test_login_command_is_exact_and_uses_the_home_shorthand() -> None:
    home = Path.home()  # the default keys directory `plant` finds by itself is under it
    plan = stack.StackPlan(state_dir=home / ".local/state/plantd")
    cmd = stack.login_command(plan, home)
    assert cmd == (
        "plant auth login -u admin --password-stdin < ~/.local/state/plantd/admin-credentials"
    )
    odd = stack.StackPlan(state_dir=Path("/srv/my stack"), port_offset=1)
    cmd = stack.login_command(odd, Path("/home/ann"))
    assert shlex.split(cmd.split(" < ")[0])[:3] == ["plant", "--endpoint", "tcp://127.0.0.1:9798"]
    assert "--curve-keys '/srv/my stack/keys'" in cmd
    assert cmd.endswith("< '/srv/my stack/admin-credentials'")
    assert stack.display_path(Path("/home/ann/x"), Path("/home/ann")) == "~/x"
    assert stack.display_path(Path("/etc/x"), Path("/home/ann")) == "/etc/x"


def test_try_hint_logs_in_then_sets_and_gets() -> None:
    hint = try_hint(_plan(), ALL)
    login, put, get = hint.split(" then ")
    assert "auth login -u admin --password-stdin" in login
    assert put.endswith("state set --service demo key 1`")
    assert get.endswith("state get --service demo key`")
    assert "auth login" not in try_hint(_plan(auth="off"), ["broker", "echo", "state"])
    # No credentials file (identity had users already): a plain login that asks.
    first = try_hint(_plan(), ALL, first_admin.Admin.UNKNOWN).split(" then ")[0]
    assert first == "`plant --curve-keys /s/keys auth login`"


def test_first_admin_password_only_while_identity_can_take_it() -> None:
    act = first_admin.plan_action
    assert act(db_exists=False, credentials_exist=False) is first_admin.Admin.CREATED
    assert act(db_exists=True, credentials_exist=True) is first_admin.Admin.KEPT
    assert act(db_exists=False, credentials_exist=True) is first_admin.Admin.KEPT
    # Identity already has users: a new password would not be the admin's.
    assert act(db_exists=True, credentials_exist=False) is first_admin.Admin.UNKNOWN


def test_first_admin_files(tmp_path: Path) -> None:
    plan = stack.StackPlan(state_dir=tmp_path)
    assert first_admin.ensure(plan) is first_admin.Admin.CREATED
    password = first_admin.read_password(plan.admin_credentials)
    assert len(password) >= 24
    lines = plan.admin_credentials.read_text().splitlines()
    assert lines[0] == password and all(line.startswith("# ") for line in lines[1:])
    assert stack.login_command(plan) in lines[-1]
    doc = read_bootstrap_file(plan.bootstrap_file)  # identity's own reader accepts it
    assert doc["username"] == "admin" and doc["password"] == password
    assert doc["must_change_password"] is False
    for path in (plan.admin_credentials, plan.bootstrap_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert plan.identity_dir.stat().st_mode & 0o777 == 0o700
    # Again, before identity ever ran: the same password, the bootstrap file in step.
    assert first_admin.ensure(plan) is first_admin.Admin.KEPT
    assert first_admin.read_password(plan.admin_credentials) == password
    plan.identity_db.touch()
    plan.bootstrap_file.unlink()
    assert first_admin.ensure(plan) is first_admin.Admin.KEPT
    assert json.loads(plan.bootstrap_file.read_text())["password"] == password
    # The credentials file lost, identity has its users: nothing is invented.
    plan.admin_credentials.unlink()
    assert first_admin.ensure(plan) is first_admin.Admin.UNKNOWN
    assert not plan.admin_credentials.exists()


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("pw-line\n", 0o640, "accessible by other users"),
        ("\n# nothing on line 1\n", 0o600, "does not start with a password line"),
        ("", 0o600, "does not start with a password line"),
    ],
)
def test_unusable_credentials_file(tmp_path: Path, content: str, mode: int, message: str) -> None:
    path = tmp_path / "admin-credentials"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(CliError, match=message) as err:
        first_admin.read_password(path)
    assert "pw-line" not in str(err.value) and err.value.hint
