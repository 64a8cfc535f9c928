"""Publishing consent schema versions: now, or to take effect at an announced time, and cancelling
a pending one before it does (docs/policies.md, "Material changes announced ahead")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.document import ConsentSchemaDocument, content_hash, document_content
from service.consent_schema.service import PublishedVersion, iso
from service.consent_schema.tables import PropertyRow, SchemaCancellationRow, SchemaVersionRow
from service.core.errors import Conflict, NotFound, Unprocessable


async def publish(
    session: AsyncSession,
    document: ConsentSchemaDocument,
    *,
    material: bool,
    published_by: str,
    effective_at: datetime | None = None,
) -> tuple[PublishedVersion, bool]:
    """Publish `document` as the next version of its property; the caller commits.

    Returns the version and whether it is new. Content identical to the version in force
    publishes nothing. The first version of a property is always material: nobody has been asked
    yet. With `effective_at` in the future the version is pending until then: the version in
    force stays current, and while one version is pending another cannot be published (cancel it
    first: docs/policies.md, "Material changes announced ahead").
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
    if prop.pending_version is not None:
        pending = await session.get_one(SchemaVersionRow, (prop.name, prop.pending_version))
        raise Conflict(
            f"version {pending.version} of {prop.name!r} takes effect at "
            f"{iso(pending.effective_at or pending.published_at)}: cancel it before publishing "
            "another (consent-service schema cancel)"
        )
    if prop.current_version:
        current = await session.get_one(SchemaVersionRow, (prop.name, prop.current_version))
        if current.content_sha256 == digest:
            return PublishedVersion.from_row(current), False
    if effective_at is not None and effective_at <= now:
        effective_at = None  # due already: it takes effect now
    if effective_at is not None and not prop.current_version:
        raise Unprocessable(
            "the first version of a property takes effect when it is published: leave out "
            "effective_at"
        )

    version = (
        await session.scalar(
            select(func.coalesce(func.max(SchemaVersionRow.version), 0)).where(
                SchemaVersionRow.property == prop.name
            )
        )
        or 0
    ) + 1
    material = material or prop.current_version == 0
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
        raise Conflict(
            f"version {version} of {property_name!r} is not pending: only a version that has not "
            "taken effect yet can be cancelled"
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
