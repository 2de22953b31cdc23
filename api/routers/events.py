from __future__ import annotations

import time
import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, HTTPException, status

from api.deps import ProducerDep, SettingsDep, WeightsDep
from api.models import Accepted
from api.producer import KafkaUnavailable
from schemas.models import Event

router = APIRouter(tags=["events"])


def unavailable(settings, error: Exception) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"events could not be handed to Kafka; nothing was accepted: {error}",
        headers={"Retry-After": str(settings.retry_after_seconds)},
    )


@router.post("/events", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted,
             responses={503: {"description": "Kafka unreachable; retry later"}})
async def post_events(
    producer: ProducerDep,
    settings: SettingsDep,
    weights: WeightsDep,
    body: Annotated[Event | list[Event], Body()],
) -> Accepted:
    """Accept one event or a batch. 202 means Kafka acknowledged every one (acks=all)."""
    events = body if isinstance(body, list) else [body]
    if not events:
        raise HTTPException(422, detail="body: send at least one event")
    if len(events) > settings.max_events_per_request:
        raise HTTPException(
            413, detail=f"body: at most {settings.max_events_per_request} events per request"
        )
    now = time.time()
    messages, ids = [], []
    for position, event in enumerate(events):
        if event.event_type not in weights:
            where = f"[{position}].event_type" if isinstance(body, list) else "event_type"
            raise HTTPException(
                422, detail=f"{where}: {event.event_type!r} is not one of {sorted(weights)}"
            )
        filled = event.model_copy(update={
            "timestamp": now if event.timestamp is None else event.timestamp,
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
