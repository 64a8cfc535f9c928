"""What publishing may do (docs/policies.md, "Material and non-material versions"): a
non-material version changes wording only, and publishing unchanged content is a no-op, also
while a version is pending, so a deploy job that publishes every file again never fails."""

from __future__ import annotations

import asyncio
import copy
import json
import types
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from service.consent_schema.document import ConsentSchemaDocument, document_content
from service.consent_schema.materiality import (
    NOT_PROCESSING_FIELDS,
    PROCESSING_FIELDS,
    material_difference,
)
from tests.factories import EXAMPLES, api_key, bearer, event, example, published
from tests.ops.test_cli import cli_env, run

__all__ = ["cli_env"]  # the fixture, shared with tests/ops/test_cli.py

PROBLEMS = "https://consent-service.dev/problems/"
NEEDS = "which needs a material version"


def content(name: str) -> dict[str, Any]:
    return document_content(example(name))


def at(document: dict[str, Any], *path: str) -> Any:
    """What `path` names in a schema's content: a category by its key, a cookie by its name."""
    target: Any = document
    for part in path:
        if isinstance(target, list):
            target = next(item for item in target if part in (item.get("key"), item.get("name")))
        else:
            target = target[part]
    return target


def with_social(base: dict[str, Any]) -> dict[str, Any]:
    """ailabrix with a new optional category, as the policy's §09 foresees ("a new cookie
    category … we will … ask for a fresh consent")."""
    changed = copy.deepcopy(base)
    changed["categories"].append(
        {
            "key": "social",
            "label": "Social media",
            "description": "Share buttons that load the networks' own scripts.",
            "required": False,
            "cookies": [
                {
                    "name": "li_sugr",
                    "provider": "LinkedIn",
                    "purpose": "Identifies the browser to LinkedIn.",
                    "duration": "3 months",
                    "party": "third",
                    "storage": "cookie",
                }
            ],
        }
    )
    return changed


def reworded(base: dict[str, Any]) -> dict[str, Any]:
    """Every piece of wording changed, and nothing else: a cookie's purpose only in its
    typography (tests/consent_schema/test_purpose_text.py)."""
    changed = copy.deepcopy(base)
    changed["policy_url"] = "https://example.org/legal/cookies"
    for category in changed["categories"]:
        category["label"] += " (reworded)"
        category["description"] += " Reworded."
        for cookie in category["cookies"]:
            cookie["purpose"] = cookie["purpose"].upper().rstrip(".") + "!"
    return changed


# --- the comparison itself ---------------------------------------------------------------------


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of the schema file, as `categories[].cookies[].name`."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # `X | None`
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = inner[0] if len(inner) == 1 else annotation
        listed = typing.get_origin(annotation) is list
        if listed:
            annotation = typing.get_args(annotation)[0]
        path = f"{prefix}{name}{'[]' if listed else ''}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= _fields(annotation, f"{path}.")
        else:
            found.add(path)
    return found


def test_every_field_of_the_file_is_placed() -> None:
    """A field added to the file must be placed as processing (and compared) or not."""
    assert not PROCESSING_FIELDS & NOT_PROCESSING_FIELDS
    assert _fields(ConsentSchemaDocument) == PROCESSING_FIELDS | NOT_PROCESSING_FIELDS


@pytest.mark.parametrize("name", ["ailabrix", "itsailor"])
def test_wording_is_not_material(name: str) -> None:
    base = content(name)
    assert material_difference(base, base) is None
    assert material_difference(base, reworded(base)) is None

    presented = copy.deepcopy(base)
    presented["categories"].reverse()  # the order things are listed in is presentation
    for category in presented["categories"]:
        category["cookies"].reverse()
    assert material_difference(base, presented) is None


def test_what_is_not_processing_is_not_material() -> None:
    base = content("itsailor")
    changed = copy.deepcopy(base)
    # How to reach the controller, and how long the service keeps its own evidence.
    changed["controller"] |= {"email": "privacy@itsailor.io", "address": "Valletta, Malta"}
    changed["controller"]["contact_url"] = "https://itsailor.io/contact"
    changed["retention"] = {"superseded_days": 2000, "current_days": 2400}
    # A typographical fix in a processing fact, and `true`, the earlier spelling of `apply`.
    at(changed, "categories", "necessary", "cookies", "next-auth.csrf-token")["duration"] = (
        " SESSION "
    )
    at(changed, "categories", "necessary", "cookies", "directus_session_token")["provider"] = (
        "ItSailor.io"
    )
    changed["controller"]["name"] = "Michal  Jatczak t/a ITSailor"
    ailabrix = content("ailabrix")
    spelled = copy.deepcopy(ailabrix)
    spelled["signals"]["gpc"] = True
    # Declaring a category's DPV purpose, or no longer declaring it, classifies the same
    # processing; replacing one declared purpose by another does not (below).
    undeclared = copy.deepcopy(ailabrix)
    del at(undeclared, "categories", "analytics")["dpv_purpose"]
    assert material_difference(base, changed) is None
    assert material_difference(ailabrix, spelled) is None
    assert material_difference(ailabrix, undeclared) is None
    assert material_difference(undeclared, ailabrix) is None


def _edit(name: str, change: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    base = content(name)
    changed = copy.deepcopy(base)
    change(changed)
    return base, changed


def _set(path: list[str], value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        at(document, *path[:-1])[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("name", "change", "difference"),
    [
        (
            "ailabrix",
            lambda d: d["categories"].append(with_social(d)["categories"][-1]),
            "category social is new: a new purpose needs a material version",
        ),
        (
            "itsailor",
            lambda d: d["categories"].pop(),
            f"category marketing is removed: what people choose between changes, {NEEDS}",
        ),
        (
            "ailabrix",
            _set(["categories", "analytics", "required"], True),
            f"category analytics becomes required: what can be refused changes, {NEEDS}",
        ),
        (
            "itsailor",
            _set(["categories", "necessary", "required"], False),
            f"category necessary is no longer required: what can be refused changes, {NEEDS}",
        ),
        (
            "itsailor",
            _set(["categories", "analytics", "dpv_purpose"], "Marketing"),
            "the dpv_purpose of category analytics changes from ServiceUsageAnalytics to "
            "Marketing: a new purpose needs a material version",
        ),
        (
            "itsailor",
            lambda d: at(d, "categories", "analytics", "cookies").append(
                {
                    "name": "plausible_ignore",
                    "provider": "itsailor.io",
                    "purpose": "Self-hosted Plausible.",
                    "duration": "Persistent",
                    "party": "first",
                    "storage": "localStorage",
                }
            ),
            f'cookie "plausible_ignore" in category analytics is new: something new is stored, '
            f"{NEEDS}",
        ),
        (
            "ailabrix",
            lambda d: at(d, "categories", "analytics", "cookies").pop(0),
            f'cookie "statistics.mindys.ai" in category analytics is removed: what is stored '
            f"changes, {NEEDS}",
        ),
        (
            "ailabrix",
            _set(
                ["categories", "analytics", "cookies", "static.cloudflareinsights.com", "provider"],
                "Cloudflare Inc. and Google",
            ),
            'the provider of cookie "static.cloudflareinsights.com" in category analytics '
            'changes from "Cloudflare" to "Cloudflare Inc. and Google": how it is processed '
            f"changes, {NEEDS}",
        ),
        (
            "ailabrix",
            _set(["categories", "necessary", "cookies", "csrf_token", "duration"], "1 year"),
            'the duration of cookie "csrf_token" in category necessary changes from "1 hour" '
            f'to "1 year": how it is processed changes, {NEEDS}',
        ),
        (
            "ailabrix",
            _set(["categories", "analytics", "cookies", "statistics.mindys.ai", "party"], "first"),
            'the party of cookie "statistics.mindys.ai" in category analytics changes from '
            f'"third" to "first": how it is processed changes, {NEEDS}',
        ),
        (
            "ailabrix",
            _set(["categories", "necessary", "cookies", "session", "storage"], "localStorage"),
            'the storage of cookie "session" in category necessary changes from "cookie" to '
            f'"localStorage": how it is processed changes, {NEEDS}',
        ),
        (
            "ailabrix",
            _set(["consent_ttl_days"], 365),
            f"consent_ttl_days changes from 180 to 365: how long a choice holds changes, {NEEDS}",
        ),
        (
            "ailabrix",
            _set(["signals", "dnt"], "apply"),
            f'signals.dnt changes from false to "apply": how the signal is honoured changes, '
            f"{NEEDS}",
        ),
        (
            "itsailor",
            _set(["signals", "gpc"], "apply"),
            f'signals.gpc changes from "record" to "apply": how the signal is honoured changes, '
            f"{NEEDS}",
        ),
        (
            "itsailor",
            _set(["controller", "name"], "ITSailor Ltd"),
            'controller.name changes from "Michal Jatczak T/A ITSailor" to "ITSailor Ltd": who '
            f"the controller is changes, {NEEDS}",
        ),
        (
            "itsailor",
            _set(["google_consent_mode"], {"ad_storage": "marketing"}),
            "google_consent_mode.ad_storage is new (granted by category marketing): what "
            f"Google's tags may do on a choice changes, {NEEDS}",
        ),
    ],
)
def test_each_change_in_what_is_processed_is_named(name: str, change: Any, difference: str) -> None:
    base, changed = _edit(name, change)
    assert material_difference(base, changed) == difference


def test_a_cookie_moved_to_another_category_is_new_there() -> None:
    base = content("ailabrix")
    moved = copy.deepcopy(base)
    analytics = at(moved, "categories", "analytics", "cookies")
    at(moved, "categories", "necessary", "cookies").append(analytics.pop())
    assert material_difference(base, moved) == (
        'cookie "static.cloudflareinsights.com" in category necessary is new: something new '
        f"is stored, {NEEDS}"
    )


def test_consent_mode_changes_and_removals_are_named() -> None:
    base = content("itsailor")
    base["google_consent_mode"] = {"analytics_storage": "analytics", "ad_storage": "marketing"}
    changed = copy.deepcopy(base)
    changed["google_consent_mode"] = {"analytics_storage": "marketing"}
    assert material_difference(base, changed) == (
        "google_consent_mode.analytics_storage changes from category analytics to marketing: "
        f"what Google's tags may do on a choice changes, {NEEDS}"
    )
    changed["google_consent_mode"] = {"analytics_storage": "analytics"}
    assert material_difference(base, changed) == (
        "google_consent_mode.ad_storage is removed (was granted by category marketing): what "
        f"Google's tags may do on a choice changes, {NEEDS}"
    )


def test_the_first_difference_in_the_file_is_named() -> None:
    base = content("ailabrix")
    changed = with_social(reworded(base))
    changed["signals"]["dnt"] = "record"
    at(changed, "categories", "analytics", "cookies").pop()
    difference = material_difference(base, changed)
    assert difference is not None
    assert difference.startswith("signals.dnt changes")
    changed["signals"]["dnt"] = False
    difference = material_difference(base, changed)
    assert difference is not None
    assert difference.startswith('cookie "static.cloud')


def test_content_published_before_the_optional_fields_compares() -> None:
    """A version stored before `controller`, `retention`, `dpv_purpose` or Google Consent Mode
    existed has none of them: adding them is wording, except what Google's tags may do."""
    base = content("itsailor")
    old = copy.deepcopy(base)
    for field in ("controller", "retention"):
        del old[field]
    for category in old["categories"]:
        del category["dpv_purpose"]
    old["signals"] = {"gpc": True, "dnt": True}
    assert material_difference(old, base | {"signals": {"gpc": "apply", "dnt": "apply"}}) == (
        'controller.name changes from null to "Michal Jatczak T/A ITSailor": who the '
        f"controller is changes, {NEEDS}"
    )
    del base["controller"]["name"]
    assert material_difference(old, base | {"signals": {"gpc": "apply", "dnt": "apply"}}) is None


# --- through the API ---------------------------------------------------------------------------


def versions_url(name: str) -> str:
    return f"/v1/properties/{name}/schema/versions"


async def test_a_non_material_version_that_adds_a_category_is_refused(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("ailabrix"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    subject = uuid.uuid4()
    accepted = await client.post(
        "/v1/properties/ailabrix/consent-events", json=event("accept-all", subject_id=subject)
    )
    assert accepted.status_code == 201

    social = with_social(content("ailabrix"))
    refused = await client.post(
        versions_url("ailabrix"), json={"material": False, "content": social}, headers=writer
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == PROBLEMS + "material-change"
    assert problem["compared_version"] == 1
    assert problem["detail"] == (
        "a non-material version changes wording only, and this one changes more than version 1 "
        "of 'ailabrix': category social is new: a new purpose needs a material version. "
        'Publish it as material (without --non-material; "material": true in the API): the '
        "banner then asks everyone again"
    )
    listing = (await client.get(versions_url("ailabrix"))).json()
    assert (listing["current_version"], len(listing["items"])) == (1, 1)

    # As material it is published, and the subject who never saw `social` is asked again.
    bumped = await client.post(
        versions_url("ailabrix"), json={"material": True, "content": social}, headers=writer
    )
    assert bumped.status_code == 201
    assert (bumped.json()["version"], bumped.json()["last_material_version"]) == (2, 2)
    state = (await client.get(f"/v1/properties/ailabrix/consents/{subject}")).json()
    assert (state["needs_reprompt"], state["reprompt_reasons"]) == (True, ["schema-changed"])

    # Wording only stays non-material: no re-prompt for a decision made on version 2.
    again = uuid.uuid4()
    await client.post(
        "/v1/properties/ailabrix/consent-events",
        json=event("accept-all", subject_id=again, schema_version=2),
    )
    wording = await client.post(
        versions_url("ailabrix"),
        json={"material": False, "content": reworded(social)},
        headers=writer,
    )
    assert wording.status_code == 201
    assert (wording.json()["version"], wording.json()["material"]) == (3, False)
    state = (await client.get(f"/v1/properties/ailabrix/consents/{again}")).json()
    assert (state["status"], state["needs_reprompt"]) == ("given", False)


async def test_a_non_material_version_follows_the_pending_one_once_it_is_in_effect(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("ailabrix"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    social = with_social(content("ailabrix"))
    at = datetime.now(UTC) + timedelta(seconds=2)
    scheduled = await client.post(
        versions_url("ailabrix"),
        json={"content": social, "effective_at": at.isoformat()},
        headers=writer,
    )
    assert scheduled.status_code == 201
    # Before its instant a new version would follow version 1: the pending one is in the way.
    early = await client.post(
        versions_url("ailabrix"),
        json={"material": False, "content": reworded(social)},
        headers=writer,
    )
    assert early.status_code == 409
    assert early.json()["type"] == PROBLEMS + "conflict"
    assert early.json()["pending_version"] == 2

    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.05)
    # Now it follows version 2, which has `social`: rewording it is non-material ...
    wording = await client.post(
        versions_url("ailabrix"),
        json={"material": False, "content": reworded(social)},
        headers=writer,
    )
    assert wording.status_code == 201
    assert (wording.json()["version"], wording.json()["last_material_version"]) == (3, 2)
    # ... and going back to version 1's categories is not.
    back = await client.post(
        versions_url("ailabrix"),
        json={"material": False, "content": content("ailabrix")},
        headers=writer,
    )
    assert back.status_code == 409
    assert back.json()["compared_version"] == 3
    assert (
        "than version 3 of 'ailabrix': category social is removed: what people choose between "
        f"changes, {NEEDS}."
    ) in back.json()["detail"]


async def test_republishing_while_a_version_is_pending_is_a_no_op(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    changed = reworded(content("itsailor"))
    at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    body = {"content": changed, "effective_at": at.isoformat()}
    first = await client.post(versions_url("itsailor"), json=body, headers=writer)
    assert first.status_code == 201
    assert first.json()["version"] == 2

    # The pending version's content, at its instant (in any offset): that version, unchanged.
    for same in (at.isoformat(), at.astimezone(timezone(timedelta(hours=2))).isoformat()):
        again = await client.post(
            versions_url("itsailor"), json=body | {"effective_at": same}, headers=writer
        )
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert again.headers["location"] == "/v1/properties/itsailor/schema/versions/2"

    # The version in force's content, now or at any time: that version, unchanged.
    for when in (None, at.isoformat()):
        current = await client.post(
            versions_url("itsailor"),
            json={"content": content("itsailor"), "effective_at": when},
            headers=writer,
        )
        assert current.status_code == 200, current.text
        assert current.json()["version"] == 1

    listing = (await client.get(versions_url("itsailor"))).json()
    assert (listing["current_version"], listing["pending_version"]) == (1, 2)
    assert len(listing["items"]) == 2


async def test_moving_a_pending_version_needs_a_cancellation(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    changed = reworded(content("itsailor"))
    at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    due = at.isoformat().replace("+00:00", "Z")
    body = {"content": changed, "effective_at": at.isoformat()}
    assert (
        await client.post(versions_url("itsailor"), json=body, headers=writer)
    ).status_code == 201

    later = at + timedelta(days=1)
    for when, asked in ((later.isoformat(), "at " + later.isoformat()[:-6] + "Z"), (None, "now")):
        moved = await client.post(
            versions_url("itsailor"), json=body | {"effective_at": when}, headers=writer
        )
        assert moved.status_code == 409
        assert moved.json()["pending_version"] == 2
        assert moved.json()["detail"] == (
            f"version 2 of 'itsailor' takes effect at {due} with this content, and this publish "
            f"asks for it {asked}: to leave it as announced, publish it with --effective-at "
            f"{due} (effective_at in the API); to move it, cancel it (consent-service schema "
            "cancel --property itsailor --version 2, or POST "
            "/v1/properties/itsailor/schema/versions/2/cancellation) and publish it again"
        )
    listing = (await client.get(versions_url("itsailor"))).json()
    assert (listing["pending_version"], len(listing["items"])) == (2, 2)


@pytest.mark.parametrize("name", ["ailabrix", "itsailor"])
async def test_the_seed_policies_publish_and_take_a_wording_only_version(
    client: httpx.AsyncClient, db_url: str, name: str
) -> None:
    writer = bearer(await api_key(db_url, "schemas:write"))
    base = content(name)
    first = await client.post(versions_url(name), json={"content": base}, headers=writer)
    assert first.status_code == 201
    wording = await client.post(
        versions_url(name), json={"material": False, "content": reworded(base)}, headers=writer
    )
    assert wording.status_code == 201
    assert (wording.json()["version"], wording.json()["material"]) == (2, False)


# --- through the CLI ---------------------------------------------------------------------------


def test_cli_refuses_a_non_material_version_that_adds_a_category(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    source = EXAMPLES / "ailabrix.yaml"
    assert run(cli_env, "schema", "publish", str(source))[0] == 0
    social = tmp_path / "ailabrix.yaml"
    social.write_text(yaml.safe_dump(with_social(content("ailabrix"))), encoding="utf-8")

    code, out, err = run(cli_env, "schema", "publish", str(social), "--non-material")
    assert (code, out) == (1, "")
    assert err.strip() == (
        "error: a non-material version changes wording only, and this one changes more than "
        "version 1 of 'ailabrix': category social is new: a new purpose needs a material "
        'version. Publish it as material (without --non-material; "material": true in the '
        "API): the banner then asks everyone again"
    )
    code, out, _ = run(cli_env, "schema", "publish", str(social))
    assert (code, out.strip()) == (0, "published ailabrix version 2 (material)")


def test_cli_republishing_every_file_passes_while_a_version_is_pending(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A deploy job publishes every schema file on each deploy, with the announced time of the
    one that is pending."""
    source = EXAMPLES / "itsailor.yaml"
    assert run(cli_env, "schema", "publish", str(source))[0] == 0
    announced = tmp_path / "itsailor.yaml"
    announced.write_text(yaml.safe_dump(reworded(content("itsailor"))), encoding="utf-8")
    at = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, _ = run(cli_env, "schema", "publish", str(announced), "--effective-at", at)
    assert (code, out.strip()) == (
        0,
        f"published itsailor version 2 (material), in effect from {at}",
    )

    code, out, err = run(
        cli_env, "schema", "publish", str(announced), "--effective-at", at, "--json"
    )
    assert (code, err) == (0, "")
    assert (json.loads(out)["version"], json.loads(out)["created"]) == (2, False)
    code, out, err = run(cli_env, "schema", "publish", str(announced), "--effective-at", at)
    assert (code, err) == (0, "")
    assert out.strip() == f"unchanged: itsailor version 2 is pending, in effect from {at}"
    code, out, err = run(cli_env, "schema", "publish", str(source))
    assert (code, err) == (0, "")
    assert out.strip() == "unchanged: itsailor version 1 is current"

    # Without the announced time it would be published now: refused, saying how to do either.
    code, out, err = run(cli_env, "schema", "publish", str(announced))
    assert (code, out) == (1, "")
    assert f"takes effect at {at} with this content, and this publish asks for it now" in err
    assert f"publish it with --effective-at {at} (effective_at in the API)" in err


async def test_wording_changed_a_typo_at_a_time_is_compared_with_the_last_material_version(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """ "stored" to "shared" is refused as wording; in two steps ("shored", then "shared") each
    was one typo from the version before it, and nobody was asked again."""
    await published(db_url, example("ailabrix"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    document = content("ailabrix")
    beacon = at(document, "categories", "analytics", "cookies", "static.cloudflareinsights.com")

    async def publish(word: str) -> httpx.Response:
        beacon["purpose"] = beacon["purpose"].replace(beacon["purpose"].split()[-4], word)
        return await client.post(
            versions_url("ailabrix"),
            json={"material": False, "content": document},
            headers=writer,
        )

    assert beacon["purpose"].split()[-4] == "stored"
    first = await publish("shored")
    assert first.status_code == 201, first.text  # a typo of "stored": wording
    second = await publish("shared")  # a typo of "shored", not of "stored"
    assert second.status_code == 409, second.text
    assert second.json()["compared_version"] == 1
    assert "stored" in second.json()["detail"]
