"""``plant module``: machine identities at org.plantd.Identity (category ``modules``).

An identity is one CURVE public key and what it may do on the bus: the MDP services it may
serve, the topic prefixes it may publish per bus, the permissions its requests carry
(docs/identity.md, "Machine identities"). An administrator enrols a key directly
(``enroll``) or issues a one-time join token that the module redeems for its own key
(``join-token`` then, on the module's machine, ``join``).

Only a public key ever leaves this process: a key file holding a secret key is read for its
public part, and the secret is dropped. A join token is read from stdin (or a no-echo prompt),
never from argv, and printed once, to stdout only.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from plantd.cli import output
from plantd.cli.admin_output import Record, confirm, run_admin, run_list, yes_option
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import IdentityReplyError, admin, call, cli_error
from plantd.cli.password_input import MAX_STDIN_BYTES
from plantd.cli.settings import get_settings
from plantd.common import contract, curve

F = TypeVar("F", bound=Callable[..., Any])

CATEGORY: Final = "modules"
KINDS: Final = ("module", "device", "client")  # + "plantd" for enroll (needs system:admin)
# A CURVE certificate is a few hundred bytes; anything far larger is the wrong file.
MAX_KEY_FILE_BYTES: Final = 64 * 1024
MAX_JOIN_TOKEN_CHARS: Final = 256  # identity's are 50; the bound only stops a wrong file early
KEYGEN_HINT: Final = (
    "a module without a key pair yet: `plantd keys generate --name NAME` writes NAME.key "
    "(public, pass it here) and NAME.key_secret (stays on the module's machine)"
)
_TTL: Final = re.compile(r"^\s*(\d{1,7})\s*([smhd]?)\s*$")
_TTL_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# Where plant module's errors differ from the shared table (identity_client._HINTS).
HINTS: Final = {
    "NOT_FOUND": "`plant module list` shows the enrolled identities",
    "CONFLICT": "that name or public key is enrolled already: `plant module get NAME` shows "
    "it, `plant module revoke NAME` frees it",
}
JOIN_HINTS: Final = {
    "UNAUTHENTICATED": "ask an administrator for a new join token "
    "(`plant module join-token --name NAME ...`); each one enrols once",
    "PERMISSION_DENIED": "the join token is for another name: leave out --name, or ask for "
    "a token for this one (the refused token is used up)",
    "RATE_LIMITED": "too many enrolment attempts from here or overall; wait and retry",
    **HINTS,
}


# ---- pure parts ---------------------------------------------------------------------------------


def parse_publish(values: Sequence[str]) -> dict[str, list[str]]:
    """``BUS=PREFIX`` options as identity's ``publish`` map (repeats merged, order kept).

    An empty PREFIX (``event=``) means every topic of that bus; identity refuses it where it
    would cover a reserved topic."""
    out: dict[str, list[str]] = {}
    for value in values:
        bus, sep, prefix = value.partition("=")
        bus = bus.strip()
        if not sep or not bus:
            raise CliError(
                f"--publish {value!r}: expected BUS=PREFIX, e.g. event=acme.pump.",
                code=ExitCode.USAGE,
            )
        if bus not in contract.BUS_PORTS:
            raise CliError(
                f"--publish {value!r}: there is no bus {bus!r}",
                hint=f"one of {', '.join(contract.BUS_PORTS)}",
                code=ExitCode.USAGE,
            )
        prefixes = out.setdefault(bus, [])
        if prefix not in prefixes:
            prefixes.append(prefix)
    return out


def parse_ttl(value: str) -> int:
    """``90s``, ``30m``, ``1h``, ``2d`` or plain seconds, as seconds."""
    m = _TTL.match(value)
    seconds = int(m.group(1)) * _TTL_UNITS[m.group(2)] if m else 0
    if seconds <= 0:
        raise CliError(
            f"--ttl {value!r}: expected a duration like 90s, 30m, 1h or 2d",
            code=ExitCode.USAGE,
        )
    return seconds


def read_key_file(path: Path) -> tuple[str, bool]:
    """The public key in ``path`` and whether the file also held a secret key (dropped here).

    Reads a certificate (``NAME.key``, or ``NAME.key_secret`` for its public part) or a bare
    40-character key file."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CliError(
            f"cannot read key file {path}: {exc.strerror}", hint=KEYGEN_HINT, code=ExitCode.CONFIG
        ) from None
    if not path.is_file() or st.st_size > MAX_KEY_FILE_BYTES:
        raise CliError(
            f"{path} is not a CURVE key file (a regular file of at most "
            f"{MAX_KEY_FILE_BYTES // 1024} KiB)",
            hint=KEYGEN_HINT,
            code=ExitCode.CONFIG,
        )
    try:
        pair = curve.load_keypair(path)
    except curve.CurveKeyError as exc:
        raise CliError(str(exc), hint=KEYGEN_HINT, code=ExitCode.CONFIG) from None
    # Only the public half is kept; the secret never reaches a request.
    return pair.public.decode("ascii"), pair.secret is not None


def join_token_from(data: bytes) -> str:
    """The join token on standard input: one line of printable ASCII without spaces."""
    if len(data) > MAX_STDIN_BYTES:
        raise CliError(
            f"over {MAX_STDIN_BYTES} bytes on standard input: expected one line, the join token",
            code=ExitCode.USAGE,
        )
    lines = data.decode("ascii", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise CliError("--join-token-stdin expects one line: the join token", code=ExitCode.USAGE)
    if len(token) > MAX_JOIN_TOKEN_CHARS or not all(33 <= ord(c) < 127 for c in token):
        raise CliError(
            "standard input does not hold a join token (printable ASCII without spaces, "
            f"at most {MAX_JOIN_TOKEN_CHARS} characters)",
            code=ExitCode.USAGE,
        )
    return token


def grant(
    name: str,
    kind: str,
    services: Sequence[str],
    publish: Sequence[str],
    permissions: Sequence[str],
) -> dict[str, Any]:
    """The request fields of a grant (identity validates and guards them)."""
    return {
        "name": name,
        "kind": kind,
        "services": list(dict.fromkeys(services)),
        "publish": parse_publish(publish),
        "permissions": list(dict.fromkeys(permissions)),
    }


def module_line(module: Record) -> str:
    return (
        f"{module.get('name')} ({module.get('kind')}) key {module.get('public_key')}; "
        f"serves: {_joined(module.get('services'))}; publishes: {_topics(module)}; "
        f"permissions: {_joined(module.get('permissions'))}"
    )


def _joined(values: object) -> str:
    if not isinstance(values, list):
        return "-"
    return ", ".join(str(v) for v in values) or "-"


def _topics(module: Record) -> str:
    """``publish`` as ``BUS=PREFIX, ...`` (the --publish syntax)."""
    publish = module.get("publish")
    if not isinstance(publish, dict):
        return "-"
    pairs = [f"{b}={p}" for b, ps in publish.items() if isinstance(ps, list) for p in ps]
    return ", ".join(pairs) or "-"


def _when(stamp: object) -> str:
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return "?"
    return f"{datetime.datetime.fromtimestamp(stamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _by(who: object) -> str:
    """``enrolled_by``: a user id, or ``join:<token id>`` for a redeemed join token."""
    text = str(who or "?")
    return f"user {text}" if text.isdigit() else text


def _module_text(prefix: str) -> Callable[[Record], str]:
    return lambda data: prefix + module_line(data.get("module") or {})


# ---- commands -----------------------------------------------------------------------------------


@click.group("module")
def module() -> None:
    """Enrol, list, show and revoke machine identities (a CURVE public key and its rights).

    An identity may serve the MDP services it is given (exact names, or a prefix ending .*),
    publish on a bus under its topic prefixes, and carry its permissions. Names under
    org.plantd.* and the state bus are plantd's own. Needs identity:module:enroll,
    :join-token, :list, :read or :revoke. A module without a key pair: `plantd keys generate
    --name NAME` makes one.
    """


def _grant_options(kinds: Sequence[str]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for option in reversed(
            (
                click.option(
                    "-s",
                    "--service",
                    "services",
                    multiple=True,
                    metavar="NAME",
                    help="an MDP service it may serve (repeatable): exact, or a prefix like acme.*",
                ),
                click.option(
                    "--publish",
                    multiple=True,
                    metavar="BUS=PREFIX",
                    help="a topic prefix it may publish on a bus (repeatable), e.g. "
                    "event=acme.pump. (BUS one of " + ", ".join(contract.BUS_PORTS) + ")",
                ),
                click.option(
                    "-p",
                    "--permission",
                    "permissions",
                    multiple=True,
                    metavar="PERM",
                    help="a permission its requests carry (repeatable), e.g. state:data:read",
                ),
                click.option(
                    "--kind",
                    type=click.Choice(list(kinds)),
                    default="module",
                    show_default=True,
                    help="what it is"
                    + (
                        "; plantd (may serve org.plantd.*) needs system:admin"
                        if "plantd" in kinds
                        else ""
                    ),
                ),
            )
        ):
            func = option(func)
        return func

    return apply


def _key_options(func: F) -> F:
    func = click.option(
        "--key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="its CURVE key file: NAME.key (or NAME.key_secret: only the public part is sent)",
    )(func)
    return click.option(
        "--public-key",
        metavar="Z85",
        default=None,
        help="its CURVE public key (40 characters; quote it: Z85 uses shell characters)",
    )(func)


def public_key_of(public_key: str | None, key_file: Path | None) -> str:
    """The one public key given (``--public-key`` or ``--key-file``); exit 2 for none or two."""
    if (public_key is None) == (key_file is None):
        raise CliError(
            "give the key to enrol: --key-file FILE or --public-key Z85 (one of them)",
            hint=KEYGEN_HINT,
            code=ExitCode.USAGE,
        )
    if public_key is not None:
        return public_key.strip()  # identity checks it is a Z85 CURVE public key
    assert key_file is not None
    key, had_secret = read_key_file(key_file.expanduser())
    if had_secret:
        sys.stderr.write(f"note: {key_file} holds a secret key; only its public key is sent\n")
    return key


@module.command("enroll")
@click.argument("name")
@_key_options
@_grant_options((*KINDS, "plantd"))
def enroll(
    name: str,
    public_key: str | None,
    key_file: Path | None,
    services: tuple[str, ...],
    publish: tuple[str, ...],
    permissions: tuple[str, ...],
    kind: str,
) -> None:
    """Enrol NAME's CURVE public key and its rights on the bus.

    It may serve the --service names and publish under the --publish topics.
    You cannot grant a permission you do not hold. A module without a key pair yet:
    `plantd keys generate --name NAME` (on its machine) writes NAME.key to pass here.
    """
    body = grant(name, kind, services, publish, permissions)
    body["public_key"] = public_key_of(public_key, key_file)
    run_admin(
        CATEGORY, "enroll", body, _module_text("enrolled "), what="module enroll", hints=HINTS
    )


@module.command("join-token")
@click.option("--name", required=True, help="the identity the token enrols")
@_grant_options(KINDS)
@click.option(
    "--ttl",
    metavar="DURATION",
    default=None,
    help="how long it may be redeemed, e.g. 30m [default: identity's, at most 1 h unless "
    "configured]",
)
def join_token(
    name: str,
    services: tuple[str, ...],
    publish: tuple[str, ...],
    permissions: tuple[str, ...],
    kind: str,
    ttl: str | None,
) -> None:
    """Issue a one-time join token; the module runs `plant module join`.

    The token is printed once, to stdout. It is a secret: whoever holds it can enrol one key
    as NAME until it expires. The holder cannot widen the grant.
    """
    settings = get_settings()
    body = grant(name, kind, services, publish, permissions)
    if ttl is not None:
        body["ttl_s"] = parse_ttl(ttl)
    data = admin(settings, CATEGORY, "join-token", body, what="module join-token", hints=HINTS)
    token = data.get("join_token")
    if not isinstance(token, str) or not token:
        raise CliError("identity returned no join token", code=ExitCode.ERROR_REPLY)
    sys.stderr.write(
        f"warning: this join token is a secret: whoever holds it can enrol a key as {name} "
        f"once, until {_when(data.get('expires_at'))}. Hand it to the module over a private "
        "channel; it is not shown again. On the module: plant module join "
        f"--join-token-stdin --key-file {name}.key\n"
    )
    if settings.json_output:
        output.print_json(data)
    else:
        sys.stdout.write(token + "\n")
        sys.stdout.flush()


@module.command("join")
@_key_options
@click.option("--join-token-stdin", is_flag=True, help="read the join token from stdin (one line)")
@click.option("--name", default=None, help="refuse unless the token is for this name")
@click.option("--join-token", "argv_token", hidden=True, default=None)
def join(
    public_key: str | None,
    key_file: Path | None,
    join_token_stdin: bool,
    name: str | None,
    argv_token: str | None,
) -> None:
    """Redeem a join token for this module's key (no login needed).

    The token comes from stdin (--join-token-stdin) or a no-echo prompt, never the command
    line. The connection uses the CURVE keys every `plant` command uses (--curve-keys); the
    key enrolled is the one in --key-file. The grant is the one the token was issued for.
    """
    if argv_token is not None:
        raise CliError(
            "a join token on the command line is visible to every user of this machine: "
            "not accepted",
            hint="pipe it in with --join-token-stdin, or leave it out to be asked",
            code=ExitCode.USAGE,
        )
    settings = get_settings()
    key = public_key_of(public_key, key_file)
    token = (
        join_token_from(sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)) if join_token_stdin else _ask()
    )
    body = {"join_token": token, "public_key": key, **({"name": name} if name else {})}
    try:
        data = call(settings, CATEGORY, "enroll", body)  # no user token: the join token is it
    except IdentityReplyError as exc:
        raise cli_error(exc, "module join", JOIN_HINTS) from None
    finally:
        del token, body
    if settings.json_output:
        output.print_json(data)
    else:
        sys.stdout.write(output.frame_text(_module_text("enrolled ")(data).encode()) + "\n")


def _ask() -> str:
    if not sys.stdin.isatty():
        raise CliError(
            "no terminal to ask for the join token on",
            hint="pipe it in with --join-token-stdin",
            code=ExitCode.USAGE,
        )
    value: str = click.prompt("Join token", hide_input=True, err=True)
    return join_token_from(value.encode("ascii", "replace"))


@module.command("list")
def list_modules() -> None:
    """List the enrolled identities."""
    run_list(
        CATEGORY,
        {},
        "modules",
        ["name", "kind", "public key", "services", "publish", "permissions"],
        lambda m: [
            m.get("name"),
            m.get("kind"),
            m.get("public_key"),
            _joined(m.get("services")),
            _topics(m),
            _joined(m.get("permissions")),
        ],
        what="module list",
        hints=HINTS,
    )


@module.command("get")
@click.argument("name")
def get(name: str) -> None:
    """Show NAME's key and rights, and who enrolled it when."""

    def text(data: Record) -> str:
        m = data.get("module") or {}
        return (
            f"{module_line(m)}\n"
            f"enrolled {_when(m.get('enrolled_at'))} by {_by(m.get('enrolled_by'))}"
        )

    run_admin(CATEGORY, "get", {"name": name}, text, what="module get", hints=HINTS)


@module.command("revoke")
@click.argument("name")
@yes_option
def revoke(name: str, yes: bool) -> None:
    """Revoke NAME: its key loses its rights on the bus.

    The broker applies it when it reloads the registry identity writes."""
    confirm(f"revoke module {name}", yes)
    run_admin(
        CATEGORY,
        "revoke",
        {"name": name},
        _module_text("revoked "),
        what="module revoke",
        hints=HINTS,
    )
