from __future__ import annotations

import uuid

import pytest
import redis

from streamrec.storage.feedback_store import RedisFeedback
from tests.contract_feedback import FeedbackContract


class TestRedisFeedback(FeedbackContract):
    @pytest.fixture
    def feedback(self, services):
        client = redis.Redis.from_url(services["redis_url"])
        yield RedisFeedback(client, prefix=f"test-{uuid.uuid4().hex[:8]}")
        client.close()
