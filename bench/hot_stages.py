"""The event's own work, stage by stage, timed in one process: what a consent event costs a worker
beyond what any FastAPI request costs (HTTP, routing, the response), without a server or a
database.

    uv run python bench/hot_stages.py

`bench/run.py --profile` splits a worker's CPU by stage from py-spy's samples, scaled by the
CPU clock; py-spy counts a worker waiting for a core as busy where it stopped, so a stage that
ends in a system call reads high there (docs/architecture.md, "Where a worker's CPU goes"). Here
each stage of the hot path runs on its own, in a loop, over bodies like bench/ingest.lua's, with
the service's own functions and a published version of examples/schemas/itsailor.yaml: the best
of `--rounds` rounds, in µs per event. Per-batch stages (the batch's JSON, the receipt) are
divided by `--batch` events.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record_cost import AGENT, _body  # noqa: E402
from bench.run import KEY  # noqa: E402
from service.banner.bodies import ConsentEventIn  # noqa: E402
from service.banner.service import new_event, resolve_choices  # noqa: E402
from service.consent_schema.document import (  # noqa: E402
    content_hash,
    document_content,
    load_document_file,
)
from service.consent_schema.service import PublishedVersion  # noqa: E402
from service.core.client_address import parse_ip  # noqa: E402
from service.core.hashing import Hasher  # noqa: E402
from service.core.json_input import parse_body  # noqa: E402
from service.ledger.event import NewEvent, record  # noqa: E402
from service.ledger.leaf import attach_leaf  # noqa: E402
from service.ledger.receipts import ReceiptSigner  # noqa: E402
from service.ledger.writer import batch_json  # noqa: E402

EVENTS = 2000


def _version() -> PublishedVersion:
    content = document_content(load_document_file(ROOT / "examples" / "schemas" / "itsailor.yaml"))
    now = datetime.now(UTC)
    row = SimpleNamespace(
        property="itsailor", version=1, material=True, last_material_version=1,
        content_sha256=content_hash(content), published_at=now, effective_at=now, content=content,
    )  # fmt: skip
    return PublishedVersion.from_row(row)


def best(stage: Callable[[int], object], calls: int, rounds: int) -> float:
    """The fastest round's µs per call."""
    fastest = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for number in range(calls):
            stage(number)
        fastest = min(fastest, time.perf_counter() - started)
    return fastest / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=30, help="events a batch (default 30)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    random.seed(1)
    version = _version()
    hasher = Hasher.from_secrets(SecretStr(KEY), [])
    signer = ReceiptSigner(Ed25519PrivateKey.generate(), [])
    bodies = [_body(number) for number in range(EVENTS)]
    events = [parse_body(ConsentEventIn, body) for body in bodies]
    addresses = [f"203.0.{n % 256}.{n % 254 + 1}" for n in range(EVENTS)]
    headers = {b"user-agent": AGENT, b"content-type": b"application/json"}
    now = datetime.now(UTC)

    def make(number: int) -> NewEvent:
        return new_event(
            events[number], property_name="itsailor", version=version, headers=headers,
            address=addresses[number], hasher=hasher, now=now,
        )  # fmt: skip

    made = [make(number) for number in range(EVENTS)]
    for stored in made:  # as the writer makes them unique
        stored.event_id = uuid.uuid4()
    batches = [made[at : at + args.batch] for at in range(0, EVENTS - args.batch + 1, args.batch)]
    per_batch = len(batches)
    users = [f"acct-{number}" for number in range(EVENTS)]
    stages: list[tuple[str, Callable[[int], object], int, int]] = [
        ("body: JSON and validation (parse_body)", lambda n: parse_body(ConsentEventIn, bodies[n]),
         EVENTS, 1),
        ("client address (parse_ip)", lambda n: parse_ip(addresses[n]), EVENTS, 1),
        ("new_event, all of it", make, EVENTS, 1),
        ("  of which: choices (resolve_choices)",
         lambda n: resolve_choices(events[n], required=version.required,
                                   optional=version.optional), EVENTS, 1),
        ("  of which: the IP's keyed hash", lambda n: hasher.ip_normalised(addresses[n]),
         EVENTS, 1),
        ("  of which: an account id's keyed hash (1 in 5)", lambda n: hasher.user(users[n]),
         EVENTS, 5),
        ("  of which: the request hash", lambda n: events[n].request_hash("itsailor",
                                                                          hasher.current),
         EVENTS, 1),
        ("  of which: salt, identity and leaf (attach_leaf)",
         lambda n: attach_leaf(made[n], version.content_hash), EVENTS, 1),
        ("the answer (record, orjson)",
         lambda n: orjson.dumps(record(made[n], optional=version.optional,
                                       ttl_days=version.ttl_days), option=orjson.OPT_UTC_Z),
         EVENTS, 1),
        ("the batch's JSON, per event", lambda n: batch_json(batches[n]), per_batch, args.batch),
        ("the receipt (tree, signature, proofs), per event",
         lambda n: signer.sign_batch([e.leaf for e in batches[n]], [e.salt for e in batches[n]]),
         per_batch, args.batch),
    ]  # fmt: skip
    print(f"µs per event, best of {args.rounds} rounds; batches of {args.batch}")
    total = 0.0
    for name, stage, calls, share in stages:
        spent = best(stage, calls, args.rounds) / share
        if not name.startswith("  "):
            total += spent
        print(f"  {name:<52} {spent:6.2f}")
    label = "the event's own work, in all"
    print(f"  {label:<52} {total:6.2f}")


if __name__ == "__main__":
    main()
