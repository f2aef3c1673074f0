"""Create a service's roles and databases by the naming convention, idempotently.

    python -m microcosm_postgres provision --name example --testing
    python -m microcosm_postgres provision --name billing --password-env BILLING_PASSWORD \\
        --read-only-role --read-only-password-env BILLING_RO_PASSWORD

Runs through an admin connection: `--admin-url`, else `MICROCOSM_POSTGRES_ADMIN_URL`,
else `postgres.admin_url` from config, else the `postgres` superuser on the configured
host and port. Names are always quoted identifiers; nothing a caller passes is pasted
into SQL as is. Concurrent provisioning (pytest-xdist workers) is serialized with an
advisory lock.

Every name is checked against PostgreSQL's 63-byte identifier limit before anything is
created. A new database is closed to PUBLIC (`REVOKE CONNECT ... FROM PUBLIC`): only
its owner and, with `read_only_role`, `{name}_ro` may connect.

Passwords never reach the server, a log or an error message: like psql's `\\password`,
the SCRAM-SHA-256 verifier is computed here (`scram_sha_256_verifier`) and only that
verifier is sent, by the one statement that carries it, run on the driver's cursor so
that SQLAlchemy neither logs it nor copies it into an exception.

"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import os
import secrets
import stringprep
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from microcosm_postgres import naming
from microcosm_postgres._cli import report_failure
from microcosm_postgres.errors import (
    DatabaseUnavailableError,
    PermissionDeniedError,
    PersistenceError,
    sqlstate_of,
    translate,
)

__all__ = [
    "ADMIN_URL_VARIABLE",
    "ProvisionResult",
    "admin_url_for",
    "clone_database",
    "drop_database",
    "main",
    "provision",
    "scram_sha_256_verifier",
]

ADMIN_URL_VARIABLE = "MICROCOSM_POSTGRES_ADMIN_URL"

logger = logging.getLogger(__name__)

# Arbitrary constant: the advisory lock that serializes provisioning.
_LOCK_KEY = 7_242_015_001

# What libpq (PQencryptPasswordConn) and the server use by default.
_SCRAM_ITERATIONS = 4096
_SCRAM_PREFIX = "SCRAM-SHA-256$"


@dataclass
class ProvisionResult:
    """What `provision` changed; every list is empty when everything was already in place."""

    roles: list[str] = field(default_factory=list)
    passwords: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    revokes: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)
    # (database, statement) revoking a grant to a role this call created; None: the admin database.
    _revokes_on_failure: list[tuple[str | None, str]] = field(default_factory=list, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        """Whether anything was created, set, granted or revoked."""
        return any((self.roles, self.passwords, self.databases, self.revokes, self.grants))

    def __str__(self) -> str:
        done = [f"created role {role}" for role in self.roles]
        done += [f"set password for role {role}" for role in self.passwords]
        done += [f"created database {database}" for database in self.databases]
        done += [f"revoked {revoke}" for revoke in self.revokes]
        done += [f"granted {grant}" for grant in self.grants]
        return "; ".join(done) or "nothing to do: roles, passwords, databases and grants already in place"


def admin_url_for(host: str = "localhost", port: int = 5432, configured: str | None = None) -> URL:
    """The admin URL: `MICROCOSM_POSTGRES_ADMIN_URL`, else `configured`, else postgres@host:port."""
    explicit = os.environ.get(ADMIN_URL_VARIABLE) or configured
    if explicit:
        url = make_url(explicit)
        if "+" not in url.drivername:
            url = url.set(drivername="postgresql+psycopg2")
        return url
    return URL.create("postgresql+psycopg2", username="postgres", host=host, port=port, database="postgres")


# --- passwords -------------------------------------------------------------------------


def _saslprep(password: str) -> str:
    """RFC 4013 SASLprep, as PostgreSQL applies it (src/common/saslprep.c) before hashing.

    ASCII passwords are used as they are; a password SASLprep prohibits is used
    unnormalized, which is what the server and libpq do too.
    """
    if password.isascii():
        return password
    # Spaces (C.1.2) before "mapped to nothing" (B.1), as PostgreSQL maps: U+200B is in both, and is a space.
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else "" if stringprep.in_table_b1(char) else char for char in password
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return password
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(char) for char in normalized for check in prohibited):
        return password
    if any(stringprep.in_table_d1(char) for char in normalized):
        if any(stringprep.in_table_d2(char) for char in normalized):
            return password
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return password
    return normalized


def scram_sha_256_verifier(password: str, *, salt: bytes | None = None, iterations: int = _SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802 / RFC 7677).

    Given to `CREATE ROLE ... PASSWORD`, the server stores it unchanged, so the
    password itself never leaves this process (psql's `\\password` works the same way).
    The verifier is still secret (it allows an offline guessing attack): it is never
    logged or put in a message either.

    Args:
        salt: 16 random bytes when not given (given: to compare with a stored verifier).
        iterations: the PBKDF2 iteration count.

    """
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    return f"{_SCRAM_PREFIX}{iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _matches(password: str, stored: str | None) -> bool:
    """Whether a stored SCRAM verifier is the one of `password` (False when unknown)."""
    if not stored or not stored.startswith(_SCRAM_PREFIX):
        return False
    try:
        iterations, salt = stored[len(_SCRAM_PREFIX) :].split("$", 1)[0].split(":", 1)
        expected = scram_sha_256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, stored)


# --- statements and their failures -----------------------------------------------------


def _server_message(error: BaseException) -> str:
    """The first line of what the server (or libpq) said; never the statement or its parameters."""
    orig = getattr(error, "orig", None) or error
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) if diag is not None else None
    lines = (message or str(orig) or type(orig).__name__).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__


def _refused(error: BaseException, doing: str) -> PersistenceError:
    """The typed error (class chosen by `errors.translate`) for a failed provisioning step."""
    typed = translate(error)
    cls = type(typed) if typed is not None else PersistenceError
    sqlstate = sqlstate_of(error)
    if issubclass(cls, PermissionDeniedError):
        hint = (
            "The admin connection needs CREATEROLE and CREATEDB (or superuser): point --admin-url "
            f"or ${ADMIN_URL_VARIABLE} at such a role."
        )
    elif issubclass(cls, DatabaseUnavailableError):
        hint = f"Check the server is up and the admin connection (--admin-url, ${ADMIN_URL_VARIABLE}, --host/--port)."
    else:
        hint = "Fix the cause and run provision again: it skips what is already in place."
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    return cls(f"Could not {doing}: {_server_message(error)}{code}. {hint}", sqlstate=sqlstate)


def _run(connection: Connection, statement: str, doing: str) -> None:
    try:
        connection.exec_driver_sql(statement)
    except SQLAlchemyError as error:
        raise _refused(error, doing) from error


def _run_secret(connection: Connection, statement: str, doing: str) -> None:
    """Run a statement that carries a password verifier, on the driver's own cursor.

    SQLAlchemy would log the statement (echo, or a DEBUG logger) and copy it into its
    exception; the driver's cursor does neither, and the typed error raised here is
    built from the server's message alone.
    """
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    except connection.dialect.loaded_dbapi.Error as error:
        raise _refused(error, doing) from error
    finally:
        cursor.close()


def _scalar(connection: Connection, query: str, doing: str, **params: object) -> object:
    try:
        return connection.execute(text(query), params).scalar()
    except SQLAlchemyError as error:
        raise _refused(error, doing) from error


def _identifier(connection: Connection, name: str) -> str:
    return str(connection.dialect.identifier_preparer.quote_identifier(name))


def _literal(value: str) -> str:
    # Only ever a SCRAM verifier (base64, digits, `$`, `:`), but quoted properly all the same.
    return "'" + value.replace("'", "''") + "'"


def _engine(url: URL, database: str | None = None) -> Engine:
    if database is not None:
        url = url.set(database=database)
    return create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        connect_args={"connect_timeout": 5},
    )


def _where(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database} as {url.username or 'the default user'}"


@contextmanager
def _admin(url: URL, database: str | None = None) -> Iterator[Connection]:
    engine = _engine(url, database)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as error:
            raise _refused(error, f"connect to {_where(engine.url)}") from error
        with connection:
            yield connection
    finally:
        engine.dispose()


@contextmanager
def _locked(connection: Connection) -> Iterator[None]:
    _scalar(connection, "SELECT pg_advisory_lock(:key)", "take the provisioning lock", key=_LOCK_KEY)
    try:
        yield
    finally:
        _scalar(connection, "SELECT pg_advisory_unlock(:key)", "release the provisioning lock", key=_LOCK_KEY)


# --- roles, databases, grants ----------------------------------------------------------


def _stored_password(connection: Connection, role: str) -> str | None:
    """The role's stored verifier, when the admin role may read pg_authid (a superuser)."""
    readable = _scalar(
        connection, "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')", "check access to pg_authid"
    )
    if not readable:
        return None
    stored = _scalar(
        connection, "SELECT rolpassword FROM pg_authid WHERE rolname = :role", "read a role's password", role=role
    )
    return str(stored) if stored is not None else None


def _ensure_role(connection: Connection, role: str, password: str | None, result: ProvisionResult) -> None:
    exists = _scalar(connection, "SELECT 1 FROM pg_roles WHERE rolname = :role", f"look up role {role}", role=role)
    quoted = _identifier(connection, role)
    if not exists:
        if password:
            verifier = scram_sha_256_verifier(password)
            _run_secret(connection, f"CREATE ROLE {quoted} LOGIN PASSWORD {_literal(verifier)}", f"create role {role}")
            result.passwords.append(role)
        else:
            _run(connection, f"CREATE ROLE {quoted} LOGIN", f"create role {role}")
        result.roles.append(role)
        logger.info("created role %s", role)
    elif password and not _matches(password, _stored_password(connection, role)):
        verifier = scram_sha_256_verifier(password)
        _run_secret(connection, f"ALTER ROLE {quoted} PASSWORD {_literal(verifier)}", f"set the password of {role}")
        result.passwords.append(role)
        logger.info("set password for role %s", role)


def _database_exists(connection: Connection, database: str) -> bool:
    found = _scalar(
        connection, "SELECT 1 FROM pg_database WHERE datname = :name", f"look up database {database}", name=database
    )
    return bool(found)


def _create_database(
    connection: Connection, database: str, owner: str, result: ProvisionResult, template: str | None = None
) -> None:
    """Create `database` owned by `owner`, closed to PUBLIC (only its owner may connect)."""
    quoted = _identifier(connection, database)
    template_clause = f" TEMPLATE {_identifier(connection, template)}" if template else ""
    # Not through _run: the caller of clone_database retries on 55006 (template busy).
    connection.exec_driver_sql(f"CREATE DATABASE {quoted} OWNER {_identifier(connection, owner)}{template_clause}")
    result.databases.append(database)
    logger.info("created database %s", database)
    _run(connection, f"REVOKE CONNECT ON DATABASE {quoted} FROM PUBLIC", f"close database {database} to PUBLIC")
    result.revokes.append(f"CONNECT on {database} from PUBLIC")
    _grant_connect(connection, database, owner, result)


# An explicit privilege in an ACL (NULL means the built-in defaults, which acldefault spells out).
_HAS_CONNECT = """
SELECT EXISTS (
    SELECT 1 FROM pg_database AS d
    CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) AS acl
    WHERE d.datname = :database AND acl.privilege_type = 'CONNECT'
      AND acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = :role)
)
"""
_HAS_SCHEMA_USAGE = """
SELECT EXISTS (
    SELECT 1 FROM pg_namespace AS n
    CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS acl
    WHERE n.nspname = 'public' AND acl.privilege_type = 'USAGE'
      AND acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = :role)
)
"""
_TABLES_NOT_READABLE = """
SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT has_table_privilege(:role, c.oid, 'SELECT')
"""
_HAS_DEFAULT_SELECT = """
SELECT EXISTS (
    SELECT 1 FROM pg_default_acl AS da
    JOIN pg_namespace AS n ON n.oid = da.defaclnamespace
    CROSS JOIN LATERAL aclexplode(da.defaclacl) AS acl
    WHERE n.nspname = 'public' AND da.defaclobjtype = 'r' AND acl.privilege_type = 'SELECT'
      AND da.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = :owner)
      AND acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = :role)
)
"""


def _grant(
    connection: Connection,
    result: ProvisionResult,
    *,
    missing: str,
    params: dict[str, object],
    grant: str,
    revoke: str,
    grantee: str,
    doing: str,
    report: str,
    database: str | None = None,
) -> None:
    """Run `grant` when the catalog query `missing` says it is needed, then check it took.

    PostgreSQL only warns when the admin role lacks the grant option (nothing is
    granted): the second look at the catalog turns that into an error, so that the
    report never claims a grant that did not happen. `revoke` undoes it if a later step
    fails and `grantee` was created by this call (`database`: where to run it).
    """
    if not _scalar(connection, missing, f"check before we {doing}", **params):
        return
    _run(connection, grant, doing)
    if _scalar(connection, missing, f"check that we could {doing}", **params):
        raise PermissionDeniedError(
            f"Could not {doing}: the server granted nothing (the admin role lacks the grant option). "
            f"Grant it by hand, or point --admin-url or ${ADMIN_URL_VARIABLE} at the owner or a superuser.",
            sqlstate="42501",
        )
    result.grants.append(report)
    if grantee in result.roles:
        result._revokes_on_failure.append((database, revoke))


def _grant_connect(connection: Connection, database: str, role: str, result: ProvisionResult) -> None:
    quoted = f"DATABASE {_identifier(connection, database)}", _identifier(connection, role)
    _grant(
        connection,
        result,
        missing=f"SELECT NOT ({_HAS_CONNECT})",
        params={"database": database, "role": role},
        grant=f"GRANT CONNECT ON {quoted[0]} TO {quoted[1]}",
        revoke=f"REVOKE CONNECT ON {quoted[0]} FROM {quoted[1]}",
        grantee=role,
        doing=f"grant CONNECT on {database} to {role}",
        report=f"CONNECT on {database} to {role}",
    )


def _grant_reads(connection: Connection, database: str, owner: str, reader: str, result: ProvisionResult) -> None:
    """USAGE on schema public, SELECT on its tables now and on those `owner` creates later."""
    quoted_reader, quoted_owner = _identifier(connection, reader), _identifier(connection, owner)
    _grant(
        connection,
        result,
        missing=f"SELECT NOT ({_HAS_SCHEMA_USAGE})",
        params={"role": reader},
        grant=f"GRANT USAGE ON SCHEMA public TO {quoted_reader}",
        revoke=f"REVOKE USAGE ON SCHEMA public FROM {quoted_reader}",
        grantee=reader,
        doing=f"grant USAGE on schema public of {database} to {reader}",
        report=f"USAGE on schema public of {database} to {reader}",
        database=database,
    )
    tables = _scalar(connection, _TABLES_NOT_READABLE, f"check SELECT on {database} tables", role=reader)
    _grant(
        connection,
        result,
        missing=_TABLES_NOT_READABLE,
        params={"role": reader},
        grant=f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quoted_reader}",
        revoke=f"REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {quoted_reader}",
        grantee=reader,
        doing=f"grant SELECT on the tables of {database} to {reader}",
        report=f"SELECT on {tables} existing tables of {database} to {reader}",
        database=database,
    )
    default_privileges = f"ALTER DEFAULT PRIVILEGES FOR ROLE {quoted_owner} IN SCHEMA public"
    _grant(
        connection,
        result,
        missing=f"SELECT NOT ({_HAS_DEFAULT_SELECT})",
        params={"owner": owner, "role": reader},
        grant=f"{default_privileges} GRANT SELECT ON TABLES TO {quoted_reader}",
        revoke=f"{default_privileges} REVOKE SELECT ON TABLES FROM {quoted_reader}",
        grantee=reader,
        doing=f"grant SELECT on future tables of {owner} in {database} to {reader}",
        report=f"SELECT on future tables of {owner} in {database} to {reader}",
        database=database,
    )


def _url(admin_url: URL | str | None, host: str, port: int) -> URL:
    return make_url(admin_url) if isinstance(admin_url, str) else admin_url or admin_url_for(host, port)


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
    """Create the service role and its database by convention; a no-op for what is in place.

    Every name is checked before anything is created. A database this creates is closed
    to PUBLIC: only the service role (its owner) and, with `read_only_role`, `{name}_ro`
    get CONNECT. Passwords are sent as SCRAM-SHA-256 verifiers computed here (see
    `scram_sha_256_verifier`), and are set only when the stored one differs (or cannot
    be read: the admin role is not a superuser). When a step fails, the roles and
    databases this call created are dropped again before the error is raised.

    Args:
        name: the service name (`{name}` role, `{name}_db` / `{name}_test_db` database).
        testing: provision the test database instead of the production one.
        password: the role's password (production roles should have one).
        read_only_role: also create `{name}_ro` with CONNECT and SELECT on all tables,
            present and future (tables the service role creates later), and nothing else.
        read_only_password: the read-only role's password.
        database_name, username: override the convention (as the `postgres` config does).
        admin_url: admin connection (see `admin_url_for` for the default).

    Returns:
        What was changed (`str()` of it is the one-line report the command prints).

    Raises:
        InvalidNameError: when a name is empty or longer than 63 bytes (nothing is created).
        DatabaseUnavailableError: when the admin connection cannot be made
            (`AuthenticationFailedError` when its credentials are refused).
        PermissionDeniedError: when the admin role lacks CREATEROLE / CREATEDB.
        PersistenceError: when the server refuses a step for another reason.

    """
    role = naming.check_identifier(username, what="role name") if username else naming.username(name)
    database = (
        naming.check_identifier(database_name, what="database name")
        if database_name
        else naming.database_name(name, testing=testing)
    )
    reader = naming.username(name, read_only=True) if read_only_role else None
    url = _url(admin_url, host, port)
    result = ProvisionResult()
    try:
        with _admin(url) as connection, _locked(connection):
            _ensure_role(connection, role, password, result)
            if reader is not None:
                _ensure_role(connection, reader, read_only_password, result)
            if not _database_exists(connection, database):
                try:
                    _create_database(connection, database, role, result)
                except SQLAlchemyError as error:
                    raise _refused(error, f"create database {database}") from error
            _grant_connect(connection, database, role, result)
            if reader is not None:
                _grant_connect(connection, database, reader, result)
        if reader is not None:
            with _admin(url, database) as connection:
                _grant_reads(connection, database, role, reader, result)
    except PersistenceError:
        _undo(url, result)
        raise
    return result


def _undo(url: URL, result: ProvisionResult) -> None:
    """After a failed provision, drop the roles and databases this call created (best effort).

    Grants to those roles are revoked first (in reverse order, each in its database), so
    that the roles can be dropped; roles and databases that existed before are left alone.
    """
    if not (result.roles or result.databases):
        return
    try:
        for database, statement in reversed(result._revokes_on_failure):
            if database is None or database not in result.databases:
                with _admin(url, database) as connection:
                    _run(connection, statement, "undo a grant")
        with _admin(url) as connection:
            for created in result.databases:
                _run(connection, f"DROP DATABASE {_identifier(connection, created)}", f"drop database {created}")
            for role in reversed(result.roles):
                _run(connection, f"DROP ROLE {_identifier(connection, role)}", f"drop role {role}")
        logger.info("provisioning failed: dropped what it had created (%s)", result)
    except PersistenceError as error:
        logger.warning("provisioning failed, and what it had created (%s) could not all be dropped: %s", result, error)


def clone_database(admin_url: URL, source: str, target: str, owner: str) -> bool:
    """Create `target` from `source` as a template (no-op when it exists); True if created.

    The source must have no other connections while it is copied: a source still busy
    after five seconds is not copied, and `target` is created empty instead (the
    caller creates the tables either way). Like every database `provision` creates,
    `target` is closed to PUBLIC.

    Raises:
        InvalidNameError: when `target` is longer than PostgreSQL's 63-byte limit.
        PersistenceError: when the copy keeps failing.

    """
    naming.check_identifier(target, what="database name")
    result = ProvisionResult()
    deadline = time.monotonic() + 5
    with _admin(admin_url) as connection, _locked(connection):
        if _database_exists(connection, target):
            return False
        while True:
            try:
                _create_database(connection, target, owner, result, template=source)
                return True
            except SQLAlchemyError as error:
                # 55006: the source database is being accessed by other users.
                if sqlstate_of(error) != "55006":
                    raise _refused(error, f"create database {target} from {source}") from error
                if time.monotonic() > deadline:
                    logger.warning("%s stayed busy; creating %s empty instead of from it", source, target)
                    break
                time.sleep(0.2)
        try:
            _create_database(connection, target, owner, result)
        except SQLAlchemyError as error:
            raise _refused(error, f"create database {target}") from error
        return True


def drop_database(admin_url: URL, database: str) -> bool:
    """Drop `database` (closing its connections) through `admin_url`; True if it existed.

    Meant for the copies `clone_database` made (the pytest plugin's per-worker copies).

    Raises:
        InvalidNameError: when `database` is longer than PostgreSQL's 63-byte limit.
        PersistenceError: when the drop fails (the role does not own it, ...).

    """
    naming.check_identifier(database, what="database name")
    with _admin(admin_url) as connection:
        if not _database_exists(connection, database):
            return False
        quoted = _identifier(connection, database)
        _run(connection, f"DROP DATABASE {quoted} WITH (FORCE)", f"drop database {database}")
        logger.info("dropped database %s", database)
        return True


# --- the command -----------------------------------------------------------------------


class _UsageError(Exception):
    """A command-line mistake: reported by argparse (exit 2)."""


def _secret(option: str, variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise _UsageError(f"{option} {variable}: the environment variable {variable} is not set or empty")
    return value


def _passwords(args: argparse.Namespace) -> tuple[str | None, str | None]:
    password = args.password
    if args.password_env is not None:
        password = _secret("--password-env", args.password_env)
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise _UsageError("--password-stdin: standard input held no password (an empty first line)")
        password = line
    read_only_password = args.read_only_password
    if args.read_only_password_env is not None:
        read_only_password = _secret("--read-only-password-env", args.read_only_password_env)
    return password, read_only_password


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m microcosm_postgres provision",
        description=(
            "Create a service's role and database by the naming convention; a no-op for what is in place. "
            "Prints one line saying what changed. Exit status: 0 done, 1 the server refused "
            "(a one-line error on stderr), 2 bad arguments."
        ),
    )
    parser.add_argument("--name", required=True, help="service name")
    parser.add_argument("--testing", action="store_true", help="provision {name}_test_db instead of {name}_db")
    password = parser.add_mutually_exclusive_group()
    password.add_argument(
        "--password-env", metavar="VAR", default=None, help="read the service role's password from $VAR"
    )
    password.add_argument(
        "--password-stdin", action="store_true", help="read the service role's password from the first line of stdin"
    )
    password.add_argument(
        "--password", default=None, help="the service role's password (visible in `ps`: prefer the two above)"
    )
    parser.add_argument("--read-only-role", action="store_true", help="also create {name}_ro with SELECT only")
    read_only = parser.add_mutually_exclusive_group()
    read_only.add_argument(
        "--read-only-password-env", metavar="VAR", default=None, help="read {name}_ro's password from $VAR"
    )
    read_only.add_argument(
        "--read-only-password", default=None, help="{name}_ro's password (visible in `ps`: prefer the one above)"
    )
    parser.add_argument("--database-name", default=None, help="override the database name")
    parser.add_argument("--admin-url", default=None, help=f"admin connection URL (default: ${ADMIN_URL_VARIABLE})")
    parser.add_argument("--host", default="localhost", help="server host when no admin URL is given")
    parser.add_argument("--port", type=int, default=5432, help="server port when no admin URL is given")
    return parser


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """`python -m microcosm_postgres provision ...`: print what changed, in one line.

    Returns 0 when done, 1 when the server refused (a one-line typed error on stderr,
    never a traceback, never a password); bad arguments exit 2 (argparse).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        password, read_only_password = _passwords(args)
    except _UsageError as error:
        parser.error(str(error))
    if args.password is not None or args.read_only_password is not None:
        _warn(
            "a password on the command line is visible to other users (ps, shell history); "
            "use --password-env VAR / --password-stdin / --read-only-password-env VAR instead"
        )
    if args.read_only_role and not read_only_password:
        _warn(
            f"no password for {naming.read_only_username(args.name)}: a new role gets none (it can log in only "
            "where pg_hba.conf trusts it); give one with --read-only-password-env VAR"
        )
    if not args.testing and not password:
        _warn(f"no password for role {args.name}: production roles should have one (--password-env VAR)")
    try:
        admin_url = make_url(args.admin_url) if args.admin_url else admin_url_for(args.host, args.port)
    except ArgumentError:
        parser.error(f"the admin URL (--admin-url or ${ADMIN_URL_VARIABLE}) is not a valid database URL")
    try:
        result = provision(
            args.name,
            testing=args.testing,
            password=password,
            read_only_role=args.read_only_role,
            read_only_password=read_only_password,
            database_name=args.database_name,
            admin_url=admin_url,
        )
    except PersistenceError as error:
        return report_failure(error)
    print(result)
    return 0
