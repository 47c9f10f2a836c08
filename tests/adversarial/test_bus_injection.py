"""Issue 7 case 6: hostile events on the state bus never crash a watcher."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import zmq
from tests.adversarial.advkit import PYTHON, Bounds, Stack, _env, under_attack
from tests.kit.wait import wait_for

pytestmark = pytest.mark.adversarial

SCOPE = "adv6"
REAL = 5
_EVENT = '{"op":"set","key":"forged","value":"x","version":1,"ts":0,"revision":%s}'
# What any allowed key can publish on the state bus (a watcher json-decodes each one).
FORGED: list[bytes] = [
    (_EVENT % "Infinity").encode(),  # the issue: OverflowError in events.decode
    (_EVENT % "-Infinity").encode(),
    (_EVENT % "NaN").encode(),
    (_EVENT % "1e400").encode(),
    (_EVENT % ("9" * 5000)).encode(),  # past Python's 4300-digit int limit
    (_EVENT % '"7"').encode(),
    (_EVENT % "null").encode(),
    b'{"op":"nope","key":[],"value":{},"version":"x","revision":3,"ts":"y"}',
    b"[1, 2, 3]",
    b"not json at all \xff\xfe",
    b"",
    b"{" * 10_000,  # deep nesting: RecursionError in a naive decoder
]


def test_watcher_survives_forged_events(stack: Stack) -> None:
    """`plant state watch` runs while every kind of malformed event is published on its scope
    between real writes: it prints each real change (and none of the forged ones) and exits 0
    after --count; the issue's `"revision": Infinity` killed every watcher."""
    pub_ep, sub_ep = stack.bus("state")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    stack.curve("attacker").apply(pub)
    pub.connect(pub_ep)
    canary = ctx.socket(zmq.SUB)
    canary.linger = 0
    stack.curve("client").apply(canary)
    canary.subscribe(SCOPE.encode())
    canary.connect(sub_ep)

    def through() -> bool:
        pub.send_multipart([SCOPE.encode(), b"canary"])
        return bool(canary.poll(100))

    wait_for(through, 20.0, "the forging publisher's messages to reach a subscriber")
    canary.close(0)
    argv = [PYTHON, "-m", "plantd.cli.plant", "--endpoint", stack.endpoint, "--json"]
    argv += ["--curve-keys", str(stack.keys), "state", "watch", "--service", SCOPE]
    # The scope exists first and the watcher resumes from its revision: a real write made before
    # the watcher process has started and subscribed still arrives as a change (from
    # changes-since), never folded into a snapshot (that race failed one CI run).
    state = stack.state_client(timeout=10)
    revision = int(state.create_scope(SCOPE)["revision"])
    argv += ["--bus-endpoint", sub_ep, "--count", str(REAL), "--from-revision", str(revision)]
    env = {**_env(), "HOME": str(stack.tmp / "home")}
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(b.decode() for b in watcher.stdout or []), daemon=True
    )
    reader.start()
    try:
        with under_attack(stack, "case 6", Bounds({"broker": 100, "state": 100}), ("echo",)):
            for i in range(REAL):
                for payload in FORGED:
                    pub.send_multipart([SCOPE.encode(), payload])
                state.set(SCOPE, f"real{i}", str(i))

                def printed(i: int = i) -> bool:
                    return watcher.poll() is not None or any(f"real{i}" in ln for ln in lines)

                wait_for(printed, 20.0, f"the watcher to print real{i}")
                if watcher.poll() not in (None, 0):
                    err = watcher.stderr.read().decode(errors="replace") if watcher.stderr else ""
                    raise AssertionError(f"the watcher died ({watcher.returncode}):\n{err[-1500:]}")
            code = watcher.wait(30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)
        pub.close(0)
    reader.join(5)
    err = (watcher.stderr.read() if watcher.stderr else b"").decode(errors="replace")
    print(f"[case 6] watcher exit {code}; printed {len(lines)} lines; stderr {err[-300:]!r}")
    assert code == 0, f"the watcher exited {code}:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    keys = [json.loads(ln).get("key") for ln in lines if ln.strip()]
    assert keys == [f"real{i}" for i in range(REAL)], keys
