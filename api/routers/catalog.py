from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from api.deps import ContextDep, EngineDep, ProducerDep, SettingsDep
from api.limits import BODY_RESPONSES
from api.models import ItemBody, Queued, UserBody
from api.producer import KafkaUnavailable
from api.quotas import over_quota
from api.routers.events import unavailable
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES, READ
from api.shedding import SHED_RESPONSES
from schemas.models import Id, Item, User

MAX_RECENT = 1000  # bounds one answer; a history is trimmed at STREAMREC_HISTORY_LENGTH

router = APIRouter(route_class=GuardedRoute, tags=["catalog"],
                   responses={**KEY_RESPONSES, **SHED_RESPONSES})


async def _publish(producer, settings, topic: str, identifier: str, document) -> Queued:
    """Send ``document`` keyed by its id (None: a tombstone, which deletes the id)."""
    value = None if document is None else orjson.dumps(document)
    try:
        await producer.send_all(topic, [(producer.key(identifier), value)])
    except KafkaUnavailable as error:
        raise unavailable(settings, error) from error
    return Queued(id=identifier, topic=topic)


def _within_catalog_size(context, item_id: str) -> None:
    """429 for a new item of an app whose catalog holds ``max_items`` (as this process's
    content index last read it: items still on their way through Kafka are not counted,
    so a burst may pass the bound by what the worker has not applied yet)."""
    most = context.max_items
    if most is None:
        return
    content = context.versions.engine.content
    if not content.holds(item_id) and content.documents() >= most:
        raise over_quota(context.name, "max_items", f"{most:g} items; delete some or raise "
                         "it", context.settings.retry_after_seconds)


def _same_id(field: str, in_body: str | None, in_path: str) -> None:
    if in_body is not None and in_body != in_path:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", field),
                                       "msg": f"{in_body!r} does not match the path",
                                       "input": in_body}])


@router.put("/items/{item_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Queued,
            dependencies=[ADMIN], responses=BODY_RESPONSES)
async def put_item(
    item_id: Id, body: ItemBody, producer: ProducerDep, settings: SettingsDep,
    context: ContextDep,
) -> Queued:
    """Create or replace an item. It travels through the compacted items topic. An app at
    its ``max_items`` may replace its items but not add one (429)."""
    _same_id("item_id", body.item_id, item_id)
    _within_catalog_size(context, item_id)
    item = Item.model_validate({**body.model_dump(exclude={"item_id"}), "item_id": item_id})
    return await _publish(producer, settings, settings.items_topic, item_id,
                          item.model_dump(mode="json"))


@router.delete("/items/{item_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Queued,
               dependencies=[ADMIN])
async def delete_item(item_id: Id, producer: ProducerDep, settings: SettingsDep) -> Queued:
    """Delete an item: a tombstone on the compacted items topic. No list shows it again."""
    return await _publish(producer, settings, settings.items_topic, item_id, None)


@router.get("/items/{item_id}", response_model=Item, dependencies=[READ],
            responses={404: {"description": "Not in the catalog"}})
def get_item(item_id: Id, engine: EngineDep) -> Item:
    document = engine.store.get_item(item_id)
    if document is None:
        raise HTTPException(404, detail=f"item_id: {item_id!r} is not in the catalog")
    return Item.model_validate(document)


@router.put("/users/{user_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Queued,
            dependencies=[ADMIN], responses=BODY_RESPONSES)
async def put_user(
    user_id: Id, body: UserBody, producer: ProducerDep, settings: SettingsDep
) -> Queued:
    """Create or replace a user's properties, through the compacted users topic."""
    _same_id("user_id", body.user_id, user_id)
    user = User.model_validate({**body.model_dump(exclude={"user_id"}), "user_id": user_id})
    return await _publish(producer, settings, settings.users_topic, user_id,
                          user.model_dump(mode="json"))


@router.get("/users/{user_id}", dependencies=[ADMIN],
            responses={404: {"description": "Nothing is stored about this user"}})
def get_user(user_id: Id, engine: EngineDep,
             limit: Annotated[int, Query(ge=1, le=MAX_RECENT)] = 50) -> dict:
    """What streamrec holds about a user in the serving version: their properties, their
    most recent items (newest first, at most ``limit``, with the time and the event types),
    and whether they have MF factors. 404 when nothing is stored."""
    properties = engine.store.get_user(user_id)
    history, factors = engine.store.user_state(user_id, limit)
    if properties is None and not history:
        raise HTTPException(404, detail=f"user_id: nothing is stored about {user_id!r}")
    types = engine.store.interaction_types(user_id) if history else {}
    return {"user_id": user_id,
            "properties": (properties or {}).get("properties", {}),
            "recent_items": [{"item_id": item, "time": at,
                              "event_types": sorted(types.get(item, ()))}
                             for item, at in history],
            "has_factors": factors is not None}


@router.delete("/users/{user_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Queued,
               dependencies=[ADMIN])
async def delete_user(user_id: Id, producer: ProducerDep, settings: SettingsDep) -> Queued:
    """Delete a user: a tombstone on the compacted users topic. The worker removes their
    properties, history, event types and factors in every model version."""
    return await _publish(producer, settings, settings.users_topic, user_id, None)
