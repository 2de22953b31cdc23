"""The asyncio client: a task on the caller's loop sends the buffered events."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
from typing import Any

import httpx

from streamrec_client import _core
from streamrec_client._core import ItemList, Recommendations, Retry, StreamrecError

log = logging.getLogger("streamrec_client")


class AsyncClient:
    """The asyncio twin of :class:`streamrec_client.Client`: the same parameters, its
    methods coroutines (``track`` and ``click`` only buffer, so they are plain methods).
    Use ``async with`` or ``await close()``; events still buffered when the interpreter
    exits without that are sent then by a blocking request."""

    def __init__(self, base_url: str, api_key: str | None = None, *, batch_size: int = 100,
                 flush_interval: float = 1.0, max_buffered: int = 100_000,
                 timeout: float = 5.0, retry: Retry | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        self.base_url, self._api_key, self._timeout = base_url, api_key, timeout
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.retry = retry or Retry()
        self.retries = 0
        self.refused: list[tuple[dict[str, Any], StreamrecError]] = []
        self._http = httpx.AsyncClient(base_url=base_url, headers=_core.headers(api_key),
                                       timeout=timeout, transport=transport)
        self._buffer: list[dict[str, Any]] = []
        self._sending = asyncio.Lock()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task | None = None
        self._closed = False
        atexit.register(self._send_at_exit)

    async def recommendations(self, user_id: str, k: int = 10, placement: str | None = None,
                              *, model: str | None = None, category: str | None = None,
                              filter: str | None = None, filter_values: str | None = None
                              ) -> Recommendations:
        params = _core.query(user_id=user_id, k=k, placement=placement, model=model,
                             category=category, filter=filter, filter_values=filter_values)
        response = await self._request("GET", "/recommendations", params=params)
        return _core.recommendations_from(response.json())

    async def similar(self, item_id: str, k: int = 10, **params: Any) -> ItemList:
        response = await self._request("GET", f"/items/{_core.quoted(item_id)}/similar",
                                       params=_core.query(k=k, **params))
        return _core.item_list_from(response.json())

    async def popular(self, k: int = 10, category: str | None = None,
                      **params: Any) -> ItemList:
        response = await self._request("GET", "/popular",
                                       params=_core.query(k=k, category=category, **params))
        return _core.item_list_from(response.json())

    def track(self, user_id: str, item_id: str, event_type: str, **fields: Any) -> str:
        """Buffer one event (call it from the loop's thread); returns its ``event_id``."""
        if self._closed:
            raise StreamrecError("track: the client is closed")
        if len(self._buffer) >= self.max_buffered:
            raise StreamrecError(f"track: {len(self._buffer)} events are waiting for the API "
                                 "already (max_buffered)")
        body = _core.event(user_id, item_id, event_type, **fields)
        self._buffer.append(body)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        return body["event_id"]

    def click(self, recommendations: Recommendations, item_id: str,
              event_type: str = "click", **fields: Any) -> str:
        return self.track(recommendations.user_id, item_id, event_type,
                          recommendation_id=recommendations.recommendation_id, **fields)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def flush(self) -> None:
        """As :meth:`streamrec_client.Client.flush`."""
        refused: list[tuple[dict[str, Any], StreamrecError]] = []
        async with self._sending:
            while batch := self._buffer[:self.batch_size]:
                refused += await self._send(batch)
                del self._buffer[:len(batch)]
        _core.report(refused, self.refused)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._send_at_exit)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self.flush()
        except StreamrecError as error:
            raise StreamrecError(f"close: {self.buffered} events could not be sent: {error}",
                                 error.status, error.detail) from error
        finally:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _send(self, batch: list[dict[str, Any]]
                    ) -> list[tuple[dict[str, Any], StreamrecError]]:
        response = await self._request("POST", "/events", json=batch, passing=_core.SPLIT_ON)
        if response.is_success:
            return []
        if len(batch) == 1:
            return [(batch[0], _core.refusal(response))]
        first, second = _core.halves(batch)  # as Client._send: isolates what is refused
        return await self._send(first) + await self._send(second)

    async def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                       json: Any = None, passing: tuple[int, ...] = ()) -> httpx.Response:
        for attempt in itertools.count():
            try:
                response = await self._http.request(method, path, params=params, json=json)
            except _core.RETRIED_ERRORS as error:
                outcome: BaseException | httpx.Response = error
            else:
                if response.is_success or response.status_code in passing:
                    return response
                outcome = response
            wait = _core.wait_before_retry(self.retry, attempt, f"{method} {path}", outcome)
            self.retries += 1
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # itertools.count() never ends

    async def _flush_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except StreamrecError as error:
                log.warning("sending events: %s (%d waiting)", error, self.buffered)

    def _send_at_exit(self) -> None:
        """The loop is gone at exit: what is left goes through a blocking client."""
        if not self._buffer:
            return
        from streamrec_client.sync import Client

        with Client(self.base_url, self._api_key, batch_size=self.batch_size,
                    timeout=self._timeout, retry=self.retry) as client:
            for body in self._buffer:
                client.track(**body)
        self._buffer.clear()
