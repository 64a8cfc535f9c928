"""Connected as the service is (a member of `consent_api` that owns nothing), PostgreSQL itself
refuses every way around the append-only evidence (docs/guarantees.md, "Least privilege")."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from service.app import create_app
from service.core.config import Environment
from service.dsr.bodies import DsrAction
from tests.conftest import _admin, make_settings
from tests.factories import api_key, bearer, event, example, published


@pytest.fixture
async def as_service(db_url: str, client: httpx.AsyncClient) -> asyncpg.Connection:
    await published(db_url, example("itsailor"))
    key = await api_key(db_url, "dsr:read")
    subject = uuid.uuid4()
    await client.post("/v1/properties/itsailor/consent-events", json=event(subject_id=subject))
    await client.post("/v1/dsr/history", json={"subject_id": str(subject)}, headers=bearer(key))
    return await asyncpg.connect(db_url)


# An audit row as the owner's functions write it: the service's role may not (migration 0021).
FORGED = (
    "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash, hash_key_id, mode,"
    " reference, matched, deleted, anonymised{columns}) VALUES (gen_random_uuid(), '{action}',"
    " 'cli', 'subject_id', sha256(''), '84e5c9cc17bc', 'delete', 'T-FAKE', 7, 7, 0{values})"
)


def forged(action: str, columns: str = "", values: str = "") -> list[str]:
    return [FORGED.format(action=action, columns=columns, values=values)]


async def in_one_transaction(connection: asyncpg.Connection, statements: list[str]) -> None:
    async with connection.transaction():
        for statement in statements:
            await connection.execute(statement)


@pytest.mark.parametrize(
    "statements",
    [
        ["ALTER TABLE consent_events DISABLE TRIGGER consent_events_append_only"],
        ["ALTER TABLE dsr_audit DISABLE TRIGGER ALL"],
        ["SET session_replication_role = replica"],
        ["SET LOCAL consent.erasure = 'on'", "DELETE FROM consent_events"],
        ["SET LOCAL consent.erasure = 'on'", "UPDATE consent_events SET subject_id = NULL"],
        ["UPDATE dsr_audit SET actor = 'someone else'"],
        ["DELETE FROM dsr_audit"],
        # Erasing rows without the audit row, or re-applying an erasure after a restore
        # (docs/backup.md), is the owner's.
        ["SELECT consent_erase_rows('delete', ARRAY(SELECT seq FROM consent_events))"],
        [
            "SELECT consent_reapply_erasure("
            '(SELECT to_jsonb(a) || \'{"action": "erasure", "mode": "delete"}\''
            " FROM dsr_audit a), ARRAY(SELECT subject_id::text FROM consent_events), '{}')"
        ],
        # The statistics: written only by the database's functions (migrations 0009, 0010).
        ["UPDATE consent_stats_daily SET events = events + 1"],
        ["UPDATE consent_stats_rollup SET rolled = rolled + 1000"],
        ["UPDATE consent_stats_seal SET sealed = sealed + 1000"],
        # An event slipped in below the rollup's watermark would never be counted.
        [
            "INSERT INTO consent_events (seq, event_id, property, subject_id, event_type,"
            " schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,"
            " recorded_at) OVERRIDING SYSTEM VALUE SELECT 0, gen_random_uuid(), property,"
            " subject_id, event_type, schema_version, choices, effective, gpc, dnt,"
            " signals_applied, request_hash, recorded_at FROM consent_events"
        ],
        # Events go in only through consent_record_events (migration 0016): a second row with
        # a stored event's id, an id without its event, or a receipt no event names, by hand.
        [
            "INSERT INTO consent_events (event_id, property, subject_id, event_type,"
            " schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,"
            " recorded_at) SELECT event_id, property, subject_id, event_type, schema_version,"
            " choices, effective, gpc, dnt, signals_applied, request_hash, recorded_at"
            " FROM consent_events"
        ],
        ["INSERT INTO consent_event_ids VALUES (gen_random_uuid(), now())"],
        ["INSERT INTO ledger_receipts (jws, leaves) VALUES ('a.b.c', sha256(''))"],
        ["DELETE FROM consent_stats_hourly"],
        ["INSERT INTO consent_stats_hourly VALUES ('x', now(), 1, 'accept-all', '{}', 0, 1, 0, 0)"],
        ["UPDATE consent_schema_versions SET content = '{}'::jsonb"],
        # Erasures, re-applied erasures and retention purges are audited only by the owner's
        # functions (`backup reapply` would re-apply a forged erasure's tokens), and an audit
        # row is stamped when it is written (migration 0021).
        forged("erasure", ", erasure_tokens", ", ARRAY['00']"),
        forged("erasure"),
        forged("erasure-reapplied"),
        forged("retention-purge"),
        forged("history", ", created_at", ", '2020-01-01T00:00:00Z'"),
        forged("an action of its own"),
        ["TRUNCATE consent_events"],
        ["DROP TABLE dsr_audit"],
        ["CREATE TABLE sneaky (x int)"],
    ],
)
async def test_the_services_role_cannot_get_around_the_evidence(
    as_service: asyncpg.Connection, db: asyncpg.Connection, statements: list[str]
) -> None:
    before = await db.fetchval("SELECT count(*) FROM consent_events")
    audits = await db.fetchval("SELECT count(*) FROM dsr_audit")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await in_one_transaction(as_service, statements)
    await as_service.close()
    assert await db.fetchval("SELECT count(*) FROM consent_events") == before == 1
    assert await db.fetchval("SELECT count(*) FROM dsr_audit") == audits == 1


async def test_the_services_role_writes_its_own_audit_rows_stamped_now(
    as_service: asyncpg.Connection, db: asyncpg.Connection
) -> None:
    """Each action the service audits as itself, in the columns `record_audit` fills; the owner's
    three are the rest of `DsrAction`."""
    own = ["history", "export", "withdrawal", "withdrawal-replayed", "withdrawal-reentered"]
    assert set(DsrAction) - set(own) == {"erasure", "erasure-reapplied", "retention-purge"}
    insert = (
        "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash, hash_key_id,"
        " property, since, until, mode, reference, matched, deleted, anonymised, request_id)"
        " VALUES (gen_random_uuid(), $1, 'key-1', 'ip', sha256(''), 'k1', 'itsailor', NULL,"
        " NULL, NULL, 'W-1', 1, 0, 0, 'req-1') RETURNING created_at = now()"
    )
    async with as_service.transaction():
        stamped = [await as_service.fetchval(insert, action) for action in own]
    await as_service.close()
    assert stamped == [True] * len(own)
    assert await db.fetchval("SELECT count(*) FROM dsr_audit") == 1 + len(own)


async def test_the_service_owns_nothing_and_is_no_superuser(
    as_service: asyncpg.Connection,
) -> None:
    role = await as_service.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    owned = await as_service.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user"
    )
    await as_service.close()
    assert dict(role) == {"rolsuper": False, "rolcreaterole": False, "rolbypassrls": False}
    assert owned == 0


async def test_production_warns_or_refuses_when_connected_as_the_owner(
    owner_url: str, db_url: str, tmp_path: Path, captured_logs_factory: Callable[[], io.StringIO]
) -> None:
    as_owner = create_app(make_settings(owner_url, tmp_path, env=Environment.PRODUCTION))
    logs = captured_logs_factory()
    async with as_owner.router.lifespan_context(as_owner):
        pass
    assert "database_role_too_powerful" in logs.getvalue()

    strict = make_settings(
        owner_url, tmp_path, env=Environment.PRODUCTION, require_least_privilege=True
    )
    refusing = create_app(strict)
    with pytest.raises(RuntimeError, match="consent_api"):
        async with refusing.router.lifespan_context(refusing):
            pass

    as_member = create_app(make_settings(db_url, tmp_path, env=Environment.PRODUCTION))
    logs = captured_logs_factory()
    async with as_member.router.lifespan_context(as_member):
        pass
    assert "database_role_too_powerful" not in logs.getvalue()


async def test_production_says_at_start_when_its_role_may_not_record_events(
    server_url: str,
    owner_url: str,
    tmp_path: Path,
    captured_logs_factory: Callable[[], io.StringIO],
) -> None:
    """Too weak rather than too strong: a login role never made a member of consent_api, whose
    every consent event would be a 503. Said when the service starts, not at the first event."""
    role = f"consent_weak_{uuid.uuid4().hex[:8]}"
    await _admin(server_url, f'CREATE ROLE "{role}" LOGIN')
    try:
        as_role = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
        app = create_app(make_settings(as_role, tmp_path, env=Environment.PRODUCTION))
        logs = captured_logs_factory()
        async with app.router.lifespan_context(app):
            pass
        assert "database_role_cannot_record" in logs.getvalue()
        assert "database_role_too_powerful" not in logs.getvalue()
    finally:
        await _admin(server_url, f'DROP ROLE IF EXISTS "{role}"')


async def test_the_grant_is_checked_again_once_the_database_is_migrated(
    server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    captured_logs_factory: Callable[[], io.StringIO],
) -> None:
    """Started before `migrate`, the role's right to record events cannot be known yet: it is
    looked at again until it can (the check had stopped, and never said so)."""
    import asyncio

    import service.app
    from service.core.migrations import upgrade_to_head
    from tests.conftest import database_url

    monkeypatch.setattr(service.app, "ROLE_CHECK_INTERVAL_SECONDS", 0.05)
    name, role = f"consent_early_{uuid.uuid4().hex[:8]}", f"consent_weak_{uuid.uuid4().hex[:8]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    await _admin(server_url, f'CREATE ROLE "{role}" LOGIN')
    owner = database_url(server_url, name)
    as_role = make_url(owner).set(username=role).render_as_string(hide_password=False)
    try:
        app = create_app(make_settings(as_role, tmp_path, env=Environment.PRODUCTION))
        logs = captured_logs_factory()
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.2)
            assert "database_role_cannot_record" not in logs.getvalue()
            await asyncio.to_thread(upgrade_to_head, owner)
            for _ in range(100):
                if "database_role_cannot_record" in logs.getvalue():
                    break
                await asyncio.sleep(0.05)
        assert "database_role_cannot_record" in logs.getvalue()
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _admin(server_url, f'DROP ROLE IF EXISTS "{role}"')


DEFINERS = (
    "SELECT p.oid::regprocedure::text AS function, p.proconfig FROM pg_proc AS p"
    " WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace"
)


async def test_every_function_run_as_its_owner_looks_in_pg_temp_last(
    db: asyncpg.Connection,
) -> None:
    """A SECURITY DEFINER function whose search path leaves `pg_temp` out searches it first: a
    caller's temporary table would stand in for the schema's (migration 0028)."""
    definers = await db.fetch(DEFINERS)
    assert len(definers) >= 12
    for definer in definers:
        assert "search_path=pg_catalog, public, pg_temp" in (definer["proconfig"] or []), definer


# The review's attack: temporary tables named like the ones the writer's function reads.
SHADOWS = [
    "CREATE TEMP TABLE consent_event_time_window (tolerance interval)",
    "INSERT INTO consent_event_time_window VALUES ('100 years')",
    "CREATE TEMP TABLE consent_schema_versions (property text, version int,"
    " effective_at timestamptz, published_at timestamptz)",
    "INSERT INTO consent_schema_versions VALUES ('itsailor', 42, NULL, '2000-01-01')",
    "CREATE TEMP TABLE consent_event_ids (event_id uuid PRIMARY KEY, recorded_at timestamptz)",
]


async def test_temporary_tables_do_not_answer_the_writers_checks(
    as_service: asyncpg.Connection, db: asyncpg.Connection
) -> None:
    from service.ledger.writer import RECORD_SQL, batch_json
    from tests.ledger.test_store import _stored_event

    # The tests' databases take any event time (tests/conftest.py): this one, as production.
    await db.execute("UPDATE consent_event_time_window SET tolerance = interval '5 minutes'")
    for statement in SHADOWS:
        await as_service.execute(statement)
    try:
        back_dated = _stored_event(recorded_at=datetime(2019, 6, 1, tzinfo=UTC))
        with pytest.raises(asyncpg.PostgresError, match="not the database's"):
            await as_service.fetch(RECORD_SQL, batch_json([back_dated]), None, None)
        unknown_version = _stored_event(schema_version=42)
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="not in force"):
            await as_service.fetch(RECORD_SQL, batch_json([unknown_version]), None, None)
        stored = await db.fetchval("SELECT event_id FROM consent_events LIMIT 1")
        again = _stored_event(event_id=uuid.UUID(str(stored)))
        assert await as_service.fetch(RECORD_SQL, batch_json([again]), None, None) == []
    finally:
        await as_service.close()
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE event_id = $1", stored) == 1
