"""When a Kafka producer that keeps failing is replaced (streamrec.kafka.Replacement)."""

from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber

from streamrec.kafka import Replacement


def test_a_producer_out_of_sequence_is_replaced_at_once():
    assert Replacement(after=15).failed(OutOfOrderSequenceNumber(), now=100.0)


def test_the_cause_counts_too():
    error = RuntimeError("not acknowledged")
    error.__cause__ = OutOfOrderSequenceNumber()
    assert Replacement(after=15).failed(error, now=100.0)


def test_other_failures_replace_it_only_when_they_last():
    replacement = Replacement(after=15)
    assert not replacement.failed(KafkaTimeoutError(), now=100.0)
    assert not replacement.failed(KafkaTimeoutError(), now=114.0)
    assert replacement.failed(KafkaTimeoutError(), now=115.5)
    # A new producer gets the whole period again.
    assert not replacement.failed(KafkaTimeoutError(), now=116.0)


def test_a_success_forgets_the_failures():
    replacement = Replacement(after=15)
    replacement.failed(KafkaTimeoutError(), now=100.0)
    replacement.succeeded()
    assert not replacement.failed(KafkaTimeoutError(), now=120.0)
