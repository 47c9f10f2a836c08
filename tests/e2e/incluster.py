"""Runs inside the cluster, in a pod of the plantd image (mounted from a ConfigMap by
test_e2e_real_node.py): talks to what the operator deployed through its Services only.

    python3 incluster.py check ADDRESS           login, services, echo, a state write and read
    python3 incluster.py enroll ADDRESS NAME KEY  enrol a module's CURVE public key to serve NAME
    python3 incluster.py get ADDRESS SCOPE KEY    print one value
    python3 incluster.py load ADDRESS STOPFILE    writes until STOPFILE exists, then reads back
                                                  (the count acknowledged so far in STOPFILE.acked)

The administrator's password is read from $PLANTD_E2E_PASSWORD_FILE (a Secret volume). Each
command prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from plantd.sdk.client import Client
from plantd.v1 import bus_pb2, identity_pb2, state_pb2

SCOPE = "e2e"
ECHO = "e2e.module.Echo"  # a user module: names under org.plantd. are plantd's own


def _login(client: Client) -> None:
    password = Path(os.environ["PLANTD_E2E_PASSWORD_FILE"]).read_text().strip()
    client.login("admin", password, timeout=10)


def check(address: str, echo: bool) -> dict[str, Any]:
    with Client(address) as client:
        _login(client)
        services = list(client.bus.ListServices(bus_pb2.ListServicesRequest(), timeout=10).services)
        client.state.SetEntry(
            state_pb2.SetEntryRequest(scope=SCOPE, key="hello", value="world"), timeout=10
        )
        got = client.state.GetEntry(state_pb2.GetEntryRequest(scope=SCOPE, key="hello"), timeout=10)
        out: dict[str, Any] = {"services": services, "value": got.entry.value}
        if echo:
            reply = client.bus.Call(
                bus_pb2.CallRequest(service=ECHO, frames=[b"echo", b"ping", b"e2e"]), timeout=10
            )
            out["echo"] = [f.decode() for f in reply.frames]
        return out


def enroll(address: str, name: str, public_key: str) -> dict[str, Any]:
    with Client(address) as client:
        _login(client)
        client.identity.EnrollModule(
            identity_pb2.EnrollModuleRequest(
                module=identity_pb2.Module(
                    name=name, kind="module", public_key=public_key, services=[ECHO]
                )
            ),
            timeout=10,
        )
        return {"enrolled": name}


def get(address: str, scope: str, key: str) -> dict[str, Any]:
    with Client(address) as client:
        _login(client)
        got = client.state.GetEntry(state_pb2.GetEntryRequest(scope=scope, key=key), timeout=10)
        return {"value": got.entry.value, "version": got.entry.version}


def load(address: str, stop_file: str) -> dict[str, Any]:
    """Writes e2e/load-N one after another until stop_file exists, counting failures; then reads
    every acknowledged key back (a lost write is one acknowledged but not read back). The count
    acknowledged so far is kept in stop_file + ".acked", so the test can wait for progress."""
    progress = Path(stop_file + ".acked")
    acked: list[int] = []
    failed = 0
    errors: dict[str, int] = {}
    started = time.monotonic()
    last_ack = started
    longest_gap = 0.0  # the longest time without an acknowledged write: the outage
    n = 0
    client = Client(address)
    _login(client)
    while not Path(stop_file).exists():
        n += 1
        try:
            client.state.SetEntry(
                state_pb2.SetEntryRequest(scope=SCOPE, key=f"load-{n}", value=str(n)), timeout=3
            )
            acked.append(n)
            now = time.monotonic()
            longest_gap = max(longest_gap, now - last_ack)
            last_ack = now
            progress.write_text(str(len(acked)))
        except grpc.RpcError as error:
            failed += 1
            code = error.code().name if error.code() else "UNKNOWN"
            errors[code] = errors.get(code, 0) + 1
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                _login(client)
            time.sleep(0.2)
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    lost = 0
    for i in acked:
        for _attempt in range(20):
            try:
                got = client.state.GetEntry(
                    state_pb2.GetEntryRequest(scope=SCOPE, key=f"load-{i}"), timeout=3
                )
                lost += got.entry.value != str(i)
                break
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    lost += 1
                    break
                time.sleep(0.5)
        else:
            lost += 1
    client.close()
    return {
        "attempted": n,
        "acked": len(acked),
        "failed": failed,
        "errors": errors,
        "lost": lost,
        "seconds": round(elapsed, 1),
        "longest_gap_s": round(longest_gap, 2),
    }


def main(argv: list[str]) -> int:
    command, address, *rest = argv
    if command == "check":
        result = check(address, echo="--echo" in rest)
    elif command == "enroll":
        result = enroll(address, rest[0], rest[1])
    elif command == "get":
        result = get(address, rest[0], rest[1])
    elif command == "load":
        result = load(address, rest[0])
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
