"""A cookie's purpose in a non-material version (docs/policies.md, "Material and non-material
versions"): a typographical correction is wording; anything more may state a new purpose for an
existing cookie, which the itsailor policy makes material."""

from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.consent_schema.materiality import beyond_typography, material_difference
from tests.consent_schema.test_publish_rules import NEEDS, PROBLEMS, at, content, versions_url
from tests.factories import EXAMPLES, api_key, bearer, event, example, published
from tests.ops.test_cli import cli_env, run

__all__ = ["cli_env"]  # the fixture, shared with tests/ops/test_cli.py

CSRF = "Cross-Site Request Forgery protection on every form (Flask-WTF)."
DASHBOARD = "Authentication session for the customer dashboard"
NEW_PURPOSE = "more than a typographical correction, it may state a new purpose, " + NEEDS


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # Case, punctuation, white space and compatibility forms are typography.
        (CSRF, "Cross Site request forgery protection, on every form — Flask WTF"),
        (DASHBOARD, "  authentication   SESSION for the customer dashboard!"),
        ("It doesn\u2019t track you", "It doesnt track you"),  # a typographic apostrophe
        ("Privacy-friendly analytics", "\uff30rivacy-friendly analytics"),  # full-width P
        ("Stores 6 months", "Stores 6 months."),
        # A letter added, removed, replaced, or two neighbours swapped, in a word of 4 or more.
        (DASHBOARD, "Authenticaton session for the custmoer dashboard"),
        ("Refreshes the session token", "Refreshes the session tokens"),
        ("Recieve the seperate data", "Receive the separate data"),
        ("Measures page views", "Measures pgae veiws"),  # a typo made is typographical too
        ("Café preferences", "Cafe preferences"),
    ],
)
def test_a_typographical_correction_is_wording(before: str, after: str) -> None:
    assert beyond_typography(before, after) is None
    assert beyond_typography(after, before) is None


@pytest.mark.parametrize(
    ("before", "after", "reason"),
    [
        (CSRF, CSRF[:-1] + " and ad measurement.", '"and ad measurement" is added'),
        (CSRF, CSRF.replace("every ", ""), '"every" is removed'),
        (
            DASHBOARD,
            DASHBOARD.replace("Authentication", "Advertising"),
            '"Authentication" becomes "Advertising", more than one letter',
        ),
        ("Data is stored", "Data is shared", '"stored" becomes "shared", more than one letter'),
        (
            "Used for personalised ads",
            "Used for depersonalised ads",
            '"personalised" becomes "depersonalised", more than one letter',
        ),
        (
            "We do not share it",
            "We do now share it",
            '"not" becomes "now", a change in a word under 4 letters',
        ),
        ("teh session", "the session", '"teh" becomes "the", a change in a word under 4 letters'),
        # One letter at a word's start turns its meaning: not a typo (a review's finding).
        (
            "Never shared with advertisers.",
            "Ever shared with advertisers.",
            '"Never" becomes "Ever", a change in its first letter, which can turn a word\'s meaning',
        ),
        (
            "Unable to identify you.",
            "Enable to identify you.",
            '"Unable" becomes "Enable", a change in its first letter, which can turn a word\'s meaning',
        ),
        (
            "Kept for 6 months",
            "Kept for 8 months",
            '"6" becomes "8", a change in a number or symbol',
        ),
        (
            "Measures GA4 events",
            "Measures GA5 events",
            '"GA4" becomes "GA5", a change in a number or symbol',
        ),
        ("choices + schema version", "choices schema version", '"+" is removed'),
        ("A session cookie", "A sessioncookie", '"session cookie" becomes "sessioncookie"'),
        (
            "Shares data with Google",
            "Google data with Shares",
            '"Shares" becomes "Google", more than one letter',
        ),
        (
            "Recieve the seperate accomodation",
            "Receive the separate accommodation",
            "3 words change, more than 2 in a text of 33 characters",
        ),
    ],
)
def test_more_than_a_typographical_correction_is_named(
    before: str, after: str, reason: str
) -> None:
    assert beyond_typography(before, after) == reason


def test_the_allowance_grows_with_the_text() -> None:
    """One corrected word per 20 characters of the text, and at least two."""
    words = " ".join(["cookie"] * 20)  # 139 characters: 6 corrections
    assert beyond_typography(words, " ".join(["cokie"] * 6 + ["cookie"] * 14)) is None
    assert beyond_typography(words, " ".join(["cokie"] * 7 + ["cookie"] * 13)) == (
        "7 words change, more than 6 in a text of 139 characters"
    )


def test_the_longest_texts_compare_in_one_pass() -> None:
    """A purpose is at most 2,000 characters: the comparison is linear, whatever the text."""
    word = "a" * 1000 + "b" * 999
    assert beyond_typography(word, word[:999] + "ba" + word[1001:]) is None
    assert beyond_typography(word, "b" + word[1:-1] + "a") == (
        f'"{"a" * 39}…" becomes "b{"a" * 38}…", more than one letter'
    )
    many = "ab " * 666
    assert beyond_typography(many, many.replace("ab", "ba")) == (
        '"ab" becomes "ba", a change in a word under 4 letters'
    )


def test_every_seed_purpose_takes_a_typo_fix_as_wording() -> None:
    """Each purpose of the two seed policies with two letters of its longest word swapped."""
    for name in ("ailabrix", "itsailor"):
        base = content(name)
        changed = copy.deepcopy(base)
        for category in changed["categories"]:
            for cookie in category["cookies"]:
                longest = max(re.findall("[A-Za-z]+", cookie["purpose"]), key=len)
                swapped = longest[0] + longest[2] + longest[1] + longest[3:]
                cookie["purpose"] = cookie["purpose"].replace(longest, swapped, 1)
        assert changed != base
        assert material_difference(base, changed) is None


def with_purpose(base: dict[str, Any], category: str, cookie: str, purpose: str) -> dict[str, Any]:
    changed = copy.deepcopy(base)
    at(changed, "categories", category, "cookies", cookie)["purpose"] = purpose
    return changed


def test_the_difference_names_the_cookie_and_both_texts() -> None:
    base = content("ailabrix")
    changed = with_purpose(base, "necessary", "session", "Server-side session reference.")
    # The words between those both texts start and end with are named.
    assert material_difference(base, changed) == (
        'the purpose of cookie "session" in category necessary changes from "Server-side Flask '
        'session reference (login state, CSRF, language)." to "Server-side session reference." '
        '("Flask session reference login state CSR…" becomes "session reference"): ' + NEW_PURPOSE
    )


def test_a_long_purpose_is_shown_where_it_changes() -> None:
    """Over 80 characters, both texts are cut at the same place, about 30 characters before the
    first difference."""
    base = content("ailabrix")
    changed = with_purpose(base, "necessary", "csrf_token", CSRF[:-1] + " and ad measurement.")
    assert material_difference(base, changed) == (
        'the purpose of cookie "csrf_token" in category necessary changes from "…protection on '
        'every form (Flask-WTF)." to "…protection on every form (Flask-WTF) and ad measurement." '
        f'("and ad measurement" is added): {NEW_PURPOSE}'
    )
    long = at(base, "categories", "analytics", "cookies", "statistics.mindys.ai")["purpose"]
    changed = with_purpose(
        base, "analytics", "statistics.mindys.ai", long.replace("referrers", "ad referrers")
    )
    assert material_difference(base, changed) == (
        'the purpose of cookie "statistics.mindys.ai" in category analytics changes from '
        '"…analytics (aggregate visitor counts, referrers, country at country level). No fi…" '
        'to "…analytics (aggregate visitor counts, ad referrers, country at country level). '
        'No…" ("ad" is added): ' + NEW_PURPOSE
    )


def test_the_purpose_is_compared_in_the_order_of_the_file() -> None:
    """name, provider, purpose, duration: the first of them that changes is named."""
    base = content("ailabrix")
    changed = with_purpose(base, "necessary", "session", "Advertising session reference.")
    at(changed, "categories", "necessary", "cookies", "session")["duration"] = "1 year"
    at(changed, "categories", "necessary", "cookies", "csrf_token")["provider"] = "Google"
    difference = material_difference(base, changed)
    assert difference is not None
    assert difference.startswith('the purpose of cookie "session" in category necessary')
    at(changed, "categories", "necessary", "cookies", "session")["provider"] = "Google"
    difference = material_difference(base, changed)
    assert difference is not None
    assert difference.startswith('the provider of cookie "session" in category necessary')


# --- through the API and the CLI ---------------------------------------------------------------


async def test_a_non_material_version_with_a_new_purpose_is_refused(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("ailabrix"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    subject = uuid.uuid4()
    decided = await client.post(
        "/v1/properties/ailabrix/consent-events", json=event("accept-all", subject_id=subject)
    )
    assert decided.status_code == 201
    base = content("ailabrix")

    new_purpose = with_purpose(base, "necessary", "csrf_token", CSRF[:-1] + " and ad measurement.")
    refused = await client.post(
        versions_url("ailabrix"), json={"material": False, "content": new_purpose}, headers=writer
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == PROBLEMS + "material-change"
    assert refused.json()["compared_version"] == 1
    assert refused.json()["detail"] == (
        "a non-material version changes wording only, and this one changes more than version 1 "
        f"of 'ailabrix': {material_difference(base, new_purpose)}. Publish it as material "
        '(without --non-material; "material": true in the API): the banner then asks everyone '
        "again"
    )
    listing = (await client.get(versions_url("ailabrix"))).json()
    assert (listing["current_version"], len(listing["items"])) == (1, 1)

    fixed = with_purpose(base, "necessary", "csrf_token", CSRF.replace("Forgery", "Forgrey"))
    wording = await client.post(
        versions_url("ailabrix"), json={"material": False, "content": fixed}, headers=writer
    )
    assert wording.status_code == 201
    assert (wording.json()["version"], wording.json()["last_material_version"]) == (2, 1)
    state = (await client.get(f"/v1/properties/ailabrix/consents/{subject}")).json()
    assert (state["status"], state["needs_reprompt"]) == ("given", False)


def test_cli_refuses_a_non_material_version_with_a_new_purpose(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert run(cli_env, "schema", "publish", str(EXAMPLES / "itsailor.yaml"))[0] == 0
    base = content("itsailor")
    changed = with_purpose(
        base,
        "necessary",
        "directus_session_token",
        "Authentication session for the customer dashboard and for marketing",
    )
    source = tmp_path / "itsailor.yaml"
    source.write_text(yaml.safe_dump(changed), encoding="utf-8")

    code, out, err = run(cli_env, "schema", "publish", str(source), "--non-material")
    assert (code, out) == (1, "")
    assert err.strip() == (
        "error: a non-material version changes wording only, and this one changes more than "
        "version 1 of 'itsailor': the purpose of cookie \"directus_session_token\" in category "
        'necessary changes from "Authentication session for the customer dashboard" to '
        '"Authentication session for the customer dashboard and for marketing" ("and for '
        f'marketing" is added): {NEW_PURPOSE}. Publish it as material (without --non-material; '
        '"material": true in the API): the banner then asks everyone again'
    )
    code, out, _ = run(cli_env, "schema", "publish", str(source))
    assert (code, out.strip()) == (0, "published itsailor version 2 (material)")
