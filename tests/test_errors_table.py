"""`errors.TRANSLATIONS`, row by row: each fault provoked against PostgreSQL, on the driver under test.

Faults happen for real wherever a live connection can produce them. SQLSTATEs the server
only sends while a login is refused or the server is going away (where neither driver
gives us the code, or the connection is already gone) are raised by the server itself
with `RAISE ... USING ERRCODE`, which still carries them through the real driver.

"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import TRANSLATIONS, PersistenceError, translating
from microcosm_postgres.example import ExampleGraph
from microcosm_postgres.factories.engine import username_for
from microcosm_postgres.testing.database import PostgresServer
from tests.conftest import make_graph
from tests.scram import ScramServer, scram_server_running
from tests.test_errors import TABLES


@pytest.fixture(scope="module")
def scram_server() -> Iterator[ScramServer]:
    with scram_server_running() as server:
        yield server


@dataclass
class Lab:
    """What a provoker may use: the example graph's engine, an admin engine, a scram server."""

    graph: ExampleGraph
    admin: Engine
    scram: ScramServer
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        return self.graph.postgres

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in a transaction with two temporary tables, rolled back at the end."""
        with self.engine.connect() as connection, connection.begin():
            connection.execute(text(TABLES))
            yield connection


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _sql(sql: str, **params: Any) -> Callable[[Lab], None]:
    def provoke(lab: Lab) -> None:
        with lab.connection() as connection:
            connection.execute(text(sql), params)

    return provoke


def _raised(sqlstate: str) -> Callable[[Lab], None]:
    """The server raises an error with `sqlstate` (for codes a live connection cannot produce)."""
    return _sql(f"DO $$ BEGIN RAISE EXCEPTION 'provoked' USING ERRCODE = '{sqlstate}'; END $$")


def _lock_not_available(lab: Lab) -> None:
    key = uuid.uuid4().int % 2**62
    with lab.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            with lab.connection() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '1ms'"))
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            holder.commit()


def _row_locked_nowait(lab: Lab) -> None:
    """A row locked by one transaction, read FOR UPDATE NOWAIT by another."""
    table = _unique("errors_locked")
    with lab.engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (0)"))
    lab.cleanups.append(lambda: _drop_table(lab.engine, table))
    with lab.engine.connect() as holder, holder.begin():
        holder.execute(text(f"SELECT n FROM {table} FOR UPDATE"))
        with lab.engine.connect() as connection, connection.begin():
            connection.execute(text(f"SELECT n FROM {table} FOR UPDATE NOWAIT"))


def _statement_timeout(lab: Lab) -> None:
    with lab.connection() as connection:
        connection.execute(text("SET LOCAL statement_timeout = '10ms'"))
        connection.execute(text("SELECT pg_sleep(5)"))


def _serialization_failure(lab: Lab) -> None:
    """Two REPEATABLE READ transactions update the same row: the second cannot serialize."""
    table = _unique("errors_counter")
    with lab.engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (0)"))
    lab.cleanups.append(lambda: _drop_table(lab.engine, table))
    options = {"isolation_level": "REPEATABLE READ"}
    with lab.engine.connect().execution_options(**options) as first:
        with lab.engine.connect().execution_options(**options) as second:
            first.execute(text(f"SELECT n FROM {table}"))
            second.execute(text(f"SELECT n FROM {table}"))
            first.execute(text(f"UPDATE {table} SET n = n + 1"))
            first.commit()
            second.execute(text(f"UPDATE {table} SET n = n + 1"))


def _drop_table(engine: Engine, table: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


def _deadlock(lab: Lab) -> None:
    """Two transactions each take one advisory lock, then wait for the other's."""
    first, second = uuid.uuid4().int % 2**62, uuid.uuid4().int % 2**62
    both_hold_one = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def take(mine: int, theirs: int) -> None:
        try:
            with lab.engine.connect() as connection, connection.begin():
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": mine})
                both_hold_one.wait()
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": theirs})
        except sa_exc.DBAPIError as error:
            errors.append(error)

    threads = [threading.Thread(target=take, args=keys) for keys in ((first, second), (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1  # the server broke the deadlock by aborting one of them
    raise errors[0]


def _permission_denied(lab: Lab) -> None:
    """A role without any privilege reads a table (the example role becomes it with SET ROLE)."""
    role = _unique("errors_noprivilege")
    with lab.admin.begin() as admin:
        admin.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        admin.execute(text(f"GRANT {role} TO {username_for(lab.graph.metadata, lab.graph.config['postgres'])}"))
    lab.cleanups.append(lambda: _drop_role(lab.admin, role))
    with lab.connection() as connection:
        connection.execute(text(f"SET LOCAL ROLE {role}"))
        connection.execute(text("SELECT * FROM parent"))


def _drop_role(admin: Engine, role: str) -> None:
    with admin.begin() as connection:
        connection.execute(text(f"DROP ROLE IF EXISTS {role}"))


def _aborted(lab: Lab) -> None:
    with lab.connection() as connection:
        with suppress(sa_exc.DBAPIError):
            connection.execute(text("INSERT INTO child VALUES (2, 99, 1)"))
        connection.execute(text("SELECT 1"))


def _login_refused(lab: Lab) -> None:
    graph = make_graph(**lab.scram.config(password="wrong-password"), engine_retries=0)
    try:
        graph.postgres.connect()
    finally:
        graph.postgres.dispose()


def _database_missing(lab: Lab) -> None:
    graph = make_graph(database_name=_unique("errors_no_such_db"), engine_retries=0)
    try:
        graph.postgres.connect()
    finally:
        graph.postgres.dispose()


def _connection_lost(lab: Lab) -> None:
    with lab.engine.connect() as victim, lab.engine.connect() as killer:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar()
        killer.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
        victim.execute(text("SELECT 1"))


def _commit_outcome_unknown(lab: Lab) -> None:
    """The backend is terminated while COMMIT runs (a deferred trigger makes it slow)."""
    with SessionContext(lab.graph), transaction() as session:
        session.execute(
            text(
                """
                CREATE TEMP TABLE slow_commit (id int);
                CREATE FUNCTION pg_temp.slow_commit() RETURNS trigger LANGUAGE plpgsql
                    AS $$ BEGIN PERFORM pg_sleep(10); RETURN NULL; END $$;
                CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commit
                    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.slow_commit();
                INSERT INTO slow_commit VALUES (1);
                """
            )
        )
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        killer = threading.Thread(target=_terminate_during_commit, args=(lab.admin, pid))
        killer.start()
        lab.cleanups.append(lambda: killer.join(timeout=15))


def _terminate_during_commit(admin: Engine, pid: int) -> None:
    with admin.connect() as connection:
        for _ in range(1000):  # at most ~10 s: the trigger sleeps that long
            committing = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid AND state = 'active' AND query = 'COMMIT'"
                ),
                {"pid": pid},
            ).scalar()
            connection.commit()
            if committing:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                return
            threading.Event().wait(0.01)


def _connection_failed(lab: Lab) -> None:
    graph = make_graph(port=lab.scram.closed_port, engine_retries=0)
    try:
        graph.postgres.connect()
    finally:
        graph.postgres.dispose()


def _checkout_rejected(lab: Lab) -> None:
    """Every connection the pool opens is terminated by the server as soon as it is made."""
    graph = make_graph()
    engine: Engine = graph.postgres

    @event.listens_for(engine, "connect")
    def terminate(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
        cursor.close()
        dbapi_connection.commit()
        with lab.admin.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})

    try:
        engine.connect()
    finally:
        engine.dispose()


def _pool_timeout(lab: Lab) -> None:
    graph = make_graph(pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with graph.postgres.connect():
            graph.postgres.connect()
    finally:
        graph.postgres.dispose()


PROVOKERS: dict[str, Callable[[Lab], None]] = {
    "23505": _sql("INSERT INTO parent VALUES (2, 'jane.doe@x.io')"),
    "23503": _sql("INSERT INTO child VALUES (2, 99, 1)"),
    "23503 on delete": _sql("DELETE FROM parent"),
    "23000": _raised("23000"),
    "23001": _raised("23001"),
    "23502": _sql("INSERT INTO child VALUES (3, 1, NULL)"),
    "23514": _sql("INSERT INTO child VALUES (3, 1, -5)"),
    "23P01": _sql(
        "CREATE TEMP TABLE booking (span int4range, EXCLUDE USING gist (span WITH &&));"
        "INSERT INTO booking VALUES ('[1,5)'), ('[3,8)')"
    ),
    "22P02": _sql("SELECT CAST(:value AS uuid)", value="not-a-uuid"),
    "22001": _sql("INSERT INTO parent VALUES (3, :value)", value="x" * 40),
    "22003": _sql("INSERT INTO parent VALUES (:value, 'y')", value=2**40),
    "22007": _sql("SELECT CAST(:value AS date)", value="garbage"),
    "22008": _sql("SELECT CAST(:value AS date)", value="2020-13-45"),
    "22021": _sql("SELECT convert_from(:value, 'UTF8')", value=b"\xff"),
    "22023": _sql("SELECT generate_series(1, 10, 0)"),
    "22P05": _sql("SELECT convert_to(:value, 'LATIN1')", value="\u20ac"),
    "55P03": _lock_not_available,
    "55P03 nowait": _row_locked_nowait,
    "42P07": _sql("CREATE TEMP TABLE parent (id int)"),
    "42P01": _sql("SELECT * FROM no_such_relation_here"),
    "57014": _statement_timeout,
    "40001": _serialization_failure,
    "40P01": _deadlock,
    "42501": _permission_denied,
    "25P02": _aborted,
    "28P01": _raised("28P01"),
    "28000": _raised("28000"),
    "login refused": _login_refused,
    "3D000": _raised("3D000"),
    "database missing": _database_missing,
    "08": _raised("08006"),
    "57P01": _raised("57P01"),
    "57P02": _raised("57P02"),
    "57P03": _raised("57P03"),
    "53300": _raised("53300"),
    "connection lost": _connection_lost,
    "connection failed": _connection_failed,
    "commit outcome unknown": _commit_outcome_unknown,
    "checkout rejected": _checkout_rejected,
    "pool timeout": _pool_timeout,
    "driver refused value": _sql("INSERT INTO parent VALUES (5, :value)", value="a\x00b"),
}


@pytest.fixture
def lab(graph: ExampleGraph, postgres_server: PostgresServer, scram_server: ScramServer) -> Iterator[Lab]:
    admin = create_engine(postgres_server.admin_url)
    lab = Lab(graph=graph, admin=admin, scram=scram_server)
    try:
        yield lab
    finally:
        for cleanup in reversed(lab.cleanups):
            cleanup()
        admin.dispose()


def test_every_row_is_provoked() -> None:
    assert sorted(PROVOKERS) == sorted(TRANSLATIONS)


@pytest.mark.parametrize("fault", sorted(TRANSLATIONS))
def test_row(lab: Lab, fault: str) -> None:
    row = TRANSLATIONS[fault]
    with pytest.raises(PersistenceError) as raised, translating(model_name="Thing"):
        PROVOKERS[fault](lab)
    error = raised.value
    assert error.fault == fault
    assert type(error) is row.error_class
    assert error.__cause__ is not None  # what the driver said stays on the chain
    assert "{" not in str(error)
    assert "?" not in str(error)  # no template field left unknown
    if fault[:2].isdigit():
        assert (error.sqlstate or "").startswith(fault[:5])
    # The example graph's connections still work after the fault.
    with lab.engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("42P07", 'relation "parent" already exists'),
        ("42P01", 'relation "no_such_relation_here" does not exist'),
        ("42501", "permission denied for table"),
    ],
)
def test_rows_where_the_server_names_the_object_say_which(lab: Lab, fault: str, words: str) -> None:
    """The server's primary message names the relation; the typed error carries it (a migration
    failing with 42P07 says which table), and still never the detail."""
    with pytest.raises(PersistenceError) as raised, translating():
        PROVOKERS[fault](lab)
    assert raised.value.fault == fault
    assert words in str(raised.value)
