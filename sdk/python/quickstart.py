"""Log in to a plantd gateway, set and get a state key, and watch a change to it: the Python
SDK's quick start (docs/sdk-python.md). The SDK is ``plantd.sdk``, installed with plantd.

Environment: PLANTD_GATEWAY (host:port, default 127.0.0.1:50051), PLANTD_USERNAME (default
admin), PLANTD_PASSWORD_FILE (a file whose first line is the password, as plantd up's
admin-credentials; never put a password on a command line), PLANTD_SCOPE (default sdk-demo).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc

from plantd.sdk import Client, describe
from plantd.v1 import state_pb2


def main() -> None:
    address = os.environ.get("PLANTD_GATEWAY") or "127.0.0.1:50051"
    username = os.environ.get("PLANTD_USERNAME") or "admin"
    scope = os.environ.get("PLANTD_SCOPE") or "sdk-demo"
    password_file = os.environ.get("PLANTD_PASSWORD_FILE") or ""
    if not password_file:
        sys.exit("error: set PLANTD_PASSWORD_FILE to a file holding the password")
    try:
        # The first line is the password (plantd up's admin-credentials has comments after it).
        password = Path(password_file).read_text().split("\n", 1)[0].rstrip("\r")
    except OSError as error:
        sys.exit(f"error: cannot read PLANTD_PASSWORD_FILE: {error}")

    key = "py-quickstart"
    with Client(address) as client:
        try:
            login = client.login(username, password)
            print(f"logged in as {login.user.username}")
            set_ = client.state.SetEntry(
                state_pb2.SetEntryRequest(
                    scope=scope, key=key, value="hello from Python", create_scope=True
                ),
                timeout=30,
            )
            print(f"set {key} = {set_.entry.value} (version {set_.entry.version})")
            got = client.state.GetEntry(state_pb2.GetEntryRequest(scope=scope, key=key), timeout=30)
            print(f"got {key} = {got.entry.value} (version {got.entry.version})")

            # Watch from the revision of our write: the stream starts right after it, so the
            # next change it reports is the one made below, whatever the timing.
            watch = client.state.WatchEntries(
                state_pb2.WatchEntriesRequest(
                    scope=scope, key_prefix=key, start_revision=set_.revision
                ),
                timeout=30,
            )
            client.state.SetEntry(
                state_pb2.SetEntryRequest(scope=scope, key=key, value="changed by Python"),
                timeout=30,
            )
            for batch in watch:
                changes = [c for c in batch.changes if c.entry.key == key]  # scope events: no entry
                if changes:
                    print(
                        f"watched {key} = {changes[0].entry.value} (revision {changes[0].revision})"
                    )
                    watch.cancel()
                    break
        except grpc.RpcError as error:
            print(f"error: {describe(error)}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
