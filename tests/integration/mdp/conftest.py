"""Fixtures for the MDP integration tests (helpers live in mdp_helpers.py)."""

from __future__ import annotations

from mdp_helpers import broker, make_broker, peers

__all__ = ["broker", "make_broker", "peers"]
