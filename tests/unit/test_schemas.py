"""The JSON Schema files are the contract; the pydantic models must accept and reject the
same documents. Each sample goes through both (with format checking on)."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
from pydantic import ValidationError
from referencing import Registry, Resource

from schemas.models import Event, EventContractError, Item, User, load_schema, parse_event
from tests.factories import event

MODELS = {"event": Event, "item": Item, "user": User}

SAMPLES = [
    ("event", event(), True),
    ("event", event(timestamp=1_700_000_000.5, value=4.5, event_id="e1",
                    recommendation_id="r1", context={"page": "home", "n": 3, "ok": True}),
     True),
    ("event", event(timestamp="2026-11-23T04:00:00Z"), True),
    ("event", event(timestamp="2026-11-23T04:00:00+02:00"), True),
    ("event", event(timestamp="2026-11-23T04:00:00"), False),  # no time zone
    ("event", event(timestamp="1700000000"), False),  # a number in a string
    ("event", event(timestamp=-1), False),
    ("event", event(timestamp=1_700_000_000_000), False),  # milliseconds: a unit mistake
    ("event", {"item_id": "x", "event_type": "view"}, False),
    ("event", event(user="u\x00"), False),
    ("event", event(item="line\x85break"), False),  # C1 controls are control characters too
    ("event", event(user="u" * 257), False),
    ("event", event(user=""), False),
    ("event", event(user=12), False),
    ("event", event(extra_field=1), False),
    ("event", event(value="4"), False),
    ("event", event(context={"nested": {"a": 1}}), False),
    ("event", event(context={f"k{n}": n for n in range(33)}), False),
    ("event", event(kind=""), False),
    # Names are one line of text, as ids are: no control characters (a log, a header).
    ("event", event(context={"x\n2026 CRITICAL forged\x1b[31m": 1}), False),
    ("event", event(context={"": 1}), False),
    ("item", {"item_id": "tea", "properties": {"brand\x00": "x"}}, False),
    ("user", {"user_id": "ann", "properties": {"tier\u0085": "gold"}}, False),
    ("event", event(user="ünïcødé:with:colons"), True),
    # null is "not set" for every optional field, as the API itself publishes it
    ("event", event(timestamp=None, value=None, event_id=None, recommendation_id=None), True),
    ("event", event(context=None), False),
    ("item", {"item_id": "tea", "categories": ["drinks"], "price": 3.5, "available": True,
              "created_at": "2026-01-01T00:00:00Z", "properties": {"brand": "x"}}, True),
    ("item", {"item_id": "tea", "price": -1}, False),
    ("item", {"item_id": "tea", "categories": "drinks"}, False),
    ("item", {"item_id": "tea", "colour": "green"}, False),
    ("item", {"item_id": "tea", "created_at": 1_700_000_000_000}, False),
    ("item", {"item_id": "tea", "expires_at": 1_900_000_000}, True),
    ("item", {"item_id": "tea", "expires_at": "2027-01-01T00:00:00+01:00"}, True),
    ("item", {"item_id": "tea", "expires_at": "2027-01-01T00:00:00"}, False),  # no zone
    ("item", {"item_id": "tea", "expires_at": 1_900_000_000_000}, False),  # milliseconds
    ("item", {"item_id": "tea", "expires_at": "soon"}, False),
    ("item", {"item_id": "tea", "price": "3"}, False),
    ("item", {"item_id": "tea", "price": None, "created_at": None, "expires_at": None}, True),
    ("item", {"item_id": "tea", "available": None}, False),
    ("user", {"user_id": "ann", "properties": {"tier": "gold", "age": 30}}, True),
    ("user", {"user_id": "ann", "tier": "gold"}, False),
]


# item.json and user.json refer to event.json by its $id, as producers' validators will.
REGISTRY = Registry().with_resources(
    (load_schema(name)["$id"], Resource.from_contents(load_schema(name))) for name in MODELS)


@pytest.mark.parametrize(("kind", "document", "valid"), SAMPLES)
def test_schema_files_and_models_agree(kind, document, valid):
    validator = jsonschema.Draft202012Validator(load_schema(kind), registry=REGISTRY)
    schema_says = validator.is_valid(document)
    try:
        MODELS[kind].model_validate_json(orjson.dumps(document))
        model_says = True
    except ValidationError:
        model_says = False
    assert (schema_says, model_says) == (valid, valid)


@pytest.mark.parametrize(("document", "field"), [
    ({"item_id": "x", "event_type": "view"}, "user_id"),
    (event(kind="teleport"), "event_type"),
    (event(timestamp="soon"), "timestamp"),
    (event(extra_field=1), "extra_field"),
])
def test_parse_event_errors_name_the_field(document, field):
    with pytest.raises(EventContractError, match=field):
        parse_event(orjson.dumps(document), {"view": 1.0})


def test_bad_json_is_named():
    with pytest.raises(EventContractError, match="Invalid JSON"):
        parse_event(b"{nope", {"view": 1.0})
