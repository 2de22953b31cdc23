"""API keys with roles: ``read`` (recommendations, similar, popular, item lookups),
``write`` (events; includes read), ``admin`` (catalog and placements; includes all).

Keys come from ``STREAMREC_API_KEYS`` (JSON ``{"key": "role"}``) or the JSON file named by
``STREAMREC_API_KEYS_FILE``; both may hold several keys per role, which is how keys are
rotated (add the new key, move clients, remove the old one). With no keys configured the API
is open, which only ``STREAMREC_ENVIRONMENT=development`` allows. Keys are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

RANK = {"read": 0, "write": 1, "admin": 2}
_CHECKED = "streamrec.key_checked"  # scope entry: the role this request's key was checked for
KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                          description="An API key; its role decides what it may do.")


def role_of(presented: str, keys: dict[str, str]) -> str | None:
    """The role of ``presented``, comparing against every key in constant time."""
    found = None
    for key, role in keys.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = role
    return found


def authenticate(request: Request, role: str) -> None:
    """Raise 401 or 403 unless the request's key has at least ``role``. Routes call it
    before anything reads the body (``api.routing.GuardedRoute``), so a client without a
    key learns nothing about how its body would have been parsed."""
    checked = request.scope.get(_CHECKED)
    if checked is not None and RANK[checked] >= RANK[role]:
        return
    keys: dict[str, str] = request.app.state.api_keys
    if keys:  # none: development, open (refused at start-up in production)
        presented = request.headers.get(KEY_HEADER.model.name)
        if presented is None:
            raise HTTPException(401, detail="X-API-Key: required",
                                headers={"WWW-Authenticate": "ApiKey"})
        held = role_of(presented, keys)
        if held is None:
            raise HTTPException(401, detail="X-API-Key: not a valid key",
                                headers={"WWW-Authenticate": "ApiKey"})
        if RANK[held] < RANK[role]:
            raise HTTPException(403, detail=f"X-API-Key: a {held} key may not do this "
                                            f"({role} needed)")
    request.scope[_CHECKED] = role


def require(role: str):
    """A dependency that lets a request through when its key has at least ``role`` (it
    also puts the key into the OpenAPI spec)."""

    async def check(request: Request,
                    presented: Annotated[str | None, Security(KEY_HEADER)] = None) -> None:
        authenticate(request, role)

    check.role = role  # type: ignore[attr-defined]  # read by GuardedRoute
    return Depends(check)


READ, WRITE, ADMIN = require("read"), require("write"), require("admin")
# For the OpenAPI spec of every route behind a key (a dependency cannot declare answers).
KEY_RESPONSES: dict[int | str, dict] = {
    401: {"description": "No X-API-Key, or not a valid one"},
    403: {"description": "The key's role may not do this"},
}
