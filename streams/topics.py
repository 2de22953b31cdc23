"""Every topic the worker reads or writes. Values are raw bytes: the worker validates them
itself so that nothing malformed can crash it, and rejects keep their original bytes."""

from __future__ import annotations

from streams.app import app, settings

events_topic = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)
impressions_topic = app.topic(settings.impressions_topic, key_type=bytes, value_type=bytes)
dead_letter_topic = app.topic(settings.dead_letter_topic, key_type=bytes, value_type=bytes)
items_topic = app.topic(
    settings.items_topic, key_type=bytes, value_type=bytes, compacting=True, deleting=False
)
users_topic = app.topic(
    settings.users_topic, key_type=bytes, value_type=bytes, compacting=True, deleting=False
)
