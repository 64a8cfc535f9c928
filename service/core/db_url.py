"""A database URL as the service reads it: checked with the other settings, and handed to asyncpg's
own parser by both of the service's drivers (docs/scaling.md, "TLS to PostgreSQL")."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url


def _hosts(url: str) -> tuple[str, list[str]]:
    """libpq's form for several servers, `postgresql://user@h1:5432,h2:5432/db`, tried in order
    (with `?target_session_attrs=read-write`, the first that takes writes: docs/scaling.md,
    "Failover"): the URL without its hosts, and the hosts, each with its port. One host: the URL
    as given and no list."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return url, []
    hosts = [host if re.search(r":\d+$", host) else f"{host}:5432" for host in hostlist.split(",")]
    if not all(host.rsplit(":", 1)[0] for host in hosts):
        raise ValueError("a database URL's host list has an empty entry")
    return urlunsplit(parts._replace(netloc=userinfo + at)), hosts


# What a database URL's query may hold: libpq's parameters that asyncpg takes. Both of the
# service's drivers hand the URL to asyncpg itself (sync_dsn: the event writer's connections, and
# SQLAlchemy's pool through its creator, create_engine), so a URL means the same to both. For
# each, the values asyncpg takes (None: any value). libpq's others (`connect_timeout`,
# `application_name`, …) asyncpg would send to the server as settings, which PostgreSQL refuses:
# a URL is checked with the other settings (check_database_url).
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
URL_PARAMETERS: dict[str, tuple[str, ...] | None] = {
    "host": None,  # a Unix socket's folder (the embedded server's URL), or `h1:5432`, repeated
    "port": None,
    "user": None,
    "password": None,
    "passfile": None,
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    # Files: the server's CA (verify-ca, verify-full), a client certificate and its key, a CRL.
    "sslrootcert": None,
    "sslcert": None,
    "sslkey": None,
    "sslcrl": None,
    "sslpassword": None,  # the client key's passphrase
    "ssl_min_protocol_version": TLS_VERSIONS,
    "ssl_max_protocol_version": TLS_VERSIONS,
    "target_session_attrs": (
        "any", "primary", "standby", "prefer-standby", "read-write", "read-only"
    ),
    "krbsrvname": None,
    "gsslib": ("gssapi", "sspi"),
}  # fmt: skip
FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
REPEATABLE = frozenset({"host", "port"})  # SQLAlchemy's form for several servers
FORM = "the form is postgresql://user:password@host:5432/database"


def check_database_url(url: str) -> None:
    """ValueError saying what in `url` the service cannot connect with: not PostgreSQL's form,
    a port that is not one, a query parameter its drivers do not both take or a value they
    cannot. The message never shows the password (nor any other part of the URL as written)."""
    try:
        single, _ = _hosts(url)
        parsed = _postgresql(single)
    except exc.ArgumentError:
        raise ValueError(f"not a URL; {FORM}") from None
    except ValueError as error:
        reason = str(error)
        if not reason.startswith(("not a PostgreSQL URL", "a database URL's host list")):
            # The parser's own words may quote the URL, password and all.
            reason = "the port is not a number" if "int()" in reason else "not a usable URL"
        raise ValueError(f"{reason}; {FORM}") from None
    ports: list[object] = [parsed.port, *_listed_ports(url), *_values(parsed.query.get("port"))]
    ports += [port_of(host) for host in query_hosts(parsed.query.get("host"))]
    for port in ports:
        if port is None:
            continue
        if not str(port).isdigit():
            raise ValueError(f"a port is not a number; {FORM}")
        if not 1 <= int(str(port)) <= 65535:
            raise ValueError(f"port {port} is not a TCP port (1 to 65535)")
    for name, value in parsed.query.items():
        if name not in URL_PARAMETERS:
            raise ValueError(
                f"the query parameter {name!r} is not one the service's drivers both take "
                f"(they take {', '.join(URL_PARAMETERS)})"
            )
        allowed = URL_PARAMETERS[name]
        if isinstance(value, tuple) and name not in REPEATABLE:
            raise ValueError(f"{name} must be given once")
        if allowed is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; not {value!r}")
    _check_tls_files(parsed.query)


def _check_tls_files(query: Mapping[str, str | tuple[str, ...]]) -> None:
    """The TLS files a URL names are there and readable, and a mode that verifies the server
    has its CA: asyncpg would find out only when it connects, with a traceback."""
    for name in FILE_PARAMETERS:
        path = query.get(name)
        if isinstance(path, str) and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ValueError(f"{name} {path!r} is not a file the service can read")
    mode = query.get("sslmode") or os.environ.get("PGSSLMODE")
    if mode not in ("verify-ca", "verify-full") or query.get("sslrootcert"):
        return
    # Where asyncpg looks for the CA when the URL names none (libpq's places).
    fallback = os.environ.get("PGSSLROOTCERT") or os.path.expanduser("~/.postgresql/root.crt")
    if not os.path.isfile(fallback):
        raise ValueError(
            f"sslmode={mode} checks the server's certificate against its CA: name the CA's "
            "certificate file with sslrootcert=/path/to/ca.pem (or set PGSSLROOTCERT)"
        )


def query_hosts(value: str | tuple[str, ...] | None) -> list[str]:
    """The servers a URL's `?host=` names, each as asyncpg reads one: a socket folder, `name`,
    `name:port` (SQLAlchemy's form, repeated or in one list), `[v6]` or `[v6]:port`. An IPv6
    address written bare (`?host=::1`, as libpq takes it) is put in brackets: asyncpg would read
    its first colon as the port's."""
    hosts = [host for entry in _values(value) for host in entry.split(",")]
    return [
        f"[{host}]" if host.count(":") > 1 and not host.startswith(("[", "/")) else host
        for host in hosts
    ]


def port_of(host: str) -> str | None:
    """The port a `query_hosts` entry names, if any."""
    if host.startswith("/"):
        return None
    if host.startswith("["):
        rest = host.partition("]")[2]
        return rest[1:] if rest.startswith(":") else None
    return host.rpartition(":")[2] if ":" in host else None


def _listed_ports(url: str) -> list[str]:
    """The ports of libpq's host list as written (`h1:5432,[::1]:5433,h2`), before `_hosts`
    gives a host without one the default."""
    hostlist = urlsplit(url).netloc.rpartition("@")[2]
    if "," not in hostlist:
        return []
    ports = []
    for entry in hostlist.split(","):
        if entry.startswith("["):
            rest = entry.partition("]")[2]
            if rest.startswith(":"):
                ports.append(rest[1:])
        elif ":" in entry:
            ports.append(entry.rpartition(":")[2])
    return ports


def _values(value: str | tuple[str, ...] | None) -> list[str]:
    return [] if value is None else list(value) if isinstance(value, tuple) else [value]


def _postgresql(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed


def async_url(url: str) -> URL:
    """The URL in SQLAlchemy's asyncpg form: what alembic's configuration names (its offline mode
    reads the dialect from it). The service's engines do not connect with it: they hand the URL
    to asyncpg itself (`sync_dsn`), which takes TLS files SQLAlchemy's keywords do not.

    `sslmode` (libpq's name) becomes asyncpg's `ssl`; several hosts become SQLAlchemy's
    `?host=h1:p1&host=h2:p2`.
    """
    single, hosts = _hosts(url)
    parsed = _postgresql(single).set(drivername="postgresql+asyncpg")
    query = dict(parsed.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    if hosts:
        query["host"] = tuple(hosts)
    return parsed.set(query=query)


def sync_dsn(url: str) -> str:
    """The URL as asyncpg.connect takes it, for both drivers (the event writer, and the pool
    through create_engine's creator): plain `postgresql://`, and, as in libpq, a query parameter
    wins over the URL's own part (asyncpg would take the part): `?user=`, `?password=`, `?host=`
    (the URL's hosts go, its port stays), `?port=`. SQLAlchemy's several servers
    (`?host=h1:5432&host=h2:5432`) become libpq's one list, `?host=h1:5432,h2:5432` (asyncpg
    would keep only the last of a repeated parameter)."""
    single, hosts = _hosts(url)
    parsed = _postgresql(single).set(drivername="postgresql")
    query = {
        name: ",".join(query_hosts(value) if name == "host" else _values(value))
        for name, value in parsed.query.items()
    }
    if "user" in query:
        parsed = parsed._replace(username=query.pop("user"))
    if "password" in query:
        parsed = parsed._replace(password=query.pop("password"))
    if "host" in query:
        if parsed.port is not None and "port" not in query:  # the URL's port still applies
            query["port"] = str(parsed.port)
        parsed, hosts = parsed._replace(host=None, port=None), []
    elif "port" in query and hosts:  # one port for every host, or one each
        ports = query.pop("port").split(",")
        names = [host.rpartition(":")[0] for host in hosts]
        hosts = [
            f"{name}:{ports[i] if len(ports) == len(names) else ports[0]}"
            for i, name in enumerate(names)
        ]
    elif "port" in query and parsed.host and query["port"].isdigit():
        parsed = parsed._replace(port=int(query.pop("port")))
    rendered = parsed.set(query=query).render_as_string(hide_password=False)
    if not hosts:
        return rendered
    parts = urlsplit(rendered)
    return urlunsplit(parts._replace(netloc=parts.netloc + ",".join(hosts)))
