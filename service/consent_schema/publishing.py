"""Publishing consent schema versions: now, or to take effect at an announced time, and cancelling
a pending one before it does (docs/policies.md, "Material changes announced ahead"); a
non-material version changes wording only ("Material and non-material versions")."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.document import ConsentSchemaDocument, content_hash, document_content
from service.consent_schema.materiality import material_difference
from service.consent_schema.service import PublishedVersion
from service.consent_schema.tables import PropertyRow, SchemaCancellationRow, SchemaVersionRow
from service.core.errors import Conflict, MaterialChange, NotFound, Unprocessable
from service.core.times import iso


async def publish(
    session: AsyncSession,
    document: ConsentSchemaDocument,
    *,
    material: bool,
    published_by: str,
    effective_at: datetime | None = None,
) -> tuple[PublishedVersion, bool]:
    """Publish `document` as the next version of its property; the caller commits.

    Returns the version and whether it is new. Publishing unchanged content publishes nothing:
    content identical to the version in force answers that version, even while another is
    pending, and the pending version's own content with its own `effective_at` answers the
    pending version. The first version of a property is always material: nobody has been asked
    yet. A non-material version may change wording only (docs/policies.md, "Material and
    non-material versions"). With `effective_at` in the future the version is pending until then:
    the version in force stays current, and while one version is pending another cannot be
    published (cancel it first: docs/policies.md, "Material changes announced ahead").
    """
    content = document_content(document)
    digest = content_hash(content)
    now = await session.scalar(select(func.now()))
    assert now is not None
    await session.execute(
        insert(PropertyRow)
        .values(name=document.property, current_version=0, last_material_version=0)
        .on_conflict_do_nothing(index_elements=[PropertyRow.name])
    )
    prop = (
        await session.execute(
            select(PropertyRow).where(PropertyRow.name == document.property).with_for_update()
        )
    ).scalar_one()
    await _promote_due(session, prop, now)
    if effective_at is not None and effective_at <= now:
        effective_at = None  # due already: it takes effect now
    current = (
        await session.get_one(SchemaVersionRow, (prop.name, prop.current_version))
        if prop.current_version
        else None
    )
    if current is not None and current.content_sha256 == digest:
        return PublishedVersion.from_row(current), False
    if prop.pending_version is not None:
        pending = await session.get_one(SchemaVersionRow, (prop.name, prop.pending_version))
        _republishing_pending(pending, digest, effective_at)
        return PublishedVersion.from_row(pending), False
    if effective_at is not None and current is None:
        raise Unprocessable(
            "the first version of a property takes effect when it is published: leave out "
            "effective_at"
        )
    if current is not None and not material:
        # Against the current version, and the last material one: wording changed a typo at a
        # time ("stored", "shored", "shared") is compared with what the person agreed to.
        bases = [current]
        if prop.last_material_version != current.version:
            bases.append(
                await session.get_one(SchemaVersionRow, (prop.name, prop.last_material_version))
            )
        for base in bases:
            difference = material_difference(base.content, content)
            if difference is not None:
                raise MaterialChange(
                    f"a non-material version changes wording only, and this one changes more "
                    f"than version {base.version} of {prop.name!r}: {difference}. Publish it "
                    'as material (without --non-material; "material": true in the API): the '
                    "banner then asks everyone again",
                    extra={"compared_version": base.version},
                )

    version = (
        await session.scalar(
            select(func.coalesce(func.max(SchemaVersionRow.version), 0)).where(
                SchemaVersionRow.property == prop.name
            )
        )
        or 0
    ) + 1
    material = material or current is None
    row = SchemaVersionRow(
        property=prop.name,
        version=version,
        content=content,
        content_sha256=digest,
        material=material,
        last_material_version=version if material else prop.last_material_version,
        published_by=published_by,
        effective_at=effective_at or now,
    )
    session.add(row)
    await session.flush()
    pointer = (
        {"pending_version": version}
        if effective_at is not None
        else {"current_version": version, "last_material_version": row.last_material_version}
    )
    await session.execute(
        update(PropertyRow)
        .where(PropertyRow.name == prop.name)
        .values(**pointer, updated_at=func.now())
    )
    await session.refresh(row, ["published_at"])
    return PublishedVersion.from_row(row), True


def _republishing_pending(
    pending: SchemaVersionRow, digest: str, effective_at: datetime | None
) -> None:
    """Return quietly when this publish repeats the pending version (its content, to take effect
    at its instant): a no-op, so a deploy job that publishes every file again passes while a
    version is pending. Anything else waits until the pending version takes effect or is
    cancelled."""
    due = pending.effective_at or pending.published_at
    pending_at = f"version {pending.version} of {pending.property!r} takes effect at {iso(due)}"
    cancel_it = (
        f"cancel it (consent-service schema cancel --property {pending.property} --version "
        f"{pending.version}, or POST /v1/properties/{pending.property}/schema/versions/"
        f"{pending.version}/cancellation)"
    )
    if pending.content_sha256 != digest:
        raise Conflict(
            f"{pending_at}: {cancel_it} before publishing another",
            extra={"pending_version": pending.version},
        )
    if effective_at == due:
        return
    asked = f"at {iso(effective_at)}" if effective_at is not None else "now"
    raise Conflict(
        f"{pending_at} with this content, and this publish asks for it {asked}: to leave it as "
        f"announced, publish it with --effective-at {iso(due)} (effective_at in the API); to "
        f"move it, {cancel_it} and publish it again",
        extra={"pending_version": pending.version},
    )


async def _promote_due(session: AsyncSession, prop: PropertyRow, now: datetime) -> None:
    """A pending version whose time has come becomes the stored current one (readers already
    treat it so: `PropertyState.at`)."""
    if prop.pending_version is None:
        return
    pending = await session.get_one(SchemaVersionRow, (prop.name, prop.pending_version))
    if (pending.effective_at or pending.published_at) > now:
        return
    await session.execute(
        update(PropertyRow)
        .where(PropertyRow.name == prop.name)
        .values(
            current_version=pending.version,
            last_material_version=pending.last_material_version,
            pending_version=None,
            updated_at=func.now(),
        )
    )
    await session.refresh(prop)


async def cancel(
    session: AsyncSession, property_name: str, version: int, *, cancelled_by: str
) -> PublishedVersion:
    """Cancel a pending version before it takes effect; the caller commits."""
    now = await session.scalar(select(func.now()))
    assert now is not None
    prop = (
        await session.execute(
            select(PropertyRow).where(PropertyRow.name == property_name).with_for_update()
        )
    ).scalar_one_or_none()
    if prop is None:
        raise NotFound(f"no property named {property_name!r}")
    await _promote_due(session, prop, now)
    row = await session.get(SchemaVersionRow, (property_name, version))
    if row is None:
        raise NotFound(f"property {property_name!r} has no schema version {version}")
    if prop.pending_version != version:
        cancelled = await session.get(SchemaCancellationRow, (property_name, version))
        raise Conflict(
            f"version {version} of {property_name!r} was cancelled already, at "
            f"{cancelled.cancelled_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            if cancelled is not None
            else f"version {version} of {property_name!r} has taken effect: only a version that "
            "has not taken effect yet can be cancelled"
        )
    session.add(
        SchemaCancellationRow(property=property_name, version=version, cancelled_by=cancelled_by)
    )
    await session.execute(
        update(PropertyRow)
        .where(PropertyRow.name == property_name)
        .values(pending_version=None, updated_at=func.now())
    )
    return PublishedVersion.from_row(row)


async def cancelled_versions(session: AsyncSession, property_name: str) -> set[int]:
    rows = await session.scalars(
        select(SchemaCancellationRow.version).where(SchemaCancellationRow.property == property_name)
    )
    return set(rows)
