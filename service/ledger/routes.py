"""`/.well-known/jwks.json`: the public keys that verify consent receipts (docs/evidence.md)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.core.pipeline import hot
from service.state import Writer

router = APIRouter(tags=["evidence"])


@router.get(
    "/.well-known/jwks.json",
    summary="The public keys of consent receipts (JWK Set, RFC 7517)",
    response_class=Response,
    responses={
        200: {
            "content": {"application/jwk-set+json": {}},
            "description": "The current key first, then the retired ones still trusted.",
        }
    },
)
@hot
async def jwks(writer: Writer) -> Response:
    signer = writer.receipts
    body = signer.jwks_body if signer is not None else b'{"keys":[]}'
    return Response(
        body,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
