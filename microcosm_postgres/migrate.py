"""Migrations with Alembic, configured in code: no alembic.ini, no env.py of your own.

A service keeps its revisions in a `migrations/` directory of its package and writes:

    def main():
        graph = create_object_graph(name="example")
        migrate.main(graph)                    # Alembic's command line: upgrade head, ...

Where the revisions are (in this order):

1. the graph's `migrations_dir` component, when one is bound;
2. else `migrations/` under `graph.metadata.root_path`: the directory of the module named
   by the graph's import name (`create_object_graph(name=..., import_name=...)`; by default
   the service name), once that module is imported.

A package named differently from its service (package `acme_svc`, service `acme`) passes
`import_name="acme_svc"` or binds `migrations_dir`. When neither gives an existing
directory, the service has no migrations, unless a `migrations/` directory sits next to
the modules of its models (or in one of their parent packages): then the lookup is
broken, and `UnresolvedMigrationsError` says so rather than silently building tables
without migrations. The environment script and the revision
template ship inside this package; the graph's engine and `model_cls.metadata` reach
them through `Config.attributes`. Extra `context.configure` options come from
`graph.config.alembic.environment_options` when that config exists.

"""

from __future__ import annotations

import logging
import os
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import CommandLine, Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from microcosm.errors import NotBoundError
from sqlalchemy import BigInteger, Column, Integer
from sqlalchemy.types import TypeEngine

from microcosm_postgres._cli import report_failure
from microcosm_postgres.errors import PersistenceError, translating
from microcosm_postgres.graph import Graph, GraphLike, HasMetadata, as_graph
from microcosm_postgres.models import Model, UTCDateTime
from microcosm_postgres.types import EnumType, Serial

__all__ = [
    "UnresolvedMigrationsError",
    "compare_type",
    "current_revision",
    "get_migrations_dir",
    "head_revision",
    "main",
    "make_alembic_config",
    "make_config",
    "migrations_dir",
    "render_item",
    "stamp",
    "upgrade",
    "version_table",
]

ENGINE = "microcosm_postgres.engine"
METADATA = "microcosm_postgres.metadata"
OPTIONS = "microcosm_postgres.environment_options"

_ENVIRONMENT = Path(__file__).parent / "migration_environment"


class UnresolvedMigrationsError(CommandError):
    """The graph does not resolve the `migrations/` directory that its models' package has."""


def _model_directories(model_cls: HasMetadata) -> list[Path]:
    """Directories of the modules defining `model_cls`'s mapped classes, and of their parent packages."""
    registry = getattr(model_cls, "registry", None)
    directories: list[Path] = []
    for mapper in getattr(registry, "mappers", ()):
        parts = mapper.class_.__module__.split(".")
        for depth in range(len(parts), 0, -1):
            module = sys.modules.get(".".join(parts[:depth]))
            file = getattr(module, "__file__", None)
            if file and Path(file).parent not in directories:
                directories.append(Path(file).parent)
    return directories


def _refuse_if_models_have_migrations(graph: Graph, model_cls: HasMetadata, tried: str) -> None:
    for directory in _model_directories(model_cls):
        if (directory / "migrations").is_dir():
            raise UnresolvedMigrationsError(
                f"The models of {graph.metadata.name!r} have migrations in {str(directory / 'migrations')!r}, "
                f"but the graph looks for them {tried}. Pass import_name=<your package> to "
                "create_object_graph, or bind a `migrations_dir` component."
            )


def migrations_dir(graph: GraphLike, model_cls: HasMetadata = Model) -> Path:
    """The service's migrations directory (see the module for the lookup rule).

    Raises:
        UnresolvedMigrationsError: when it is not found but a `migrations/` directory sits
            next to the modules of `model_cls`'s models.
        alembic.util.CommandError: when it does not exist (naming the path tried).

    """
    graph = as_graph(graph)
    try:
        graph.factory_for("migrations_dir")
        [directory] = graph.use("migrations_dir")
        path = Path(str(directory))
    except NotBoundError:
        try:
            path = Path(graph.metadata.get_path("migrations"))
        except RuntimeError as error:
            import_name = graph.metadata.import_name
            tried = f"through the import name {import_name!r}, which is no imported module"
            _refuse_if_models_have_migrations(graph, model_cls, tried)
            raise CommandError(
                f"Cannot locate migrations for {graph.metadata.name!r}: the graph looks for them next to the "
                f"module {import_name!r}, which is not imported. Import your service's package before calling "
                "migrate.main; if it is named differently, pass import_name=<your package> to create_object_graph, "
                "or bind a `migrations_dir` component."
            ) from error
    if not path.is_dir():
        _refuse_if_models_have_migrations(graph, model_cls, f"in {str(path)!r}, which does not exist")
        raise CommandError(
            f"Migrations directory {str(path)!r} does not exist. Create it (an empty directory is fine), "
            "or bind a `migrations_dir` component pointing at yours."
        )
    return path


def get_migrations_dir(graph: GraphLike) -> str:
    """The service's migrations directory, as a string.

    A compatibility name (3.x) for `migrations_dir(graph)`.

    Raises:
        alembic.util.CommandError: when it cannot be found.

    """
    return str(migrations_dir(graph))


def make_config(graph: GraphLike, model_cls: HasMetadata = Model, cmd_opts: Namespace | None = None) -> Config:
    """An Alembic `Config` for `graph`: its engine, its migrations, `model_cls.metadata`.

    Raises:
        alembic.util.CommandError: when the migrations directory does not exist.

    """
    graph = as_graph(graph)
    config = Config(cmd_opts=cmd_opts, stdout=sys.stdout)  # the current stream, not the one at import
    config.set_main_option("script_location", str(_ENVIRONMENT))
    config.set_main_option("version_locations", str(migrations_dir(graph, model_cls)))
    config.set_main_option("path_separator", "os")
    config.attributes[ENGINE] = graph.postgres
    config.attributes[METADATA] = model_cls.metadata
    alembic_config = graph.config.get("alembic") or {}
    config.attributes[OPTIONS] = dict(alembic_config.get("environment_options") or {})
    return config


def make_alembic_config(graph: GraphLike, model_cls: HasMetadata = Model) -> Config:
    """A compatibility name (3.x) for `make_config(graph)`.

    Raises:
        alembic.util.CommandError: when the migrations directory does not exist.

    """
    return make_config(graph, model_cls)


# The format of Alembic's own alembic.ini templates for its progress lines.
_PROGRESS_FORMAT = "%(levelname)-5.5s [%(name)s] %(message)s"


def main(graph: GraphLike, *args: str, model_cls: HasMetadata = Model) -> None:
    """Run Alembic's command line for `graph` (arguments default to `sys.argv[1:]`).

    All of Alembic's commands work (`upgrade`, `downgrade`, `revision --autogenerate -m`,
    `history`, `current`, `heads`, `stamp`, `check`, `merge`, `show`, ...) except
    `init`: the environment ships with microcosm-postgres. As with Alembic's own command,
    progress lines (`INFO  [alembic.runtime.migration] Running upgrade ...`) go to
    standard error when the application has not configured logging, and a failure
    prints one `FAILED: ...` line and exits with status 1 (`--raiseerr` raises instead):
    an Alembic error, and a database fault as its typed error (`FAILED:
    DatabaseUnavailableError: ...`, translated by `errors.translate`).

    `revision --autogenerate` and `check` compare the database with
    `model_cls.metadata`, so they refuse to run when that holds no table: the caller
    must import the service's model modules first (otherwise the revision would drop
    every table).

    Raises:
        SystemExit: status 2 for bad arguments, 1 when the command fails.
        alembic.util.CommandError: with `--raiseerr`, when the command fails.
        PersistenceError: with `--raiseerr`, the typed error of a database fault
            (`DatabaseUnavailableError` when the database cannot be reached).

    """
    cli = CommandLine(prog=f"{os.path.basename(sys.argv[0]) or as_graph(graph).metadata.name}")
    options = cli.parser.parse_args(list(args) if args else sys.argv[1:])
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    raise_errors, options.raiseerr = options.raiseerr, True  # every failure is then reported below, alike
    alembic_logger, progress = logging.getLogger("alembic"), None
    saved_level = alembic_logger.level
    configured = [handler for handler in alembic_logger.handlers if not isinstance(handler, logging.NullHandler)]
    if not logging.getLogger().handlers and not configured:  # Alembic itself adds a NullHandler
        progress = logging.StreamHandler(sys.stderr)
        progress.setFormatter(logging.Formatter(_PROGRESS_FORMAT))
        alembic_logger.addHandler(progress)
        alembic_logger.setLevel(logging.INFO)
    try:
        if options.cmd[0] is command.init:
            raise CommandError(
                "`init` is not needed: microcosm-postgres ships the environment script and revision template. "
                "Create an empty migrations/ directory in your package and run `revision --autogenerate -m ...`."
            )
        _refuse_to_compare_without_models(options, model_cls)
        with translating():
            cli.run_cmd(make_config(graph, model_cls, cmd_opts=options), options)
    except (CommandError, PersistenceError) as error:
        if raise_errors:
            raise
        url = as_graph(graph).postgres.url if isinstance(error, PersistenceError) else None
        raise SystemExit(report_failure(error, prefix="FAILED", url=url)) from error
    finally:
        if progress is not None:
            alembic_logger.removeHandler(progress)
            alembic_logger.setLevel(saved_level)


def _refuse_to_compare_without_models(options: Namespace, model_cls: HasMetadata) -> None:
    """Refuse `revision --autogenerate` and `check` when the metadata holds no table."""
    comparing = options.cmd[0] is command.check or (
        options.cmd[0] is command.revision and getattr(options, "autogenerate", False)
    )
    if comparing and not model_cls.metadata.tables:
        raise CommandError(
            "The metadata holds no table, so autogenerate would drop every table of the database. "
            "Import the service's model modules (or the module binding its stores) before calling migrate.main."
        )


def upgrade(graph: GraphLike, revision: str = "head", model_cls: HasMetadata = Model) -> None:
    """Upgrade the graph's database to `revision`."""
    command.upgrade(make_config(graph, model_cls), revision)


def stamp(graph: GraphLike, revision: str = "head", model_cls: HasMetadata = Model) -> None:
    """Record `revision` as the database's current revision, without running migrations."""
    command.stamp(make_config(graph, model_cls), revision)


def _version_options(graph: Graph) -> dict[str, str]:
    alembic_config = graph.config.get("alembic") or {}
    options = dict(alembic_config.get("environment_options") or {})
    return {key: options[key] for key in ("version_table", "version_table_schema") if options.get(key)}


def version_table(graph: GraphLike) -> str:
    """Alembic's version table for `graph`, quoted for SQL (`alembic_version` unless configured)."""
    graph = as_graph(graph)
    options = _version_options(graph)
    preparer = graph.postgres.dialect.identifier_preparer
    name = preparer.quote(options.get("version_table", "alembic_version"))
    schema = options.get("version_table_schema")
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def current_revision(graph: GraphLike) -> str | None:
    """The database's current revision (None when it has none).

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    graph = as_graph(graph)
    with translating(), graph.postgres.connect() as connection:
        return MigrationContext.configure(connection, opts=_version_options(graph)).get_current_revision()


def head_revision(graph: GraphLike, model_cls: HasMetadata = Model) -> str | None:
    """The code's head revision; None when the service has no migrations.

    Raises:
        UnresolvedMigrationsError: when the graph does not find the migrations its models have.

    """
    try:
        config = make_config(graph, model_cls)
    except UnresolvedMigrationsError:
        raise
    except CommandError:
        return None
    return ScriptDirectory.from_config(config).get_current_head()


def compare_type(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    """Autogenerate's type comparison, knowing that SERIAL is stored as INTEGER (BIGSERIAL as BIGINT).

    Returns False (same) or True (changed) for `Serial` columns, None (Alembic decides) otherwise.

    """
    if isinstance(metadata_type, Serial):
        expected = BigInteger if metadata_type.big else Integer
        return not (
            isinstance(inspected_type, expected) and isinstance(inspected_type, BigInteger) == metadata_type.big
        )
    return None


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | bool:
    """Render microcosm-postgres column types in generated revisions.

    `UTCDateTime` and `EnumType` render as the plain SQLAlchemy types they store
    (`sa.DateTime()`, `sa.String(length=255)`), so a revision never imports a
    service's enums; `Serial` renders as itself, with its import added.

    """
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    if isinstance(obj, EnumType):
        return "sa.String(length=255)"
    if isinstance(obj, Serial):
        autogen_context.imports.add("import microcosm_postgres.types")
        return f"microcosm_postgres.types.Serial(big={obj.big!r})"
    return False
