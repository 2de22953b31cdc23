from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from api.deps import ContextDep, ProducerDep, SettingsDep, WeightsDep
from api.limits import BODY_RESPONSES
from api.models import Accepted
from api.producer import KafkaUnavailable
from api.routing import GuardedRoute
from api.security import KEY_RESPONSES, WRITE
from api.shedding import SHED, SHED_RESPONSES
from schemas.models import Event, event_time

router = APIRouter(route_class=GuardedRoute, tags=["events"], dependencies=[WRITE],
                   responses={**KEY_RESPONSES, **SHED_RESPONSES})


def unavailable(settings, error: Exception) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"events could not be handed to Kafka; nothing was accepted: {error}",
        headers={"Retry-After": str(settings.retry_after_seconds)},
    )


_EVENT = TypeAdapter(Event)
_EVENT_SCHEMA = Event.model_json_schema()
_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        _EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1},
    ]}}},
}


def parse_events(body: Any, limit: int) -> list[Event]:
    """One event or a list of them; errors name the field as ``body.x`` or ``body[3].x``."""
    single = not isinstance(body, list)
    documents = [body] if single else body
    if not documents:
        raise RequestValidationError([{"type": "too_short", "loc": ("body",),
                                       "msg": "send at least one event", "input": body}])
    if len(documents) > limit:
        raise HTTPException(413, detail=f"body: at most {limit} events per request")
    events, errors = [], []
    for position, document in enumerate(documents):
        try:
            events.append(_EVENT.validate_python(document))
        except ValidationError as error:
            where = ("body",) if single else ("body", position)
            errors += [{**e, "loc": (*where, *e["loc"])} for e in error.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return events


@router.post("/events", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted,
             openapi_extra={"requestBody": _BODY},
             responses={**BODY_RESPONSES,
                        413: {"description": "More events than max_events_per_request, or "
                                             "a body larger than max_body_bytes"},
                        503: {"description": "Kafka unreachable; nothing accepted, retry "
                                             f"later; {SHED}"}})
async def post_events(
    context: ContextDep,
    producer: ProducerDep,
    settings: SettingsDep,
    weights: WeightsDep,
    body: Annotated[Any, Body(include_in_schema=False)],
) -> Accepted:
    """Accept one event or a batch. 202 means Kafka acknowledged every one (acks=all)."""
    events = parse_events(body, settings.max_events_per_request)
    context.events.admit(len(events))  # 429 over the app's events_per_second
    now = time.time()
    messages, ids = [], []
    for position, event in enumerate(events):
        if event.event_type not in weights:
            where = ("body", position) if isinstance(body, list) else ("body",)
            raise RequestValidationError([{
                "type": "enum", "loc": (*where, "event_type"), "input": event.event_type,
                "msg": f"{event.event_type!r} is not one of {sorted(weights)}"}])
        filled = event.model_copy(update={
            # A device clock far ahead is clamped, not refused: the event happened.
            "timestamp": event_time(event.timestamp, now, settings.max_event_time_skew_seconds),
            "event_id": event.event_id or uuid.uuid4().hex,
        })
        ids.append(filled.event_id)
        messages.append((
            filled.user_id.encode(),
            orjson.dumps(filled.model_dump(exclude_none=True, exclude_defaults=True)),
        ))
    try:
        await producer.send_all(settings.events_topic, messages)
    except KafkaUnavailable as error:
        raise unavailable(settings, error) from error
    return Accepted(accepted=len(ids), event_ids=ids)
