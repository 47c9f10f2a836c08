"""`plant`, `plantd` and the components as real processes: bad endpoints, unsafe key and config
files, and the MDP dialects (issue 7, items 7 and 8)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from clikit import run_cli
from tests.kit import echo_process, free_port, make_keys, require, start_broker

from plantd.echo.handler import handle

pytestmark = pytest.mark.integration


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:notaport", "tcp://[::1"])
def test_malformed_endpoint_exits_2_with_a_message(env: dict[str, str], endpoint: str) -> None:
    r = run_cli("plant", ["--no-curve", "--endpoint", endpoint, "echo", "hi"], env)
    assert r.returncode == 2, r.stderr
    assert endpoint in r.stderr and "invalid endpoint" in r.stderr
    _no_traceback(r.stdout, r.stderr)
    # From the environment it is a configuration error (exit 4), still without a traceback.
    r = run_cli("plant", ["services"], {**env, "PLANTD_CLIENT_ENDPOINT": endpoint})
    assert r.returncode == 4 and endpoint in r.stderr, r.stderr
    _no_traceback(r.stdout, r.stderr)


def _open_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def test_writable_key_directory_is_refused_everywhere(env: dict[str, str], tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys", ("echo", "client"))
    keys.chmod(0o777)
    fix = f"chmod go-w {keys}"
    runs = {
        "plant": run_cli("plant", ["--curve-keys", str(keys), "echo", "hi"], env),
        "plantd keys generate": run_cli("plantd", ["keys", "generate", "--dir", str(keys)], env),
        "plantd echo": run_cli(
            "plantd",
            ["echo", "--curve-keys", str(keys), "--http-port", "0", "--log-format", "text"],
            env,
        ),
        "plantd broker": run_cli(
            "plantd",
            [
                "broker",
                "--curve-keys",
                str(keys),
                "--endpoint",
                f"tcp://127.0.0.1:{free_port()}",
                "--http-port",
                "0",
                "--log-format",
                "text",
            ],
            env,
        ),
    }
    for what, r in runs.items():
        assert r.returncode == 4, f"{what}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        out = r.stdout + r.stderr
        assert str(keys) in out and fix in out, f"{what}: {out}"
        _no_traceback(r.stdout, r.stderr)
    # Nothing was written into the refused directory.
    names = ("broker", "echo", "client")
    assert {p.name for p in keys.iterdir()} == {
        f"{n}{s}" for n in names for s in (".key", ".key_secret")
    }


def test_plantd_up_refuses_a_writable_state_or_key_directory(
    env: dict[str, str], tmp_path: Path
) -> None:
    offset = ["--port-offset", str(20000 + free_port() % 20000)]
    state = _open_dir(tmp_path / "state-open")
    r = run_cli("plantd", ["up", "--state-dir", str(state), *offset], env)
    assert r.returncode == 4 and f"chmod go-w {state}" in r.stdout + r.stderr, r.stderr
    state = tmp_path / "state-ok"
    state.mkdir(mode=0o700)
    keys = _open_dir(state / "keys")
    r = run_cli("plantd", ["up", "--state-dir", str(state), *offset], env)
    assert r.returncode == 4 and f"chmod go-w {keys}" in r.stdout + r.stderr, r.stderr
    assert list(keys.iterdir()) == []  # no key was generated into it
    _no_traceback(r.stdout, r.stderr)


def test_writable_config_file_warns_and_refuses_turning_curve_off(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config.write_text(f"profiles:\n  default:\n    endpoint: {endpoint}\n    timeout: 0.3\n")
    config.chmod(0o666)
    env = {**env, "PLANTD_CONFIG": str(config)}
    r = run_cli("plant", ["config", "show"], env)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and str(config) in r.stderr and "chmod 600" in r.stderr
    config.write_text(f"profiles:\n  default:\n    endpoint: {endpoint}\n    curve: false\n")
    r = run_cli("plant", ["echo", "hi"], env)
    assert r.returncode == 4 and "CURVE off" in r.stderr and str(config) in r.stderr, r.stderr
    _no_traceback(r.stdout, r.stderr)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """Our broker (no CURVE) with an echo module in the legacy dialect."""
    broker = start_broker(tmp_path)
    echo = echo_process(tmp_path, broker.endpoint, extra=["--dialect", "legacy"])
    try:
        echo.start().wait_ready()
        yield broker.endpoint
    finally:
        echo.stop()
        broker.stop()


def test_every_dialect_talks_to_our_broker(bus: str, env: dict[str, str]) -> None:
    """`plantd echo --dialect legacy` serves; `plant --dialect X` reaches it in each dialect."""
    for dialect in ("mdp02", "mdp01", "legacy"):
        r = run_cli(
            "plant", ["--no-curve", "--endpoint", bus, "--dialect", dialect, "echo", "hi"], env
        )
        assert r.returncode == 0, f"{dialect}: {r.stderr}"
        assert r.stdout.strip() == "hi", dialect
    r = run_cli(
        "plant",
        ["--no-curve", "--endpoint", bus, "echo", "hi"],
        {**env, "PLANTD_CLIENT_DIALECT": "legacy"},
    )
    assert r.returncode == 0 and r.stdout.strip() == "hi", r.stderr


class LegacyOnlyBroker:
    """The original Go broker's parsing (reference plantd-original §3.2): it pops one frame
    (the empty delimiter), needs header MDPC02 and the ASCII command REQUEST, and silently
    drops anything else: MDP/0.2 and MDP/0.1 requests get no reply at all. It answers
    `mmi.service` and the echo service, in the original's reply layout."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.bind(self.endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            frames = self._sock.recv_multipart()
            if len(frames) < 5 or frames[1] != b"" or frames[2:4] != [b"MDPC02", b"REQUEST"]:
                continue  # what the original does with every other message
            peer, service, body = frames[0], frames[4], frames[5:]
            reply = [b"200"] if service == b"mmi.service" else handle(body)
            self._sock.send_multipart([peer, b"MDPC02", b"FINAL", service, *reply])
        self._sock.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.term()


def test_hint_names_the_dialect_a_broker_answers(env: dict[str, str]) -> None:
    original = LegacyOnlyBroker()
    try:
        base = ["--no-curve", "--endpoint", original.endpoint, "--timeout", "1"]
        r = run_cli("plant", [*base, "echo", "hi"], env)
        assert r.returncode == 3, r.stderr
        assert "answered, but not in the mdp02 dialect: it answers legacy" in r.stderr, r.stderr
        assert "--dialect legacy" in r.stderr
        _no_traceback(r.stdout, r.stderr)
        r = run_cli("plant", [*base, "--dialect", "legacy", "echo", "hi"], env)
        assert r.returncode == 0 and r.stdout.strip() == "hi", r.stderr
    finally:
        original.close()


def test_hint_when_nothing_listens(env: dict[str, str]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    r = run_cli(
        "plant", ["--no-curve", "--endpoint", endpoint, "--timeout", "0.5", "services"], env
    )
    assert r.returncode == 3 and "nothing answered" in r.stderr, r.stderr


def test_hint_for_a_broker_that_answers_no_dialect_of_ours(env: dict[str, str]) -> None:
    """majortomo 0.2.0 (an independent MDP/0.2 broker) drops all three of our dialects: it wants
    an empty delimiter before the header. plant must say a broker is there but answers none."""
    require(
        importlib.util.find_spec("majortomo") is not None,
        "majortomo is not installed: pip install majortomo==0.2.0",
    )
    from majortomo.broker import Broker as Majortomo

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    broker = Majortomo(bind=endpoint)
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    try:
        r = run_cli(
            "plant", ["--no-curve", "--endpoint", endpoint, "--timeout", "1", "echo", "hi"], env
        )
        assert r.returncode == 3, r.stderr
        assert "answered no MDP request in any dialect" in r.stderr, r.stderr
        _no_traceback(r.stdout, r.stderr)
    finally:
        broker.stop()  # type: ignore[no-untyped-call]  # majortomo is untyped
        thread.join(5)
