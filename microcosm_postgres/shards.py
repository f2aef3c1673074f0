"""Commands and checks over every shard (3.x names): create, recreate, migrate, health.

Each helper runs the single-database one on every shard's graph-like
(`sharded_subgraph.subgraphs`): `global` (the `postgres` engine) first, then the shards
configured under `shards.<name>.postgres`. The `SHARD` environment variable limits them
to one shard (an unknown name raises `UnknownShardError`). A service without shards has
one shard, `global`, so these helpers work there too.

    def createall():                                  # console script
        createall_command(create_object_graph(name="example"))

    def migrate():
        migrate_command(create_object_graph(name="example"))   # `upgrade head` on every shard

    graph.health_convention.checks["shards"] = check_health

Destructive helpers (`recreate_all`, `createall --drop`) refuse, shard by shard and
before dropping anything, a database that is not a test database (see `operations`).

"""

from __future__ import annotations

from collections.abc import Sequence

from microcosm_postgres import createall, health, migrate, operations
from microcosm_postgres.constants import GLOBAL_SHARD_NAME
from microcosm_postgres.errors import MigrationsBehindError, PersistenceError
from microcosm_postgres.graph import GraphLike, HasMetadata
from microcosm_postgres.models import Model
from microcosm_postgres.sharded_subgraph import shard_of, subgraphs

__all__ = [
    "check_alembic",
    "check_health",
    "create_all",
    "createall_command",
    "migrate_command",
    "recreate_all",
]


def create_all(graph: GraphLike, model_cls: HasMetadata = Model) -> dict[str, dict[str, list[str]]]:
    """`operations.create_all` on every shard; returns shard name -> engine name -> tables
    created (`postgres` is the shard's own engine; routed engines, shared by every shard,
    appear under `global` only).

    Raises:
        MigrationsBehindError: when a shard's database is at another revision (named).
        UnknownShardError: when `SHARD` names no shard.

    """
    return {shard_of(shard): operations.create_all_by_engine(shard, model_cls) for shard in subgraphs(graph)}


def recreate_all(graph: GraphLike, model_cls: HasMetadata = Model) -> dict[str, dict[str, list[str]]]:
    """Testing only: fresh, empty tables on every shard (`operations.recreate_all`); returns
    what `create_all` returns (empty lists for tables that were only emptied).

    Every shard is checked as a test database before any is touched; a shard acts on its
    own tables, routed engines are recreated with `global` only.

    Raises:
        UnsafeOperationError: when a shard's database is not a test database; nothing is dropped.
        UnknownShardError: when `SHARD` names no shard.

    """
    shards = subgraphs(graph)
    for shard in shards:
        operations.require_test_graph(shard, action="recreate tables")
    return {shard_of(shard): operations.recreate_all(shard, model_cls) for shard in shards}


def createall_command(graph: GraphLike, args: Sequence[str] | None = None, *, model_cls: HasMetadata = Model) -> None:
    """The `createall` command line (`--drop`, `--raiseerr`) on every shard, each under a
    `shard '<name>':` line. A failure on one shard stops there (one line, exit status 1).

    Raises:
        SystemExit: as `createall.main` (2 for an unknown option, 1 for a failure).
        UnknownShardError: when `SHARD` names no shard.

    """
    shards = subgraphs(graph)
    for shard in shards:
        if len(shards) > 1:
            print(f"shard {shard_of(shard)!r}:", flush=True)
        createall.main(shard, args, model_cls=model_cls)


def migrate_command(graph: GraphLike, *args: str, model_cls: HasMetadata = Model) -> None:
    """Alembic's command line on every shard (`migrate.main`, which runs per shard except the
    script commands such as `revision`). Arguments default to `sys.argv[1:]`.

    Raises:
        SystemExit: as `migrate.main`.
        UnknownShardError: when `SHARD` names no shard.

    """
    migrate.main(graph, *args, model_cls=model_cls)


def _report(failures: dict[str, PersistenceError], answers: dict[str, str]) -> PersistenceError:
    first = next(iter(failures.values()))
    failed = "; ".join(f"shard {name!r}: {str(error).rstrip('.')}" for name, error in failures.items())
    fine = "; ".join(f"shard {name!r}: {answer}" for name, answer in answers.items())
    error = type(first)(f"{failed}{f' (and {fine})' if fine else ''}", sqlstate=first.sqlstate)
    error.fault = first.fault
    return error


def check_health(graph: GraphLike) -> dict[str, str]:
    """`SELECT 1` on every shard; returns shard name -> message ("PostgreSQL at ... is answering").

    Raises:
        PersistenceError: of the first failing shard's class (`DatabaseUnavailableError` for
            a server that does not answer, `AuthenticationFailedError` for a refused login),
            its message naming every failing shard with host and database (never a password),
            and the shards that answered.
        UnknownShardError: when `SHARD` names no shard.

    """
    answers: dict[str, str] = {}
    failures: dict[str, PersistenceError] = {}
    for shard in subgraphs(graph):
        try:
            answers[shard_of(shard)] = health.check_health(shard)
        except PersistenceError as error:
            failures[shard_of(shard)] = error
    if failures:
        raise _report(failures, answers) from next(iter(failures.values()))
    return answers


def check_alembic(graph: GraphLike) -> dict[str, dict[str, str | None]]:
    """Every shard's current revisions: shard name -> engine name -> revision (None: never
    migrated nor stamped), checked against the code's heads. Each shard has the `postgres`
    history; each routed engine (`__engine__`, shared by the shards) has its own, reported
    under `global` (when `global` is among the shards `SHARD` selects).

    Raises:
        MigrationsBehindError: naming each shard and engine that is not at its head revision.
        PersistenceError: of the first failing shard's class (`DatabaseUnavailableError` for
            a database that cannot be reached), naming every shard that failed, with its
            host and database, and the shards that answered.
        UnknownShardError: when `SHARD` names no shard.

    """
    shards = subgraphs(graph)
    revisions: dict[str, dict[str, str | None]] = {}
    failures: dict[str, PersistenceError] = {}
    behind: list[str] = []
    for shard in shards:
        name = shard_of(shard)
        try:
            revisions[name] = {}
            for engine in migrate.engine_names(shard):
                if engine != migrate.DEFAULT_ENGINE and name != GLOBAL_SHARD_NAME:
                    continue  # shared by every shard: reported under global
                head = migrate.head_revision(shard, engine=engine)
                try:
                    current = migrate.current_revision(shard, engine=engine)
                except PersistenceError as error:
                    url = migrate.engine_named(shard, engine).url
                    where = f"PostgreSQL at {url.host}:{url.port}, database {url.database!r}"
                    raise health.located(error, where) from error
                revisions[name][engine] = current
                if head is not None and current != head:
                    which = "" if engine == migrate.DEFAULT_ENGINE else f" engine {engine!r}"
                    behind.append(f"{name!r}{which} at {current or 'no revision'} (head {head})")
        except PersistenceError as error:
            revisions.pop(name, None)
            failures[name] = error
    if failures:
        answers = {
            name: ", ".join(f"engine {engine!r} at {revision or 'no revision'}" for engine, revision in revs.items())
            for name, revs in revisions.items()
        }
        raise _report(failures, answers) from next(iter(failures.values()))
    if behind:
        raise MigrationsBehindError(
            f"Shards behind the code's head: {'; '.join(behind)}. Run `migrate upgrade head` (every shard, or "
            "SHARD=<name>)."
        )
    return revisions
