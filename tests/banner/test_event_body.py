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
