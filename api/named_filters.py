"""The API's named filters: compiled once, re-read from Redis every
``filter_refresh_seconds`` (a name not known yet is read at once, so a filter works
everywhere as soon as it is registered), and bound to each request's ``filter_values``."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import redis
from fastapi import HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from recommender.filters import (
    BoundFilter,
    Filter,
    FilterError,
    RequestFilterError,
    bind_named,
    parse,
)
from schemas.impression import NAME_PATTERN
from streamrec.storage.filter_definitions import RedisFilters

log = logging.getLogger(__name__)



class Filters:
    def __init__(self, definitions: RedisFilters) -> None:
        self.definitions = definitions
        self._compiled: dict[str, tuple[int, Filter]] = {}
        self._broken: set[tuple[str, int]] = set()  # said once each

    def refresh(self) -> None:
        compiled = {}
        for name, definition in self.definitions.all().items():
            version = definition["version"]
            cached = self._compiled.get(name)
            if cached is not None and cached[0] == version:
                compiled[name] = cached
                continue
            try:
                compiled[name] = (version, parse(definition["expression"]))
            except FilterError as error:  # stored by an older parser: skip it, say so once
                if (name, version) not in self._broken:
                    self._broken.add((name, version))
                    log.warning("filter %r cannot be compiled (%s); requests naming it get "
                                "422", name, error)
        self._compiled = compiled

    def get(self, name: str) -> Filter | None:
        """The compiled filter ``name``, reading Redis only when this process has not seen
        it yet (blocking: call it from a thread)."""
        cached = self._compiled.get(name)
        if cached is not None:
            return cached[1]
        definition = self.definitions.get(name)
        if definition is None:
            return None
        try:
            rule = parse(definition["expression"])
        except FilterError:
            return None
        self._compiled = {**self._compiled, name: (definition["version"], rule)}
        return rule


def invalid(field: str, message: str, given: Any) -> RequestValidationError:
    """A 422 naming the query parameter at fault, shaped like every other one."""
    return RequestValidationError([{"type": "value_error", "loc": ("query", field),
                                    "msg": message, "input": given}])


FilterName = Annotated[str | None, Query(
    alias="filter", max_length=64, pattern=NAME_PATTERN,
    description="A filter registered with PUT /admin/filters/{name}.")]
FilterValues = Annotated[str | None, Query(
    alias="filter_values", max_length=2048,
    description='The filter\'s $PARAMETERS as one JSON object, e.g. {"MAX_PRICE": 20, '
                '"GENRES": ["Horror", "Comedy"]} (a list only where the filter has IN).')]


async def _bind(request: Request, name: str | None, values: str | None,
                with_current_item: bool) -> BoundFilter | None:
    if name is None and values is None:  # most requests: no thread hop
        return None
    filters: Filters = (await request.app.state.apps.of(request)).filters
    try:
        return await run_in_threadpool(bind_named, name, values, filters.get,
                                       with_current_item)
    except redis.RedisError as error:
        raise HTTPException(503, detail=f"state store unreachable: {error}",
                            headers={"Retry-After": "5"}) from error
    except RequestFilterError as error:
        given = name if error.parameter == "filter" else values
        raise invalid(error.parameter, str(error), given) from None


async def list_filter(request: Request, name: FilterName = None,
                      values: FilterValues = None) -> BoundFilter | None:
    """The request's filter on a list without a current item."""
    return await _bind(request, name, values, with_current_item=False)


async def similar_items_filter(request: Request, name: FilterName = None,
                               values: FilterValues = None) -> BoundFilter | None:
    """The request's filter on the similar items of an item (CurrentItem allowed)."""
    return await _bind(request, name, values, with_current_item=True)
