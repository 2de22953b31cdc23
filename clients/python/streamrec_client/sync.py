"""The blocking client: a background thread sends the buffered events."""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
from typing import Any

import httpx

from streamrec_client import _core
from streamrec_client._core import ItemList, Recommendations, Retry, StreamrecError

log = logging.getLogger("streamrec_client")


class Client:
    """A streamrec API client. Thread-safe; use it as a context manager or call
    :meth:`close` (it is also closed at interpreter exit) so buffered events are sent.

    Parameters
    ----------
    base_url
        Where the API answers, e.g. ``http://127.0.0.1:8000``.
    api_key
        Sent as ``X-API-Key``: a ``write`` key to send events, ``read`` for lists only.
    batch_size
        Events per ``POST /events`` (the server takes at most its
        ``STREAMREC_MAX_EVENTS_PER_REQUEST``, 1000 by default; a 413 splits the batch).
    flush_interval
        Seconds an event may wait in the buffer before it is sent.
    max_buffered
        Events kept while the API cannot take them; :meth:`track` raises beyond.
    timeout
        Seconds per HTTP attempt.
    retry
        The retry policy (attempts, backoff).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, batch_size: int = 100,
                 flush_interval: float = 1.0, max_buffered: int = 100_000,
                 timeout: float = 5.0, retry: Retry | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.retry = retry or Retry()
        self.retries = 0  # attempts repeated so far, for the curious and the tests
        self.refused: list[tuple[dict[str, Any], StreamrecError]] = []  # the latest 1,000
        self._http = httpx.Client(base_url=base_url, headers=_core.headers(api_key),
                                  timeout=timeout, transport=transport)
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards the buffer
        self._sending = threading.Lock()  # one batch in flight: events keep their order
        self._wake = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_forever, daemon=True,
                                         name="streamrec-client-flush")
        self._flusher.start()
        atexit.register(self._close_at_exit)

    # -- lists -----------------------------------------------------------------------------

    def recommendations(self, user_id: str, k: int = 10, placement: str | None = None, *,
                        model: str | None = None, category: str | None = None,
                        filter: str | None = None, filter_values: str | None = None
                        ) -> Recommendations:
        params = _core.query(user_id=user_id, k=k, placement=placement, model=model,
                             category=category, filter=filter, filter_values=filter_values)
        return _core.recommendations_from(
            self._request("GET", "/recommendations", params=params).json())

    def similar(self, item_id: str, k: int = 10, **params: Any) -> ItemList:
        return _core.item_list_from(self._request(
            "GET", f"/items/{_core.quoted(item_id)}/similar", params=_core.query(k=k, **params)
        ).json())

    def popular(self, k: int = 10, category: str | None = None, **params: Any) -> ItemList:
        return _core.item_list_from(self._request(
            "GET", "/popular", params=_core.query(k=k, category=category, **params)).json())

    # -- events ----------------------------------------------------------------------------

    def track(self, user_id: str, item_id: str, event_type: str, **fields: Any) -> str:
        """Buffer one event; returns its ``event_id``. ``fields``: ``value``,
        ``recommendation_id``, ``context``, ``timestamp``."""
        body = _core.event(user_id, item_id, event_type, **fields)
        with self._lock:
            if self._closed:
                raise StreamrecError("track: the client is closed")
            if len(self._buffer) >= self.max_buffered:
                raise StreamrecError(f"track: {len(self._buffer)} events are waiting for the "
                                     "API already (max_buffered)")
            self._buffer.append(body)
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()
        return body["event_id"]

    def click(self, recommendations: Recommendations, item_id: str,
              event_type: str = "click", **fields: Any) -> str:
        """Track ``event_type`` on ``item_id`` from the list ``recommendations``, so the
        variant that served it is credited."""
        return self.track(recommendations.user_id, item_id, event_type,
                          recommendation_id=recommendations.recommendation_id, **fields)

    def flush(self) -> None:
        """Send every buffered event now. Raises :class:`StreamrecError` if the API did not
        take them within the retries (they stay buffered), or refused some as invalid (422:
        those are dropped, kept in :attr:`refused` with the reason; the rest are sent)."""
        refused: list[tuple[dict[str, Any], StreamrecError]] = []
        with self._sending:
            while True:
                with self._lock:
                    batch = self._buffer[:self.batch_size]
                if not batch:
                    break
                refused += self._send(batch)
                with self._lock:  # only this lock's holder removes from the front
                    del self._buffer[:len(batch)]
        _core.report(refused, self.refused)

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    def close(self) -> None:
        """Stop the background sender, send what is buffered, close the connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        self._wake.set()
        self._flusher.join()
        try:
            self.flush()
        except StreamrecError as error:
            raise StreamrecError(f"close: {self.buffered} events could not be sent: {error}",
                                 error.status, error.detail) from error
        finally:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the wire --------------------------------------------------------------------------

    def _send(self, batch: list[dict[str, Any]]) -> list[tuple[dict[str, Any], StreamrecError]]:
        """Send ``batch``; returns the events the API refused as invalid, with why."""
        response = self._request("POST", "/events", json=batch, passing=_core.SPLIT_ON)
        if response.is_success:
            return []
        if len(batch) == 1:
            return [(batch[0], _core.refusal(response))]
        # Too large, or one bad event refusing the lot: halves until the bad one is alone.
        # A half sent before the other failed goes again with the rest later: the same
        # event_ids, so the server counts it once.
        first, second = _core.halves(batch)
        return self._send(first) + self._send(second)

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 json: Any = None, passing: tuple[int, ...] = ()) -> httpx.Response:
        for attempt in itertools.count():
            try:
                response = self._http.request(method, path, params=params, json=json)
            except _core.RETRIED_ERRORS as error:
                outcome: BaseException | httpx.Response = error
            else:
                if response.is_success or response.status_code in passing:
                    return response
                outcome = response
            wait = _core.wait_before_retry(self.retry, attempt, f"{method} {path}", outcome)
            self.retries += 1
            time.sleep(wait)
        raise AssertionError("unreachable")  # itertools.count() never ends

    def _flush_forever(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._closed:
                return  # close() sends the rest in its own thread
            try:
                self.flush()
            except StreamrecError as error:
                log.warning("sending events: %s (%d waiting)", error, self.buffered)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except StreamrecError as error:
            log.error("at exit, %d events could not be sent: %s", self.buffered, error)
