"""Broker sets (docs/ha.md): the grammar, the split of credit, and what a lookup keeps."""

from __future__ import annotations

import asyncio
import logging

import pytest

from plantd.common import endpoints
from plantd.common.discovery import BrokerSet
from plantd.common.endpoints import InvalidEndpoint, SetEntry, parse_endpoint_set
from plantd.mdp.fleet import credit_split


def test_a_single_endpoint_is_a_set_of_one() -> None:
    assert parse_endpoint_set("tcp://127.0.0.1:9797") == (SetEntry("tcp://127.0.0.1:9797", False),)


def test_lists_and_dns_entries() -> None:
    got = parse_endpoint_set("tcp://a:1, dns:tcp://peers.ns.svc:9797,ipc:///tmp/b")
    assert got == (
        SetEntry("tcp://a:1", False),
        SetEntry("tcp://peers.ns.svc:9797", True),
        SetEntry("ipc:///tmp/b", False),
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("tcp://a:1,,tcp://b:2", "empty entry"),
        ("tcp://a:1,", "empty entry"),
        ("tcp://a:1,tcp://a:1", "listed twice"),
        ("dns:ipc:///tmp/x", "needs a tcp://"),
        ("dns:tcp://a", "no port"),
        ("tcp://a:1,tcp://*:2", "for binding"),
        (",".join(f"tcp://h{i}:1" for i in range(65)), "more than 64"),
    ],
)
def test_bad_sets_say_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidEndpoint, match=reason):
        parse_endpoint_set(value)


def test_tcp_endpoint_brackets_ipv6_and_split_undoes_it() -> None:
    assert endpoints.tcp_endpoint("fd00::7", 9797) == "tcp://[fd00::7]:9797"
    assert endpoints.split_tcp("tcp://[fd00::7]:9797") == ("fd00::7", 9797)
    assert endpoints.split_tcp(endpoints.tcp_endpoint("10.0.0.7", 1)) == ("10.0.0.7", 1)


@pytest.mark.parametrize(("total", "brokers"), [(8, 3), (200, 3), (1, 1), (5, 5), (7, 2)])
def test_credit_split_never_over_commits_while_there_is_credit_to_share(
    total: int, brokers: int
) -> None:
    shares = credit_split(total, brokers)
    assert len(shares) == brokers and sum(shares) == total
    assert max(shares) - min(shares) <= 1 and shares == sorted(shares, reverse=True)


def test_credit_split_gives_every_broker_one_even_when_credit_is_short() -> None:
    assert credit_split(2, 3) == [1, 1, 1]  # documented: a worker must take one at a time
    assert credit_split(4, 0) == []


def test_a_broker_set_resolves_names_and_keeps_the_last_answer_when_dns_fails() -> None:
    answers: list[list[str] | OSError] = [["10.0.0.2", "10.0.0.1"], OSError("SERVFAIL"), []]
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return sorted(answer)

    brokers = BrokerSet("tcp://static:1,dns:tcp://peers:9797", resolver)
    assert brokers.discovering

    async def rounds() -> list[list[str]]:
        return [await brokers.resolve() for _ in range(3)]

    first, during_outage, emptied = asyncio.run(rounds())
    assert first == ["tcp://static:1", "tcp://10.0.0.1:9797", "tcp://10.0.0.2:9797"]
    assert during_outage == first  # a DNS hiccup unregisters nobody
    assert emptied == ["tcp://static:1"]  # the name answered: no broker behind it now
    assert asked == [("peers", 9797)] * 3


def test_a_static_set_never_looks_anything_up() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("looked up a static set")

    brokers = BrokerSet("tcp://a:1,tcp://b:2", resolver)
    assert not brokers.discovering
    assert asyncio.run(brokers.resolve()) == ["tcp://a:1", "tcp://b:2"]


def test_a_failing_name_is_warned_about_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[list[str] | OSError] = [OSError("SERVFAIL")] * 3 + [["10.0.0.1"], OSError("x")]

    async def resolver(host: str, port: int) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    brokers = BrokerSet("dns:tcp://peers:9797", resolver)

    async def rounds() -> None:
        for _ in range(5):
            await brokers.resolve()

    with caplog.at_level(logging.INFO, logger="plantd.discovery"):
        asyncio.run(rounds())
    said = [r.getMessage() for r in caplog.records]
    assert [m for m in said if m.startswith("cannot resolve")] == [
        "cannot resolve broker name peers (SERVFAIL); keeping the 0 broker(s) it had",
        "cannot resolve broker name peers (x); keeping the 1 broker(s) it had",
    ]
    assert said.count("broker name peers resolves again") == 1
