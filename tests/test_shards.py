"""Shards on three real throwaway clusters: `shards.<name>.postgres`, `SessionContext(shard=...)`,
`client_shard`, the `shards` helpers and `SHARD`.

The `global` shard is the suite's own database; `east`, `west` and `north` are each on a
cluster of their own, started once for this module and deleted at the end. The driver
comes from the suite's config (`EXAMPLE__POSTGRES__DRIVER`), which the shards inherit.

"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from microcosm_postgres import migrate
from microcosm_postgres import shards as shard_helpers
from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import (
    AuthenticationFailedError,
    DatabaseMissingError,
    DatabaseUnavailableError,
    MigrationsBehindError,
    ShardChangeError,
    ShardConfigurationError,
    ShardNotAllowedError,
    UnknownShardError,
    UnsafeOperationError,
)
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.factories.engine import make_url
from microcosm_postgres.factories.shards import ClientShard, same_database
from microcosm_postgres.graph import as_graph
from microcosm_postgres.migrate import MissingEngineMigrationsError
from microcosm_postgres.provision import provision
from microcosm_postgres.sharded_subgraph import ShardGraph, shard_of, subgraph, subgraphs
from microcosm_postgres.store import Store
from microcosm_postgres.testing.server import _free_port
from microcosm_postgres.testing.topology import ServerGroup
from tests.conftest import database_in_use, run_database, tables_on
from tests.scram import scram_server_running
from tests.test_scale_routing import ScaleSecret

SHARD_DATABASE = run_database("shard")
SHARDS = ("east", "west", "north")
PASSWORD = "pw-must-never-show-9f3"

REVISION = '''"""shard probe

Revision ID: 5a1d0000beef
Revises:
Create Date: 2026-11-29

"""
from alembic import op
import sqlalchemy as sa

revision = "5a1d0000beef"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("shard_probe", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("shard_probe")
'''


@pytest.fixture(scope="module")
def servers(example_databases: Any) -> Iterator[ServerGroup]:
    """Three independent clusters, each with the example role and the shard database."""
    with ServerGroup.start(3) as group:
        for server in group.servers:
            provision("example", testing=True, database_name=SHARD_DATABASE, admin_url=server.admin_url)
        yield group


def shard_config(servers: ServerGroup) -> dict[str, Any]:
    return {
        name: {"postgres": {"host": server.host, "port": server.port, "database_name": SHARD_DATABASE}}
        for name, server in zip(SHARDS, servers.servers, strict=True)
    }


def sharded_graph(servers: ServerGroup, *, registry: Registry | None = None, **config: Any) -> ExampleGraph:
    base: dict[str, Any] = {
        "shards": shard_config(servers),
        "client_shard": {"mapping": {"client-a": "east", "client-b": "west"}},
    }
    base.update(config)
    loader = load_each(load_from_environ, load_from_dict(base))
    if registry is None:
        return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader, registry=registry))


def dispose(graph: ExampleGraph) -> None:
    for engine in cast(Any, graph).shards.values():
        engine.dispose()


@pytest.fixture
def graph(servers: ServerGroup) -> Iterator[ExampleGraph]:
    graph = sharded_graph(servers)
    shard_helpers.recreate_all(graph)
    yield graph
    dispose(graph)


def rows_on(url: URL, database: str, sql: str) -> list[Any]:
    """Rows read directly on a server, not through the library."""
    engine = create_engine(url.set(database=database), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)).scalars())
    finally:
        engine.dispose()


def test_rows_land_only_on_their_shard(graph: ExampleGraph, servers: ServerGroup) -> None:
    for name in SHARDS:
        with SessionContext(graph, shard=name) as context, transaction():
            assert context.shard == name
            graph.company_store.create(Company(name=f"{name}-co"))
    with SessionContext(graph) as context, transaction():
        assert context.shard == "global"
        graph.company_store.create(Company(name="global-co"))
    for name, server in zip(SHARDS, servers.servers, strict=True):
        assert rows_on(server.admin_url, SHARD_DATABASE, "SELECT name FROM company") == [f"{name}-co"]
    main = as_graph(graph).postgres.url.set(password=None)
    global_names = rows_on(main, database_in_use(), "SELECT name FROM company")
    assert global_names == ["global-co"]
    # And through the library, each shard sees only its own rows.
    with SessionContext(graph, shard="west"):
        assert [company.name for company in graph.company_store.search()] == ["west-co"]


def test_the_shards_components(graph: ExampleGraph, servers: ServerGroup) -> None:
    engines = cast(Any, graph).shards
    assert list(engines) == ["global", *SHARDS]
    assert engines["global"] is as_graph(graph).postgres
    assert engines["east"].url.port == servers[0].port
    # Shards inherit the driver (and every other postgres key they do not set).
    assert engines["east"].url.drivername == as_graph(graph).postgres.url.drivername
    makers = cast(Any, graph).sessionmakers
    assert makers["global"] is as_graph(graph).sessionmaker
    assert set(makers) == {"global", *SHARDS}


def test_unknown_shard_is_a_typed_400(graph: ExampleGraph) -> None:
    with pytest.raises(UnknownShardError) as raised:
        SessionContext(graph, shard="nowhere").open()
    assert raised.value.status_code == 400
    assert raised.value.shard == "nowhere"
    assert "'east'" in str(raised.value)
    with pytest.raises(UnknownShardError):
        SessionContext.make(graph, shard="nowhere")
    with pytest.raises(UnknownShardError):
        subgraph(graph, "nowhere")


def test_a_request_chooses_its_shard_only_through_the_client_mapping(graph: ExampleGraph) -> None:
    chooser = cast(Any, graph).client_shard
    assert isinstance(chooser, ClientShard)
    assert chooser.shard_for({"X-Request-Client": "client-a"}) == "east"
    assert chooser.shard_for({"x-request-client": "client-b", "X-Request-Shard": "west"}) == "west"
    refused = [
        {"X-Request-Shard": "west"},  # a shard named by the caller, no client
        {"X-Request-Client": "client-a", "X-Request-Shard": "west"},  # another shard than its client's
        {"X-Request-Client": "stranger"},  # a client not in the allow-list
        {},
    ]
    for headers in refused:
        with pytest.raises(ShardNotAllowedError) as raised:
            chooser.shard_for(headers)
        assert raised.value.status_code == 403


def test_a_client_mapping_to_an_unconfigured_shard_is_refused_at_creation(servers: ServerGroup) -> None:
    graph = sharded_graph(servers, client_shard={"mapping": {"client-z": "south"}})
    with pytest.raises(ShardConfigurationError) as raised:
        graph.use("client_shard")
    assert "south" in str(raised.value)


def test_the_shard_cannot_change_inside_a_transaction(graph: ExampleGraph, servers: ServerGroup) -> None:
    with SessionContext(graph, shard="east") as context:
        with pytest.raises(AttributeError):
            context.shard = "west"  # type: ignore[misc]
        with transaction():
            graph.company_store.create(Company(name="east-only"))
            with pytest.raises(ShardChangeError):
                SessionContext(graph, shard="west").open()
            with pytest.raises(ShardChangeError):
                SessionContext(graph).open()  # global is another shard too
            # Still on east, and the transaction goes on.
            graph.company_store.create(Company(name="east-too"))
        # After the transaction, another shard may be opened (a session of its own).
        with SessionContext(graph, shard="west"):
            assert graph.company_store.count() == 0
        assert graph.company_store.count() == 2
    assert rows_on(servers[1].admin_url, SHARD_DATABASE, "SELECT count(*) FROM company") == [0]
    assert rows_on(servers[0].admin_url, SHARD_DATABASE, "SELECT count(*) FROM company") == [2]


def test_subgraphs_run_single_database_code_per_shard(graph: ExampleGraph, servers: ServerGroup) -> None:
    shards = subgraphs(graph)
    assert [shard_of(shard) for shard in shards] == ["global", *SHARDS]
    north = shards[3]
    assert isinstance(north, ShardGraph)
    assert north.postgres.url.port == servers[2].port
    assert north.config["postgres"]["port"] == servers[2].port
    with SessionContext(north) as context:
        assert context.shard == "north"
        with transaction():
            graph.company_store.create(Company(name="north-co"))
    assert rows_on(servers[2].admin_url, SHARD_DATABASE, "SELECT name FROM company") == ["north-co"]


def test_create_all_and_health_per_shard(servers: ServerGroup, capsys: pytest.CaptureFixture[str]) -> None:
    graph = sharded_graph(servers)
    try:
        shard_helpers.createall_command(graph, ["--drop"])
        out = capsys.readouterr().out
        for name, server in zip(SHARDS, servers.servers, strict=True):
            assert f"shard {name!r}:" in out
            assert {"company", "employee"} <= tables_on(server.admin_url, SHARD_DATABASE)
        assert shard_helpers.create_all(graph) == {name: {"postgres": []} for name in ("global", *SHARDS)}
        report = shard_helpers.check_health(graph)
        assert list(report) == ["global", *SHARDS]
        assert str(servers[1].port) in report["west"]
        assert "is answering" in report["west"]
    finally:
        dispose(graph)


def test_health_names_the_shard_that_does_not_answer(servers: ServerGroup, caplog: pytest.LogCaptureFixture) -> None:
    config = shard_config(servers)
    config["dead"] = {
        "postgres": {"host": "127.0.0.1", "port": _free_port(), "password": PASSWORD, "engine_retries": 0}
    }
    graph = sharded_graph(servers, shards=config)
    try:
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(DatabaseUnavailableError) as raised:
                shard_helpers.check_health(graph)
        message = str(raised.value)
        assert "shard 'dead'" in message
        assert "shard 'east'" in message  # the ones that answered are reported too
        assert PASSWORD not in message
        assert PASSWORD not in caplog.text
    finally:
        dispose(graph)


def test_migrations_run_on_every_shard(servers: ServerGroup, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "5a1d0000beef_shard_probe.py").write_text(REVISION)
    registry = Registry()
    registry.bind("migrations_dir", lambda graph: str(directory))
    graph = sharded_graph(servers, registry=registry)
    try:
        shard_helpers.migrate_command(graph, "--raiseerr", "upgrade", "head")
        for server in servers.servers:
            assert "shard_probe" in tables_on(server.admin_url, SHARD_DATABASE)
            assert rows_on(server.admin_url, SHARD_DATABASE, "SELECT version_num FROM alembic_version") == [
                "5a1d0000beef"
            ]
        assert shard_helpers.check_alembic(graph) == {
            name: {"postgres": "5a1d0000beef"} for name in ("global", *SHARDS)
        }

        # `revision` runs once, not once per shard.
        shard_helpers.migrate_command(graph, "--raiseerr", "revision", "-m", "once")
        assert len(list(directory.glob("*.py"))) == 2
        [added] = [path for path in directory.glob("*.py") if "once" in path.name]
        added.unlink()

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SHARD", "west")
            shard_helpers.migrate_command(graph, "--raiseerr", "downgrade", "base")
        assert "shard_probe" not in tables_on(servers[1].admin_url, SHARD_DATABASE)
        assert "shard_probe" in tables_on(servers[0].admin_url, SHARD_DATABASE)
        with pytest.raises(MigrationsBehindError) as raised:
            shard_helpers.check_alembic(graph)
        assert "'west' at no revision" in str(raised.value)
        assert "'east'" not in str(raised.value)
    finally:
        shard_helpers.migrate_command(graph, "--raiseerr", "downgrade", "base")
        dispose(graph)
    for server in servers.servers:
        assert "shard_probe" not in tables_on(server.admin_url, SHARD_DATABASE)


def test_the_shard_variable_limits_the_helpers_to_one_shard(
    graph: ExampleGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARD", "west")
    assert [shard_of(shard) for shard in subgraphs(graph)] == ["west"]
    assert list(shard_helpers.check_health(graph)) == ["west"]
    monkeypatch.setenv("SHARD", "nowhere")
    with pytest.raises(UnknownShardError) as raised:
        shard_helpers.check_health(graph)
    assert "SHARD" in str(raised.value)


def test_destructive_helpers_refuse_a_shard_that_is_not_a_test_database(
    graph: ExampleGraph, servers: ServerGroup
) -> None:
    with SessionContext(graph, shard="east"), transaction():
        graph.company_store.create(Company(name="keep-me"))
    config = shard_config(servers)
    # Not a test database by name, and not on a server this library started: refused before any SQL.
    config["prod"] = {"postgres": {"host": "127.0.0.1", "port": _free_port(), "database_name": "example_db"}}
    unsafe = sharded_graph(servers, shards=config)
    try:
        with pytest.raises(UnsafeOperationError) as raised:
            shard_helpers.recreate_all(unsafe)
        assert "set shards.prod.postgres.allow_destructive = true" in str(raised.value)  # the shard's own key
    finally:
        dispose(unsafe)
    # Nothing was touched on the other shards either.
    assert rows_on(servers[0].admin_url, SHARD_DATABASE, "SELECT name FROM company") == ["keep-me"]


def test_shards_on_the_same_database_are_refused_at_creation(
    servers: ServerGroup, caplog: pytest.LogCaptureFixture
) -> None:
    twin = {
        "east": {"postgres": {"host": servers[0].host, "port": servers[0].port, "database_name": SHARD_DATABASE}},
        "east2": {
            "postgres": {
                "host": servers[0].host,
                "port": servers[0].port,
                "database_name": SHARD_DATABASE,
                "password": PASSWORD,
                "not_a_key": PASSWORD,
            }
        },
    }
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ShardConfigurationError) as raised:
            sharded_graph(servers, shards=twin, postgres={"password": PASSWORD}).use("shards")
    message = str(raised.value)
    assert "'east2'" in message
    assert "'east'" in message
    assert PASSWORD not in message
    assert PASSWORD not in caplog.text
    assert "not_a_key" in caplog.text  # the unknown key is reported, by name only

    main = create_object_graph(name="example", testing=True, loader=load_from_environ)
    url = as_graph(main).postgres.url
    same_as_global = {"again": {"postgres": {"host": url.host, "port": url.port, "database_name": url.database}}}
    with pytest.raises(ShardConfigurationError) as raised:
        sharded_graph(servers, shards=same_as_global).use("shards")
    assert "postgres" in str(raised.value)
    as_graph(main).postgres.dispose()

    with pytest.raises(ShardConfigurationError):
        sharded_graph(servers, shards={"global": {"postgres": {"host": "elsewhere"}}}).use("shards")


def test_shards_from_the_environment(servers: ServerGroup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__HOST", servers[0].host)
    monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__PORT", str(servers[0].port))
    monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__DATABASE_NAME", SHARD_DATABASE)
    monkeypatch.setenv("EXAMPLE__CLIENT_SHARD__MAPPING", "acme:mobile:east, acme-web:global")
    graph = cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=load_from_environ))
    try:
        assert cast(Any, graph).shards["east"].url.port == servers[0].port
        assert str(servers[0].port) in shard_helpers.check_health(graph)["east"]
        assert cast(Any, graph).client_shard.mapping == {"acme:mobile": "east", "acme-web": "global"}
    finally:
        dispose(graph)
    monkeypatch.setenv("EXAMPLE__CLIENT_SHARD__MAPPING", '{"acme-web": "east"}')
    graph = cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=load_from_environ))
    assert cast(Any, graph).client_shard.shard_for({"X-Request-Client": "acme-web"}) == "east"
    monkeypatch.setenv("EXAMPLE__CLIENT_SHARD__MAPPING", "acme-web")
    with pytest.raises(ShardConfigurationError):
        create_object_graph(name="example", testing=True, loader=load_from_environ)


def test_routed_models_keep_their_engine_on_every_shard(servers: ServerGroup) -> None:
    secret = {
        "postgres": {
            "host": servers[2].host,
            "port": servers[2].port,
            "database_name": run_database("shard_secret"),
        }
    }
    provision("example", testing=True, database_name=run_database("shard_secret"), admin_url=servers[2].admin_url)
    graph = sharded_graph(
        servers, sessionmaker={"engine_routing_strategy": "model_engine_routing_strategy"}, secret=secret
    )
    try:
        makers = cast(Any, graph).sessionmakers
        router = cast(Any, graph).model_engine_routing_strategy
        secret_engine = router.engine("secret")
        for name in SHARDS:
            session = makers[name]()
            try:
                assert session.get_bind(ScaleSecret) is secret_engine
                assert session.get_bind(Company) is cast(Any, graph).shards[name]
            finally:
                session.close()
        east = subgraph(graph, "east")
        assert migrate.engine_names(east) == ["postgres", "secret"]
    finally:
        dispose(graph)
        cast(Any, graph).model_engine_routing_strategy.engine("secret").dispose()


def test_a_shard_context_recreates_its_own_shard(graph: ExampleGraph, servers: ServerGroup) -> None:
    for name in ("west", "north"):
        with SessionContext(graph, shard=name), transaction():
            graph.company_store.create(Company(name=f"{name}-co"))
    with SessionContext(graph, shard="north") as context:
        context.recreate_all()
        assert graph.company_store.count() == 0
    assert rows_on(servers[1].admin_url, SHARD_DATABASE, "SELECT name FROM company") == ["west-co"]


def test_same_database_compares_every_listed_host() -> None:
    def url(host: str, database: str = "example_test_db") -> URL:
        return make_url(
            create_object_graph(name="example", testing=True).metadata, {"host": host, "database_name": database}
        )

    assert same_database(url("db-a:5432,db-b:5432"), url("DB-B"))
    assert not same_database(url("db-a:5432,db-b:5432"), url("db-c"))
    assert not same_database(url("db-a"), url("db-a", "example_test_other_db"))


def test_a_shard_without_a_postgres_section_is_refused(servers: ServerGroup) -> None:
    graph = sharded_graph(servers, shards={"east": {"host": "db-east"}})
    with pytest.raises(ShardConfigurationError) as raised:
        graph.use("shards")
    assert "EXAMPLE__SHARDS__EAST__POSTGRES__HOST" in str(raised.value)


def routed_sharded_graph(servers: ServerGroup, **config: Any) -> ExampleGraph:
    """Three shards, and the model strategy with a `secret` engine on servers[2] (shared by all shards)."""
    provision("example", testing=True, database_name=run_database("shard_secret"), admin_url=servers[2].admin_url)
    secret = {
        "postgres": {"host": servers[2].host, "port": servers[2].port, "database_name": run_database("shard_secret")}
    }
    return sharded_graph(
        servers, sessionmaker={"engine_routing_strategy": "model_engine_routing_strategy"}, secret=secret, **config
    )


def dispose_routed(graph: ExampleGraph) -> None:
    dispose(graph)
    cast(Any, graph).model_engine_routing_strategy.engine("secret").dispose()


def test_a_shard_acts_on_its_own_tables_and_the_shared_routed_engine_stays_with_global(
    servers: ServerGroup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = routed_sharded_graph(servers)
    secret_db = run_database("shard_secret")
    try:
        created = shard_helpers.recreate_all(graph)
        assert set(created) == {"global", *SHARDS}
        assert "scale_secret" in created["global"]["secret"]  # said under its engine, with global
        for name in SHARDS:
            assert list(created[name]) == ["postgres"]  # a shard: its own tables only
        with SessionContext(graph), transaction():
            Store(graph, ScaleSecret).create(ScaleSecret(value="shared"))
        capsys.readouterr()

        monkeypatch.setenv("SHARD", "east")
        shard_helpers.createall_command(graph, ["--drop"])
        out = capsys.readouterr().out
        assert f":{servers[0].port}/{SHARD_DATABASE}: " in out  # the shard's own server and database
        assert "scale_secret" not in out
        assert str(servers[2].port) not in out
        assert rows_on(servers[2].admin_url, secret_db, "SELECT value FROM scale_secret") == ["shared"]
        recreated = shard_helpers.recreate_all(graph)
        assert list(recreated) == ["east"]
        assert list(recreated["east"]) == ["postgres"]
        assert rows_on(servers[2].admin_url, secret_db, "SELECT value FROM scale_secret") == ["shared"]

        monkeypatch.delenv("SHARD")
        shard_helpers.createall_command(graph, [])
        out = capsys.readouterr().out
        secret_line = [line for line in out.splitlines() if "(engine 'secret')" in line]
        assert len(secret_line) == 1  # once, with global
        assert f":{servers[2].port}/{secret_db} (engine 'secret')" in secret_line[0]
    finally:
        dispose_routed(graph)


def test_migrate_runs_the_shared_routed_engine_once_with_global(
    servers: ServerGroup, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "migrations"
    (directory / "secret").mkdir(parents=True)
    registry = Registry()
    registry.bind("migrations_dir", lambda graph: str(directory))
    graph = routed_sharded_graph(servers, registry=registry)
    try:
        migrate.main(graph, "--raiseerr", "current")
        out = capsys.readouterr().out
        assert out.count("engine 'secret'") == 1
        assert "shard 'global', engine 'secret':" in out
        monkeypatch.setenv("SHARD", "east")
        migrate.main(graph, "--raiseerr", "current")
        east_out = capsys.readouterr().out
        assert "secret" not in east_out  # shared: left to global
        assert "shard 'east', engine 'postgres':" in east_out  # one target, still labelled
        with pytest.raises(MissingEngineMigrationsError) as raised:
            migrate.main(graph, "--raiseerr", "current", "--engine", "secret")
        assert "SHARD=global" in str(raised.value)
        monkeypatch.delenv("SHARD")
        revisions = shard_helpers.check_alembic(graph)
        assert revisions["global"] == {"postgres": None, "secret": None}  # the routed history too
        assert revisions["east"] == {"postgres": None}
    finally:
        dispose_routed(graph)


def test_a_shard_on_a_routed_engines_database_is_refused(servers: ServerGroup) -> None:
    config = shard_config(servers)
    config["vault"] = {
        "postgres": {"host": servers[2].host, "port": servers[2].port, "database_name": run_database("shard_secret")}
    }
    graph = routed_sharded_graph(servers, shards=config)
    try:
        with pytest.raises(ShardConfigurationError) as raised:
            graph.use("shards")
        assert "'vault'" in str(raised.value)
        assert "routed engine 'secret'" in str(raised.value)
    finally:
        cast(Any, graph).model_engine_routing_strategy.engine("secret").dispose()


def test_an_unreachable_shard_names_itself_its_place_and_its_keys(servers: ServerGroup) -> None:
    config = shard_config(servers)
    port = _free_port()
    config["dead"] = {"postgres": {"host": "127.0.0.1", "port": port, "engine_retries": 0}}
    graph = sharded_graph(servers, shards=config)
    try:
        with SessionContext(graph, shard="dead"), pytest.raises(DatabaseUnavailableError) as raised:
            graph.company_store.count()
        message = str(raised.value)
        assert f"127.0.0.1:{port}" in message
        assert "shards.dead.postgres.host/port" in message
        with pytest.raises(DatabaseUnavailableError) as checked:
            shard_helpers.check_alembic(graph)
        assert "shard 'dead'" in str(checked.value)
        assert f"127.0.0.1:{port}" in str(checked.value)
        assert "shard 'east'" in str(checked.value)  # the shards that answered, too
    finally:
        dispose(graph)


def test_a_refused_login_on_a_shard_names_the_shards_keys(servers: ServerGroup) -> None:
    with scram_server_running() as scram:
        config = shard_config(servers)
        config["locked"] = {"postgres": scram.config(password="wrong-password-1e7", engine_retries=0)}
        graph = sharded_graph(servers, shards=config)
        try:
            with SessionContext(graph, shard="locked"), pytest.raises(AuthenticationFailedError) as raised:
                graph.company_store.count()
            message = str(raised.value)
            assert "shards.locked.postgres.username" in message
            assert "shards.locked.postgres.password" in message
            assert "wrong-password-1e7" not in message
        finally:
            dispose(graph)


def test_a_missing_database_on_a_shard_names_the_shards_keys(servers: ServerGroup) -> None:
    config = shard_config(servers)
    config["west"]["postgres"]["database_name"] = "shards_no_such_db_5e1"
    config["west"]["postgres"]["engine_retries"] = 3
    graph = sharded_graph(servers, shards=config)
    try:
        with SessionContext(graph, shard="west"), pytest.raises(DatabaseMissingError) as raised:
            graph.company_store.count()
        message = str(raised.value)
        assert "shards.west.postgres.database_name" in message
        assert "'shards_no_such_db_5e1'" in message
        assert "provision" in message
    finally:
        dispose(graph)


def test_shard_names_are_checked(servers: ServerGroup, caplog: pytest.LogCaptureFixture) -> None:
    graph = sharded_graph(servers)
    try:
        with pytest.raises(UnknownShardError) as raised:
            SessionContext(graph, shard="").open()
        assert "cannot be empty" in str(raised.value)
        assert "shards..postgres" not in str(raised.value)
        with pytest.raises(ShardNotAllowedError) as refused:
            cast(Any, graph).client_shard.shard_for({"X-Request-Client": "evil-corp"})
        assert "may not use a shard: client 'evil-corp' is not in client_shard.mapping" in str(refused.value)
    finally:
        dispose(graph)
    with pytest.raises(ShardConfigurationError) as empty:
        shard_helpers.check_health(sharded_graph(servers, shards={"": {"postgres": {"host": "db-x"}}}))
    assert "empty name" in str(empty.value)
    config = shard_config(servers)
    config["east"]["postgres"]["portt"] = 5999
    graph = sharded_graph(servers, shards=config)
    try:
        with caplog.at_level(logging.WARNING):
            graph.use("shards", "sessionmakers")
        warnings = [record.getMessage() for record in caplog.records if "portt" in record.getMessage()]
        assert len(warnings) == 1
        assert "shards.east.postgres.portt" in warnings[0]
    finally:
        dispose(graph)


def test_global_cannot_be_configured_under_shards_even_from_the_environment(
    servers: ServerGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE__SHARDS__GLOBAL__POSTGRES__HOST", "db-elsewhere")
    graph = cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=load_from_environ))
    for use in (shard_helpers.check_health, lambda graph: SessionContext(graph, shard="global").open()):
        with pytest.raises(ShardConfigurationError) as raised:
            use(graph)
        assert "EXAMPLE__SHARDS__GLOBAL__POSTGRES__" in str(raised.value)
    as_graph(graph).postgres.dispose()
