"""What the sync and async clients share: results, events, the retry rule, errors.

Nothing here does I/O, so both clients make the same decisions.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRIED_STATUSES = frozenset({429, 503})
# A batch refused as too large (413) or for one invalid event (422) is sent in halves, so
# every valid event still arrives and only the invalid ones are refused.
SPLIT_ON = (413, 422)
KEEP_REFUSED = 1000
# Timeouts and refused or reset connections: the request may or may not have arrived,
# which is safe to repeat because every event carries its own event_id.
RETRIED_ERRORS = (httpx.TimeoutException, httpx.TransportError)


class StreamrecError(Exception):
    """The API refused a request (``status``, ``detail`` as it said), or it could not be
    reached within the retries (``status`` is None)."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class ItemList:
    """``GET /popular`` and ``GET /items/{id}/similar``."""

    items: list[ScoredItem]
    degraded: bool = False
    recommendation_id: str | None = None
    model: str | None = None  # popular, cooccurrence or lists:NAME (servers since 2026-12)


@dataclass(frozen=True)
class Recommendations:
    """``GET /recommendations``: pass it to ``click`` to credit the variant that served it."""

    recommendation_id: str
    user_id: str
    placement: str
    variant: str
    model: str
    items: list[ScoredItem]
    degraded: bool = False

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


def _items(body: dict[str, Any]) -> list[ScoredItem]:
    return [ScoredItem(str(item["item_id"]), float(item["score"])) for item in body["items"]]


def recommendations_from(body: dict[str, Any]) -> Recommendations:
    return Recommendations(body["recommendation_id"], body["user_id"], body["placement"],
                           body["variant"], body["model"], _items(body),
                           bool(body.get("degraded", False)))


def item_list_from(body: dict[str, Any]) -> ItemList:
    return ItemList(_items(body), bool(body.get("degraded", False)),
                    body.get("recommendation_id"), body.get("model"))


def event(user_id: str, item_id: str, event_type: str, *, value: float | None = None,
          recommendation_id: str | None = None, context: dict[str, Any] | None = None,
          timestamp: float | str | None = None, event_id: str | None = None
          ) -> dict[str, Any]:
    """One event as ``POST /events`` takes it, with its ``event_id`` fixed now: every
    retry of the batch sends the same id, so the server can drop the repeat. The
    timestamp is left to the server unless given (a client's clock can only cost a click
    its credit)."""
    if value is not None and not math.isfinite(value):
        raise ValueError(f"value: must be a finite number, got {value}")
    body: dict[str, Any] = {"event_id": event_id or uuid.uuid4().hex, "user_id": user_id,
                            "item_id": item_id, "event_type": event_type}
    for name, given in (("value", value), ("recommendation_id", recommendation_id),
                        ("context", context), ("timestamp", timestamp)):
        if given is not None:
            body[name] = given
    return body


@dataclass
class Retry:
    """Exponential backoff with full jitter, at least what ``Retry-After`` asks.

    >>> policy = Retry(max_attempts=3, seed=1)
    >>> policy.delay(0, retry_after=2.0) >= 2.0
    True
    >>> 0 <= policy.delay(3) <= 1.6
    True
    """

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be at least 1, got {self.max_attempts}")
        self._random = random.Random(self.seed)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        backoff = self._random.uniform(0, min(self.cap, self.base * 2 ** attempt))
        if retry_after is None:
            return backoff
        # The server said when it expects to cope again; jitter only on top of that, so
        # clients it refused together do not all come back at the same instant.
        return min(retry_after, self.cap * 6) + self._random.uniform(0, self.base)


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None if absent or bad.

    >>> retry_after(httpx.Response(503, headers={"Retry-After": "2"}))
    2.0
    >>> retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    True
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def should_retry(response: httpx.Response) -> bool:
    return response.status_code in RETRIED_STATUSES


def refusal(response: httpx.Response) -> StreamrecError:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:500]
    return StreamrecError(f"{response.request.method} {response.request.url.path}: "
                          f"{response.status_code} {detail}", response.status_code, detail)


def unreachable(what: str, attempts: int, cause: BaseException | httpx.Response
                ) -> StreamrecError:
    if isinstance(cause, httpx.Response):
        error = refusal(cause)
        return StreamrecError(f"{error} (gave up after {attempts} attempts)", error.status,
                              error.detail)
    return StreamrecError(f"{what}: {cause!r} (gave up after {attempts} attempts)")


def halves(batch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    middle = len(batch) // 2
    return batch[:middle], batch[middle:]


def query(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def quoted(identifier: str) -> str:
    """An id as one path segment (ids may hold ``/``, ``?``, ``#`` or any script)."""
    return urllib.parse.quote(identifier, safe="")


def report(refused: list[tuple[dict[str, Any], StreamrecError]],
           kept: list[tuple[dict[str, Any], StreamrecError]]) -> None:
    """Keep the latest refusals in ``kept`` and raise for the first of ``refused``."""
    if not refused:
        return
    kept.extend(refused)
    del kept[:-KEEP_REFUSED]
    first_event, first_error = refused[0]
    raise StreamrecError(f"{len(refused)} events refused, the first "
                         f"({first_event['event_id']}): {first_error}", first_error.status,
                         first_error.detail)


def wait_before_retry(policy: Retry, attempt: int, what: str,
                      outcome: BaseException | httpx.Response) -> float:
    """Seconds to wait before repeating ``what`` after ``outcome`` (attempt ``attempt``,
    from 0, failed); raises :class:`StreamrecError` when it is refused or out of attempts."""
    if isinstance(outcome, httpx.Response) and not should_retry(outcome):
        raise refusal(outcome)
    if attempt + 1 >= policy.max_attempts:
        raise unreachable(what, attempt + 1, outcome)
    if isinstance(outcome, httpx.Response):
        return policy.delay(attempt, retry_after(outcome))
    return policy.delay(attempt)
