"""A JSON export proves on its own that its events are in the ledger (docs/evidence.md,
"Exports"): each sealed event's path leads from its leaf to the root of a seal the export lists,
each listed seal's hash matches its fields, and the export's closing signature covers every byte
before it."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest
from jwcrypto import jwk, jws  # type: ignore[import-untyped]

from service.core.pipeline import ConsentAPI
from service.ledger import merkle
from service.ledger.sealer import seal_hash
from tests.factories import api_key, bearer, event, example, published
from tests.ledger.test_ledger import seal_now

EVENTS = "/v1/properties/itsailor/consent-events"


def strict_json(raw: bytes) -> Any:
    """The export as a verifier must read it: a duplicate key anywhere is an error (json.loads
    would keep the last one)."""

    def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key in {keys}")
        return dict(pairs)

    return json.loads(raw, object_pairs_hook=refuse_duplicates)


async def test_an_export_carries_inclusion_proofs_and_is_signed(
    app: ConsentAPI, client: httpx.AsyncClient, db_url: str
) -> None:
    from datetime import datetime

    await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    subject = uuid.uuid4()
    answered: dict[str, dict[str, Any]] = {}
    for _ in range(3):
        sent = await client.post(EVENTS, json=event("accept-all", subject_id=subject))
        answered[sent.json()["event_id"]] = sent.json()
        await client.post(EVENTS, json=event("reject-all", subject_id=uuid.uuid4()))
        await seal_now(app)
    sent = await client.post(EVENTS, json=event("withdraw", subject_id=subject))  # not sealed yet
    answered[sent.json()["event_id"]] = sent.json()

    response = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(subject)}, headers=reader
    )
    assert response.status_code == 200
    raw = response.content
    document: dict[str, Any] = strict_json(raw)
    seals = {seal["id"]: seal for seal in document["ledger_seals"]}
    assert len(seals) == 3
    for seal in seals.values():
        expected = seal_hash(
            bytes.fromhex(seal["prev_hash"]),
            bytes.fromhex(seal["root"]),
            seal["id"],
            seal["first_seq"],
            seal["last_seq"],
            seal["tree_size"],
            datetime.fromisoformat(seal["sealed_at"]),
        )
        assert expected.hex() == seal["seal_hash"]
    sealed = [item for item in document["events"] if item["ledger"]["seal"] is not None]
    assert [item["event_type"] for item in sealed] == ["accept-all"] * 3
    # The withdrawal, not sealed yet: its place in a seal is null, its leaf and identity are
    # there, so its receipt still proves it (below).
    unsealed = document["events"][-1]["ledger"]
    assert {
        key: unsealed[key] for key in ("seal", "leaf_index", "tree_size", "path")
    } == dict.fromkeys(("seal", "leaf_index", "tree_size", "path"))
    for item in document["events"]:
        proof = item["ledger"]
        # The leaf, recomputed from the exported record alone (docs/evidence.md, "Exports").
        canonical = {
            **{key: item[key] for key in ("event_id", "property", "event_type", "schema_version")},
            **{key: item[key] for key in ("choices", "effective", "source", "entered_by")},
            "recorded_at": item["recorded_at"],
            "gpc": item["signals"]["gpc"],
            "dnt": item["signals"]["dnt"],
            "signals_applied": item["signals"]["applied"],
            "content_hash": item["schema_content_hash"],
            "identity": proof["identity"],
            "v": 2,
        }
        data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(b"\x00" + data.encode()).hexdigest() == proof["leaf"]
        if proof["seal"] is None:
            continue
        seal = seals[proof["seal"]]
        assert proof["tree_size"] == seal["tree_size"]
        path = [bytes.fromhex(node) for node in proof["path"]]
        assert merkle.verify(
            bytes.fromhex(proof["leaf"]),
            proof["leaf_index"],
            proof["tree_size"],
            path,
            bytes.fromhex(seal["root"]),
        )

    # Every event carries the receipt its 201 carried, with the same path to the signed root;
    # the exported leaf (recomputed above) walks that path to the root the receipt signs.
    for item in document["events"]:
        given = answered[item["event_id"]]
        assert item["receipt"]["jws"] == given["receipt"]
        assert {key: item["receipt"][key] for key in ("leaf_index", "tree_size", "path")} == {
            key: given["receipt_proof"][key] for key in ("leaf_index", "tree_size", "path")
        }
        claims = json.loads(base64.urlsafe_b64decode(item["receipt"]["jws"].split(".")[1] + "=="))
        assert merkle.verify(
            bytes.fromhex(item["ledger"]["leaf"]),
            item["receipt"]["leaf_index"],
            item["receipt"]["tree_size"],
            [bytes.fromhex(node) for node in item["receipt"]["path"]],
            bytes.fromhex(claims["root"]),
        )

    # The signature: a JWS whose payload names the SHA-256 of every byte before it.
    jwks = (await client.get("/.well-known/jwks.json")).json()
    token = jws.JWS()
    token.deserialize(document["signature"])
    token.verify(jwk.JWKSet.from_json(json.dumps(jwks)).get_key(token.jose_header["kid"]))
    assert token.jose_header["typ"] == "consent-export+jws"
    claims = json.loads(token.payload)
    assert claims["export_id"] == document["export_id"]
    # Nothing after the signature: the bytes it does not cover are exactly its own.
    tail = b',\n"signature": "' + document["signature"].encode() + b'"}\n'
    assert raw[claims["bytes"] :] == tail
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json(raw[: -len(b"}\n")] + b', "events": []}\n')  # what a forger would append
    assert hashlib.sha256(raw[: claims["bytes"]]).hexdigest() == claims["sha256"]
    tampered = raw.replace(b'"accept-all"', b'"reject-all"', 1)
    assert hashlib.sha256(tampered[: claims["bytes"]]).hexdigest() != claims["sha256"]
