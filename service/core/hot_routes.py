"""Hot routes: served ahead of the framework's per-request machinery, documented by FastAPI.

The banner endpoints run on every page view of every site, and FastAPI's per-request machinery
(middleware layers, dependency solving, nested router matching, response-model handling) costs
more than their own work. An endpoint marked `@hot` keeps its FastAPI route for OpenAPI and
/docs, and `HotPathApp` serves it directly as a plain Starlette route that calls the same
function. Its parameters are limited to what this module can fill in: the `Request`, path
parameters (validated with their declared type and constraints, a failure being the same 422
problem) and headers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from fastapi import FastAPI, Request, Response
from fastapi.params import Header, Path
from fastapi.routing import APIRoute, APIRouter
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
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


class HotEndpoints:
    """The innermost app of the hot stack: calls the matched hot route's endpoint, and sends an
    exception it raises to the app's own exception handlers (the same problem documents)."""

    def __init__(self, handlers: ExceptionHandlers) -> None:
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await scope["route"].endpoint(request)
        except ClientDisconnect:
            return  # gone before its request was read: nobody to answer
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Any:
        for kind in type(exc).__mro__:
            if kind in self.handlers:
                return self.handlers[kind]
        return None


class HotPathApp(FastAPI):
    """A FastAPI app that serves its hot routes ahead of its own middleware stack and router.

    Starlette's error layer, FastAPI's telemetry and body-limit layers, the exception layer and
    the router cost more CPU per request than a consent event's own work. A request for a hot
    route goes instead through a stack of its own, built by `install_hot_routes` from the same
    observing and CORS middleware the app has (request ids, logs, metrics and CORS apply alike)
    around `HotEndpoints`. Anything else, including a hot path with another method (405), goes
    to the app as usual."""

    hot_routes: tuple[HotRoute, ...] = ()
    hot_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot_stack is not None:
            for route in self.hot_routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    scope["app"] = self
                    await self.hot_stack(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def install_hot_routes(
    app: HotPathApp, *routers: APIRouter, wrap: Callable[[ASGIApp], ASGIApp]
) -> None:
    """Serve the hot routes of `routers` (included in `app` without a further prefix) through
    `wrap(HotEndpoints)`: `wrap` adds the middleware a hot request must pass, as the app adds
    them for the others."""
    app.hot_routes = tuple(
        HotRoute(
            route.path, _starlette_endpoint(route.endpoint), methods=sorted(route.methods or ())
        )
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and getattr(route.endpoint, "__hot__", False)
    )
    app.hot_stack = wrap(HotEndpoints(app.exception_handlers))
