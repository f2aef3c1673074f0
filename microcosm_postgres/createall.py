"""Command-line entry point: create the service's tables (`--drop` / `-D` drops them first).

    def main():
        graph = create_object_graph(name="example")
        createall.main(graph)

It prints what it really did, one line per engine naming its own server and database
(routed engines of `__engine__` models add `(engine 'secret')`): `Created 2 tables in
...: company, employee`, or `Nothing to create in ...` when every table exists. On a
shard (`shards.createall_command`) it acts on the shard's own tables only: routed
engines are shared by every shard and handled with `global`. An option it does not know is an
error (argparse's message, exit status 2): `createall --dorp` must not quietly create
tables without dropping. A service that parses more options itself passes
`known_only=False` and gets the arguments left over.

`--drop` acts only on a test database (see `microcosm_postgres.operations`). A refusal
(not a test database, migrations behind, the database unreachable) prints one line,
`error: <ClassName>: <message>`, on standard error and exits with status 1;
`--raiseerr` raises the typed error instead.

"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from microcosm_postgres._cli import report_failure
from microcosm_postgres.errors import PersistenceError, translating
from microcosm_postgres.graph import GraphLike, HasMetadata, as_graph
from microcosm_postgres.models import Model
from microcosm_postgres.operations import create_all_by_engine, drop_all, engine_tables

__all__ = ["main", "parse_args"]


def _parser(graph: GraphLike) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{as_graph(graph).metadata.name}-createall", description="Create the service's tables."
    )
    parser.add_argument("-D", "--drop", action="store_true", help="drop the tables first (test databases only)")
    parser.add_argument("--raiseerr", action="store_true", help="raise a failure's typed error (with its traceback)")
    return parser


def parse_args(graph: GraphLike, args: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse createall's options (default `sys.argv[1:]`); an unknown one exits with status 2.

    Raises:
        SystemExit: status 2 with argparse's message, for an option it does not know.

    """
    return _parser(graph).parse_args(sys.argv[1:] if args is None else list(args))


def main(
    graph: GraphLike, args: Sequence[str] | None = None, *, model_cls: HasMetadata = Model, known_only: bool = True
) -> list[str]:
    """Create the tables of `model_cls.metadata` (after dropping them with `--drop`/`-D`).

    Prints what it did. Returns the arguments it left alone: always `[]` unless
    `known_only=False`, which hands unknown arguments back for the service's own parser
    instead of refusing them.

    A failure prints one line on standard error (`error: <ClassName>: <message>`) and
    exits with status 1; with `--raiseerr` the typed error is raised instead.

    Raises:
        SystemExit: status 2 for an unknown option (unless `known_only=False`), 1 when
            the command fails.
        UnsafeOperationError: with `--raiseerr`, for `--drop` on a database that is not a
            test database.
        MigrationsBehindError: with `--raiseerr`, when the database is at an older revision
            (run `migrate upgrade head`).
        DatabaseUnavailableError: with `--raiseerr`, when the database cannot be reached.

    """
    arguments = sys.argv[1:] if args is None else list(args)
    parser = _parser(graph)
    remaining: list[str] = []
    if known_only:
        options = parser.parse_args(arguments)
    else:
        options, remaining = parser.parse_known_args(arguments)
    try:
        with translating():
            _create(graph, model_cls, drop=options.drop)
    except PersistenceError as error:
        if options.raiseerr:
            raise
        raise SystemExit(report_failure(error, url=as_graph(graph).postgres.url)) from error
    return remaining


def _create(graph: GraphLike, model_cls: HasMetadata, *, drop: bool) -> None:
    """Drop (with `drop`) and create, printing one line per engine, naming its real database."""

    def where(name: str, engine_url: str) -> str:
        return engine_url if name == "postgres" else f"{engine_url} (engine {name!r})"

    groups = {
        group.name: (where(group.name, group.engine.url.render_as_string(hide_password=True)), group.tables)
        for group in engine_tables(graph, model_cls.metadata)
    }
    if drop:
        drop_all(graph, model_cls)
        for place, tables in groups.values():
            names = ", ".join(sorted(table.fullname for table in tables)) or "(none)"
            print(f"Dropped tables in {place}: {names}")
    for name, created in create_all_by_engine(graph, model_cls).items():
        place = groups[name][0]
        if created:
            print(f"Created {len(created)} table{'s' if len(created) != 1 else ''} in {place}: {', '.join(created)}")
        else:
            print(f"Nothing to create in {place}: every table exists")
