"""API keys with roles: ``read`` (recommendations, similar, popular, item lookups),
``write`` (events; includes read), ``admin`` (catalog and placements; includes all), each
on one app, and ``platform`` (creates and deletes apps; admin on every app).

Keys come from ``STREAMREC_API_KEYS`` (JSON ``{"key": "role"}``) or the JSON file named by
``STREAMREC_API_KEYS_FILE``; both may hold several keys per role, which is how keys are
rotated (add the new key, move clients, remove the old one); those act on the app
``default``, except ``platform`` keys. The keys of the other apps are made by
``POST /admin/apps`` and kept hashed in Redis (:class:`AppKeys`). With no keys configured
the API is open, which only ``STREAMREC_ENVIRONMENT=development`` allows. Configured keys
are compared in constant time; no key is ever logged.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from streamrec.apps import DEFAULT, PLATFORM, Apps, key_digest

RANK = {"read": 0, "write": 1, "admin": 2, PLATFORM: 3}
_CHECKED = "streamrec.key_checked"  # scope entry: the role this request's key was checked for
KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                          description="An API key; its role decides what it may do.")
MOST_CACHED = 10_000  # keys remembered per process (a flood of made-up keys evicts them)


def role_of(presented: str, keys: dict[str, str]) -> str | None:
    """The role of ``presented``, comparing against every key in constant time."""
    found = None
    for key, role in keys.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = role
    return found


class AppKeys:
    """The keys made by ``POST /admin/apps`` (:meth:`streamrec.apps.Apps.lookup`), each
    answer kept ``ttl`` seconds: a request costs no Redis round trip per key check, and a
    rotated or deleted key stops working within ``ttl``. Kept by the key's SHA-256, never
    in the clear."""

    def __init__(self, registry: Apps, ttl: float) -> None:
        self.registry = registry
        self.ttl = ttl
        self._known: dict[str, tuple[float, tuple[str, str] | None]] = {}

    async def lookup(self, presented: str) -> tuple[str, str] | None:
        digest = key_digest(presented)
        now = time.monotonic()
        cached = self._known.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await asyncio.to_thread(self.registry.lookup, presented)
        except redis.RedisError as error:
            raise HTTPException(503, detail=f"X-API-Key: cannot be checked, the state store "
                                            f"is unreachable: {error}",
                                headers={"Retry-After": "5"}) from error
        if len(self._known) >= MOST_CACHED:
            self._known.clear()
        self._known[digest] = (now + self.ttl, found)
        return found

    def forget(self) -> None:
        """Drop every remembered answer (this process rotated or deleted keys)."""
        self._known.clear()


async def authenticate(request: Request, role: str) -> None:
    """Raise 401 or 403 unless the request's key has at least ``role`` on the request's
    app (the path's ``app``; none: ``default``). Routes call it before anything reads the
    body (``api.routing.GuardedRoute``), so a client without a key learns nothing about
    how its body would have been parsed.

    Keys of ``STREAMREC_API_KEYS`` act on ``default``, ``platform`` ones on every app; a
    key made for an app acts on that app only: any other app's route is a 403, whether
    that app exists or not (a key of one app learns nothing about the others)."""
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
        key_app = DEFAULT
        if held is None:
            found = await request.app.state.app_keys.lookup(presented)
            if found is None:
                raise HTTPException(401, detail="X-API-Key: not a valid key",
                                    headers={"WWW-Authenticate": "ApiKey"})
            key_app, held = found
        app = request.path_params.get("app", DEFAULT)
        if held != PLATFORM and key_app != app:
            raise HTTPException(403, detail=f"X-API-Key: a key of app {key_app!r} may not act "
                                            f"on app {app!r}")
        if RANK[held] < RANK[role]:
            raise HTTPException(403, detail=f"X-API-Key: a {held} key may not do this "
                                            f"({role} needed)")
    request.scope[_CHECKED] = role


def require(role: str):
    """A dependency that lets a request through when its key has at least ``role`` (it
    also puts the key into the OpenAPI spec)."""

    async def check(request: Request,
                    presented: Annotated[str | None, Security(KEY_HEADER)] = None) -> None:
        await authenticate(request, role)

    check.role = role  # type: ignore[attr-defined]  # read by GuardedRoute
    return Depends(check)


READ, WRITE, ADMIN = require("read"), require("write"), require("admin")
PLATFORM_ONLY = require(PLATFORM)  # creates, changes and deletes apps
# For the OpenAPI spec of every route behind a key (a dependency cannot declare answers).
KEY_RESPONSES: dict[int | str, dict] = {
    401: {"description": "No X-API-Key, or not a valid one"},
    403: {"description": "The key's role may not do this"},
}
