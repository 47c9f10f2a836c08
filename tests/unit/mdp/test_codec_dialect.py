"""``Dialect.parse``: the names settings and CLI flags use (``--dialect legacy``)."""

from __future__ import annotations

import pytest

from plantd.mdp.codec import DIALECTS, Dialect

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("d", list(Dialect))
def test_every_label_parses_back(d: Dialect) -> None:
    assert Dialect.parse(d.label) is d
    assert Dialect.parse(f" {d.label.upper()} ") is d


def test_choices_are_the_labels() -> None:
    assert DIALECTS == ("mdp02", "mdp01", "legacy")


@pytest.mark.parametrize("text", ["", "mdp03", "MDPC02", "2", "legacy!"])
def test_unknown_names_list_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match="mdp02, mdp01, legacy"):
        Dialect.parse(text)
