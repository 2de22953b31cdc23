"""The narrow interface to feedback state (impressions, credited rewards, placements), and
its in-memory implementation. ``streamrec.storage.feedback_store.RedisFeedback`` implements it on
Redis; ``tests/contract_feedback.py`` runs one suite against both.

Counters per placement and variant: ``impressions`` (lists shown), ``items_shown``,
``lists_rewarded`` (lists that earned
at least one reward: the take-rate's numerator), one per rewarded event type (``click``,
``purchase``, ...) and one per type and position (``click@0``).

Bandit state per placement (clustered and contextual strategies): named numbers
(:func:`recommender.allocation.learning`) added when an allocated impression is first
recorded and when its list earns its first reward, in the same step that counts them, and
halved per variant when the variant's count reaches ``cap``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from recommender.allocation import learning, state_meaning
from recommender.attribution import Credit, Impression
from recommender.contextual import DEFAULT_CAP, apply_increments

Counters = dict[str, dict[str, int]]  # variant -> counter -> value


class FeedbackStore(Protocol):
    def record_impressions(self, impressions: Sequence[Impression], ttl: float) -> int:
        """Keep each impression for ``ttl`` seconds and count it once for its placement's
        variant unless it is not ``allocated`` (replays are no-ops).

        Returns how many were new."""
        ...

    def impressions(self, recommendation_ids: Iterable[str]) -> dict[str, Impression]: ...

    def credit(self, credits: Sequence[Credit], ttl: float,
               settled: Sequence[str] | None = None) -> list[bool | None]:
        """Count each credit once per (list, item, event type); True where it was new.

        ``settled`` (in step with ``credits``) names the waiting feedback each settles:
        a credit counts only if it takes its entry out of the waiting ones (None where
        another call took it first), and then also counts as the ``credited`` or
        ``duplicate`` outcome, system-wide and for the credit's placement, in the same atomic
        step."""
        ...

    def wait(self, entries: Sequence[tuple[str, float]]) -> None:
        """Keep feedback that waits for its impression: ``(entry, give up at)``; an entry
        kept already keeps its time (a replay)."""
        ...

    def waiting(self) -> list[tuple[str, float]]:
        """Every waiting entry and when it gives up, soonest first."""
        ...

    def settle(self, outcomes: Sequence[tuple[str, str, str | None]]) -> dict[str, int]:
        """Take each ``(entry, reason, placement)``'s entry out of the waiting ones and count
        its reason, system-wide and for ``placement`` (None: its list is not known), all at
        once: an entry already taken counts nothing. Returns the system-wide counts."""
        ...

    def count_outcomes(self, outcomes: Mapping[str, int],
                       by_placement: Mapping[str, Mapping[str, int]] | None = None) -> None:
        """Add to the counts of attribution outcomes by reason: ``outcomes`` to the
        system-wide totals, ``by_placement`` (placement -> reason -> count, the events whose
        list was found) to each placement's."""
        ...

    def outcomes(self, placement: str | None = None) -> dict[str, int]:
        """The outcome counts of one placement, or (None) of the whole system."""
        ...

    def variant_counters(self, placement: str) -> Counters: ...

    def bandit_state(self, placement: str) -> dict[str, float]:
        """The placement's clustered or contextual bandit state: field -> value (the field
        ``changes`` counts the updates, so a reader can tell it changed cheaply)."""
        ...

    def bandit_state_changes(self, placement: str) -> int:
        """How many updates the placement's bandit state has had (0: none, or reset)."""
        ...

    def placements(self) -> dict[str, dict[str, Any]]:
        """Every placement's current configuration (``Placement.to_dict`` form)."""
        ...

    def put_placement(self, config: Mapping[str, Any], author: str, at: float
                      ) -> dict[str, Any]:
        """Store a new version of a placement (``version`` is assigned) and log the change;
        its bandit state starts afresh when its meaning changes (:func:`state_meaning`)."""
        ...

    def placement_log(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The placement's changes, newest first."""
        ...

    def create_placement(self, config: Mapping[str, Any], author: str, at: float) -> bool:
        """Store ``config`` as version 1 unless its placement exists; True if it did not."""
        ...

    def delete_placement(self, name: str) -> dict[str, int]:
        """Remove a placement: its configuration, log, variant counters and outcomes.
        Returns what was removed (configuration, log entries, counters), all 0 if unknown."""
        ...


class InMemoryFeedback:
    """Dictionaries standing in for Redis; expiry is not modelled (nothing ages here)."""

    def __init__(self, cap: float = DEFAULT_CAP) -> None:
        self.cap = cap
        self._bandit_state: dict[str, dict[str, float]] = defaultdict(dict)
        self._impressions: dict[str, Impression] = {}
        self._credited: set[tuple[str, str, str]] = set()
        self._rewarded_lists: set[str] = set()
        self._counters: dict[str, Counters] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(int)))
        self._outcomes: dict[str | None, dict[str, int]] = defaultdict(
            lambda: defaultdict(int))
        self._waiting: dict[str, float] = {}
        self._placements: dict[str, dict[str, Any]] = {}
        self._log: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def record_impressions(self, impressions: Sequence[Impression], ttl: float) -> int:
        new = 0
        for impression in impressions:
            if impression.recommendation_id in self._impressions:
                continue
            self._impressions[impression.recommendation_id] = impression
            if impression.allocated:
                counters = self._counters[impression.placement][impression.variant]
                counters["impressions"] += 1
                counters["items_shown"] += len(impression.items)
                self._learn(impression.placement, impression.variant,
                            learning(impression.variant, impression.decision, False))
            new += 1
        return new

    def impressions(self, recommendation_ids: Iterable[str]) -> dict[str, Impression]:
        return {r: self._impressions[r] for r in recommendation_ids if r in self._impressions}

    def credit(self, credits: Sequence[Credit], ttl: float,
               settled: Sequence[str] | None = None) -> list[bool | None]:
        fresh: list[bool | None] = []
        for n, credit in enumerate(credits):
            if settled is not None:
                if self._waiting.pop(settled[n], None) is None:
                    fresh.append(None)
                    continue
            key = (credit.recommendation_id, credit.item_id, credit.event_type)
            if key in self._credited:
                fresh.append(False)
                if settled is not None:
                    self.count_outcomes({"duplicate": 1}, {credit.placement: {"duplicate": 1}})
                continue
            if settled is not None:
                self.count_outcomes({"credited": 1}, {credit.placement: {"credited": 1}})
            self._credited.add(key)
            counters = self._counters[credit.placement][credit.variant]
            counters[credit.event_type] += 1
            counters[f"{credit.event_type}@{credit.position}"] += 1
            if credit.recommendation_id not in self._rewarded_lists:
                self._rewarded_lists.add(credit.recommendation_id)
                counters["lists_rewarded"] += 1
                self._learn(credit.placement, credit.variant,
                            learning(credit.variant, credit.decision, True))
            fresh.append(True)
        return fresh

    def count_outcomes(self, outcomes: Mapping[str, int],
                       by_placement: Mapping[str, Mapping[str, int]] | None = None) -> None:
        for placement, counts in [(None, outcomes), *(by_placement or {}).items()]:
            for reason, count in counts.items():
                self._outcomes[placement][reason] += count

    def wait(self, entries: Sequence[tuple[str, float]]) -> None:
        for entry, give_up in entries:
            self._waiting.setdefault(entry, give_up)

    def waiting(self) -> list[tuple[str, float]]:
        return sorted(self._waiting.items(), key=lambda pair: (pair[1], pair[0]))

    def settle(self, outcomes: Sequence[tuple[str, str, str | None]]) -> dict[str, int]:
        counted: dict[str, int] = {}
        by_placement: dict[str, dict[str, int]] = {}
        for entry, reason, placement in outcomes:
            if self._waiting.pop(entry, None) is not None:
                counted[reason] = counted.get(reason, 0) + 1
                if placement is not None:
                    counts = by_placement.setdefault(placement, {})
                    counts[reason] = counts.get(reason, 0) + 1
        self.count_outcomes(counted, by_placement)
        return counted

    def outcomes(self, placement: str | None = None) -> dict[str, int]:
        return dict(self._outcomes.get(placement, {}))

    def variant_counters(self, placement: str) -> Counters:
        return {variant: dict(counters)
                for variant, counters in self._counters.get(placement, {}).items()}

    def _learn(self, placement: str, variant: str, increments: list[tuple[str, float]]
               ) -> None:
        if increments:
            fields = self._bandit_state[placement]
            apply_increments(fields, variant, increments, self.cap)
            fields["changes"] = fields.get("changes", 0) + 1

    def bandit_state(self, placement: str) -> dict[str, float]:
        return dict(self._bandit_state.get(placement, {}))

    def bandit_state_changes(self, placement: str) -> int:
        return int(self._bandit_state.get(placement, {}).get("changes", 0))

    def placements(self) -> dict[str, dict[str, Any]]:
        return {name: dict(config) for name, config in self._placements.items()}

    def put_placement(self, config: Mapping[str, Any], author: str, at: float
                      ) -> dict[str, Any]:
        name = config["name"]
        if state_meaning(self._placements.get(name)) != state_meaning(config):
            self._bandit_state.pop(name, None)
        version = self._placements.get(name, {}).get("version", 0) + 1
        stored = {**config, "version": version}
        self._placements[name] = stored
        self._log[name].insert(0, {"version": version, "author": author, "at": at,
                                   "config": stored})
        return stored

    def placement_log(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._log.get(name, [])[:limit]

    def create_placement(self, config: Mapping[str, Any], author: str, at: float) -> bool:
        if config["name"] in self._placements:
            return False
        self.put_placement(config, author, at)
        return True

    def delete_placement(self, name: str) -> dict[str, int]:
        removed = {"configuration": int(self._placements.pop(name, None) is not None),
                   "log_entries": len(self._log.pop(name, [])),
                   "variant_counters": sum(map(len, self._counters.pop(name, {}).values())),
                   "outcomes": len(self._outcomes.pop(name, {}))}
        self._bandit_state.pop(name, None)
        return removed
