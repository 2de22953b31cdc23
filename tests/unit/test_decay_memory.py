"""Decayed state over simulated years on the in-memory store (``tests/contract_decay.py``),
and the write rule's corner cases."""

from __future__ import annotations

import pytest

from recommender.store import InMemoryStore
from tests.contract_decay import DecayContract


class TestInMemoryDecay(DecayContract):
    @pytest.fixture
    def store(self):
        return InMemoryStore()
