"""Where a worker's CPU goes per consent event, by stage, from py-spy's samples of a loaded worker.

    uv run python bench/stages.py SERVER_US /tmp/consent-bench-logs-*/service-1w-*.profile.txt

`bench/run.py --profile` runs the ingest load once more after each measured run, sampling every
worker with py-spy, then prints this table with the worker CPU µs per event it measured for that
sampled run (SERVER_US here).
Each sample is put in the stage of its innermost frame that a rule below names (a hash computed
inside validation is hashing; the socket write inside the access-log middleware's `send` is the
response write), so the stages add up to the whole. A stage's µs per event is its share of the
samples times the measured CPU per event: the profile says where, the CPU clock says how much.
That holds while a worker has a core to itself (one worker on this 2-core machine): py-spy counts
a thread that waits for a core as busy where it was stopped, so with every core taken (two
workers, PostgreSQL and wrk on two cores) the frames after a system call that wakes another
process (the batch sent to PostgreSQL, the response written to wrk) collect the waiting too.
Samples taken in the event loop itself (uvloop, in C: the callbacks' dispatch, the socket reads)
have no Python frame of their own and count as "event loop".
"""

from __future__ import annotations

import collections
import re
import sys
from collections.abc import Iterable

# (stage, pattern on one frame, "function (file:line)"): the first rule that matches a frame
# names its stage; frames are tried from the innermost out.
RULES: tuple[tuple[str, str], ...] = (
    ("logging and metrics", r"service/core/logging\.py|structlog/|prometheus_client/"),
    ("logging and metrics", r"^(RequestMetrics|AccessLog)\."),
    (
        "response write (send system call)",
        r"^OneWrite\.write |^_write \([^)]*service/core/raw_path\.py",
    ),
    ("receipt signing (per batch)", r"service/ledger/(receipts|merkle)\.py|cryptography/"),
    ("group commit: batch JSON", r"^(batch_json|_bytea) "),
    ("group commit: database driver", r"asyncpg/"),
    (
        "group commit: writer",
        r"^(EventWriter\._(run|flush|insert|connected|sign)|_first_of_each_id|"
        r"_settle|_row_error)",
    ),
    ("queueing (writer hand-off)", r"^EventWriter\.write |asyncio/locks\.py"),
    (
        "hashing",
        r"service/core/hashing\.py|service/ledger/leaf\.py|hmac\.py|hashlib|"
        r"\.request_hash ",
    ),
    (
        "choices and signals",
        r"^(resolve_choices|apply_signals|signals_present|among|"
        r"_check_signal_decision|_required_only) ",
    ),
    (
        "body parse and validation",
        r"service/core/json_input\.py|pydantic|service/banner/(bodies|page_url)\.py|"
        r"service/consent_schema/bodies\.py|urllib/parse\.py",
    ),
    (
        "serialisation (record, answer)",
        r"service/ledger/event\.py|starlette/responses\.py|"
        r"^Proof\.body ",
    ),
    ("client address and origin", r"service/core/(client_address|cors)\.py"),
    ("schema version look-up", r"^(version_shown|SchemaCatalog\.)"),
    ("new event (row assembly)", r"^new_event "),
    ("HTTP server (uvicorn, httptools)", r"uvicorn/protocols/|httptools|service/core/http_server"),
    (
        "routing, middleware, endpoint",
        r"service/core/(pipeline|observe|raw_path)\.py|starlette/|fastapi/|"
        r"service/state\.py|service/banner/routes\.py",
    ),
)
EVENT_LOOP = "event loop"
OTHER_THREAD = "Thread._bootstrap "
OTHER = "other"
_COMPILED = tuple((stage, re.compile(pattern)) for stage, pattern in RULES)


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, pattern in _COMPILED:
            if pattern.search(frame):
                return stage
    innermost = frames[-1] if frames else ""
    return EVENT_LOOP if innermost.startswith("Runner.run ") or not innermost else OTHER


def shares(lines: Iterable[str]) -> tuple[dict[str, float], int]:
    """Each stage's share of py-spy's raw (collapsed) samples of the event loop's thread, and the
    number of those samples. Other threads are left out: with several workers, uvicorn gives each
    a thread that waits on its supervisor's pipe, which py-spy counts as busy."""
    counts: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if count.isdigit() and not stack.startswith(OTHER_THREAD):
            counts[stage_of(stack.split(";") if stack else [])] += int(count)
    total = sum(counts.values())
    return {stage: n / total for stage, n in counts.most_common()} if total else {}, total


def breakdown(paths: Iterable[str], server_us: float) -> list[tuple[str, float, float]]:
    """(stage, share, µs per event) for the profiles at `paths`, largest first."""
    lines: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as profile:
            lines.extend(profile)
    found, _ = shares(lines)
    return [(stage, share, share * server_us) for stage, share in found.items()]


def print_breakdown(rows: list[tuple[str, float, float]], indent: str = "  ") -> None:
    for stage, share, micros in rows:
        print(f"{indent}{stage:38} {micros:7.1f} µs  {share * 100:5.1f} %")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    print_breakdown(breakdown(argv[1:], float(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
