"""`postgres.pgbouncer = true` through a real PgBouncer in transaction pooling mode."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import PersistenceError
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.operations import recreate_all
from microcosm_postgres.testing.database import PostgresServer, ensure_test_database
from microcosm_postgres.testing.server import _free_port, _run_as, is_listening
from tests.conftest import run_database

DATABASE = run_database("scale_bouncer")
THREADS, TRANSACTIONS = 4, 200


def graph_on(host: str, port: int, **postgres: Any) -> ExampleGraph:
    config = {"host": host, "port": port, "database_name": DATABASE, **postgres}
    loader = load_each(load_from_environ, load_from_dict(postgres=config))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))


@pytest.fixture(scope="module")
def pgbouncer(example_databases: PostgresServer) -> Iterator[int]:
    """A PgBouncer in transaction pooling mode in front of the suite's server; yields its port."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert Path(binary).exists(), "PgBouncer is not installed: apt-get install pgbouncer (.ci/run does)"
    ensure_test_database("example", example_databases, database_name=DATABASE)
    directory = Path(tempfile.mkdtemp(prefix="microcosm-postgres-pgbouncer-"))
    run_as = _run_as(directory)  # PgBouncer refuses to run as root
    port = _free_port()
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
{DATABASE} = host={example_databases.host} port={example_databases.port} dbname={DATABASE}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""
    )
    (directory / "users.txt").write_text('"example" ""\n')
    if run_as:
        for path in directory.iterdir():
            shutil.chown(path, user=run_as["user"], group=run_as["group"])
    process = subprocess.Popen(
        [binary, str(directory / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **run_as
    )
    try:
        for _ in range(200):  # bounded: at most about 10 s
            if is_listening("127.0.0.1", port) or process.poll() is not None:
                break
            time.sleep(0.05)
        log = directory / "pgbouncer.log"
        assert process.poll() is None, log.read_text() if log.exists() else "PgBouncer exited"
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bounced(pgbouncer: int, example_databases: PostgresServer) -> Iterator[ExampleGraph]:
    direct = graph_on(example_databases.host, example_databases.port)
    recreate_all(direct)
    direct.postgres.dispose()
    graph = graph_on("127.0.0.1", pgbouncer, pgbouncer=True, statement_timeout=4321)
    yield graph
    graph.postgres.dispose()


def test_transactions_through_pgbouncer_from_four_threads(bounced: ExampleGraph) -> None:
    errors: list[BaseException] = []
    timeouts: set[str] = set()

    def work(thread: int) -> None:
        try:
            with SessionContext(bounced) as context:
                assert context.session is not None
                for index in range(TRANSACTIONS):
                    with transaction():
                        bounced.company_store.create(Company(name=f"{thread}-{index}"))
                        # The same statements again and again: psycopg 3 would prepare them.
                        assert bounced.company_store.count(name=f"{thread}-{index}") == 1
                        timeouts.add(str(context.session.execute(text("SHOW statement_timeout")).scalar()))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    bounced.use("sessionmaker", "company_store")  # microcosm builds components lazily, not thread-safely
    threads = [threading.Thread(target=work, args=(number,)) for number in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert timeouts == {"4321ms"}  # SET LOCAL in every transaction, whichever server connection
    with SessionContext(bounced):
        assert bounced.company_store.count() == THREADS * TRANSACTIONS


def test_without_pgbouncer_mode_the_startup_option_is_refused(pgbouncer: int) -> None:
    graph = graph_on("127.0.0.1", pgbouncer, statement_timeout=4321, engine_retries=0)
    try:
        with pytest.raises(PersistenceError), SessionContext(graph):
            graph.company_store.count()
    finally:
        graph.postgres.dispose()
