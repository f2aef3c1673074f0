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

Routed engines (`__engine__ = "secret"` with `model_engine_routing_strategy`): each keeps
its own history, in the subdirectory of the migrations named for the engine
(`migrations/secret/`), and its own version table in its own database. `upgrade`,
`downgrade`, `current`, `stamp` and `check` run on the `postgres` engine, then on every
routed engine (`--engine NAME` limits them to one); `revision`, `history`, `heads` and the
other commands that only read the scripts run once, on the `postgres` history unless
`--engine NAME` names another (`revision --engine secret --autogenerate -m ...` compares
the secret database with the secret engine's tables only). A routed engine whose models
exist but whose directory does not is refused with `MissingEngineMigrationsError`,
which says how to create it. A revision id belongs to one history: pass `--engine` with
`upgrade <id>` / `downgrade <id>` of a routed engine.

Shards (`shards.<name>.postgres`): they all share the `postgres` history; `main` runs
the database commands on `global` and then on each shard (the `SHARD` environment
variable limits that to one), the scripts-only ones once. A routed engine is shared by
the shards, so it is migrated once, with `global` (and labelled `shard 'global'`):
`SHARD=east` leaves it alone. Every target's preconditions (a history directory, a
database of its own) are checked before any command runs.

"""

from __future__ import annotations

import logging
import os
import sys
from argparse import Namespace
from collections.abc import Sequence
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
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeEngine

from microcosm_postgres._cli import report_failure
from microcosm_postgres.constants import GLOBAL_SHARD_NAME
from microcosm_postgres.errors import PersistenceError, translating
from microcosm_postgres.factories.routing import router_for, tables_by_engine
from microcosm_postgres.factories.shards import SHARD_VARIABLE, same_database
from microcosm_postgres.graph import Graph, GraphLike, HasMetadata, as_graph
from microcosm_postgres.models import Model, UTCDateTime
from microcosm_postgres.sharded_subgraph import shard_of, subgraphs
from microcosm_postgres.types import EnumType, Serial

__all__ = [
    "DEFAULT_ENGINE",
    "MissingEngineMigrationsError",
    "UnresolvedMigrationsError",
    "compare_type",
    "current_revision",
    "engine_named",
    "engine_names",
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
TABLES = "microcosm_postgres.tables"

#: The engine name of the `postgres` engine (the default history, in `migrations/` itself).
DEFAULT_ENGINE = "postgres"

_ENVIRONMENT = Path(__file__).parent / "migration_environment"


class UnresolvedMigrationsError(CommandError):
    """The graph does not resolve the `migrations/` directory that its models' package has."""


class MissingEngineMigrationsError(CommandError):
    """Models route to an engine (`__engine__`) whose migration history does not exist yet
    (or an engine name no model routes to was given)."""


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


def _routed_engines(graph: Graph) -> dict[str, Engine]:
    engines: dict[str, Engine] = getattr(router_for(graph), "engines", {})
    return dict(engines)


def engine_names(graph: GraphLike) -> list[str]:
    """The engines with a migration history: `postgres`, then each engine models route to."""
    return [DEFAULT_ENGINE, *_routed_engines(as_graph(graph))]


def engine_named(graph: GraphLike, name: str) -> Engine:
    """The engine `name` stands for: `postgres`, or an engine models route to.

    Raises:
        MissingEngineMigrationsError: no model routes to `name`, or it shares the `postgres`
            engine's database (two histories cannot share a version table).

    """
    graph = as_graph(graph)
    if name == DEFAULT_ENGINE:
        return graph.postgres
    engines = _routed_engines(graph)
    if name not in engines:
        known = ", ".join(repr(known) for known in engine_names(graph))
        raise MissingEngineMigrationsError(
            f"Unknown engine {name!r}: no model routes to it. The engines with a migration history are {known} "
            "(routed engines need sessionmaker.engine_routing_strategy = model_engine_routing_strategy and a "
            "model with `__engine__`)."
        )
    engine = engines[name]
    if same_database(engine.url, graph.postgres.url):
        raise MissingEngineMigrationsError(
            f"Engine {name!r} connects to the same database as `postgres` ({engine.url.database!r} on "
            f"{engine.url.host}:{engine.url.port}): two histories would share one version table. Give "
            f"{name}.postgres.database_name a database of its own."
        )
    return engine


def _history_directory(graph: Graph, model_cls: HasMetadata, name: str) -> Path:
    base = migrations_dir(graph, model_cls)
    if name == DEFAULT_ENGINE:
        return base
    directory = base / name
    if not directory.is_dir():
        raise MissingEngineMigrationsError(
            f"Models route to engine {name!r}, but it has no migration history: {str(directory)!r} does not "
            f"exist. Create that directory, then its first revision with `revision --engine {name} "
            "--autogenerate -m <message>` (each routed engine keeps its own history and version table)."
        )
    return directory


def _tables_of(graph: Graph, engine: Engine, model_cls: HasMetadata) -> frozenset[str] | None:
    """The keys of `model_cls.metadata`'s tables routed to `engine`; None when nothing is routed."""
    if not _routed_engines(graph):
        return None
    for routed, tables in tables_by_engine(graph, model_cls.metadata):
        if routed is engine:
            return frozenset(table.key for table in tables)
    return frozenset()


def make_config(
    graph: GraphLike, model_cls: HasMetadata = Model, cmd_opts: Namespace | None = None, *, engine: str | None = None
) -> Config:
    """An Alembic `Config` for `graph`: its engine, its migrations, `model_cls.metadata`.

    Args:
        engine: a routed engine's name for its own history (`migrations/<engine>/`) and
            database; None or "postgres" for the `postgres` engine.

    Raises:
        alembic.util.CommandError: when the migrations directory does not exist.
        MissingEngineMigrationsError: when the routed engine has no history directory, or
            no model routes to it.

    """
    graph = as_graph(graph)
    name = engine or DEFAULT_ENGINE
    config = Config(cmd_opts=cmd_opts, stdout=sys.stdout)  # the current stream, not the one at import
    bound = engine_named(graph, name)  # an unknown name is refused as such, before its directory is looked for
    config.set_main_option("script_location", str(_ENVIRONMENT))
    config.set_main_option("version_locations", str(_history_directory(graph, model_cls, name)))
    config.set_main_option("path_separator", "os")
    config.attributes[ENGINE] = bound
    config.attributes[METADATA] = model_cls.metadata
    config.attributes[TABLES] = _tables_of(graph, bound, model_cls)
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


# Commands that only read or write the scripts: run once, whatever the engines and shards.
_SCRIPT_COMMANDS = frozenset({"revision", "merge", "history", "heads", "branches", "show", "edit", "list_templates"})


def _split_engine_option(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """`--engine NAME` / `--engine=NAME` (ours, not Alembic's) and the arguments left for Alembic."""
    engine, rest, words = None, [], list(args)
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            rest += words[index:]
            break
        if word == "--engine" and index + 1 < len(words):
            engine, index = words[index + 1], index + 2
            continue
        if word.startswith("--engine="):
            engine = word.partition("=")[2]
        else:
            rest.append(word)
        index += 1
    return engine, rest


def _targets(graph: Graph, command_name: str, engine: str | None) -> list[tuple[Graph, str]]:
    """(graph of one shard, engine name) pairs a command runs on, each database once: the
    `postgres` history on every selected shard; each routed engine (shared by the shards)
    once, with `global`.

    Raises:
        MissingEngineMigrationsError: `engine` names no engine; or names a routed engine
            while `SHARD` selects a shard other than `global`.

    """
    if command_name in _SCRIPT_COMMANDS:
        return [(graph, engine or DEFAULT_ENGINE)]
    if engine is not None and engine != DEFAULT_ENGINE:
        engine_named(graph, engine)  # an unknown name, refused before anything runs
    targets: list[tuple[Graph, str]] = []
    shards = subgraphs(graph)
    for shard in shards:
        for name in [engine] if engine else engine_names(shard):
            if name != DEFAULT_ENGINE and shard_of(shard) != GLOBAL_SHARD_NAME:
                continue  # a routed engine, shared by the shards: with global
            targets.append((shard, name))
    if not targets:
        raise MissingEngineMigrationsError(
            f"Engine {engine!r} is shared by every shard and migrated with shard {GLOBAL_SHARD_NAME!r}, which "
            f"{SHARD_VARIABLE}={os.environ.get(SHARD_VARIABLE, '')!r} leaves out: run it without {SHARD_VARIABLE}, "
            f"or with {SHARD_VARIABLE}={GLOBAL_SHARD_NAME}."
        )
    return targets


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

    Database commands run on every engine with a history (`postgres`, then each routed
    engine) and on every shard (`global` first; `SHARD` limits them to one); when there
    is more than one, or the one is not `global`'s `postgres` (`SHARD=east`), a line
    `shard '<name>', engine '<name>':` precedes each one's output.
    `--engine NAME` (anywhere in the arguments) limits a command to that engine's history.
    `revision` and the other script commands run once (see the module).

    `revision --autogenerate` and `check` compare the database with
    `model_cls.metadata`, so they refuse to run when that holds no table: the caller
    must import the service's model modules first (otherwise the revision would drop
    every table).

    Raises:
        SystemExit: status 2 for bad arguments, 1 when the command fails.
        alembic.util.CommandError: with `--raiseerr`, when the command fails
            (`MissingEngineMigrationsError` for a routed engine without a history).
        PersistenceError: with `--raiseerr`, the typed error of a database fault
            (`DatabaseUnavailableError` when the database cannot be reached).
        UnknownShardError: when `SHARD` names no shard.

    """
    cli = CommandLine(prog=f"{os.path.basename(sys.argv[0]) or as_graph(graph).metadata.name}")
    engine, words = _split_engine_option(list(args) if args else sys.argv[1:])
    options = cli.parser.parse_args(words)
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
    where = as_graph(graph).postgres
    try:
        if options.cmd[0] is command.init:
            raise CommandError(
                "`init` is not needed: microcosm-postgres ships the environment script and revision template. "
                "Create an empty migrations/ directory in your package and run `revision --autogenerate -m ...`."
            )
        _refuse_to_compare_without_models(options, model_cls)
        with translating():
            targets = _targets(as_graph(graph), options.cmd[0].__name__, engine)
            # Every engine's and shard's preconditions (history directory, a database of its
            # own) are checked before anything runs: a refusal never follows a half-done upgrade.
            configs = [make_config(target, model_cls, cmd_opts=options, engine=name) for target, name in targets]
            for (target, name), config in zip(targets, configs, strict=True):
                where = config.attributes[ENGINE]
                if len(targets) > 1 or shard_of(target) != GLOBAL_SHARD_NAME or name != DEFAULT_ENGINE:
                    print(f"shard {shard_of(target)!r}, engine {name!r}:", file=sys.stdout, flush=True)
                cli.run_cmd(config, options)
    except (CommandError, PersistenceError) as error:
        if raise_errors:
            raise
        url = where.url if isinstance(error, PersistenceError) else None
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


def upgrade(
    graph: GraphLike, revision: str = "head", model_cls: HasMetadata = Model, *, engine: str | None = None
) -> None:
    """Upgrade the graph's database to `revision`, then every routed engine's (`engine`: only that one).

    A shard's graph (`sharded_subgraph`) upgrades that shard's own database (routed engines
    are shared by the shards, and upgraded with `global`); `main` covers every shard. Every
    engine's preconditions are checked before any is upgraded.

    Raises:
        MissingEngineMigrationsError: a routed engine has models but no history, or shares
            the `postgres` engine's database; nothing was upgraded.

    """
    names = [engine] if engine else engine_names(graph)
    if shard_of(graph) != GLOBAL_SHARD_NAME and not engine:
        names = [DEFAULT_ENGINE]  # routed engines are shared by the shards: upgraded with global
    configs = [make_config(graph, model_cls, engine=name) for name in names]  # every precondition first
    for config in configs:
        command.upgrade(config, revision)


def stamp(
    graph: GraphLike, revision: str = "head", model_cls: HasMetadata = Model, *, engine: str | None = None
) -> None:
    """Record `revision` as the current revision of the `postgres` engine's database (or of
    the routed `engine`'s), without running migrations."""
    command.stamp(make_config(graph, model_cls, engine=engine), revision)


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


def current_revision(graph: GraphLike, *, engine: str | None = None) -> str | None:
    """The database's current revision (None when it has none); `engine`: a routed engine's.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.
        MissingEngineMigrationsError: when no model routes to `engine`.

    """
    graph = as_graph(graph)
    bound = engine_named(graph, engine or DEFAULT_ENGINE)
    with translating(), bound.connect() as connection:
        return MigrationContext.configure(connection, opts=_version_options(graph)).get_current_revision()


def head_revision(graph: GraphLike, model_cls: HasMetadata = Model, *, engine: str | None = None) -> str | None:
    """The code's head revision; None when the service has no migrations.

    `engine` names a routed engine, whose own history is read.

    Raises:
        UnresolvedMigrationsError: when the graph does not find the migrations its models have.
        MissingEngineMigrationsError: when the service has migrations but `engine` has no history.

    """
    try:
        config = make_config(graph, model_cls, engine=engine)
    except (UnresolvedMigrationsError, MissingEngineMigrationsError):
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
