"""Hot routes: served by Starlette directly, documented by FastAPI.

The banner endpoints run on every page view of every site, and FastAPI's per-request machinery
(dependency solving, nested router matching, response-model handling) costs more than their own
work. An endpoint marked `@hot` keeps its FastAPI route for OpenAPI and /docs, and is also
registered first in the app's routes as a plain Starlette route that calls the same function. Its
parameters are limited to what this module can fill in: the `Request`, path parameters (validated
with their declared type and constraints, a failure being the same 422 problem) and headers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from fastapi import FastAPI, Request, Response
from fastapi.params import Header, Path
from fastapi.routing import APIRoute, APIRouter
from pydantic import TypeAdapter, ValidationError
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.errors import Unprocessable, validation_problem_detail

Endpoint = Callable[..., Awaitable[Response]]
ExceptionHandlers = dict[Any, Callable[[Request, Any], Response | Awaitable[Response]]]


def hot(endpoint: Endpoint) -> Endpoint:
    endpoint.__hot__ = True  # type: ignore[attr-defined]
    return endpoint


def _filler(name: str, annotation: Any) -> Callable[[Request], Any]:
    if annotation is Request:
        return lambda request: request
    metadata = getattr(annotation, "__metadata__", ())
    if any(isinstance(item, Path) for item in metadata):
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)

        def path_value(request: Request) -> Any:
            try:
                return adapter.validate_python(request.path_params[name])
            except ValidationError as exc:
                detail, errors = validation_problem_detail(
                    list(exc.errors()), prefix=("path", name)
                )
                raise Unprocessable(detail, extra={"errors": errors}) from None

        return path_value
    if any(isinstance(item, Header) for item in metadata):
        header = name.replace("_", "-")
        return lambda request: request.headers.get(header)
    raise TypeError(f"a hot route cannot fill parameter {name!r}")


def _starlette_endpoint(function: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    hints = get_type_hints(function, include_extras=True)
    fillers = {name: _filler(name, hints[name]) for name in inspect.signature(function).parameters}

    async def endpoint(request: Request) -> Response:
        return await function(**{name: fill(request) for name, fill in fillers.items()})

    return endpoint


class HotRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope (for logs and metrics)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class HotPathMiddleware:
    """Serves the hot routes from inside the middleware stack, ahead of the router and of
    Starlette's per-request exception and routing layers (about a third of a consent event's
    CPU). It sits inside the observing and CORS middleware, so request ids, logs, metrics and
    CORS apply as to any route; errors go to the app's own exception handlers. Anything else,
    including a hot path with another method (405), goes on to the app."""

    def __init__(self, app: ASGIApp, routes: list[HotRoute], handlers: ExceptionHandlers) -> None:
        self.app = app
        self.routes = routes
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    request = Request(scope, receive, send)
                    try:
                        response = await route.endpoint(request)
                    except Exception as exc:
                        handler = self._handler(exc)
                        if handler is None:
                            raise
                        answer = handler(request, exc)
                        response = await answer if inspect.isawaitable(answer) else answer
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _handler(self, exc: Exception) -> Any:
        for kind in type(exc).__mro__:
            if kind in self.handlers:
                return self.handlers[kind]
        return None


def install_hot_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Serve the hot routes of `routers` (included in `app` without a further prefix) through
    HotPathMiddleware. Call before adding the middleware that must wrap them (CORS, observing)."""
    hot_routes = [
        HotRoute(
            route.path, _starlette_endpoint(route.endpoint), methods=sorted(route.methods or ())
        )
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and getattr(route.endpoint, "__hot__", False)
    ]
    app.add_middleware(HotPathMiddleware, routes=hot_routes, handlers=app.exception_handlers)
