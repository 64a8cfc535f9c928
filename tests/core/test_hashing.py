"""The canonical text of an IP address, which every IP hash is taken of: the fast C-library
version must agree with Python's `ipaddress` on every address, or a DSR look-up by IP would miss
the events stored for it."""

from __future__ import annotations

import ipaddress
import random

import pytest
from pydantic import SecretStr

from service.core.config import Settings
from service.core.hashing import (
    Hasher,
    HashKey,
    canonical_ip,
    hasher_from_settings,
    normalise_account_id,
    normalise_ip,
)


def reference(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return None
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
    return str(ip)


EDGES = [
    "1.2.3.4", " 10.0.0.1 ", "255.255.255.255", "0.0.0.0", "01.2.3.4", "256.1.1.1", "1.2.3",
    "::", "::1", "::1.2.3.4", "::ffff:1.2.3.4", "::FFFF:102:304", "::ffff:0:1.2.3.4",
    "64:ff9b::1.2.3.4", "2001:DB8::1", "2001:db8:0:0:1:0:0:1", "2001:db8::", "1::",
    "fe80::1%eth0", "", "abc", "1.2.3.4\x00", "ü::1", "1:2:3:4:5:6:7:8:9",
]  # fmt: skip


@pytest.mark.parametrize("text", EDGES)
def test_edge_cases_match_ipaddress(text: str) -> None:
    assert canonical_ip(text) == reference(text)


def test_random_addresses_match_ipaddress() -> None:
    rng = random.Random(20261126)
    for _ in range(20_000):
        if rng.random() < 0.3:
            text = ".".join(str(rng.randint(0, 255)) for _ in range(4))
        else:
            # Many zero and 0xffff words: the compression and mapped/compatible forms.
            words = [rng.choice([0, 0, 0, 0xFFFF, rng.randint(0, 0xFFFF)]) for _ in range(8)]
            text = ":".join(f"{word:x}" for word in words)
        assert canonical_ip(text) == reference(text), text


def test_one_address_one_hash_whatever_its_spelling() -> None:
    hasher = Hasher.from_secrets(SecretStr("k" * 40), [])
    spellings = ["2001:DB8:0:0:0:0:0:7", "2001:db8::7", " 2001:0db8::0007 "]
    assert len({hasher.ip(s) for s in spellings}) == 1
    assert hasher.ip("::ffff:192.0.2.1") == hasher.ip("192.0.2.1")
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        normalise_ip("192.0.2.300")


@pytest.mark.parametrize(
    ("given", "one_form"),
    [
        ("alice", "alice"),
        ("Alice", "Alice"),  # case is the account system's to decide
        (" alice\t", "alice"),
        ("\u200balice\ufeff", "alice"),  # zero-width space, byte order mark
        ("\u00a0alice\u2003", "alice"),  # no-break space, em space
        ("\u200ealice\u202c", "alice"),  # bidi marks around it
        ("jose\u0301", "jos\u00e9"),  # decomposed and composed é
        ("a b", "a b"),  # inside, white space is part of the id
        ("a\u200bb", "a\u200bb"),
        (" \u200b\t", ""),
        ("\u0301", "\u0301"),  # a lone combining mark is not white space
    ],
)
def test_an_account_id_is_hashed_in_one_form(given: str, one_form: str) -> None:
    assert normalise_account_id(given) == one_form
    hasher = Hasher.from_secrets(SecretStr("k" * 40), [])
    if one_form:
        assert hasher.user(given) == hasher.user(one_form)
    else:
        assert hasher.user(given) is None
    # A look-up finds the one form and, for events stored before it, the spelling as given.
    found = {digest for _, digest in hasher.user_candidates(given)}
    assert hasher.current.digest("user", one_form) in found
    assert hasher.current.digest("user", given) in found
    assert len(found) == (1 if given == one_form else 2)


def test_a_key_moved_to_the_previous_keys_still_finds_what_it_hashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The current key is used as written, a secret file's trailing newline included; moved into
    CONSENT_IP_HASH_PREVIOUS_SALTS after a rotation, it must still make the same hashes."""
    written = "a-key-read-from-a-file-" + "x" * 24 + "\n"
    monkeypatch.setenv("CONSENT_IP_HASH_SALT", written)
    before = hasher_from_settings(Settings())
    stored = before.ip("192.0.2.7"), before.user("erin")

    monkeypatch.setenv("CONSENT_IP_HASH_SALT", "the-new-key-" + "y" * 32)
    monkeypatch.setenv("CONSENT_IP_HASH_PREVIOUS_SALTS", f"{written}, an-older-key-{'z' * 30} ")
    after = hasher_from_settings(Settings())
    assert stored[0] in {digest for _, digest in after.ip_candidates("192.0.2.7")}
    assert stored[1] in {digest for _, digest in after.user_candidates("erin")}
    # "k1, k2" means k2 without the space (and with it, in case it was meant).
    older = HashKey.from_secret(SecretStr(f"an-older-key-{'z' * 30}"))
    assert older.key_id in {key.key_id for key in after.previous}
