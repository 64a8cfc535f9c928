"""What the banner API does: turn a banner's report into a ledger event (choices checked against
the version it showed, browser signals applied, identifiers hashed), and derive a subject's
current state from its latest decision."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.banner.bodies import ConsentEventIn, ConsentState, RepromptReason
from service.consent_schema.service import PropertyState, PublishedVersion, SchemaCatalog
from service.core.db import autocommit
from service.core.errors import Conflict, Unprocessable, json_pointer
from service.core.hashing import Hasher
from service.core.json_input import UNPRINTABLE
from service.core.logging import get_logger
from service.core.times import iso
from service.ledger.decisions import LatestDecisions
from service.ledger.event import (
    RECORD_COLUMNS,
    ConsentStatus,
    EventSource,
    EventType,
    NewEvent,
    Signal,
    decision_status,
    expiry,
    record,
)
from service.ledger.leaf import attach_leaf
from service.ledger.receipts import ReceiptSigner
from service.ledger.stored_receipts import VERIFY_HINT, StoredReceipts, receipt_again
from service.ledger.tables import ConsentEventRow as Event
from service.ledger.tables import EventIdRow, event_columns

log = get_logger("service.banner")

USER_AGENT_MAX = 512
# A backslash, and what UNPRINTABLE finds among the characters a byte decodes to (C0, DEL, C1,
# the soft hyphen): written as `\xNN` in a stored User-Agent.
_ESCAPED = re.compile(r"\\|" + UNPRINTABLE.pattern)


def readable_user_agent(sent: bytes) -> str:
    r"""The User-Agent as stored (evidence a person reads in an export): its first USER_AGENT_MAX
    bytes, one character each (ISO-8859-1, RFC 9110 section 5.5), with a backslash and every
    control or invisible character written `\xNN`, so that nothing hides or reorders the text
    and each header is stored one way (the escape is undone by reading `\xNN` back as a byte).
    A browser's own is printable ASCII and stored as sent."""
    text = sent[:USER_AGENT_MAX].decode("latin-1")
    if text.isprintable() and "\\" not in text:
        return text
    return _ESCAPED.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


async def version_shown(
    catalog: SchemaCatalog, property_name: str, event: ConsentEventIn
) -> PublishedVersion:
    """The version the banner showed: it must have been in force; an older one is recorded as
    is (late beacons happen), a newer one than the current (a pending one included) or one
    cancelled before it took effect is a 422."""
    number = event.schema_version
    current = await catalog.state(property_name)
    if number > current.current_version:
        # The cached pointer may lag a publish made by another process: ask once more.
        current = await catalog.state(property_name, fresh=True)
        if number > current.current_version:
            pending = current.pending
            when = (
                f" (version {number} takes effect at {iso(pending.effective_at)})"
                if pending is not None and pending.version == number
                else ""
            )
            newer = f"newer than the current version {current.current_version}"
            raise Unprocessable(
                f"schema_version {number} is {newer} of {property_name!r}{when}",
                extra={"errors": [{"pointer": "/body/schema_version", "detail": newer + when}]},
            )
    if number < current.current_version and await catalog.cancelled(property_name, number):
        raise Unprocessable(
            f"schema_version {number} of {property_name!r} was cancelled before it took "
            "effect: no banner showed it",
            extra={"errors": [{"pointer": "/body/schema_version", "detail": "cancelled"}]},
        )
    return await catalog.version(property_name, number)


def new_event(
    event: ConsentEventIn,
    *,
    property_name: str,
    version: PublishedVersion,
    headers: dict[bytes, bytes],
    address: str | None,
    hasher: Hasher,
    now: datetime,
) -> NewEvent:
    """The ledger row for `event`. `headers` are the request's (lower-case names); `address` is
    the client's in canonical form, hashed here and never kept."""
    optional = version.optional
    choices = resolve_choices(event, required=version.required, optional=optional)
    present = signals_present(headers, gpc=event.gpc, dnt=event.dnt)
    gpc, dnt = Signal.GPC in present, Signal.DNT in present
    source = EventSource(event.source or EventSource.BANNER)
    if source is EventSource.SIGNAL:
        # The signal is the decision: the record names the signals that made it.
        applied = among(present, version.records)
        _check_signal_decision(event, applied, version)
    else:
        applied = among(present, version.honours)
    user_agent = headers.get(b"user-agent")
    new = NewEvent(
        event_id=event.event_id or uuid.uuid4(),
        property=property_name,
        subject_id=event.subject_id,
        event_type=event.event_type.value,
        schema_version=event.schema_version,
        choices=choices,
        effective=apply_signals(choices, optional=optional, applied=applied),
        gpc=gpc,
        dnt=dnt,
        signals_applied=[s.value for s in applied],
        source=source.value,
        entered_by=None,
        ip_hash=hasher.ip_normalised(address) if address is not None else None,
        user_hash=hasher.user(event.user_id) if event.user_id is not None else None,
        hash_key_id=hasher.current.key_id,
        user_agent=readable_user_agent(user_agent) if user_agent is not None else None,
        page_url=event.page_url,
        tcf_string=event.tcf_string,
        gpp_string=event.gpp_string,
        request_hash=event.request_hash(property_name, hasher.current),
        recorded_at=now,
    )
    return attach_leaf(new, version.content_hash)


def _check_signal_decision(
    event: ConsentEventIn, recorded: list[Signal], version: PublishedVersion
) -> None:
    """A decision from a signal is a reject-all made because a signal this version records as a
    decision is present (docs/policies.md, "Signals")."""
    problems = []
    if event.event_type is not EventType.REJECT_ALL:
        problems.append("a decision from a signal is a reject-all")
    if not recorded:
        kept = [name for name, on in version.records.items() if on]
        problems.append(
            "no signal is present that schema version "
            f"{version.version} records as a decision"
            + (f" ({', '.join(kept)}; send Sec-GPC: 1, DNT: 1 or gpc/dnt: true)" if kept else "")
        )
    if problems:
        raise Unprocessable(
            f"source signal: {'; '.join(problems)}",
            extra={"errors": [{"pointer": "/body/source", "detail": p} for p in problems]},
        )


def resolve_choices(
    event: ConsentEventIn, *, required: frozenset[str], optional: frozenset[str]
) -> dict[str, bool]:
    """The requested choice per category, checked against the version the banner showed.

    Raises Unprocessable naming every offending category.
    """
    given = event.categories
    errors: list[tuple[str, str]] = []
    if given is not None:
        known = required | optional
        errors += [
            (key, "unknown category in this schema version") for key in given if key not in known
        ]
        errors += [
            (key, "a required category cannot be refused")
            for key in sorted(required)
            if given.get(key) is False
        ]

    match event.event_type:
        case EventType.RE_PROMPT:
            if given is not None:
                errors.append(
                    ("", "re-prompt records that the banner was shown; it takes no categories")
                )
            choices: dict[str, bool] = {}
        case EventType.SAVE_SELECTION:
            if given is None:
                errors.append(("", "save-selection needs categories"))
                given = {}
            choices = dict.fromkeys(required, True) | {
                key: bool(given.get(key, False)) for key in optional
            }
        case EventType.ACCEPT_ALL:
            choices = dict.fromkeys(required | optional, True)
            errors += [
                (key, "accept-all turns every category on")
                for key, value in (given or {}).items()
                if value is False and key in optional
            ]
        case EventType.REJECT_ALL | EventType.WITHDRAW:
            choices = dict.fromkeys(required, True) | dict.fromkeys(optional, False)
            errors += [
                (key, f"{event.event_type.value} turns every optional category off")
                for key, value in (given or {}).items()
                if value is True and key in optional
            ]
    if errors:
        # Named as every other invalid field is (core/errors.py, validation_problem_detail).
        invalid = [
            {"pointer": json_pointer(("body", "categories", key)[: 3 if key else 2]),
             "detail": message}
            for key, message in errors
        ]  # fmt: skip
        raise Unprocessable(
            "; ".join(f"{item['pointer']}: {item['detail']}" for item in invalid),
            extra={"errors": invalid},
        )
    return dict(sorted(choices.items()))


def apply_signals(
    choices: dict[str, bool], *, optional: frozenset[str], applied: list[Signal]
) -> dict[str, bool]:
    """Effective choices: an honoured signal turns every optional category off."""
    if not applied:
        return dict(choices)
    return {key: (False if key in optional else value) for key, value in choices.items()}


async def stored_record(
    engine: AsyncEngine,
    catalog: SchemaCatalog,
    new: NewEvent,
    same_request: Collection[str],
    receipts: ReceiptSigner | None = None,
) -> dict[str, Any]:
    """`new`'s event_id was stored already: the original record for a retry of the same request
    (one whose stored request hash is among `same_request`: `ConsentEventIn.request_hashes`),
    with the receipt its batch was given (or, for an event stored before receipts were kept, one
    of its own: a tree of this one leaf), or 409 for a different event reusing the id."""
    async with autocommit(engine) as connection:
        existing = (
            await connection.execute(
                select(
                    *event_columns(*RECORD_COLUMNS, "request_hash", "salt", "leaf", "receipt")
                ).where(
                    Event.event_id == new.event_id,
                    # A retry has the same body, so the same subject: the subject's index in the
                    # one partition the id's row names (docs/retention.md, "Partitions").
                    Event.subject_id == new.subject_id,
                    Event.recorded_at
                    == select(EventIdRow.recorded_at)
                    .where(EventIdRow.event_id == new.event_id)
                    .scalar_subquery(),
                )
            )
        ).one_or_none()
        # Not found: the id belongs to another subject's event (or to one anonymised since).
        if existing is None or existing.request_hash not in same_request:
            raise Conflict(
                f"event_id {new.event_id} is already recorded, with a different body or "
                "anonymised by an erasure since; use a new event_id for a new event"
            )
        leaf = bytes(existing.leaf) if existing.leaf is not None else None
        salt = bytes(existing.salt) if existing.salt is not None else None
        said = (existing.event_type, existing.schema_version, existing.choices, existing.source)
        if said != (new.event_type, new.schema_version, new.choices, new.source):
            # The request hash matched, but the row says something else than the body it covers:
            # changed around the database's triggers. A receipt signed now would vouch for it.
            log.error("stored_event_differs_from_its_request", hint=VERIFY_HINT)
            receipts = None
        kept = await receipt_again(
            StoredReceipts(connection), receipts, existing.receipt, leaf, salt
        )
    version = await catalog.version(existing.property, existing.schema_version)
    found = record(existing, optional=version.optional, ttl_days=version.ttl_days)
    found["receipt"] = found["receipt_proof"] = None
    if kept is not None:
        found["receipt"], found["receipt_proof"] = kept[0], kept[1].body()
    return found


def _required_only(version: PublishedVersion) -> dict[str, bool]:
    return {c["key"]: bool(c["required"]) for c in version.content["categories"]}


def signals_present(
    headers: dict[bytes, bytes], *, gpc: bool | None = None, dnt: bool | None = None
) -> set[Signal]:
    """The privacy signals a request carries: its `Sec-GPC: 1` / `DNT: 1` headers, or what the
    browser's script saw (`navigator.globalPrivacyControl`, `navigator.doNotTrack`), which a
    page reports because it cannot set a `Sec-` header itself."""
    present: set[Signal] = set()
    if gpc or headers.get(b"sec-gpc", b"").strip() == b"1":
        present.add(Signal.GPC)
    if dnt or headers.get(b"dnt", b"").strip() == b"1":
        present.add(Signal.DNT)
    return present


def among(present: Collection[Signal], policy: dict[str, bool]) -> list[Signal]:
    """The signals among `present` that a version's `policy` (`honours` or `records`) names,
    in a fixed order."""
    return [
        signal for signal in (Signal.GPC, Signal.DNT) if signal in present and policy[signal.value]
    ]


async def current_state(
    decisions: LatestDecisions,
    catalog: SchemaCatalog,
    property_name: str,
    subject_id: uuid.UUID,
    now: datetime,
    signals: Collection[Signal] = (),
) -> ConsentState:
    """The subject's state now: its latest decision, with the signals of this request applied
    as the current version's policy says (docs/banner.md, "Signals"). A signal applies while it
    is present; the stored decision is never changed by it."""
    prop: PropertyState = await catalog.state(property_name)
    current = await catalog.version(property_name, prop.current_version)
    applied = among(signals, current.honours)
    latest = await decisions.latest(property_name, subject_id)
    if latest is None:
        # A signal the version records as a decision is the person's refusal before the client
        # has recorded it: the banner does not ask (docs/banner.md, "Signals").
        recorded = among(signals, current.records)
        return ConsentState(
            property=property_name,
            subject_id=subject_id,
            status=ConsentStatus.REFUSED if recorded else ConsentStatus.NONE,
            event_type=None,
            source=None,
            choices=None,
            effective=_required_only(current),
            signals_applied=[s for s in (Signal.GPC, Signal.DNT) if s in {*applied, *recorded}],
            schema_version=None,
            current_version=prop.current_version,
            last_material_version=prop.last_material_version,
            decided_at=None,
            expires_at=None,
            needs_reprompt=not recorded,
            reprompt_reasons=[] if recorded else [RepromptReason.NO_DECISION],
        )
    decided_on = await catalog.version(property_name, latest.schema_version)
    event_type = EventType(latest.event_type)
    expires_at = expiry(latest.recorded_at, decided_on.ttl_days, event_type)
    expired = expires_at is not None and now >= expires_at
    outdated = latest.schema_version < prop.last_material_version
    # A signal the version records as a decision (a reject-all) stands for one while present,
    # unless the latest decision was made under it and still holds (one lapsed or asked again
    # answers nothing now): the banner client records that reject-all when it sees the signal,
    # and a request without the client gets the same answer (docs/banner.md, "Signals").
    under = {Signal.GPC} if latest.gpc and not (expired or outdated) else set()
    under |= {Signal.DNT} if latest.dnt and not (expired or outdated) else set()
    recorded = [signal for signal in among(signals, current.records) if signal not in under]
    applied = [signal for signal in (Signal.GPC, Signal.DNT) if signal in {*applied, *recorded}]
    effective = apply_signals(latest.choices, optional=decided_on.optional, applied=applied)
    status = decision_status(event_type, effective, decided_on.optional)
    assert status is not None  # re-prompts are not decisions
    reasons: list[RepromptReason] = []
    if expired:
        status = ConsentStatus.EXPIRED
        effective = _required_only(current)
        reasons.append(RepromptReason.EXPIRED)
    if outdated:
        # Asked again: until the person answers, only the required categories apply, as for an
        # expired decision (a banner blocks the optional scripts meanwhile, and the client's
        # `effective()` says the same: docs/banner.md, "Asking again"). The decision is kept.
        effective = _required_only(current)
        reasons.append(RepromptReason.SCHEMA_CHANGED)
    if reasons and recorded:
        # The signal's refusal answers the question: nobody is asked (itsailor: persisted "as
        # you would have made it"), and the client records it on the current version.
        status, reasons = ConsentStatus.REFUSED, []
    return ConsentState(
        property=property_name,
        subject_id=subject_id,
        status=status,
        event_type=event_type,
        source=EventSource(latest.source),
        choices=latest.choices,
        effective=effective,
        signals_applied=applied,
        schema_version=latest.schema_version,
        current_version=prop.current_version,
        last_material_version=prop.last_material_version,
        decided_at=latest.recorded_at,
        expires_at=expires_at,
        needs_reprompt=bool(reasons),
        reprompt_reasons=reasons,
    )
