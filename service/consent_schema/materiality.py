"""Which changes between two versions need a material one (docs/policies.md, "Material and
non-material versions").

A non-material version is wording only: nobody is asked again, so every decision already made
goes on covering it. That holds only if it processes nothing that the decisions did not cover.
What a person agreed to is the categories they chose between and whether each can be refused,
each category's declared purpose, each cookie and storage entry and the facts of its processing
(who sets it, for how long, first or third party, where it is kept), how long the choice holds,
which browser signals are honoured and how, what Google's tags may do on a choice, and who the
controller is. Labels, descriptions, purposes' text, the order things are listed in, the policy
URL and how to reach the controller are wording; retention is how long the service keeps its
own evidence, not processing the person agreed to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

# Every field of the file (document.py) is one or the other; tests/consent_schema/
# test_publish_rules.py fails when a field is added to the file without being placed here (and,
# if it is about processing, compared below).
PROCESSING_FIELDS = frozenset(
    {
        "consent_ttl_days",
        "signals.gpc",
        "signals.dnt",
        "controller.name",
        "categories[].key",
        "categories[].required",
        "categories[].dpv_purpose",
        "categories[].cookies[].name",
        "categories[].cookies[].provider",
        "categories[].cookies[].duration",
        "categories[].cookies[].party",
        "categories[].cookies[].storage",
        "google_consent_mode",
    }
)
NOT_PROCESSING_FIELDS = frozenset(
    {
        "property",  # the same in every version of a property
        "policy_url",
        "controller.email",
        "controller.address",
        "controller.contact_url",
        "retention.superseded_days",
        "retention.current_days",
        "categories[].label",
        "categories[].description",
        "categories[].cookies[].purpose",
    }
)
NEEDS_MATERIAL = "which needs a material version"
# Facts of a cookie's processing, compared after `_plain`; its `purpose` is text (wording).
COOKIE_FACTS = ("provider", "duration", "party", "storage")


def material_difference(before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """The first difference between two versions' contents (`document_content`) that is more
    than wording, said so that an operator can find it in the file; None when `after` only
    rewords `before`."""
    return next(_differences(before, after), None)


def _show(value: Any) -> str:
    """A value as the file would hold it, in JSON: `false`, `"apply"`, `180`."""
    return json.dumps(value, ensure_ascii=False)


def _plain(text: Any) -> Any:
    """Free text compared without case or runs of white space: "6 Months" is "6 months"."""
    return " ".join(text.casefold().split()) if isinstance(text, str) else text


def _signal(value: Any) -> Any:
    """`true` is the earlier spelling of `apply` (docs/policies.md, "Signals")."""
    return "apply" if value is True else value


def _differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterator[str]:
    """Every material difference, in the order of the file's fields."""
    if before["consent_ttl_days"] != after["consent_ttl_days"]:
        yield (
            f"consent_ttl_days changes from {before['consent_ttl_days']} to "
            f"{after['consent_ttl_days']}: how long a choice holds changes, {NEEDS_MATERIAL}"
        )
    for signal in ("gpc", "dnt"):
        old, new = before["signals"][signal], after["signals"][signal]
        if _signal(old) != _signal(new):
            yield (
                f"signals.{signal} changes from {_show(old)} to {_show(new)}: how the signal is "
                f"honoured changes, {NEEDS_MATERIAL}"
            )
    old_controller = (before.get("controller") or {}).get("name")
    new_controller = (after.get("controller") or {}).get("name")
    if _plain(old_controller) != _plain(new_controller):
        yield (
            f"controller.name changes from {_show(old_controller)} to {_show(new_controller)}: "
            f"who the controller is changes, {NEEDS_MATERIAL}"
        )
    yield from _category_differences(before["categories"], after["categories"])
    yield from _consent_mode_differences(
        before.get("google_consent_mode") or {}, after.get("google_consent_mode") or {}
    )


def _category_differences(
    before: list[Mapping[str, Any]], after: list[Mapping[str, Any]]
) -> Iterator[str]:
    old_categories = {category["key"]: category for category in before}
    new_keys = {category["key"] for category in after}
    for new in after:
        key = new["key"]
        old = old_categories.get(key)
        if old is None:
            yield f"category {key} is new: a new purpose needs a material version"
            continue
        if old["required"] != new["required"]:
            change = "becomes required" if new["required"] else "is no longer required"
            yield f"category {key} {change}: what can be refused changes, {NEEDS_MATERIAL}"
        old_purpose, new_purpose = old.get("dpv_purpose"), new.get("dpv_purpose")
        # Declaring a purpose, or no longer declaring one, classifies the same processing for
        # the DPV export (docs/dpv.md); one declared purpose replaced by another is a new one.
        if old_purpose is not None and new_purpose is not None and old_purpose != new_purpose:
            yield (
                f"the dpv_purpose of category {key} changes from {old_purpose} to "
                f"{new_purpose}: a new purpose needs a material version"
            )
        yield from _cookie_differences(key, old["cookies"], new["cookies"])
    for old in before:
        if old["key"] not in new_keys:
            yield (
                f"category {old['key']} is removed: what people choose between changes, "
                f"{NEEDS_MATERIAL}"
            )


def _cookie_differences(
    category: str, before: list[Mapping[str, Any]], after: list[Mapping[str, Any]]
) -> Iterator[str]:
    # A cookie is known by its name within its category (names are unique there): one moved to
    # another category is removed from one and new in the other.
    old_cookies = {cookie["name"]: cookie for cookie in before}
    new_names = {cookie["name"] for cookie in after}
    for new in after:
        name = new["name"]
        old = old_cookies.get(name)
        if old is None:
            yield (
                f"cookie {_show(name)} in category {category} is new: something new is "
                f"stored, {NEEDS_MATERIAL}"
            )
            continue
        for fact in COOKIE_FACTS:
            if _plain(old[fact]) != _plain(new[fact]):
                yield (
                    f"the {fact} of cookie {_show(name)} in category {category} changes from "
                    f"{_show(old[fact])} to {_show(new[fact])}: how it is processed changes, "
                    f"{NEEDS_MATERIAL}"
                )
    for old in before:
        if old["name"] not in new_names:
            yield (
                f"cookie {_show(old['name'])} in category {category} is removed: what is "
                f"stored changes, {NEEDS_MATERIAL}"
            )


def _consent_mode_differences(before: Mapping[str, str], after: Mapping[str, str]) -> Iterator[str]:
    for consent_type in [*after, *(t for t in before if t not in after)]:
        old, new = before.get(consent_type), after.get(consent_type)
        if old == new:
            continue
        if old is None:
            change = f"is new (granted by category {new})"
        elif new is None:
            change = f"is removed (was granted by category {old})"
        else:
            change = f"changes from category {old} to {new}"
        yield (
            f"google_consent_mode.{consent_type} {change}: what Google's tags may do on a "
            f"choice changes, {NEEDS_MATERIAL}"
        )
