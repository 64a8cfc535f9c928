"""Signed receipts (docs/evidence.md, "Receipts"): a live 201's receipt verifies against the JWK
Set with two independent implementations (jwcrypto, and Node.js's own crypto), its path leads from
its leaf to the signed root, its leaf is the event's, and a changed receipt fails."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from jwcrypto import jwk, jws  # type: ignore[import-untyped]
from pydantic import SecretStr

from service.app import create_app
from service.core.pipeline import ConsentAPI
from service.ledger import merkle
from service.ledger.receipts import parse_seed, public_jwk
from service.state import of as services
from tests.conftest import TEST_RECEIPT_KEY, make_settings
from tests.factories import event, example, published
from tests.ledger.test_ledger import documented_leaf

EVENTS = "/v1/properties/itsailor/consent-events"

NODE_VERIFY = """
const crypto = require('crypto');
const jwks = JSON.parse(process.argv[1]);
const [h, p, s] = process.argv[2].split('.');
const header = JSON.parse(Buffer.from(h, 'base64url').toString());
const found = jwks.keys.find((key) => key.kid === header.kid);
const key = crypto.createPublicKey({key: {kty: found.kty, crv: found.crv, x: found.x}, format: 'jwk'});
const ok = header.alg === 'EdDSA'
  && crypto.verify(null, Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'));
console.log(ok ? 'valid' : 'invalid');
"""


def with_jwcrypto(jwks: dict[str, Any], receipt: str) -> dict[str, Any]:
    """The payload, if the receipt verifies with the key its header names (raises otherwise)."""
    token = jws.JWS()
    token.deserialize(receipt)
    key = jwk.JWKSet.from_json(json.dumps(jwks)).get_key(token.jose_header["kid"])
    token.verify(key)
    assert token.jose_header["typ"] == "consent-receipt+jws"
    return dict(json.loads(token.payload))


def with_node(jwks: dict[str, Any], receipt: str) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js absent: the second-language check needs it")
    result = subprocess.run(
        [node, "-e", NODE_VERIFY, json.dumps(jwks), receipt],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def changed(receipt: str) -> str:
    """The same receipt claiming another root."""
    header, payload, signature = receipt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["root"] = "00" * 32
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def path_leads_to_root(proof: dict[str, Any], root_hex: str) -> bool:
    return merkle.verify(
        bytes.fromhex(proof["leaf"]),
        proof["leaf_index"],
        proof["tree_size"],
        [bytes.fromhex(node) for node in proof["path"]],
        bytes.fromhex(root_hex),
    )


async def test_a_live_receipt_verifies_two_ways_and_its_path_leads_to_the_signed_root(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert [key["kid"] for key in jwks["keys"]] == [
        public_jwk(parse_seed(TEST_RECEIPT_KEY).public_key())["kid"]
    ]
    # Sent together, so the writer commits (and signs) several in one batch.
    responses = await asyncio.gather(
        *(client.post(EVENTS, json=event("accept-all", subject_id=uuid.uuid4())) for _ in range(12))
    )
    sizes = set()
    for response in responses:
        assert response.status_code == 201, response.text
        body = response.json()
        payload = with_jwcrypto(jwks, body["receipt"])
        proof = body["receipt_proof"]
        assert payload["tree_size"] == proof["tree_size"]
        assert path_leads_to_root(proof, payload["root"])
        sizes.add(proof["tree_size"])
        row = await db.fetchrow(
            "SELECT e.*, v.content_sha256 FROM consent_events e JOIN consent_schema_versions v"
            " ON v.property = e.property AND v.version = e.schema_version WHERE event_id = $1",
            uuid.UUID(body["event_id"]),
        )
        assert row is not None
        assert proof["salt"] == bytes(row["salt"]).hex()
        assert proof["leaf"] == documented_leaf(row, row["content_sha256"]).hex()
    assert max(sizes) > 1  # at least one batch of several, one signature for all of them

    receipt = responses[0].json()["receipt"]
    assert with_node(jwks, receipt) == "valid"
    assert with_node(jwks, changed(receipt)) == "invalid"
    with pytest.raises(jws.InvalidJWSSignature):
        with_jwcrypto(jwks, changed(receipt))
    proof = responses[0].json()["receipt_proof"]
    other = {**proof, "leaf": responses[1].json()["receipt_proof"]["leaf"]}
    assert not path_leads_to_root(other, with_jwcrypto(jwks, receipt)["root"])


async def test_a_retry_gets_the_receipt_its_event_was_stored_with(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    sent = event("reject-all", subject_id=uuid.uuid4(), event_id=str(uuid.uuid4()))
    first = await client.post(EVENTS, json=sent)
    again = await client.post(EVENTS, json=sent)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["receipt"] == first.json()["receipt"]
    assert again.json()["receipt_proof"] == first.json()["receipt_proof"]
    # Kept in the same statement as the event: the stored leaves are the tree the JWS signs.
    stored = await db.fetchrow(
        "SELECT r.jws, r.leaves FROM consent_events e JOIN ledger_receipts r ON r.id = e.receipt"
        " WHERE e.event_id = $1",
        uuid.UUID(sent["event_id"]),
    )
    assert stored is not None
    assert stored["jws"] == first.json()["receipt"]
    leaves = bytes(stored["leaves"])
    jwks = (await client.get("/.well-known/jwks.json")).json()
    signed = with_jwcrypto(jwks, stored["jws"])
    tree = [leaves[at : at + 32] for at in range(0, len(leaves), 32)]
    assert signed["root"] == merkle.root(tree).hex()


async def test_a_retired_key_stays_in_the_key_set(db_url: str, tmp_path: Path) -> None:
    retired = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
    settings = make_settings(db_url, tmp_path, receipt_previous_keys=[SecretStr(retired)])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answer = await http.get("/.well-known/jwks.json")
    assert answer.headers["content-type"] == "application/jwk-set+json"
    kids = [key["kid"] for key in answer.json()["keys"]]
    assert kids == [
        public_jwk(parse_seed(TEST_RECEIPT_KEY).public_key())["kid"],
        public_jwk(parse_seed(retired).public_key())["kid"],
    ]


async def test_an_event_is_acknowledged_even_if_its_receipt_cannot_be_signed(
    app: ConsentAPI, client: httpx.AsyncClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing signer must not fail (or hang) the requests waiting for their rows: the events
    are stored without a receipt, and a retry then gets a receipt of its own leaf."""
    await published(db_url, example("itsailor"))
    signer = services(app).writer.receipts
    assert signer is not None

    def broken(*_: object) -> None:
        raise RuntimeError("no key")

    monkeypatch.setattr(signer, "sign_batch", broken)
    sent = event("accept-all", subject_id=uuid.uuid4(), event_id=str(uuid.uuid4()))
    response = await client.post(EVENTS, json=sent)
    assert response.status_code == 201
    assert (response.json()["receipt"], response.json()["receipt_proof"]) == (None, None)
    monkeypatch.undo()
    retry = await client.post(EVENTS, json=sent)
    assert retry.status_code == 200
    proof = retry.json()["receipt_proof"]
    assert (proof["tree_size"], proof["leaf_index"], proof["path"]) == (1, 0, [])
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert with_jwcrypto(jwks, retry.json()["receipt"])["root"] == proof["leaf"]
    again = await client.post(EVENTS, json=event("accept-all", subject_id=uuid.uuid4()))
    assert again.json()["receipt"] is not None  # the writer lives on
