"""The docs name every setting and every route, so they cannot fall behind the code."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import iter_route_contexts

from api.main import create_app
from recommender import attribution
from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f"STREAMREC_{name.upper()}" for name in Settings.model_fields
               if f"`STREAMREC_{name.upper()}`" not in text]
    assert not missing


def test_every_route_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    # iter_route_contexts: app.routes holds each included router as one entry (FastAPI
    # 0.165), so reading it alone found no route at all. The /apps/{app} form of every
    # route is documented once, as a rule, beside the table.
    routes = {f"{method} {route.path}"
              for route in iter_route_contexts(create_app(Settings()).routes)
              if getattr(route, "include_in_schema", False)
              and not route.path.startswith("/apps/{app}/")
              for method in (route.methods or set()) - {"HEAD"}}
    assert len(routes) > 30, routes
    missing = sorted(route for route in routes if f"`{route}" not in readme)
    assert not missing


def test_every_attribution_outcome_is_in_the_readme():
    # Every reason attribute() gives but not_a_reward (only reward events are attributed),
    # and the two counts Attributor.credit_many adds.
    reasons = {value for name, value in vars(attribution).items()
               if name.isupper() and isinstance(value, str) and value.islower()}
    produced = reasons - {attribution.NOT_A_REWARD} | {"credited", "duplicate"}
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \| ", readme, re.MULTILINE))
    assert produced <= documented, produced - documented
