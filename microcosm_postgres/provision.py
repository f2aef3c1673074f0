"""Create a service's roles and databases by the naming convention, idempotently.

    python -m microcosm_postgres provision --name example --testing
    python -m microcosm_postgres provision --name billing --password "$PW" --read-only-role

Runs through an admin connection: `--admin-url`, else `MICROCOSM_POSTGRES_ADMIN_URL`,
else `postgres.admin_url` from config, else the `postgres` superuser on the configured
host and port. Names are always quoted identifiers and passwords quoted literals;
nothing a caller passes is pasted into SQL as is. Concurrent provisioning (pytest-xdist
workers) is serialized with an advisory lock.

"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import String, create_engine, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from microcosm_postgres import naming
from microcosm_postgres.errors import sqlstate_of, translating

__all__ = [
    "ADMIN_URL_VARIABLE",
    "ProvisionResult",
    "admin_url_for",
    "clone_database",
    "provision",
]

ADMIN_URL_VARIABLE = "MICROCOSM_POSTGRES_ADMIN_URL"

logger = logging.getLogger(__name__)

# Arbitrary constant: the advisory lock that serializes provisioning.
_LOCK_KEY = 7_242_015_001


@dataclass
class ProvisionResult:
    """What `provision` did: the objects it created (empty when all existed)."""

    roles: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        done = [f"created role {role}" for role in self.roles]
        done += [f"created database {database}" for database in self.databases]
        done += [f"granted {grant}" for grant in self.grants]
        return "; ".join(done) or "nothing to do: roles and databases already exist"


def admin_url_for(host: str = "localhost", port: int = 5432, configured: str | None = None) -> URL:
    """The admin URL: `MICROCOSM_POSTGRES_ADMIN_URL`, else `configured`, else postgres@host:port."""
    explicit = os.environ.get(ADMIN_URL_VARIABLE) or configured
    if explicit:
        url = make_url(explicit)
        if "+" not in url.drivername:
            url = url.set(drivername="postgresql+psycopg2")
        return url
    return URL.create("postgresql+psycopg2", username="postgres", host=host, port=port, database="postgres")


def _engine(url: URL, database: str | None = None) -> Engine:
    if database is not None:
        url = url.set(database=database)
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@contextmanager
def _admin(url: URL, database: str | None = None) -> Iterator[Connection]:
    engine = _engine(url, database)
    try:
        with translating(), engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _identifier(connection: Connection, name: str) -> str:
    return str(connection.dialect.identifier_preparer.quote_identifier(name))


def _literal(connection: Connection, value: str) -> str:
    processor = String().literal_processor(connection.dialect)
    assert processor is not None
    return str(processor(value))


def _ensure_role(connection: Connection, role: str, password: str | None, result: ProvisionResult) -> None:
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).scalar()
    password_clause = f" ENCRYPTED PASSWORD {_literal(connection, password)}" if password else ""
    if not exists:
        connection.exec_driver_sql(f"CREATE ROLE {_identifier(connection, role)} LOGIN{password_clause}")
        result.roles.append(role)
    elif password:
        connection.exec_driver_sql(f"ALTER ROLE {_identifier(connection, role)} LOGIN{password_clause}")


def _ensure_database(
    connection: Connection, database: str, owner: str, result: ProvisionResult, template: str | None = None
) -> None:
    exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}).scalar()
    if exists:
        return
    template_clause = f" TEMPLATE {_identifier(connection, template)}" if template else ""
    connection.exec_driver_sql(
        f"CREATE DATABASE {_identifier(connection, database)} OWNER {_identifier(connection, owner)}{template_clause}"
    )
    result.databases.append(database)


@contextmanager
def _locked(connection: Connection) -> Iterator[None]:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
    try:
        yield
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})


def provision(
    name: str,
    *,
    testing: bool = False,
    password: str | None = None,
    read_only_role: bool = False,
    read_only_password: str | None = None,
    database_name: str | None = None,
    username: str | None = None,
    admin_url: URL | str | None = None,
    host: str = "localhost",
    port: int = 5432,
) -> ProvisionResult:
    """Create the service role and its database by convention; a no-op for what exists.

    Args:
        name: the service name (`{name}` role, `{name}_db` / `{name}_test_db` database).
        testing: provision the test database instead of the production one.
        password: the role's password (production roles should have one); an existing
            role gets it set.
        read_only_role: also create `{name}_ro` with CONNECT and SELECT on all tables,
            present and future (tables the service role creates later), and nothing else.
        read_only_password: the read-only role's password.
        database_name, username: override the convention (as the `postgres` config does).
        admin_url: admin connection (see `admin_url_for` for the default).

    Raises:
        DatabaseUnavailableError: when the admin connection cannot be made.
        PersistenceError: when the server refuses (e.g. the admin role lacks CREATEROLE).

    """
    role = naming.check_identifier(username, what="role name") if username else naming.username(name)
    database = (
        naming.check_identifier(database_name, what="database name")
        if database_name
        else naming.database_name(name, testing=testing)
    )
    url = make_url(admin_url) if isinstance(admin_url, str) else admin_url or admin_url_for(host, port)
    result = ProvisionResult()
    with _admin(url) as connection, _locked(connection):
        _ensure_role(connection, role, password, result)
        _ensure_database(connection, database, role, result)
        if read_only_role:
            reader = naming.username(name, read_only=True)
            _ensure_role(connection, reader, read_only_password, result)
            connection.exec_driver_sql(
                f"GRANT CONNECT ON DATABASE {_identifier(connection, database)} TO {_identifier(connection, reader)}"
            )
            result.grants.append(f"CONNECT on {database} to {reader}")
    if read_only_role:
        with _admin(url, database) as connection:
            reader_id, role_id = _identifier(connection, naming.read_only_username(name)), _identifier(connection, role)
            for statement in (
                f"GRANT USAGE ON SCHEMA public TO {reader_id}",
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader_id}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {role_id} IN SCHEMA public GRANT SELECT ON TABLES TO {reader_id}",
            ):
                connection.exec_driver_sql(statement)
            result.grants.append(f"SELECT on {database} tables, now and future, to {naming.read_only_username(name)}")
    return result


def clone_database(admin_url: URL, source: str, target: str, owner: str) -> bool:
    """Create `target` from `source` as a template (no-op when it exists); True if created.

    The source must have no other connections while it is copied: a source still busy
    after five seconds is not copied, and `target` is created empty instead (the
    caller creates the tables either way).

    Raises:
        PersistenceError: when the copy keeps failing.

    """
    result = ProvisionResult()
    deadline = time.monotonic() + 5
    with _admin(admin_url) as connection, _locked(connection):
        while True:
            try:
                _ensure_database(connection, target, owner, result, template=source)
                return bool(result.databases)
            except DBAPIError as error:
                # 55006: the source database is being accessed by other users.
                if sqlstate_of(error) != "55006":
                    raise
                if time.monotonic() > deadline:
                    logger.warning("%s stayed busy; creating %s empty instead of from it", source, target)
                    _ensure_database(connection, target, owner, result)
                    return True
                time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """`python -m microcosm_postgres provision ...`: print what was created."""
    parser = argparse.ArgumentParser(
        prog="python -m microcosm_postgres provision", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--name", required=True, help="service name")
    parser.add_argument("--testing", action="store_true", help="provision {name}_test_db instead of {name}_db")
    parser.add_argument("--password", default=None, help="password for the service role")
    parser.add_argument("--read-only-role", action="store_true", help="also create {name}_ro with SELECT only")
    parser.add_argument("--read-only-password", default=None, help="password for {name}_ro")
    parser.add_argument("--database-name", default=None, help="override the database name")
    parser.add_argument("--admin-url", default=None, help=f"admin connection URL (default: ${ADMIN_URL_VARIABLE})")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5432)
    args = parser.parse_args(argv)
    result = provision(
        args.name,
        testing=args.testing,
        password=args.password,
        read_only_role=args.read_only_role,
        read_only_password=args.read_only_password,
        database_name=args.database_name,
        admin_url=args.admin_url or admin_url_for(args.host, args.port),
    )
    print(result)
    return 0
