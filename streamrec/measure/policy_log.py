"""A placement's logged lists and the rewards they earned, read back from Kafka for
off-policy evaluation (``streamrec report --policy``, ``POST /admin/placements/{name}/
report``).

Redis keeps an impression only ``2 * window + grace`` and a credit's marker as long, so
neither can answer for last week. The topics can: the impressions topic holds every list
with its :class:`~schemas.impression.Decision`, the events topic every reward event with
its ``recommendation_id`` and the broker's append time. Each reward event is judged by the
worker's own rule (:func:`recommender.attribution.attribute`: same user, an item of the
list, within the window, allocated), so a list counts as rewarded here exactly when the
worker would have credited it; a list rewarded twice is still one rewarded list.
Nothing new is stored: what the topics retain (their ``retention.ms``) is what can be
evaluated.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from recommender.abtest import wilson_interval
from recommender.attribution import Credit, Impression, attribute
from recommender.ope import Logged, Rule, arm_stats, evaluate, resolve_policy
from schemas.impression import Decision, ImpressionMessage
from schemas.models import EventContractError, event_time, parse_event
from streamrec.apps import DEFAULT, HEADER
from streamrec.connections import kafka_client_options
from streamrec.settings import Settings
from streamrec.wiring import Wiring

LOG_APPEND_TIME = 1  # Kafka's timestamp type of a record stamped by the broker
READ_SECONDS = 120.0  # bounds one read of both topics: a report must not hang


@dataclass
class PlacementLog:
    """The lists one placement served (allocated ones, by recommendation id) and which of
    them earned a reward; counts of what was left out, so nothing vanishes unsaid."""

    placement: str
    impressions: dict[str, tuple[Impression, Decision | None]] = field(default_factory=dict)
    rewarded: set[str] = field(default_factory=set)
    events: Counter = field(default_factory=Counter)  # reward events by outcome
    not_allocated: int = 0  # lists forced with model= (never counted for a variant)
    # Lists outside the placement's targeting (decision.targeted False: its default
    # variant, counted for no variant) and which of them a reward event would have earned.
    outside: dict[str, Impression] = field(default_factory=dict)
    outside_rewarded: set[str] = field(default_factory=set)
    unreadable: int = 0  # records that break the contract (the worker dead-letters them)

    def rows(self, properties: Mapping[str, Mapping[str, Any]] | None = None
             ) -> list[Logged]:
        """One :class:`~recommender.ope.Logged` row per list, in time order. Its context
        holds the decision's ``segment``, ``targeted`` and ``features`` and the user's
        ``properties`` (user id -> properties: what a rule's ``by`` may name)."""
        rows = []
        for impression, decision in sorted(self.impressions.values(),
                                           key=lambda pair: pair[0].timestamp):
            context: dict[str, Any] = {}
            if properties and impression.user_id in properties:
                context.update(properties[impression.user_id])
            propensity = None
            if decision is not None:
                context.update(decision.features)
                context.update(_categories(decision.features))
                context.update({"segment": decision.segment, "targeted": decision.targeted,
                                "strategy": decision.strategy})
                propensity = decision.propensity
            rows.append(Logged(impression.variant, propensity,
                               float(impression.recommendation_id in self.rewarded),
                               {k: v for k, v in context.items() if v is not None}))
        return rows

    def by_targeting(self) -> dict[str, dict[str, Any]]:
        """Lists and take-rate (95% Wilson interval) of the requests the placement's target
        matched (its experiment) and of the rest (its default variant), each per variant.

        >>> log = PlacementLog("home")
        >>> log.impressions["r1"] = (Impression("r1", "u", "home", "A", "mf", (), 1.0), None)
        >>> log.outside["r2"] = Impression("r2", "u", "home", "D", "mf", (), 1.0, False)
        >>> log.outside_rewarded.add("r2")
        >>> log.by_targeting()["not_targeted"]["variants"]["D"]["take_rate"]
        1.0
        """
        def side(lists: dict[str, str], rewarded: set[str]) -> dict[str, Any]:
            per_variant: dict[str, Any] = {}
            for variant in sorted(set(lists.values())):
                ids = [rid for rid, name in lists.items() if name == variant]
                per_variant[variant] = _take_rate(len(ids), sum(r in rewarded for r in ids))
            return {**_take_rate(len(lists), sum(r in rewarded for r in lists)),
                    "variants": per_variant}

        targeted = {rid: pair[0].variant for rid, pair in self.impressions.items()}
        outside = {rid: impression.variant for rid, impression in self.outside.items()}
        return {"targeted": side(targeted, self.rewarded),
                "not_targeted": side(outside, self.outside_rewarded)}

    def users(self) -> set[str]:
        return {impression.user_id for impression, _ in self.impressions.values()
                if impression.user_id is not None}


def _take_rate(lists: int, rewarded: int) -> dict[str, Any]:
    low, high = wilson_interval(rewarded, lists)
    return {"lists": lists, "rewarded": rewarded,
            "take_rate": round(rewarded / lists, 4) if lists else 0.0,
            "take_rate_interval": [round(low, 4), round(high, 4)]}


def _categories(features: Mapping[str, float]) -> dict[str, str]:
    """The context values a contextual decision logged as one-hot features
    (``ctx.device.mobile``: ``device`` is ``mobile``; ``user.country.CA``: the property
    ``country``, also as ``user.country``), so a rule ``by`` them can be evaluated.

    >>> _categories({"ctx.device.mobile": 1.0, "user.country.CA": 1.0, "hour.sin": 0.5})
    {'device': 'mobile', 'user.country': 'CA', 'country': 'CA'}
    """
    found: dict[str, str] = {}
    for name, value in features.items():
        kind, _, rest = name.partition(".")
        key, _, category = rest.partition(".")
        if value == 1.0 and kind in ("ctx", "user") and key and category:
            if kind == "user":
                found[f"user.{key}"] = category
            found.setdefault(key, category)
    return found


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``--since``: a duration back from now (``90s``, ``30m``, ``6h``, ``7d``), epoch
    seconds or an RFC 3339 time; None for the whole retained log.

    >>> parse_since("2h", now=10_000.0), parse_since("1700000000"), parse_since(None)
    (2800.0, 1700000000.0, None)
    >>> parse_since("2023-11-14T22:13:20Z")
    1700000000.0
    >>> parse_since("yesterday")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: since: 'yesterday' is not a duration (30m, 6h, 7d), epoch seconds or ...
    """
    if text is None or text == "":
        return None
    now = time.time() if now is None else now
    duration = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if duration:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration.group(2)]
        return now - float(duration.group(1)) * unit
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"since: {text!r} is not a duration (30m, 6h, 7d), epoch seconds or "
                         f"an RFC 3339 time")
    return value


def _app_of(headers: Iterable[tuple[str, bytes]] | None, document: Any = None) -> str:
    """A record's app as the worker reads it: the header, else (events) the JSON field."""
    for name, value in headers or ():
        if name == HEADER:
            return bytes(value or b"").decode(errors="replace")
    if isinstance(document, dict) and isinstance(document.get("app"), str):
        return document["app"]
    return DEFAULT


async def read_placement_log(settings: Settings, app: str, placement: str,
                             since: float | None = None, timeout: float = READ_SECONDS
                             ) -> PlacementLog:
    """Every list ``placement`` of ``app`` served since ``since`` (epoch seconds; None: all
    the topic retains) and the rewards credited to them, up to the topics' ends now.
    Reward events are read from ``since`` minus the attribution window's skew, and up to
    the end: a click on a list comes after it."""
    log = PlacementLog(placement)
    async with asyncio.timeout(timeout):
        await _read(settings, settings.impressions_topic, since,
                    lambda record: _impression(log, record, app))
        events: list[tuple[Impression, Any, float]] = []
        await _read(settings, settings.events_topic,
                    None if since is None else since - settings.attribution_clock_skew_seconds,
                    lambda record: _reward_event(log, record, app, settings, events))
    for impression, event, received in events:
        if impression.recommendation_id in log.outside:
            # Judged as if it counted: what the default variant earns outside the target.
            outcome = attribute(replace(impression, allocated=True), event.user_id,
                                event.item_id, event.event_type,
                                event_time(event.timestamp, received,
                                           settings.max_event_time_skew_seconds),
                                received, settings.attribution_window_seconds,
                                settings.reward_event_types,
                                settings.attribution_clock_skew_seconds)
            if isinstance(outcome, Credit):
                log.outside_rewarded.add(impression.recommendation_id)
            continue
        result = attribute(impression, event.user_id, event.item_id, event.event_type,
                           event_time(event.timestamp, received,
                                      settings.max_event_time_skew_seconds),
                           received, settings.attribution_window_seconds,
                           settings.reward_event_types, settings.attribution_clock_skew_seconds)
        if isinstance(result, Credit):
            log.events["credited"] += 1
            log.rewarded.add(impression.recommendation_id)
        else:
            log.events[result] += 1
    return log


def _impression(log: PlacementLog, record: Any, app: str) -> None:
    if _app_of(record.headers) != app or record.value is None:
        return
    try:
        message = ImpressionMessage.model_validate_json(record.value)
    except ValidationError:
        log.unreadable += 1
        return
    if message.placement != log.placement:
        return
    if not message.allocated:
        if message.decision is not None and message.decision.targeted is False:
            log.outside[message.recommendation_id] = Impression.from_dict(message.model_dump())
        else:
            log.not_allocated += 1
        return
    # The API may send an impression twice (a retry): the list is one list.
    log.impressions[message.recommendation_id] = (
        Impression.from_dict(message.model_dump()), message.decision)


def _reward_event(log: PlacementLog, record: Any, app: str, settings: Settings,
                  found: list) -> None:
    value = record.value
    if value is None or b"recommendation_id" not in value:  # most events: no parse
        return
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if _app_of(record.headers, document) != app or not isinstance(document, dict):
        return
    document.pop("app", None)  # the record's envelope, not the event (docs/apps.md)
    try:
        event = parse_event(orjson.dumps(document), settings.reward_event_types)
    except EventContractError:
        return  # not a reward event, or one the worker dead-letters
    rid = event.recommendation_id or ""
    shown = log.impressions[rid][0] if rid in log.impressions else log.outside.get(rid)
    if shown is None:
        return  # another placement's list, or one served before the window
    seconds = record.timestamp / 1000.0
    received = seconds if record.timestamp_type == LOG_APPEND_TIME else min(seconds,
                                                                           time.time())
    found.append((shown, event, received))


async def _read(settings: Settings, topic: str, since: float | None, handle) -> None:
    """Hand every record of ``topic`` from ``since`` to the end it has now to ``handle``."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=5000)
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:  # as streamrec.version_status: metadata is fetched on demand
            await consumer._client.force_metadata_update()  # noqa: SLF001
            numbers = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
        if not partitions:
            return
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        if since is not None:
            found = await consumer.offsets_for_times(
                {tp: int(since * 1000) for tp in partitions})
            for tp in partitions:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        else:
            await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000)
            wanted = [record for tp, records in fetched.items() for record in records
                      if record.offset < ends[tp]]
            if wanted:
                # Parsing and validating is CPU: off the event loop, which serves the API.
                await asyncio.to_thread(lambda batch=wanted: [handle(r) for r in batch])
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def policy_report(wiring: Wiring, app: str, placement: str,
                        policy: str | Mapping[str, Any], since: float | None = None
                        ) -> dict[str, Any]:
    """The off-policy report of ``policy`` on ``placement`` of ``app`` (``wiring`` is the
    app's, :meth:`~streamrec.wiring.Wiring.for_app`): what the logged allocation earned,
    the target's IPS and SNIPS estimates with their intervals, the effective sample size
    and a sentence.

    Raises LookupError for a placement nobody configured, and
    :class:`~recommender.ope.OffPolicyError` naming what is wrong with the policy or the
    log."""
    settings = wiring.settings
    # Redis and the arithmetic off the event loop: the API serves other requests meanwhile.
    config = await asyncio.to_thread(lambda: wiring.feedback().placements().get(placement))
    if config is None:
        raise LookupError(f"name: no placement named {placement!r} is configured")
    log = await read_placement_log(settings, app, placement, since)
    return await asyncio.to_thread(_evaluate, wiring, app, placement, config, log, policy,
                                   since)


def _evaluate(wiring: Wiring, app: str, placement: str, config: Mapping[str, Any],
              log: PlacementLog, policy: str | Mapping[str, Any], since: float | None
              ) -> dict[str, Any]:
    rows = log.rows()
    target = resolve_policy(policy, config, rows)
    if isinstance(target, Rule) and not any(target.by in row.context for row in rows):
        # Not in the decisions: a user property, read as the catalog holds it now.
        store = wiring.store()
        properties = {}
        for user in log.users():
            document = store.get_user(user) or {}
            properties[user] = document.get("properties", {})
        rows = log.rows(properties)
    result = evaluate(rows, target)
    return {
        "placement": placement, "app": app, "since": since,
        **result.to_dict(),
        "variants": {name: {"lists": lists, "rewarded": rewarded}
                     for name, (lists, rewarded) in arm_stats(rows).items()},
        "reward_events": dict(sorted(log.events.items())),
        "not_allocated": log.not_allocated, "unreadable": log.unreadable,
        **({"by_targeting": log.by_targeting()} if config.get("target") else {}),
    }
