"""bench/stages.py: each py-spy sample lands in the stage of its innermost named frame."""

from __future__ import annotations

from bench.stages import EVENT_LOOP, shares, stage_of

ROOT = (
    "serve (service/cli.py:88);Server.run (uvicorn/server.py:86);"
    "asyncio_run (uvicorn/_compat.py:30);Runner.run (asyncio/runners.py:118)"
)
ENDPOINT = (
    ROOT + ";Dispatch.__call__ (service/core/pipeline.py:278)"
    ";ObserveMiddleware.__call__ (service/core/observe.py:181)"
    ";record_consent_event (service/banner/routes.py:107)"
)


def test_the_innermost_named_frame_decides() -> None:
    hashed = (
        ENDPOINT + ";new_event (service/banner/service.py:110)"
        ";attach_leaf (service/ledger/leaf.py:73)"
    )
    assert stage_of(hashed.split(";")) == "hashing"
    row = ENDPOINT + ";new_event (service/banner/service.py:95)"
    assert stage_of(row.split(";")) == "new event (row assembly)"
    written = (
        ENDPOINT + ";send_with_id (service/core/observe.py:178)"
        ";OneWrite.write (service/core/http_server.py:79)"
    )
    assert stage_of(written.split(";")) == "response write (send system call)"
    # A hot route served below ASGI writes its answer itself (core/raw_path.py).
    raw = ROOT + ";RawServer.serve (/srv/service/core/raw_path.py:96)"
    assert stage_of(f"{raw};_write (/srv/service/core/raw_path.py:151)".split(";")) == (
        "response write (send system call)"
    )
    assert stage_of(raw.split(";")) == "routing, middleware, endpoint"
    assert stage_of(ENDPOINT.split(";")) == "routing, middleware, endpoint"
    # The page URL is the body's: split by hand, or by urlsplit for the uncommon URL.
    page = ENDPOINT + ";ConsentEventIn._origin_and_path (service/banner/bodies.py:83)"
    by_hand = page + ";origin_and_path (service/banner/page_url.py:45)"
    split = by_hand + ";urlsplit (urllib/parse.py:500)"
    for frames in (by_hand, split):
        assert stage_of(frames.split(";")) == "body parse and validation"


def test_the_server_boot_frames_do_not_make_the_loop_http() -> None:
    # uvicorn's Server.run is at the root of every stack: the loop's own samples stay the loop's.
    assert stage_of(ROOT.split(";")) == EVENT_LOOP
    parsed = (
        ROOT + ";HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:174)"
    )
    assert stage_of(parsed.split(";")) == "HTTP server (uvicorn, httptools)"


def test_shares_add_up_to_the_whole() -> None:
    lines = [
        ENDPOINT + ";BaseModel.model_validate (pydantic/main.py:792) 30\n",
        ROOT + ";EventWriter._flush (service/ledger/writer.py:186)"
        ";ReceiptSigner.sign (service/ledger/receipts.py:118) 10\n",
        ROOT + " 60\n",
        # uvicorn's supervisor-pipe thread in a worker of several: waiting, not working.
        "Thread._bootstrap (threading.py:1002);Connection._recv"
        " (multiprocessing/connection.py:395) 500\n",
        "\n",
    ]
    found, total = shares(lines)
    assert total == 100
    assert found == {
        EVENT_LOOP: 0.6,
        "body parse and validation": 0.3,
        "receipt signing (per batch)": 0.1,
    }
