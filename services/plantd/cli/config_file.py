"""The ``plant`` client configuration file: profiles, validation and safe edits.

Layout (YAML; every key optional; no secrets, only paths to key files)::

    default_profile: default
    profiles:
      default:
        endpoint: tcp://127.0.0.1:9797
        timeout: 2.5
        curve: true
        curve_keys: ~/.local/state/plantd/keys
        dialect: mdp02          # or mdp01, legacy (an original Go plantd broker)

The original ``plant config set`` rewrote the whole file with only the keys it had just set.
Here every edit is read-modify-write of the parsed document under an exclusive lock, so keys
(including ones this version does not know) survive; the write is atomic (temp file, fsync,
rename) and the file is created with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.common import contract

ENV_CONFIG = "PLANTD_CONFIG"
DEFAULT_CONFIG_FILE = "~/.config/plantd/config.yaml"
DEFAULT_PROFILE = "default"
TOP_DEFAULT_PROFILE = "default_profile"
ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://", "dns:tcp://")  # dns: a broker set


class ConfigFileError(Exception):
    """The configuration file cannot be read, parsed or written, or a value is invalid."""


def _parse_endpoint(raw: Any) -> str:
    text = str(raw).strip()
    if not text.startswith(ENDPOINT_SCHEMES):
        raise ValueError(
            f"expected an endpoint like tcp://HOST:PORT (or several, comma-separated), got {text!r}"
        )
    # The client library's own check (strict where libzmq is lax: libzmq accepts `tcp://[::1`
    # and then never connects, which looked like a timeout). Imported here: `plant --help`
    # need not load ZeroMQ.
    from plantd.mdp.client import check_brokers

    return check_brokers(text)  # one broker, or a broker set (docs/ha.md)


def _parse_timeout(raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected seconds as a number, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise ValueError(f"timeout must be between 0 and 3600 seconds, got {value}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


DIALECTS = ("mdp02", "mdp01", "legacy")


def _parse_dialect(raw: Any) -> str:
    text = str(raw).strip().lower()
    if text not in DIALECTS:
        raise ValueError(
            f"expected one of {', '.join(DIALECTS)} (MDP/0.2, MDP/0.1, the original Go plantd's "
            f"dialect), got {raw!r}"
        )
    return text


def _parse_path(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ValueError("expected a directory path, got an empty string")
    return text


@dataclass(frozen=True)
class KeySpec:
    parse: Callable[[Any], Any]
    help: str


PROFILE_KEYS: Mapping[str, KeySpec] = {
    "endpoint": KeySpec(_parse_endpoint, "broker endpoint, e.g. tcp://127.0.0.1:9797"),
    "timeout": KeySpec(_parse_timeout, "request timeout in seconds"),
    "curve": KeySpec(parse_bool, "use CURVE encryption to the broker (true/false)"),
    "curve_keys": KeySpec(_parse_path, "directory holding the client key pair and broker.key"),
    "dialect": KeySpec(_parse_dialect, "MDP dialect to speak: mdp02, mdp01 or legacy"),
    "identity_endpoint": KeySpec(_parse_endpoint, "identity service endpoint (later issues)"),
}

DEFAULTS: Mapping[str, Any] = {
    "endpoint": contract.DEFAULT_BROKER_CONNECT,
    "timeout": 2.5,
    "curve": True,
    "curve_keys": contract.DEFAULT_CURVE_KEYS_DIR,
    "dialect": "mdp02",
}


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """``$PLANTD_CONFIG`` if set, else ``$XDG_CONFIG_HOME/plantd/config.yaml`` (~/.config)."""
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]).expanduser() / "plantd" / "config.yaml"
    return Path(DEFAULT_CONFIG_FILE).expanduser()


def load(path: Path) -> dict[str, Any]:
    """The parsed file, or ``{}`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from exc
    import yaml  # here, not at the top: `plant --help` need not pay for it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} must hold a mapping at the top, not {type(data).__name__}")
    return data


def save(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` atomically with mode 0600 (directory 0700 when we create it)."""
    import yaml

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = "# plantd client configuration (`plant config --help`); no secrets here.\n"
    text += yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock around a read-modify-write, so two concurrent edits don't lose one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    # O_NOFOLLOW: a link planted at the lock's name must not make us create its target.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def update(path: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Locked read-modify-write; ``edit`` gets the current document and returns the new one."""
    with locked(path):
        current = load(path)
        new = edit(current)
        if new is not current:  # an edit that changes nothing leaves the file untouched
            save(path, new)
        return new


def profiles(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    raw = data.get("profiles") or {}
    if not isinstance(raw, dict):
        raise ConfigFileError("'profiles' must be a mapping of profile name to settings")
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in raw.items()}


def selected_profile(data: Mapping[str, Any], explicit: str | None) -> str:
    if explicit:
        return explicit
    name = data.get(TOP_DEFAULT_PROFILE)
    return str(name) if name else DEFAULT_PROFILE


def parse_value(key: str, raw: Any) -> Any:
    """Validate and convert one profile value; raises ``ConfigFileError`` naming the key."""
    spec = PROFILE_KEYS.get(key)
    if spec is None:
        known = ", ".join([*PROFILE_KEYS, TOP_DEFAULT_PROFILE])
        raise ConfigFileError(f"unknown key {key!r}; known keys: {known}")
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise ConfigFileError(f"invalid value for {key!r}: {exc}") from None


def with_value(data: Mapping[str, Any], profile: str, key: str, raw: Any) -> dict[str, Any]:
    """A copy of ``data`` with one key set; every other key (known or not) is kept."""
    new = dict(data)
    if key == TOP_DEFAULT_PROFILE:
        new[TOP_DEFAULT_PROFILE] = str(raw)
        return new
    value = parse_value(key, raw)
    all_profiles = {name: dict(values) for name, values in profiles(data).items()}
    all_profiles.setdefault(profile, {})[key] = value
    new["profiles"] = all_profiles
    return new


def without_profile(data: Mapping[str, Any], profile: str) -> dict[str, Any]:
    all_profiles = profiles(data)
    if profile not in all_profiles:
        raise ConfigFileError(f"profile {profile!r} does not exist")
    new = dict(data)
    new["profiles"] = {k: v for k, v in all_profiles.items() if k != profile}
    if new.get(TOP_DEFAULT_PROFILE) == profile:
        del new[TOP_DEFAULT_PROFILE]
    return new


def default_document() -> dict[str, Any]:
    return {
        TOP_DEFAULT_PROFILE: DEFAULT_PROFILE,
        "profiles": {DEFAULT_PROFILE: dict(DEFAULTS)},
    }


def problems(data: Mapping[str, Any], mode: int | None = None) -> list[str]:
    """Everything wrong with a parsed document (empty list: valid)."""
    found: list[str] = []
    if mode is not None and mode & 0o077:
        found.append(f"file mode is {oct(mode & 0o777)}; run `chmod 600` on it")
    for key in data:
        if key not in (TOP_DEFAULT_PROFILE, "profiles"):
            found.append(f"unknown top-level key {key!r}")
    try:
        all_profiles = profiles(data)
    except ConfigFileError as exc:
        return [*found, str(exc)]
    default = data.get(TOP_DEFAULT_PROFILE)
    if default is not None and str(default) not in all_profiles:
        found.append(f"default_profile {default!r} is not defined under 'profiles'")
    for name, values in all_profiles.items():
        if not isinstance(data.get("profiles", {}).get(name), dict):
            found.append(f"profile {name!r} must be a mapping")
            continue
        for key, raw in values.items():
            try:
                parse_value(key, raw)
            except ConfigFileError as exc:
                found.append(f"profile {name!r}: {exc}")
    return found
