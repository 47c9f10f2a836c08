"""A bounded random-input soak of the local stack: ``python -m bench.soak --minutes N``.

Starts broker, echo and state (SQLite) as ``plantd <component>`` children on private loopback
ports with CURVE (the adversarial tier's :class:`Stack`), then for N minutes (fractions allowed)
drives, each from its own thread and socket:

* random and malformed MDP frames: all three dialects' headers, random commands, empty and
  huge (bounded) frame counts, oversized frames;
* random state requests: valid ones, invalid JSON, poisoned literals, repeated keys, oversized
  values, unknown operations;
* slow consumers: clients sending 64 KiB echo requests that never read a reply;
* verifying writers: real clients writing keys with increasing values and recording every
  ACKNOWLEDGED write; halfway the state service is killed with SIGKILL and restarted, and every
  acknowledged write is read back then and at the end.

A live echo probe (its own process and key) runs throughout. Prints inputs tried by kind,
errors by code, probe availability and p99, peak RSS per component and acknowledged writes
lost; exits 1 if any acknowledged write was lost, the probe fell below --min-availability or a
component's peak RSS passed --max-rss-mb.

Forged worker commands only ever use throw-away service names: registering as a worker of a
real service (impersonation) is an authorization question, left to the identity issue.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from tests.adversarial.advkit import Probe, ProbeResult, Stack

from bench._procs import memory_kb
from bench._stats import table
from plantd.common import contract
from plantd.mdp import BrokerError, RequestTimeout
from plantd.mdp.errors import parse_error_body
from plantd.state.client import StateReplyError

MIB = 1024 * 1024
ECHO = b"org.plantd.module.Echo"
STATE = b"org.plantd.State"
HEADERS = (b"MDPC02", b"MDPW02", b"MDPC01", b"MDPW01", b"MDPX99", b"")
COMMANDS = (
    *(bytes([i]) for i in range(9)),
    b"REQUEST",
    b"PARTIAL",
    b"FINAL",
    b"READY",
    b"HEARTBEAT",
    b"DISCONNECT",
    b"credit=99999",
)
CLIENT_SERVICES = (ECHO, STATE, b"mmi.service", b"mmi.services", b"mmi.nope", b"no.such")
STATE_OPS = (
    b"state-get",
    b"state-set",
    b"batch-get",
    b"batch-set",
    b"list-keys",
    b"snapshot",
    b"changes-since",
    b"delete",
    b"create-scope",
    b"list-scopes",
    b"health",
    b"bogus-op",
)
# Frames in the "huge" messages: 12 x the broker's default max_frames (4096). Not more: with
# CURVE each frame is its own crypto box, decrypted by the broker's one libzmq I/O thread
# before the broker can refuse the message; 200,000 stalled every connection ~0.5 s (probe
# timeouts at a 1 s deadline), a cost of libzmq, not of the dispatcher under test.
HUGE_FRAMES = 50_000
OVERSIZED = 17 * MIB  # one frame past the broker's default 16 MiB max_frame_bytes


# --------------------------------------------------------------------------- pure generators


def random_message(rng: random.Random) -> tuple[str, list[bytes]]:
    """``(kind, frames)`` of one hostile message a DEALER sends to the broker."""
    roll = rng.random()
    if roll < 0.01:
        return "huge frame count", [b"MDPC02", b"\x01", ECHO, b"echo"] + [b""] * HUGE_FRAMES
    if roll < 0.012:
        return "oversized frame", [b"MDPC02", b"\x01", ECHO, b"echo", b"o" * OVERSIZED]
    if roll < 0.2:
        # A throw-away name: never impersonate a real service (see the module docstring).
        name = b"soak.fake.%d" % rng.randrange(10**6)
        header = rng.choice((b"MDPW02", b"MDPW01"))
        return "worker command", [header, rng.choice(COMMANDS), name]
    if roll < 0.3:
        return "empty frames", [b""] * rng.randrange(1, 50)
    if roll < 0.5:
        frames = [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 8))]
        return "random bytes", frames
    lead = [b""] if rng.random() < 0.3 else []
    header = rng.choice(HEADERS)
    command = [rng.choice(COMMANDS)] if rng.random() < 0.8 else []
    service = [rng.choice(CLIENT_SERVICES)] if rng.random() < 0.9 else []
    if header in (b"MDPW02", b"MDPW01") and service:
        service = [b"soak.fake.%d" % rng.randrange(10**6)]  # never impersonate a real worker
    body = [rng.randbytes(rng.randrange(0, 256)) for _ in range(rng.randrange(0, 6))]
    return f"{header.decode(errors='replace') or 'no'} header", [
        *lead,
        header,
        *command,
        *service,
        *body,
    ]


def random_state_request(rng: random.Random) -> tuple[str, list[bytes]]:
    """``(kind, body)`` of one state request: valid, malformed or poisoned."""
    scope = rng.choice(("soak-rnd", "soak-rnd2", "x" * 300))
    key = rng.choice(("a", "b", "c", "k" * 2000))
    roll = rng.random()
    if roll < 0.1:
        return "invalid json", [rng.choice(STATE_OPS), rng.choice((b"{", b"[1,", b"\xff", b""))]
    if roll < 0.2:
        poison = rng.choice((b"9" * 5000, b"NaN", b"Infinity", b"1e999", b"[" * 5000))
        return "poisoned literal", [
            b"state-set",
            b'{"service":"soak-rnd","key":"p","value":"v","if_version":' + poison + b"}",
        ]
    if roll < 0.3:
        keys = [rng.choice(("a", "b", "big")) for _ in range(rng.randrange(2, 300))]
        return "repeated keys", [
            b"batch-get",
            json.dumps({"service": scope, "keys": keys}).encode(),
        ]
    if roll < 0.33:
        value = "v" * rng.choice((MIB - 2048, MIB + 1, 3 * MIB))
        return "oversized value", [
            b"state-set",
            json.dumps({"service": "soak-rnd", "key": "big", "value": value}).encode(),
        ]
    if roll < 0.4:
        items = [{"key": "d", "value": str(i), "if_version": 0} for i in range(2)]
        return "duplicate batch-set", [
            b"batch-set",
            json.dumps({"service": "soak-rnd", "items": items}).encode(),
        ]
    op = rng.choice(STATE_OPS)
    body: dict[str, Any] = {"service": scope, "key": key, "value": rng.randbytes(8).hex()}
    body["keys"] = [key]
    if rng.random() < 0.3:
        body["revision"] = rng.choice((0, -1, 2**70, "x"))
    return "valid-ish request", [op, json.dumps(body).encode()]


def reply_code(frames: list[bytes]) -> str:
    """A short label of what the broker sent back: an error code, DISCONNECT, ok, ..."""
    if frames[:2] in ([b"MDPW02", b"\x06"], [b"MDPW01", b"\x05"]) or b"DISCONNECT" in frames[:3]:
        return "DISCONNECT"
    body = frames[3:] if frames[:1] == [b"MDPC02"] else frames[2:]
    err = parse_error_body(list(body))
    if err:
        return err[0]
    for frame in body[:1]:
        try:
            doc = json.loads(frame)
        except (ValueError, UnicodeDecodeError):
            break
        if isinstance(doc, dict) and doc.get("success") is False:
            return f"state:{doc.get('code')}"
    return "ok"


# --------------------------------------------------------------------------- drivers


@dataclass
class Tally:
    """Counts shared by the drivers (each Counter update happens under ``lock``)."""

    inputs: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, counter: Counter[str], key: str, n: int = 1) -> None:
        with self.lock:
            counter[key] += n


def _drain(sock: zmq.Socket[bytes], tally: Tally) -> None:
    while sock.poll(0):
        tally.add(tally.codes, reply_code(sock.recv_multipart()))


def drive_frames(stack: Stack, stop: threading.Event, tally: Tally, seed: int) -> None:
    """Random and malformed messages; a new socket every 200 (the broker forgets old peers)."""
    rng = random.Random(seed)
    while not stop.is_set():
        sock = stack.dealer("attacker", sndhwm=100)
        for _ in range(200):
            if stop.is_set():
                break
            kind, frames = random_message(rng)
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                kind = "dropped (HWM)"
            tally.add(tally.inputs, f"frames: {kind}")
            _drain(sock, tally)
            time.sleep(0.002)
        _drain(sock, tally)
        sock.close(0)


def drive_state(stack: Stack, stop: threading.Event, tally: Tally, seed: int) -> None:
    """Random state requests, a few in flight at a time, replies counted by code."""
    rng = random.Random(seed)
    sock = stack.dealer("attacker", sndhwm=100)
    while not stop.is_set():
        for _ in range(rng.randrange(1, 8)):
            kind, body = random_state_request(rng)
            sock.send_multipart([b"MDPC02", b"\x01", STATE, *body])
            tally.add(tally.inputs, f"state: {kind}")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and sock.poll(100):
            tally.add(tally.codes, reply_code(sock.recv_multipart()))
        time.sleep(0.01)
    sock.close(0)


def drive_slow_consumers(stack: Stack, stop: threading.Event, tally: Tally, seed: int) -> None:
    """Waves of 20 clients each sending 10 x 64 KiB echo requests and never reading."""
    payload = b"s" * (64 * 1024)
    while not stop.is_set():
        socks = [stack.dealer("attacker", rcvhwm=1, rcvbuf=4096) for _ in range(20)]
        for sock in socks:
            for _ in range(10):
                sock.send_multipart([b"MDPC02", b"\x01", ECHO, b"echo", payload], copy=False)
            tally.add(tally.inputs, "slow consumer: 64 KiB request", 10)
        stop.wait(5.0)
        for sock in socks:
            sock.close(0)


@dataclass
class Writer:
    """Writes ``keys`` keys with increasing values; records every acknowledged one."""

    name: str
    keys: int = 20
    acked: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    acks: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def run(self, stack: Stack, stop: threading.Event) -> None:
        state = stack.state_client("client", timeout=5.0)
        while not stop.is_set():
            self.seq += 1
            key = f"{self.name}-{self.seq % self.keys}"
            try:
                state.set("soak", key, str(self.seq))
            except (RequestTimeout, BrokerError, StateReplyError) as exc:
                self.failures[getattr(exc, "code", "timeout")] += 1
                if isinstance(exc, RequestTimeout):  # the client replaced its socket
                    state = stack.state_client("client", timeout=5.0)
                continue
            self.acked[key] = self.seq
            self.acks += 1


def lost_writes(stack: Stack, writers: list[Writer], tally: Tally) -> list[str]:
    """Acknowledged writes not found (a value older than the last acknowledged one).

    Reads are retried on transport errors (a read changes nothing); each retry is counted
    under ``verify retry: CODE`` so a stalling service still shows in the figures."""
    state = stack.state_client("client", timeout=30.0)
    lost: list[str] = []
    for w in writers:
        acked = dict(w.acked)  # the writer may still add: a snapshot to check against
        keys = sorted(acked)
        for i in range(0, len(keys), 100):
            chunk = keys[i : i + 100]
            for attempt in range(10):
                try:
                    data = state.batch_get("soak", chunk)
                    break
                except (RequestTimeout, BrokerError) as exc:
                    tally.add(tally.codes, f"verify retry: {getattr(exc, 'code', 'timeout')}")
                    if attempt == 9:
                        raise
                    time.sleep(0.5)
                    state = stack.state_client("client", timeout=30.0)
            for item in data["items"]:
                want = acked[item["key"]]
                got = int(item["value"]) if item.get("found") else -1
                if got < want:
                    lost.append(f"{item['key']}: acknowledged {want}, read {got}")
    return lost


class MemoryPeaks:
    """Peak RSS (VmHWM) per component, sampled every 0.5 s across restarts (new PIDs)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.peak_kb: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for name, proc in self.stack.procs.items():
            if proc.alive():
                self.peak_kb[name] = max(self.peak_kb[name], memory_kb(proc.pid)[1])

    def start(self) -> MemoryPeaks:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        self.sample()
        return {n: kb / 1024 for n, kb in self.peak_kb.items()}


# --------------------------------------------------------------------------- main


def _threads(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    return threads


def soak(minutes: float, seed: int, workdir: Path) -> SoakResult:
    # The components' own heartbeat (what `plantd up` runs), not the tests' short one: a
    # soak on a shared 2-core box must not turn CPU starvation into expiries.
    stack = Stack(workdir, heartbeat_ms=contract.HEARTBEAT_MS).start()
    try:
        return _soak(stack, minutes, seed)
    finally:
        stack.stop()


def _soak(stack: Stack, minutes: float, seed: int) -> SoakResult:
    tally, stop_attack, stop_writers = Tally(), threading.Event(), threading.Event()
    peaks = MemoryPeaks(stack).start()
    probe = Probe(stack, "echo").start()
    writers = [Writer(f"w{i}") for i in range(3)]
    threads: list[threading.Thread] = []
    try:
        threads += _threads(
            [
                functools.partial(drive_frames, stack, stop_attack, tally, seed),
                functools.partial(drive_state, stack, stop_attack, tally, seed + 1),
                functools.partial(drive_slow_consumers, stack, stop_attack, tally, seed + 2),
            ]
        )
        threads += _threads([functools.partial(w.run, stack, stop_writers) for w in writers])
        t0 = time.monotonic()
        duration = minutes * 60
        time.sleep(duration / 2)
        stack.restart("state", kill9=True)  # a crash: every acknowledged write must survive it
        lost = lost_writes(stack, writers, tally)
        time.sleep(max(0.0, duration - (time.monotonic() - t0)))
    finally:
        stop_attack.set()
        stop_writers.set()
        for t in threads:
            t.join(30)
        result = probe.stop()
    lost += lost_writes(stack, writers, tally)
    return SoakResult(
        seconds=time.monotonic() - t0,
        inputs=dict(tally.inputs),
        codes=dict(tally.codes),
        writes_acked=sum(w.acks for w in writers),
        writes_attempted=sum(w.seq for w in writers),
        write_failures=dict(sum((w.failures for w in writers), Counter())),
        lost=lost,
        probe=result,
        rss_peak_mb=peaks.stop(),
    )


@dataclass
class SoakResult:
    seconds: float
    inputs: dict[str, int]
    codes: dict[str, int]
    writes_acked: int
    writes_attempted: int
    write_failures: dict[str, int]
    lost: list[str]
    probe: ProbeResult
    rss_peak_mb: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["probe"] = {
            "sent": self.probe.sent,
            "answered": self.probe.answered,
            "availability": self.probe.availability,
            "p99_ms": self.probe.p99_ms,
            "failures": self.probe.failures,
        }
        return doc


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: -kv[1])


def report(res: SoakResult, max_rss_mb: float, min_availability: float) -> list[str]:
    """Print the figures; return the reasons to fail (empty: the soak passed)."""
    probe = res.probe
    print(f"soak: {res.seconds:.0f} s")
    print(table(["input", "tried"], _by_count(res.inputs)))
    print()
    print(table(["reply / error code", "count"], _by_count(res.codes)))
    print()
    print(
        f"writes: {res.writes_attempted} attempted, {res.writes_acked} acknowledged, "
        f"failures {res.write_failures}; acknowledged writes lost: {len(res.lost)}"
    )
    for line in res.lost[:20]:
        print(f"  lost {line}")
    print(
        f"probe: {probe.answered}/{probe.sent} answered ({100 * probe.availability:.3f}%), "
        f"p99 {probe.p99_ms:.1f} ms, failures {probe.failures}"
    )
    print("RSS peak: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in sorted(res.rss_peak_mb.items())))
    problems = []
    if res.lost:
        problems.append(f"{len(res.lost)} acknowledged writes lost")
    if probe.availability < min_availability:
        problems.append(
            f"probe availability {100 * probe.availability:.3f}% < {100 * min_availability:.1f}%"
        )
    problems += [
        f"{n} peak RSS {mb:.0f} MB > {max_rss_mb:.0f} MB"
        for n, mb in res.rss_peak_mb.items()
        if mb > max_rss_mb
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="how long to drive (e.g. 0.5)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the random inputs")
    ap.add_argument("--max-rss-mb", type=float, default=512.0, help="peak RSS bound per process")
    ap.add_argument("--min-availability", type=float, default=0.999, help="probe bound (0..1)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    with tempfile.TemporaryDirectory(prefix="plantd-soak-") as tmp:
        res = soak(args.minutes, args.seed, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(res.to_json(), indent=2))
    problems = report(res, args.max_rss_mb, args.min_availability)
    if problems:
        print("soak FAILED: " + "; ".join(problems))
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
