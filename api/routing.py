"""The route class of every router: the key first, then the body.

FastAPI reads and parses a body before it solves any dependency, the key's included: a
client without a key got 422 for broken JSON and 400 for deep nesting before the 401, and
learnt how its body would have been parsed. Here a route checks the key its dependencies
ask for first, then reads a JSON body itself (``api.limits.read_json``: every refusal
names the body, and a lone surrogate is a 422 naming its field), and only then hands the
request to FastAPI, which finds the body parsed already.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from api.limits import read_json
from api.security import RANK, authenticate


def required_role(dependant: Dependant) -> str | None:
    """The highest role any of the route's dependencies require (``api.security.require``)."""
    roles = []
    pending = list(dependant.dependencies)
    while pending:
        dependency = pending.pop()
        role = getattr(dependency.call, "role", None)
        if role is not None:
            roles.append(role)
        pending.extend(dependency.dependencies)
    return max(roles, key=RANK.__getitem__, default=None)


class GuardedRoute(APIRoute):
    """A route of an app (``default`` bare, any under ``/apps/{app}``): after the key, the
    app is looked up (404) and the request counted against its ``requests_per_second``
    (429), before any body is read: a flood over the quota costs no parsing."""

    admits = True

    def get_route_handler(self):
        # FastAPI solves the dependant of the route as included (its routers' dependencies
        # too) per request, each dependency in a nested call of its own. The key checks
        # and the admission are done below before FastAPI runs, so they are left out of
        # what it solves (they stay in the route's dependant, for the OpenAPI spec).
        context = getattr(routing, "_effective_route_context_var", None)
        context = None if context is None else context.get()
        route = context if context is not None and context.original_route is self else self
        solved = route.dependant
        role = required_role(solved)
        counted = self.admits

        def done_before(dependency: Dependant) -> bool:
            return (getattr(dependency.call, "role", None) is not None
                    or (counted and getattr(dependency.call, "admits", False)))

        route.dependant = replace(solved, dependencies=[
            dependency for dependency in solved.dependencies if not done_before(dependency)])
        try:
            handler = super().get_route_handler()
        finally:
            route.dependant = solved
        reads_body = self.body_field is not None

        async def guarded(request):
            if role is not None:
                await authenticate(request, role)
            if counted:
                await request.app.state.apps.admit(request)
            if reads_body:
                try:
                    await read_json(request)
                except ClientDisconnect:
                    # The client left, or the server cut a body too slow to wait for (its
                    # 408 is sent already): nobody reads an answer, none is an error.
                    return Response(status_code=400)
            return await handler(request)

        return guarded


class PlatformRoute(GuardedRoute):
    """A route about apps (``/admin/apps``), not of one: nothing to admit."""

    admits = False
