"""One request pipeline: hot routes pass the app's own middleware, honour what they declare, and a
hot route declaring what the fast path cannot honour fails when the app is built."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import Forbidden, install_error_handlers
from service.core.json_input import URL_INT_FORM, StrictJSONRoute, UrlBool, UrlInt
from service.core.observe import ObserveMiddleware
from service.core.pipeline import ConsentAPI, Dispatch, HotRouteError, hot
from tests.factories import api_key, bearer


async def deny(request: Request) -> None:
    raise Forbidden("denied by a dependency")


async def greeting(request: Request) -> str:
    return "hello"


class Stamp:
    """A middleware added the ordinary way: every response gets its header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


def build(router: APIRouter) -> ConsentAPI:
    app = ConsentAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(Stamp)
    app.add_middleware(ObserveMiddleware)
    app.middleware_stack = app.build_middleware_stack()
    return app


async def call(app: ConsentAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


async def test_a_hot_route_honours_a_denying_dependency() -> None:
    """The trap: `dependencies=[Depends(deny)]` on a hot route used to be skipped (200)."""
    router = APIRouter()

    @router.get("/guarded/{name}", dependencies=[Depends(deny)])
    @hot
    async def guarded(name: Annotated[str, Path()]) -> Response:
        return Response(name)

    app = build(router)
    assert [route.path for route in app.fast_routes()] == ["/guarded/{name}"]
    response = await call(app, "/guarded/x")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "denied by a dependency"


async def test_hot_routes_pass_every_declared_middleware_and_get_their_dependencies() -> None:
    router = APIRouter(prefix="/r")

    @router.get("/hot/{n}")
    @hot
    async def fast(
        n: Annotated[int, Path(ge=1)],
        word: Annotated[str, Depends(greeting)],
        x_thing: Annotated[str | None, Header()] = None,
    ) -> Response:
        return Response(f"{word} {n} {x_thing}")

    @router.get("/cold")
    async def cold() -> dict[str, str]:
        return {"ok": "yes"}

    app = build(router)  # a router no list names: found by scanning the app's routes
    assert [route.path for route in app.fast_routes()] == ["/r/hot/{n}"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        hot_answer = await client.get("/r/hot/3", headers={"X-Thing": "t"})
        cold_answer = await client.get("/r/cold")
        invalid = await client.get("/r/hot/0")
        wrong_method = await client.post("/r/hot/3")
    assert hot_answer.text == "hello 3 t"
    for response in (hot_answer, cold_answer, invalid, wrong_method):
        assert response.headers["x-stamp"] == "1"  # the one stack: Stamp ...
        assert response.headers["x-request-id"]  # ... and ObserveMiddleware
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["pointer"] == "/path/n"
    assert wrong_method.status_code == 405


async def test_a_hot_query_parameter_is_filled_and_checked_as_fastapi_would() -> None:
    def routes(hot_too: bool) -> APIRouter:
        router = APIRouter()

        async def flag(on: Annotated[bool, Query(alias="gpc")] = False) -> Response:
            return Response(f"gpc={on}")

        router.get("/flag")(hot(flag) if hot_too else flag)
        return router

    hot_app, cold_app = build(routes(True)), build(routes(False))
    assert [route.path for route in hot_app.fast_routes()] == ["/flag"]
    assert cold_app.fast_routes() == ()
    for query in ("", "?gpc=1", "?gpc=true", "?gpc=0", "?other=1"):
        hot_answer, cold_answer = (
            await call(hot_app, "/flag" + query),
            await call(cold_app, "/flag" + query),
        )
        assert (hot_answer.status_code, hot_answer.text) == (
            cold_answer.status_code,
            cold_answer.text,
        )
    invalid = await call(hot_app, "/flag?gpc=maybe")
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["pointer"] == "/query/gpc"
    assert invalid.json() | {"instance": None} == (
        await call(cold_app, "/flag?gpc=maybe")
    ).json() | {"instance": None}


async def _generator_dependency(request: Request) -> AsyncIterator[str]:
    yield "x"


async def _with_header(x_key: Annotated[str, Header()]) -> str:
    return x_key


def _sync_dependency(request: Request) -> str:
    return "x"


def _route_with(declaration: str) -> APIRouter:
    router = APIRouter()
    if declaration == "query":

        @router.get("/q")
        @hot
        async def query(q: Annotated[list[str], Query()]) -> Response:
            return Response(",".join(q))

    elif declaration == "generator dependency":

        @router.get("/g")
        @hot
        async def generator(value: Annotated[str, Depends(_generator_dependency)]) -> Response:
            return Response(value)

    elif declaration == "dependency with a parameter":

        @router.get("/h", dependencies=[Depends(_with_header)])
        @hot
        async def header() -> Response:
            return Response("x")

    elif declaration == "sync dependency":

        @router.get("/s")
        @hot
        async def sync(value: Annotated[str, Depends(_sync_dependency)]) -> Response:
            return Response(value)

    elif declaration == "response model":

        @router.get("/m")
        @hot  # type: ignore[arg-type]  # building refuses it too
        async def model() -> dict[str, str]:
            return {"a": "b"}

    return router


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ("query", "declares a list-valued query parameter"),
        ("generator dependency", "depends on _generator_dependency"),
        ("dependency with a parameter", "depends on _with_header"),
        ("sync dependency", "depends on _sync_dependency"),
        ("response model", "must return a Response"),
    ],
)
def test_a_hot_route_the_fast_path_cannot_honour_fails_at_startup(
    declaration: str, message: str
) -> None:
    with pytest.raises(HotRouteError, match=message):
        build(_route_with(declaration))


def test_the_service_serves_its_banner_endpoints_hot() -> None:
    from service.app import create_app
    from service.core.config import Settings

    app = create_app(Settings(_env_file=None, cors_origins=[]))
    assert isinstance(app, ConsentAPI)
    assert sorted(route.path for route in app.fast_routes()) == [
        "/.well-known/jwks.json",
        "/client/{version}/{name}",
        "/v1/properties/{property}/consent-events",
        "/v1/properties/{property}/consents/{subject_id}",
        "/v1/properties/{property}/schema",
        "/v1/properties/{property}/schema/versions/{version}",
    ]


def _queries(hot_too: bool) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    async def flag(
        on: Annotated[UrlBool, Query(alias="gpc")] = False,
        n: Annotated[UrlInt | None, Query()] = None,
    ) -> Response:
        return Response(f"gpc={on} n={n}")

    async def tags(tag: Annotated[list[str], Query()]) -> Response:
        return Response(",".join(tag))

    router.get("/flag")(hot(flag) if hot_too else flag)
    router.get("/tags")(tags)
    return router


@pytest.mark.parametrize("hot_too", [True, False], ids=["hot", "framework"])
async def test_a_scalar_query_parameter_has_one_spelling_and_is_given_once(hot_too: bool) -> None:
    """FastAPI takes the last of a repeated parameter and reads `1`, `yes`, `on` as true and
    `+1`, `01` as 1; here each is a 422 naming the parameter, on either stack."""
    app = build(_queries(hot_too))
    assert [route.path for route in app.fast_routes()] == (["/flag"] if hot_too else [])
    for query, text in (("", "gpc=False n=None"), ("?gpc=true&n=3", "gpc=True n=3")):
        answer = await call(app, "/flag" + query)
        assert (answer.status_code, answer.text) == (200, text)
    for query, pointer, detail in (
        ("?gpc=1", "/query/gpc", "Input should be true or false"),
        ("?gpc=yes", "/query/gpc", "Input should be true or false"),
        ("?gpc=false&gpc=true", "/query/gpc", "must be given once, not 2 times"),
        ("?n=01", "/query/n", f"Input should be {URL_INT_FORM}"),
        ("?n=%2B1", "/query/n", f"Input should be {URL_INT_FORM}"),
        ("?n=1&n=2", "/query/n", "must be given once, not 2 times"),
    ):
        refused = await call(app, "/flag" + query)
        assert refused.status_code == 422, query
        assert refused.json()["errors"] == [{"pointer": pointer, "detail": detail}]
    listed = await call(app, "/tags?tag=a&tag=b")  # a list-valued parameter repeats by design
    assert (listed.status_code, listed.text) == (200, "a,b")


async def test_an_admin_route_checks_the_key_before_a_repeated_query_parameter(
    client: httpx.AsyncClient, db_url: str
) -> None:
    query = "since=2026-01-01T00:00:00Z&since=2026-01-02T00:00:00Z&until=2026-02-01T00:00:00Z"
    assert (await client.get(f"/v1/properties/x/stats?{query}")).status_code == 401
    reader = bearer(await api_key(db_url, "stats:read"))
    refused = await client.get(f"/v1/properties/x/stats?{query}", headers=reader)
    assert refused.status_code == 422
    assert refused.json()["detail"] == "/query/since: must be given once, not 2 times"


def _methods() -> APIRouter:
    router = APIRouter(prefix="/m")

    @router.get("/hot/{n}")
    @hot
    async def fast(n: Annotated[int, Path()]) -> Response:
        return Response(f"hot {n}", media_type="text/plain", headers={"ETag": '"h"'})

    @router.get("/cold/{n}")
    async def cold(n: int) -> Response:
        return Response(f"cold {n}", media_type="text/plain", headers={"ETag": '"c"'})

    @router.post("/post")
    async def post() -> Response:
        return Response("posted")

    return router


async def test_a_get_route_answers_head_and_a_405_lists_it(
    captured_logs_factory: Callable[[], io.StringIO],
) -> None:
    """HEAD is GET without the content (RFC 9110, section 9.3.2); FastAPI's routes answered it
    405, which their `Allow` (GET alone) did not even offer."""
    app = build(_methods())
    logs = captured_logs_factory()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/m/hot/1", "/m/cold/1"):
            get, head = await client.get(path), await client.head(path)
            assert (head.status_code, head.content) == (200, b"")
            for header in ("content-length", "content-type", "etag"):
                assert head.headers[header] == get.headers[header]
            refused = await client.put(path)
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
            assert refused.json()["detail"] == "PUT is not allowed here; allowed: GET, HEAD"
        head_of_post = await client.head("/m/post")
        assert (head_of_post.status_code, head_of_post.headers["allow"]) == (405, "POST")
    access = [json.loads(line) for line in logs.getvalue().splitlines() if '"request"' in line]
    heads = [(line["method"], line["route"]) for line in access if line["method"] == "HEAD"]
    # Logged as sent, with the route matched.
    assert heads == [("HEAD", "/m/hot/{n}"), ("HEAD", "/m/cold/{n}"), ("HEAD", "/m/post")]


def test_the_server_serves_hot_routes_itself_only_with_the_middleware_it_reproduces() -> None:
    """core/raw_path.py does what ObserveMiddleware and the CORS middleware do, nothing else: any
    other middleware (here `Stamp`) keeps every request on the ASGI path, so it is never skipped."""
    router = APIRouter()

    @router.get("/flag")
    @hot
    async def flag() -> Response:
        return Response("on")

    stamped = build(router)
    plain = ConsentAPI()
    plain.include_router(router)
    plain.add_middleware(ObserveMiddleware)
    plain.middleware_stack = plain.build_middleware_stack()
    assert isinstance(stamped.middleware_stack, Dispatch)
    assert isinstance(plain.middleware_stack, Dispatch)
    assert stamped.middleware_stack.raw is None
    assert plain.middleware_stack.raw is not None
