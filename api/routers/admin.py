"""Placements and their variants, changed at run time; every change is versioned and logged."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Header, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import AllocationDep, ContextDep, SettingsDep
from api.limits import BODY_RESPONSES
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES
from api.shedding import SHED_RESPONSES
from recommender import abtest
from recommender.allocation import LEARNING, Placement, Variant
from recommender.attribution import NO_IMPRESSION, ROUTE_PLACEMENTS
from recommender.base import MAX_WEIGHT
from recommender.clustering import MAX_SEGMENTS
from recommender.contextual import ACTIVITY, HOUR
from recommender.engine import HYBRID_PARAMS
from recommender.ope import OffPolicyError
from schemas.impression import NAME_PATTERN
from schemas.models import ModelName
from streamrec import version_status
from streamrec.measure import policy_log

router = APIRouter(route_class=GuardedRoute, prefix="/admin", tags=["admin"], dependencies=[ADMIN],
                   responses={**KEY_RESPONSES, **SHED_RESPONSES})

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
PlacementName = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN)]
# What a placement's targeting and clustered/contextual settings name: a context key
# (api.context) or a user property (user.NAME: only the property).
ContextKey = Annotated[str, Field(min_length=1, max_length=37,
                                  pattern=r"^(user\.)?[A-Za-z0-9_-]{1,32}$")]
ContextValue = Annotated[str, Field(min_length=1, max_length=64)]
# A contextual placement's feature: a context key, a user property, or a built-in.
FeatureName = Annotated[str, Field(min_length=1, max_length=37, pattern=(
    rf"^({HOUR}|{ACTIVITY}|(user\.)?[A-Za-z0-9_-]{{1,32}})$"))]


class VariantBody(BaseModel):
    # Stored as JSON, where Infinity becomes null: every list of the placement was a 500.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Name
    model: ModelName
    weight: float = Field(default=1.0, ge=0, le=MAX_WEIGHT,
                          description="Split share (relative); 0 switches it off.")
    params: dict[Literal[HYBRID_PARAMS], Annotated[float, Field(ge=0, le=MAX_WEIGHT)]] = Field(
        default_factory=dict, description="Hybrid blend weights (relative).")


class PlacementBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: Literal["split", "bandit", "clustered", "contextual"] = Field(
        default="split", description="split (fixed shares), bandit (Thompson sampling), "
        "clustered (per user segment), contextual (linear Thompson sampling on the request's "
        "context): docs/bandits.md.")
    floor: float = Field(default=0.05, ge=0, le=1,
                         description="Bandit: least share of traffic per live variant.")
    pin: Name | None = Field(default=None, description="Serve only this variant.")
    variants: Annotated[list[VariantBody], Field(min_length=1, max_length=16)]
    segments: int = Field(default=4, ge=2, le=MAX_SEGMENTS, description=(
        "clustered: how many segments users' MF vectors are softly assigned to."))
    segment_by: ContextKey | None = Field(default=None, description=(
        "clustered: segment by this context key or user property instead (one segment per "
        "value in segment_values, one for any other value)."))
    segment_values: Annotated[list[ContextValue], Field(max_length=MAX_SEGMENTS - 1)] = Field(
        default_factory=list, description="clustered with segment_by: the values that get "
        "a segment of their own.")
    features: Annotated[list[FeatureName], Field(min_length=1, max_length=16)] | None = Field(
        default=None, description="contextual: what its features use: context keys, user "
        f"properties (user.NAME for a property only), {HOUR} (the hour of the week and of "
        f"the day) and {ACTIVITY} (the user's history length); default all of them, every "
        "key and property that is sent.")
    alpha: float = Field(default=1.0, gt=0, le=10, description=(
        "contextual: scale of the posterior's spread (exploration)."))
    target: Annotated[dict[ContextKey, ContextValue | Annotated[
        list[ContextValue], Field(min_length=1, max_length=64)]],
        Field(min_length=1, max_length=8)] | None = Field(default=None, description=(
            "Requests whose context key or user property equals the value (or one of the "
            "values) for every key get the experiment; the rest get default_variant."))
    default_variant: Name | None = Field(default=None, description=(
        "With target: the variant a request outside the target gets."))

    @model_validator(mode="after")
    def _consistent(self) -> PlacementBody:
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be unique")
        if self.pin is not None and self.pin not in names:
            raise ValueError(f"pin: {self.pin!r} is not one of the variants {names}")
        if self.pin is None and not any(variant.weight > 0 for variant in self.variants):
            raise ValueError("variants: at least one needs a weight above 0 (or pin one)")
        if self.strategy in LEARNING and self.floor * len(names) > 1:
            raise ValueError(f"floor: {self.floor} x {len(names)} variants exceeds 1")
        if self.strategy != "clustered":
            for name in ("segment_by", "segment_values"):
                if getattr(self, name):
                    raise ValueError(f"{name}: only for strategy clustered")
        elif self.segment_values and not self.segment_by:
            raise ValueError("segment_values: only with segment_by")
        elif self.segment_by and not self.segment_values:
            raise ValueError("segment_values: name the values of segment_by that get a "
                             "segment of their own")
        if self.features is not None and self.strategy != "contextual":
            raise ValueError("features: only for strategy contextual")
        if (self.target is None) != (self.default_variant is None):
            raise ValueError("default_variant: give it with target, and only then")
        if self.default_variant is not None and self.default_variant not in names:
            raise ValueError(f"default_variant: {self.default_variant!r} is not one of the "
                             f"variants {names}")
        return self


@router.get("/placements")
def placements(allocation: AllocationDep) -> dict[str, dict]:
    """Every configured placement (an unconfigured one serves the default model)."""
    return allocation.feedback.placements()


@router.put("/placements/{name}", responses=BODY_RESPONSES)
async def put_placement(
    name: PlacementName, body: PlacementBody, allocation: AllocationDep,
    author: Annotated[str, Header(alias="X-Streamrec-Author", max_length=128)] = "api",
) -> dict:
    """Create or change a placement. Takes effect on every API replica within
    ``allocation_refresh_seconds``; the change is recorded with its author and time."""
    if name in ROUTE_PLACEMENTS:
        # Those counters are the routes' own lists; a configured placement would mix in.
        raise HTTPException(422, detail=f"name: {name!r} is reserved: it counts the lists "
                                        "of GET /popular and GET /items/{item_id}/similar")
    placement = Placement(
        name, tuple(Variant(v.name, v.model, v.weight, dict(v.params)) for v in body.variants),
        strategy=body.strategy, floor=body.floor, pin=body.pin, segments=body.segments,
        segment_by=body.segment_by, segment_values=tuple(body.segment_values),
        features=None if body.features is None else tuple(body.features), alpha=body.alpha,
        target=None if body.target is None else {
            key: tuple(value) if isinstance(value, list) else (value,)
            for key, value in body.target.items()},
        default_variant=body.default_variant,
    )
    stored = await run_in_threadpool(
        allocation.feedback.put_placement, placement.to_dict(), author, time.time())
    await run_in_threadpool(allocation.refresh)
    return stored


@router.get("/placements/{name}/log", responses={404: {"description": "Never configured"}})
def placement_log(name: PlacementName, allocation: AllocationDep,
                  limit: Annotated[int, Field(ge=1, le=1000)] = 100) -> list[dict]:
    """The placement's changes, newest first."""
    log = allocation.feedback.placement_log(name, limit)
    if not log:
        raise HTTPException(404, detail=f"name: placement {name!r} was never configured")
    return log


UNKNOWN = {404: {"description": "No such placement"}}


def _configured(allocation, name: str) -> dict:
    config = allocation.feedback.placements().get(name)
    if config is None:
        raise HTTPException(404, detail=f"name: no placement named {name!r} is configured")
    return config


@router.get("/placements/{name}", responses=UNKNOWN)
def get_placement(name: PlacementName, allocation: AllocationDep) -> dict:
    """The placement's current configuration (with its version)."""
    return _configured(allocation, name)


@router.delete("/placements/{name}", responses=UNKNOWN)
async def delete_placement(name: PlacementName, allocation: AllocationDep) -> dict:
    """Remove a placement with its change log, report counters and outcomes (it leaves
    the dashboard too); its lists are then served as an unconfigured placement's. Answers
    what was removed."""
    removed = await run_in_threadpool(allocation.feedback.delete_placement, name)
    if not removed["configuration"]:
        raise HTTPException(404, detail=f"name: no placement named {name!r} is configured")
    await run_in_threadpool(allocation.refresh)
    return {"name": name, "removed": removed}


@router.get("/placements/{name}/report", responses={
    **UNKNOWN, 422: {"description": "control is not one of the variants"}})
def placement_report(name: PlacementName, allocation: AllocationDep, context: ContextDep,
                     control: Annotated[str | None, Field(max_length=64)] = None) -> dict:
    """Per variant: its model, that model's offline metrics where a card describes what
    serves it (``offline``: batch-trained and imported models), lists shown, CTR, take-rate
    and conversions with 95% intervals, and each variant against the control: lift, a
    two-proportion test, and the sample size still needed ("not enough data" until a list
    was rewarded); ``advice`` says in words whether to switch and how many more lists it
    needs. Also this placement's reward events by attribution outcome, and
    (``unplaced_outcomes``) those whose list was never found, which belong to no
    placement."""
    # The routes' own placements (/popular, /similar) have one variant and no allocation.
    route_variant = ROUTE_PLACEMENTS.get(name)
    if route_variant is not None:
        models = {route_variant: route_variant}
    else:
        config = _configured(allocation, name)
        models = {variant["name"]: variant.get("model") for variant in
                  config.get("variants", [])}
    try:
        report = abtest.placement_report(allocation.feedback.variant_counters(name), control,
                                         list(models))
    except abtest.UnknownControl as error:
        raise HTTPException(422, detail=str(error)) from None
    abtest.with_cards(report, models, context.wiring.model_cards().all())
    if route_variant is None and config.get("target"):
        # The counters hold the experiment's population only; both sides need the log.
        report["targeting"] = {
            "target": config["target"], "default_variant": config.get("default_variant"),
            "counts": "targeted requests only: POST this route with a policy (current) "
                      "for both sides"}
    if route_variant is not None:
        report["shares"] = {route_variant: 1.0}
    else:
        report["shares"] = allocation.allocator.shares(allocation.placement(name),
                                                       allocation.stats(name), 500)
    report["outcomes"] = allocation.feedback.outcomes(name)
    unplaced = allocation.feedback.outcomes().get(NO_IMPRESSION, 0)
    report["unplaced_outcomes"] = {NO_IMPRESSION: unplaced} if unplaced else {}
    return report


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    policy: Annotated[str, Field(min_length=1, max_length=64)] | dict[str, object] = Field(
        description="A policy document (split shares, a rule per context value, bandit or "
                    "greedy) or a name: current, uniform, bandit, greedy, a variant's name.")
    since: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Lists served since then (30m, 6h, 7d, epoch seconds, "
                                  "RFC 3339); default: all the topics retain.")


@router.post("/placements/{name}/report", responses={
    **BODY_RESPONSES, **UNKNOWN, 422: {"description": "A policy or a log that cannot be evaluated"},
    503: {"description": "Kafka did not answer"}})
async def policy_report(name: PlacementName, body: PolicyBody, context: ContextDep) -> dict:
    """Off-policy evaluation: how ``policy`` would have done on this placement, estimated
    from its logged lists (each with its decision's propensity) and the rewards credited to
    them, read from the impressions and events topics: the logged allocation's measured
    reward per list, the target's IPS and self-normalised IPS estimates with 95% intervals,
    the effective sample size and a sentence. A POST: reading the topics takes longer than
    a read's deadline."""
    try:
        since = policy_log.parse_since(body.since)
    except ValueError as error:
        raise HTTPException(422, detail=f"body.{error}") from None
    try:
        return await policy_log.policy_report(context.wiring, context.name, name, body.policy,
                                              since)
    except LookupError as error:
        raise HTTPException(404, detail=str(error)) from None
    except OffPolicyError as error:
        raise HTTPException(422, detail=f"body.{error}") from None
    except (KafkaError, TimeoutError) as error:
        raise HTTPException(503, detail=f"Kafka did not answer: {error!r}",
                            headers={"Retry-After": "5"}) from None


@router.get("/versions")
async def versions(request: Request, settings: SettingsDep, context: ContextDep) -> list[dict]:
    """Every model version: whether it serves, whether a worker keeps it live, how many
    events of the events topic it has not applied yet (``lag``), events applied, and its
    settings. ``live`` and ``lag`` are null (with ``status_error``) when Kafka does not
    answer."""
    serving = context.versions
    registry = serving.registry
    listed = await run_in_threadpool(registry.all)
    current = await run_in_threadpool(registry.serving)
    # Within the request's deadline: a slow Kafka is reported in status_error, not a 503.
    state = request.app.state
    if getattr(state, "version_kafka", None) is None:  # kept: connecting costs most
        state.version_kafka = version_status.KafkaReader(settings)
    found = await version_status.statuses(settings, registry, listed,
                                          0.8 * settings.request_deadline_seconds,
                                          state.version_kafka)
    answer = []
    for name, version in listed.items():
        store = serving.wiring.for_version(name, version).store()
        status = found[name]
        answer.append({
            "name": name, "serving": name == current, "status": version.status,
            "live": status.live, "workers": status.workers, "lag": status.lag,
            "status_error": status.error,
            "events_applied": await run_in_threadpool(store.events_applied),
            "settings": version.settings, "created_at": version.created_at})
    return answer
