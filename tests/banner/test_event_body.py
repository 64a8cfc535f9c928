"""The event body's own rules, without a server: what is kept of a page URL."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from pydantic import SecretStr

from service.banner.bodies import ConsentEventIn
from service.core.hashing import Hasher, HashKey
from tests.conftest import TEST_KEY


def page_url_kept(url: str) -> str | None:
    event = ConsentEventIn.model_validate(
        {"subject_id": str(uuid.uuid4()), "event_type": "accept-all", "schema_version": 1,
         "page_url": url}
    )  # fmt: skip
    return event.page_url


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://itsailor.io/pricing?utm=x&email=a@b.c#top", "https://itsailor.io/pricing"),
        ("https://user:secret@Shop.Example/cart", "https://shop.example/cart"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:8080/a/b;c", "http://example.com:8080/a/b"),
        ("https://x.io/account;email=bob@example.com/x", "https://x.io/account"),
        ("https://x.io/search%3Femail=bob%40example.com", "https://x.io/search"),
        ("https://x.io/page%3fq=1", "https://x.io/page"),
        ("https://x.io/p%23frag", "https://x.io/p"),
        ("http://[2001:db8::1]:8443/x?y=1", "http://[2001:db8::1]:8443/x"),
        ("https://[::1]/", "https://[::1]/"),
    ],
)
def test_page_url_keeps_origin_and_path_only(url: str, kept: str) -> None:
    assert page_url_kept(url) == kept


PINNED = {
    "event_id": "6f1c3a52-0d7e-4a8b-9a44-2b1f5c0e9d11",
    "subject_id": "0b7e8f4c-3f7d-4c1e-8a2b-9d6e5f4a3b21", "event_type": "save-selection",
    "schema_version": 3, "categories": {"marketing": False, "analytics": True},
    "user_id": "acct-ü", "page_url": "https://Shop.example/a?q=1", "gpc": True,
}  # fmt: skip
# The plain SHA-256 the service of 2026-11-29 (e6a3b19) stored for PINNED, before request hashes
# were keyed.
UNKEYED = "2cf8931993fe0d1500c473f02af22e0fc4e10b76db747fdae72c5ee988a0e4d8"


def test_the_request_hash_of_an_event_stays_what_it_was() -> None:
    """A retry is told from a new event by the stored request hash, so the hash of a body under
    a key never changes between releases (this value was computed on 2026-11-30), and a retry of
    an event stored before the hashes were keyed still finds its original: a retry sent across
    an upgrade or a key rotation is still a retry. The pinned value is BLAKE2b, keyed with
    HMAC-SHA256(secret, "consent-service/request"), of `property NUL body`, computed with hashlib
    and hmac directly."""
    event = ConsentEventIn.model_validate(PINNED)
    key, other = HashKey.from_secret(SecretStr(TEST_KEY)), HashKey.from_secret(SecretStr("k" * 40))
    assert event.request_hash("itsailor", key) == (
        "8b210aea210f1c3f0f27769b74594846c30a2b525731d70a18441879e0b4b81d"
    )
    hasher = Hasher(current=other, previous=(key,))
    assert event.request_hashes("itsailor", hasher) == {
        event.request_hash("itsailor", other),
        event.request_hash("itsailor", key),
        UNKEYED,
    }


def test_the_request_hash_gives_nothing_back_without_the_key() -> None:
    """The body holds the user_id in clear and every other field of it is stored: hashed with no
    key, a dump's row would confirm guessed account ids. Keyed, the stored hash is neither the
    plain hash nor any keyed hash of a key that is not the service's."""
    event = ConsentEventIn.model_validate(PINNED)
    key = HashKey.from_secret(SecretStr(TEST_KEY))
    stored = event.request_hash("itsailor", key)
    body = event.model_dump_json(exclude_none=True, exclude={"event_id"}).encode()
    assert stored != hashlib.sha256(b"itsailor\x00" + body).hexdigest()
    assert stored != HashKey.from_secret(SecretStr("k" * 40)).mac("request", b"")
    guesses = (
        {**PINNED, "user_id": candidate} for candidate in ("acct-ü", "acct-u", "acct-a", "acct-b")
    )
    found = [
        guess["user_id"]
        for guess in guesses
        if hashlib.sha256(
            b"itsailor\x00"
            + ConsentEventIn.model_validate(guess)
            .model_dump_json(exclude_none=True, exclude={"event_id"})
            .encode()
        ).hexdigest()
        == stored
    ]
    assert found == []
    # (The same search against the plain hash finds the account id: what keying prevents.)
    assert hashlib.sha256(b"itsailor\x00" + body).hexdigest() == UNKEYED
