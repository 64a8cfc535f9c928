"""The event body's own rules, without a server: what is kept of a page URL."""

from __future__ import annotations

import uuid

import pytest

from service.banner.bodies import ConsentEventIn


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


def test_the_request_hash_of_an_event_stays_what_it_was() -> None:
    """A retry is told from a new event by the stored request hash, so the hash of a body never
    changes between releases (this value was computed by the service of 2026-11-29, e6a3b19):
    a retry sent across an upgrade still finds its original."""
    event = ConsentEventIn.model_validate(
        {"event_id": "6f1c3a52-0d7e-4a8b-9a44-2b1f5c0e9d11",
         "subject_id": "0b7e8f4c-3f7d-4c1e-8a2b-9d6e5f4a3b21", "event_type": "save-selection",
         "schema_version": 3, "categories": {"marketing": False, "analytics": True},
         "user_id": "acct-ü", "page_url": "https://Shop.example/a?q=1", "gpc": True}
    )  # fmt: skip
    assert event.request_hash("itsailor") == (
        "2cf8931993fe0d1500c473f02af22e0fc4e10b76db747fdae72c5ee988a0e4d8"
    )
