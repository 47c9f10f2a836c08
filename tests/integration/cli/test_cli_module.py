"""`plant module …` as real processes against a real broker (CURVE) and a real identity process:
an administrator enrols a module key, issues a join token that a module redeems once without
any login, revokes; a user without the permission is refused with a hint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from clikit import Plant, clean_env, run_cli
from tests.integration.identity.identitykit import (
    ADMIN,
    ADMIN_PASSWORD,
    bootstrapped_identity,
    curve_broker,
)
from tests.kit import BrokerProcess

from plantd.common import curve
from plantd.identity.keys import generate

pytestmark = pytest.mark.integration

BOB_PASSWORD = "kettle whistles over the hill, slowly"


class Setup(NamedTuple):
    workdir: Path
    broker: BrokerProcess
    admin: Plant  # logged in as the bootstrap admin


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A CURVE broker, identity with its bootstrap admin, and `plant` logged in as that admin."""
    workdir = tmp_path_factory.mktemp("cli-module")
    jwt_dir = workdir / "jwt"
    generate(jwt_dir)
    with (
        curve_broker(workdir) as broker,
        bootstrapped_identity(workdir, broker, jwt_dir=jwt_dir),
    ):
        admin = Plant(workdir / "home-admin", broker)
        r = admin("auth", "login", "-u", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        yield Setup(workdir, broker, admin)


def _key_pair(workdir: Path, name: str) -> tuple[Path, str]:
    """`plantd keys generate --name NAME` (what a module without a key runs): its files."""
    keys = workdir / f"keys-{name}"
    r = run_cli("plantd", ["keys", "generate", "--dir", str(keys), "--name", name], clean_env(keys))
    assert r.returncode == 0, r.stderr
    return keys, curve.load_keypair(keys / f"{name}.key").public.decode()


def test_enroll_list_get_revoke(env: Setup) -> None:
    workdir, _, admin = env
    keys, public = _key_pair(workdir, "pump-1")
    secret_file = keys / "pump-1.key_secret"
    secret = curve.load_keypair(secret_file).secret
    assert secret is not None

    # Handed the secret file by mistake: only its public part is sent.
    r = admin(
        "--json", "module", "enroll", "pump-1", "--key-file", str(secret_file),
        "--service", "acme.Pump", "--service", "acme.Pump.*",
        "--publish", "event=acme.pump.", "--permission", "state:data:read",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "only its public key is sent" in r.stderr
    assert secret.decode() not in r.stdout + r.stderr
    module = json.loads(r.stdout)["module"]
    assert (module["name"], module["kind"], module["public_key"]) == ("pump-1", "module", public)
    assert module["services"] == ["acme.Pump", "acme.Pump.*"]
    assert module["publish"] == {"event": ["acme.pump."]}
    assert module["permissions"] == ["state:data:read"]

    listed = admin("module", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "pump-1" in line)
    assert public in row and "acme.Pump" in row and "event=acme.pump." in row
    got = admin("module", "get", "pump-1")
    assert got.returncode == 0 and "enrolled 20" in got.stdout, got.stderr

    again = admin("module", "enroll", "pump-1", "--public-key", public, "--service", "acme.Pump")
    assert again.returncode == 1 and "CONFLICT" in again.stderr
    assert "plant module revoke" in again.stderr
    hijack = admin(
        "module", "enroll", "evil", "--key-file", str(keys / "pump-1.key"),
        "--service", "org.plantd.State",
    )  # fmt: skip
    assert hijack.returncode == 1 and "reserved" in hijack.stderr, hijack.stderr

    unconfirmed = admin("module", "revoke", "pump-1")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    r = admin("module", "revoke", "pump-1", "--yes")
    assert r.returncode == 0 and "revoked pump-1" in r.stdout, r.stderr
    assert "pump-1" not in admin("module", "list").stdout
    gone = admin("module", "get", "pump-1")
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr
    assert "plant module list" in gone.stderr


def test_a_join_token_enrols_once_without_a_login(env: Setup) -> None:
    workdir, _, admin = env
    r = admin(
        "module", "join-token", "--name", "sensor-7", "--kind", "device",
        "--service", "acme.Sensor.*", "--publish", "metric=acme.sensor.", "--ttl", "10m",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pld_jt_"), r.stdout
    token = lines[0]
    assert "secret" in r.stderr and token not in r.stderr

    device = Plant(workdir / "home-device", env.broker)
    _, public = _key_pair(workdir, "sensor-7")
    key_file = workdir / "keys-sensor-7" / "sensor-7.key"
    on_argv = device("module", "join", "--key-file", str(key_file), "--join-token", token)
    assert on_argv.returncode == 2 and "visible to every user" in on_argv.stderr

    joined = device(
        "--json", "module", "join", "--join-token-stdin", "--key-file", str(key_file),
        stdin=token + "\n",
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    module = json.loads(joined.stdout)["module"]
    assert (module["name"], module["kind"], module["public_key"]) == ("sensor-7", "device", public)
    assert module["services"] == ["acme.Sensor.*"]
    assert module["enrolled_by"].startswith("join:")
    assert not device.credentials.exists()  # no user login was needed, nor made

    # A second redemption (another key, the same token) is refused and says what to do.
    _, other = _key_pair(workdir, "sensor-8")
    twice = device("module", "join", "--join-token-stdin", "--public-key", other, stdin=token)
    assert twice.returncode == 1, twice.stderr
    assert "module join failed" in twice.stderr and "used already" in twice.stderr
    assert "new join token" in twice.stderr and "plant auth login" not in twice.stderr
    listed = admin("--json", "module", "list")
    assert listed.returncode == 0, listed.stderr
    names = [m["name"] for m in json.loads(listed.stdout)["modules"]]
    assert "sensor-7" in names and other not in listed.stdout


def test_a_user_without_the_permission_is_refused(env: Setup) -> None:
    workdir, _, admin = env
    r = admin(
        "user", "create", "bob", "--email", "bob@plant.example", "--password-stdin",
        stdin=BOB_PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    bob = Plant(workdir / "home-bob", env.broker)
    nobody = bob("module", "list")
    assert nobody.returncode == 4 and "plant auth login" in nobody.stderr

    r = bob("auth", "login", "-u", "bob", "--password-stdin", stdin=BOB_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    _, public = _key_pair(workdir, "rogue")
    for args in (
        ("module", "enroll", "rogue", "--public-key", public, "--service", "acme.Rogue"),
        ("module", "join-token", "--name", "rogue", "--service", "acme.Rogue"),
        ("module", "list"),
    ):
        denied = bob(*args)
        assert denied.returncode == 1, denied.stderr
        assert "PERMISSION_DENIED" in denied.stderr and "assign-role" in denied.stderr
        assert denied.stdout == ""
    assert "rogue" not in admin("module", "list").stdout
