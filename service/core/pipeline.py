"""One request pipeline, with a fast dispatch for hot routes derived from the app's declarations.

The banner endpoints run on every page view of every site, and FastAPI's per-request machinery
(its outer error, telemetry and body-limit layers, the exception layer, router matching,
dependency solving) costs more CPU than their own work (docs/architecture.md, "The request
path"). So `ConsentAPI` builds its middleware stack twice from the same declarations: FastAPI's
own, and, for routes marked `@hot`, the app's `user_middleware` (the middleware declared with
`add_middleware`, in the same order) around `HotEndpoints`, which calls the route's endpoint
directly. Both are built when the stack is built, from every route of the app, so nothing is
listed by hand and a new middleware applies to every request.

A hot route may declare only what the fast path honours exactly as FastAPI would: the `Request`,
path and single-valued query parameters (validated with their declared type and constraints, a
failure being the same 422 problem; one given twice is a 422 too, as `json_input.StrictJSONRoute`
makes it on FastAPI's side), headers, and dependencies that are `async` functions of the request
alone (the typed collaborators of `service.state`), with or without a parameter name. It returns
a `Response`, so, as in FastAPI itself, `response_model` and `status_code` only document it.
Anything else (list-valued query, cookie or body parameters, security, dependencies with
parameters or sub-dependencies, generator dependencies) makes building the app fail with a
message naming the route.

A GET route answers HEAD as well (RFC 9110, section 9.3.2: the same answer, of which the HTTP
server sends the head alone): a hot route's matcher takes HEAD like any Starlette route, and for
FastAPI's routes, which take only the methods they declare, `HeadAsGet` routes a HEAD as a GET.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.params import Header, Path, Query
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.errors import (
    Unprocessable,
    problem_response_doc,
    problem_schemas,
    validation_problem_detail,
)
from service.core.query import given_once, many_valued
from service.core.raw_path import RawServer, handler_for, raw_server_for

Endpoint = Callable[..., Awaitable[Response]]
AnyEndpoint = TypeVar("AnyEndpoint", bound=Callable[..., Awaitable[Any]])
Filler = Callable[[Request], Any]
Dependency = Callable[[Request], Awaitable[Any]]


class HotRouteError(TypeError):
    """A route marked @hot declares something the fast path cannot honour."""


def hot(endpoint: Endpoint) -> Endpoint:
    """Serve this endpoint through the fast dispatch (see the module docstring for its limits)."""
    endpoint.__hot__ = True  # type: ignore[attr-defined]
    return endpoint


@dataclass(frozen=True, slots=True)
class HandReadBody:
    model: type[BaseModel]
    media_types: tuple[str, ...]
    description: str | None


def body_read_by_hand(
    model: type[BaseModel],
    *,
    media_types: tuple[str, ...] = ("application/json",),
    description: str | None = None,
) -> Callable[[AnyEndpoint], AnyEndpoint]:
    """Document the body an endpoint reads itself (from the Request, with `json_input.read_json`)
    as `model`, in each of `media_types`: FastAPI documents only the bodies it parses."""

    def mark(endpoint: AnyEndpoint) -> AnyEndpoint:
        endpoint.__body__ = HandReadBody(model, media_types, description)  # type: ignore[attr-defined]
        return endpoint

    return mark


def is_hot(route: RouteContext) -> bool:
    return isinstance(route.original_route, APIRoute) and getattr(route.endpoint, "__hot__", False)


class FastRoute:
    """A hot route compiled for the fast dispatch: its path matcher and how to call it."""

    def __init__(self, route: RouteContext) -> None:
        self.route = route.original_route  # named in logs and metrics, as FastAPI does
        self.path = route.path or ""
        methods = sorted(route.methods or ())
        # Matched as a plain Starlette route: FastAPI's own matching does more per request.
        self._matcher = Route(self.path, _unused, methods=methods)
        where = f"hot route {', '.join(methods)} {self.path}"
        self._call: Endpoint = route.endpoint  # type: ignore[assignment]
        self._fillers, self._dependencies = _compile(self._call, route.dependant, where)

    def matches(self, scope: Scope) -> Match:
        match, child_scope = self._matcher.matches(scope)
        if match is Match.FULL:
            scope.update(child_scope)  # the path parameters
            scope["route"] = self.route
        return match

    async def __call__(self, request: Request) -> Response:
        arguments = {name: fill(request) for name, fill in self._fillers}
        for name, dependency in self._dependencies:
            value = await dependency(request)
            if name is not None:
                arguments[name] = value
        return await self._call(**arguments)


async def _unused(request: Request) -> Response:  # pragma: no cover (the matcher's endpoint)
    raise NotImplementedError


def _compile(
    endpoint: Endpoint, dependant: Dependant, where: str
) -> tuple[list[tuple[str, Filler]], list[tuple[str | None, Dependency]]]:
    refused = [
        (
            [param for param in dependant.query_params if many_valued(param.field_info.annotation)],
            "a list-valued query parameter",
        ),
        (dependant.cookie_params, "cookie parameters"),
        (dependant.body_params, "a body parameter (read the body from the Request instead)"),
    ]
    for params, what in refused:
        if params:
            raise HotRouteError(f"{where} declares {what}, which the fast path cannot fill")
    if dependant.security_scopes_param_name or dependant.own_oauth_scopes:
        raise HotRouteError(f"{where} declares security, which the fast path cannot check")
    return_type = get_type_hints(endpoint).get("return")
    if not (inspect.isclass(return_type) and issubclass(return_type, Response)):
        raise HotRouteError(
            f"{where} must return a Response: the fast path does not apply response_model or "
            "status_code"
        )

    hints = get_type_hints(endpoint, include_extras=True)
    dependency_names = {dep.name for dep in dependant.dependencies if dep.name}
    fillers = [
        (name, _filler(name, hints.get(name), parameter.default, where))
        for name, parameter in inspect.signature(endpoint).parameters.items()
        if name not in dependency_names
    ]
    dependencies = [(dep.name, _dependency(dep.call, dep, where)) for dep in dependant.dependencies]
    return fillers, dependencies


def _dependency(call: Any, dep: Any, where: str) -> Dependency:
    name = getattr(call, "__name__", repr(call))
    if isinstance(call, SecurityBase):
        raise HotRouteError(f"{where} depends on security ({name}), which the fast path skips")
    own_parameters = (
        dep.path_params, dep.query_params, dep.header_params, dep.cookie_params, dep.body_params,
        dep.dependencies,
    )  # fmt: skip
    if (
        not inspect.iscoroutinefunction(call)
        or any(own_parameters)
        or dep.security_scopes_param_name
        or dep.background_tasks_param_name
        or dep.response_param_name
        or list(inspect.signature(call).parameters) not in ([], [dep.request_param_name])
    ):
        raise HotRouteError(
            f"{where} depends on {name}, which the fast path cannot call: a hot route's "
            "dependencies must be `async def` functions of the Request alone"
        )
    if dep.request_param_name is None:
        return lambda request: call()
    return call  # type: ignore[no-any-return]


def _filler(name: str, annotation: Any, default: Any, where: str) -> Filler:
    if annotation is Request:
        return lambda request: request
    metadata = getattr(annotation, "__metadata__", ())
    if any(isinstance(item, Path) for item in metadata):
        path_adapter: TypeAdapter[Any] = TypeAdapter(annotation)

        def path_value(request: Request) -> Any:
            return _validated(path_adapter, request.path_params[name], ("path", name))

        return path_value
    queries = [item for item in metadata if isinstance(item, Query)]
    if queries:
        query_name = queries[0].alias or name
        query_adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        if default is inspect.Parameter.empty:
            raise HotRouteError(f"{where}: query parameter {name!r} needs a default")

        def query_value(request: Request) -> Any:
            query = request.query_params
            value = query.get(query_name)
            if value is None:
                return default
            given_once(query, query_name)
            return _validated(query_adapter, value, ("query", query_name))

        return query_value
    headers = [item for item in metadata if isinstance(item, Header)]
    if headers and headers[0].convert_underscores and headers[0].alias is None:
        header = name.replace("_", "-")
        return lambda request: request.headers.get(header)
    raise HotRouteError(f"{where} has parameter {name!r}, which the fast path cannot fill")


def _validated(adapter: TypeAdapter[Any], value: Any, where: tuple[str, str]) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        detail, errors = validation_problem_detail(list(exc.errors()), prefix=where)
        raise Unprocessable(detail, extra={"errors": errors}) from None


ExceptionHandlers = dict[Any, Callable[[Request, Any], Response | Awaitable[Response]]]


class HotEndpoints:
    """The innermost app of the hot stack: calls the matched route, and sends an exception it
    raises to the app's own exception handlers (the same problem documents)."""

    def __init__(self, handlers: ExceptionHandlers) -> None:
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await scope["fast_route"](request)
        except ClientDisconnect:
            return  # gone before its request was read: nobody to answer
        except Exception as exc:
            handler = handler_for(self.handlers, exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


class Dispatch:
    """The outermost app: a request for a hot route goes through the hot stack, anything else
    (including a hot path with another method, answered 405 by the router) through FastAPI's."""

    def __init__(
        self,
        routes: tuple[FastRoute, ...],
        hot_stack: ASGIApp,
        framework_stack: ASGIApp,
        raw: RawServer | None = None,
    ) -> None:
        self.routes = routes
        self.hot_stack = hot_stack
        self.framework_stack = framework_stack
        self.raw = raw  # the same routes, for the HTTP server to serve below ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                if route.matches(scope) is Match.FULL:
                    scope["fast_route"] = route
                    await self.hot_stack(scope, receive, send)
                    return
        await self.framework_stack(scope, receive, send)


class HeadAsGet:
    """The router's first layer: a HEAD request is routed and answered as a GET, which FastAPI's
    routes would refuse (405) for not declaring HEAD. Below the app's middleware and exception
    handlers, so logs, metrics and a 405's detail name the method as sent; the server, which
    knows the request is a HEAD, sends no content."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send)
        finally:
            del as_get["method"]
            scope.update(as_get)  # the matched route, which the access log and metrics name


FASTAPI_422 = {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}


def document_problems(document: dict[str, Any]) -> None:
    """Every error as the problem the app sends. FastAPI documents a 422 of its own
    (`HTTPValidationError`) on a route with parameters that lists none, but the app answers
    every invalid request with a problem (core/errors.py `_validation_error`)."""
    schemas = document["components"]["schemas"]
    schemas.update(problem_schemas())
    for operations in document["paths"].values():
        for operation in operations.values():
            validation = operation.get("responses", {}).get("422", {})
            if validation.get("content", {}).get("application/json") == FASTAPI_422:
                operation["responses"]["422"] = problem_response_doc(422)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


class ConsentAPI(FastAPI):
    """FastAPI with the fast dispatch for `@hot` routes (see the module docstring)."""

    # The collaborators the lifespan makes, set and read only by `service/state.py`. A plain
    # attribute: a read of Starlette's State object costs 0.3 µs, and a hot request reads it once
    # per dependency.
    services: Any = None

    def build_middleware_stack(self) -> ASGIApp:
        routes = tuple(
            FastRoute(route) for route in iter_route_contexts(self.routes) if is_hot(route)
        )
        stack: ASGIApp = HotEndpoints(self.exception_handlers)
        layers: list[Any] = []
        for cls, args, kwargs in reversed(self.user_middleware):
            stack = cls(stack, *args, **kwargs)
            layers.append(stack)
        if not isinstance(self.router.middleware_stack, HeadAsGet):
            self.router.middleware_stack = HeadAsGet(self.router.middleware_stack)
        return Dispatch(
            routes, stack, super().build_middleware_stack(), raw_server_for(self, routes, layers)
        )

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, plus the bodies that endpoints read by hand, with every error
        documented as the problem the app sends."""
        if self.openapi_schema is not None:
            return self.openapi_schema
        document = super().openapi()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        document_problems(document)
        for route in iter_route_contexts(self.routes):
            body: HandReadBody | None = getattr(route.endpoint, "__body__", None)
            if body is None or route.path_format is None:
                continue
            name = body.model.__name__
            model_schema = body.model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(model_schema.pop("$defs", {}))
            schemas[name] = model_schema
            reference = {"schema": {"$ref": f"#/components/schemas/{name}"}}
            for method in sorted(route.methods or ()):
                request_body: dict[str, Any] = {"required": True}
                if body.description:
                    request_body["description"] = body.description
                request_body["content"] = dict.fromkeys(body.media_types, reference)
                document["paths"][route.path_format][method.lower()]["requestBody"] = request_body
        return document

    def fast_routes(self) -> tuple[FastRoute, ...]:
        """The routes the fast dispatch serves (built with the stack)."""
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        assert isinstance(self.middleware_stack, Dispatch)
        return self.middleware_stack.routes
