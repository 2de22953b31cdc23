from __future__ import annotations

import pytest

from recommender.feedback import InMemoryFeedback
from tests.contract_feedback import FeedbackContract


class TestInMemoryFeedback(FeedbackContract):
    @pytest.fixture
    def feedback(self):
        return InMemoryFeedback()
