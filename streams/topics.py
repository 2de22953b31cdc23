"""Every topic the worker reads or writes. Values are raw bytes: the worker validates them
itself so that nothing malformed can crash it, and rejects keep their original bytes."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streamrec.settings import Settings


@dataclass(frozen=True)
class Topics:
    events: faust.TopicT
    impressions: faust.TopicT
    dead_letters: faust.TopicT
    items: faust.TopicT
    users: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def raw(name: str, **options) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, **options)

    compacted = {"compacting": True, "deleting": False}
    return Topics(
        events=raw(settings.events_topic),
        impressions=raw(settings.impressions_topic),
        dead_letters=raw(settings.dead_letter_topic),
        items=raw(settings.items_topic, **compacted),
        users=raw(settings.users_topic, **compacted),
    )
