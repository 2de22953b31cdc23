"""The docs name every setting and every route, so they cannot fall behind the code."""

from __future__ import annotations

from pathlib import Path

from api.main import create_app
from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f"STREAMREC_{name.upper()}" for name in Settings.model_fields
               if f"`STREAMREC_{name.upper()}`" not in text]
    assert not missing


def test_every_route_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    routes = {f"{method} {route.path}" for route in create_app(Settings()).routes
              if getattr(route, "include_in_schema", False)
              for method in route.methods - {"HEAD"}}
    missing = sorted(route for route in routes if f"`{route}" not in readme)
    assert not missing
