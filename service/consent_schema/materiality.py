"""Which changes between two versions need a material one (docs/policies.md, "Material and
non-material versions").

A non-material version is wording only: nobody is asked again, so every decision already made
goes on covering it. That holds only if it processes nothing that the decisions did not cover.
What a person agreed to is the categories they chose between and whether each can be refused,
each category's declared purpose, each cookie and storage entry and the facts of its processing
(who sets it, for how long, first or third party, where it is kept), how long the choice holds,
which browser signals are honoured and how, what Google's tags may do on a choice, and who the
controller is. A cookie's purpose is compared too: only a typographical correction of it is
wording (`beyond_typography`). Labels, descriptions, the order things are listed in, the
policy URL and how to reach the controller are wording; retention is how long the service keeps
its own evidence, not processing the person agreed to.
"""

from __future__ import annotations

import json
import unicodedata
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
        "categories[].cookies[].purpose",
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
    }
)
NEEDS_MATERIAL = "which needs a material version"
# Facts of a cookie's processing, compared after `_plain`, in the order of the file; its
# `purpose` (between `provider` and `duration`) is compared by `beyond_typography`.
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
            if fact == "duration":  # the purpose comes between provider and duration in the file
                yield from _purpose_difference(category, name, old["purpose"], new["purpose"])
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


def _purpose_difference(category: str, name: str, before: str, after: str) -> Iterator[str]:
    reason = beyond_typography(before, after)
    if reason is not None:
        old, new = _excerpts(before, after)
        yield (
            f"the purpose of cookie {_show(name)} in category {category} changes from "
            f"{_show(old)} to {_show(new)} ({reason}): more than a typographical correction, it "
            f"may state a new purpose, {NEEDS_MATERIAL}"
        )


# A typographical correction of a cookie's purpose (docs/policies.md, "A typographical
# correction of a purpose"): itsailor makes "a new purpose for an existing cookie" material and
# "typographical corrections" not. The service cannot read meaning, so it keeps the words: the
# same words in the same order, each the same or, for a few, one letter-level edit from the
# word it corrects. Linear in the texts' length (a purpose is at most 2,000 characters), and
# deterministic.
TYPO_MIN_LETTERS = 4  # in a shorter word one letter makes another word: no/on, not/now, ads/add
# A word's first letter is kept: a letter added, removed or replaced there is how a word turns
# into its opposite (never/ever, unable/enable, neither/either), and seldom a typo.
TYPO_PER_CHARACTERS = 20  # one corrected word per 20 characters of the text ...
TYPO_MIN_ALLOWED = 2  # ... and at least two
SHOWN = 80  # characters of a purpose shown in a difference (and 40 of its changed words)
_APOSTROPHES = str.maketrans("", "", "'\u2018\u2019")


def beyond_typography(before: str, after: str) -> str | None:
    """What makes `after` more than a typographical correction of `before`, said for the
    operator; None when it is one. Case, punctuation and white space are typography; a word may
    be corrected when both spellings are letters only (a number or symbol is a fact) and have
    at least TYPO_MIN_LETTERS of them."""
    if before == after:  # most purposes, in most versions
        return None
    old_words, new_words = _words(before), _words(after)
    old_folded = [word.casefold() for word in old_words]
    new_folded = [word.casefold() for word in new_words]
    if old_folded == new_folded:
        return None
    if len(old_folded) != len(new_folded):
        return _added_or_removed(old_words, new_words, old_folded, new_folded)
    corrected = 0
    pairs = zip(old_words, new_words, old_folded, new_folded, strict=True)
    for old, new, old_key, new_key in pairs:
        if old_key == new_key:
            continue
        change = f"{_phrase([old])} becomes {_phrase([new])}"
        if not (_lettered(old_key) and _lettered(new_key)):
            return f"{change}, a change in a number or symbol"
        if min(len(old_key), len(new_key)) < TYPO_MIN_LETTERS:
            return f"{change}, a change in a word under {TYPO_MIN_LETTERS} letters"
        if not _one_edit(old_key, new_key):
            return f"{change}, more than one letter"
        if old_key[0] != new_key[0]:
            return f"{change}, a change in its first letter, which can turn a word's meaning"
        corrected += 1
    length = len(" ".join(old_folded))
    allowed = max(TYPO_MIN_ALLOWED, length // TYPO_PER_CHARACTERS)
    if corrected > allowed:
        return f"{corrected} words change, more than {allowed} in a text of {length} characters"
    return None


def _words(text: str) -> list[str]:
    """The words of a text: after NFKC (a full-width or ligature letter is that letter), without
    apostrophes (`dont` is `don't`), split at every run of anything but letters, marks, digits
    and symbols (white space, punctuation, control characters)."""
    normal = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    return "".join(c if unicodedata.category(c)[0] in "LMNS" else " " for c in normal).split()


def _lettered(word: str) -> bool:
    return all(unicodedata.category(c)[0] in "LM" for c in word)


def _one_edit(a: str, b: str) -> bool:
    """Two different words one Damerau-Levenshtein edit apart: a letter added, removed or
    replaced, or two neighbouring letters swapped."""
    if len(a) > len(b):
        a, b = b, a
    if len(b) - len(a) > 1:
        return False
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):
        return a[i:] == b[i + 1 :]
    swapped = a[i + 1 : i + 2] == b[i : i + 1] and a[i : i + 1] == b[i + 1 : i + 2]
    return a[i + 1 :] == b[i + 1 :] or (swapped and a[i + 2 :] == b[i + 2 :])


def _added_or_removed(
    old_words: list[str], new_words: list[str], old_folded: list[str], new_folded: list[str]
) -> str:
    """The words between those the two texts start and end with."""
    shorter = min(len(old_folded), len(new_folded))
    start = 0
    while start < shorter and old_folded[start] == new_folded[start]:
        start += 1
    end = 0
    while end < shorter - start and old_folded[-1 - end] == new_folded[-1 - end]:
        end += 1
    removed = old_words[start : len(old_words) - end]
    added = new_words[start : len(new_words) - end]
    if not removed:
        return f"{_phrase(added)} is added"
    if not added:
        return f"{_phrase(removed)} is removed"
    return f"{_phrase(removed)} becomes {_phrase(added)}"


def _phrase(words: list[str]) -> str:
    text = " ".join(words)
    return _show(text if len(text) <= 40 else text[:39] + "…")


def _excerpts(before: str, after: str) -> tuple[str, str]:
    """The two texts, each cut to SHOWN characters from the same place: the start, or the start
    of a word about 30 characters before they first differ, so that the difference shows."""
    same = 0
    while same < min(len(before), len(after)) and before[same] == after[same]:
        same += 1
    start = 0
    if max(len(before), len(after)) > SHOWN and same > SHOWN - 30:
        start = before.rfind(" ", 0, same - 30) + 1
        start = start if same - start <= 50 else same - 30

    def cut(text: str) -> str:
        shown = text[start : start + SHOWN]
        return ("…" if start else "") + shown + ("…" if start + SHOWN < len(text) else "")

    return cut(before), cut(after)


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
