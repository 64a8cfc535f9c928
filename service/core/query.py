"""What a query string may say: a scalar parameter given once, and, on an admin route, only the
parameters the route declares (README, "API at a glance")."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams

from service.core.errors import Unprocessable, json_pointer


def many_valued(annotation: Any) -> bool:
    """list[str], set[int] | None, …: a query parameter that may repeat."""
    if get_origin(annotation) is Annotated:
        return many_valued(get_args(annotation)[0])
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(many_valued(arg) for arg in get_args(annotation))
    return origin in (list, set, frozenset, tuple) or annotation in (list, set, frozenset, tuple)


def given_once(query: QueryParams, name: str) -> None:
    """A 422 naming the scalar query parameter `name` when the query string gives it more than
    once (`?gpc=false&gpc=true`: which one does the client mean?). Called only when it is there."""
    given = len(query.getlist(name))
    if given > 1:
        detail = f"must be given once, not {given} times"
        raise Unprocessable(
            f"/query/{name}: {detail}",
            extra={"errors": [{"pointer": f"/query/{name}", "detail": detail}]},
        )


class SingleQueryParams(QueryParams):
    """A query string whose scalar read (`get`, `[]`: how FastAPI reads a parameter that is not a
    list) of a parameter given more than once is a 422, not the last value. FastAPI reads them
    after the route's dependencies, so an admin route still checks the key first."""

    def __getitem__(self, key: str) -> str:
        value = super().__getitem__(key)
        given_once(self, key)
        return value


def refuse_undeclared_query(request: Request) -> None:
    """A 422 naming each query parameter the request's route does not declare. Called by every
    admin route's key check once the key is accepted (auth/dependencies.py): a mistyped filter
    on the privacy team's API (`/v1/dsr/audit?action=erasure`) is an error, not an answer that
    looks filtered and is not. (The banner's public GETs do not refuse one: a page or a cache may
    add a parameter of its own, `?_=1700000000`.)"""
    route = request.scope.get("route")
    if not request.scope["query_string"] or not isinstance(route, APIRoute):
        return
    known = _declared(route)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        detail = f"not a query parameter of this endpoint ({takes})"
        invalid = [{"pointer": json_pointer(("query", name)), "detail": detail} for name in unknown]
        raise Unprocessable(
            "; ".join(f"{item['pointer']}: {detail}" for item in invalid),
            extra={"errors": invalid},
        )


def _declared(route: APIRoute) -> frozenset[str]:
    """The names (aliases) of the query parameters `route` and its dependencies declare, found
    once per route (kept on it: a route is not hashable)."""
    known: frozenset[str] | None = getattr(route, "_declared_query", None)
    if known is None:
        names: set[str] = set()
        dependants = [route.dependant]
        while dependants:
            dependant = dependants.pop()
            names.update(param.alias for param in dependant.query_params)
            dependants.extend(dependant.dependencies)
        known = frozenset(names)
        setattr(route, "_declared_query", known)  # noqa: B010 (not an attribute of APIRoute)
    return known
