from __future__ import annotations

import pytest

from recommender.store import InMemoryStore
from tests.contract_store import StoreContract


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return InMemoryStore()
