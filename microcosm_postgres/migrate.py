"""Migrations with Alembic, configured in code: no alembic.ini, no env.py of your own.

A service keeps its revisions in a `migrations/` directory of its package and writes:

    def main():
        graph = create_object_graph(name="example")
        migrate.main(graph)                    # Alembic's command line: upgrade head, ...

The directory is the graph's `migrations_dir` component when one is bound, else
`graph.metadata.get_path("migrations")`. The environment script and the revision
template ship inside this package; the graph's engine and `model_cls.metadata` reach
them through `Config.attributes`. Extra `context.configure` options come from
`graph.config.alembic.environment_options` when that config exists.

"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import CommandLine, Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from microcosm.errors import NotBoundError
from sqlalchemy import BigInteger, Integer

from microcosm_postgres.errors import translating
from microcosm_postgres.models import Model, UTCDateTime
from microcosm_postgres.types import EnumType, Serial

__all__ = [
    "compare_type",
    "current_revision",
    "head_revision",
    "main",
    "make_config",
    "migrations_dir",
    "render_item",
    "stamp",
    "upgrade",
]

ENGINE = "microcosm_postgres.engine"
METADATA = "microcosm_postgres.metadata"
OPTIONS = "microcosm_postgres.environment_options"

_ENVIRONMENT = Path(__file__).parent / "migration_environment"


def migrations_dir(graph: Any) -> Path:
    """The service's migrations directory.

    Raises:
        alembic.util.CommandError: when it does not exist (naming the path tried).

    """
    try:
        graph.factory_for("migrations_dir")
        path = Path(str(graph.migrations_dir))
    except NotBoundError:
        try:
            path = Path(graph.metadata.get_path("migrations"))
        except RuntimeError as error:
            raise CommandError(
                f"Cannot locate migrations for {graph.metadata.name!r}: its import name does not resolve to a "
                "package. Bind a `migrations_dir` component, or pass import_name/root_path to create_object_graph."
            ) from error
    if not path.is_dir():
        raise CommandError(
            f"Migrations directory {str(path)!r} does not exist. Create it (an empty directory is fine), "
            "or bind a `migrations_dir` component pointing at yours."
        )
    return path


def make_config(graph: Any, model_cls: type[Any] = Model, cmd_opts: Any = None) -> Config:
    """An Alembic `Config` for `graph`: its engine, its migrations, `model_cls.metadata`.

    Raises:
        alembic.util.CommandError: when the migrations directory does not exist.

    """
    config = Config(cmd_opts=cmd_opts, stdout=sys.stdout)  # the current stream, not the one at import
    config.set_main_option("script_location", str(_ENVIRONMENT))
    config.set_main_option("version_locations", str(migrations_dir(graph)))
    config.set_main_option("path_separator", "os")
    config.attributes[ENGINE] = graph.postgres
    config.attributes[METADATA] = model_cls.metadata
    alembic_config = graph.config.get("alembic") or {}
    config.attributes[OPTIONS] = dict(alembic_config.get("environment_options") or {})
    return config


def main(graph: Any, *args: str, model_cls: type[Any] = Model) -> None:
    """Run Alembic's command line for `graph` (arguments default to `sys.argv[1:]`).

    All of Alembic's commands work (`upgrade`, `downgrade`, `revision --autogenerate -m`,
    `history`, `current`, `heads`, `stamp`, `check`, `merge`, `show`, ...) except
    `init`: the environment ships with microcosm-postgres.

    Raises:
        alembic.util.CommandError: for `init`, or a missing migrations directory.

    """
    cli = CommandLine(prog=f"{os.path.basename(sys.argv[0]) or graph.metadata.name}")
    options = cli.parser.parse_args(list(args) if args else sys.argv[1:])
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    if options.cmd[0] is command.init:
        raise CommandError(
            "`init` is not needed: microcosm-postgres ships the environment script and revision template. "
            "Create an empty migrations/ directory in your package and run `revision --autogenerate -m ...`."
        )
    cli.run_cmd(make_config(graph, model_cls, cmd_opts=options), options)


def upgrade(graph: Any, revision: str = "head", model_cls: type[Any] = Model) -> None:
    """Upgrade the graph's database to `revision`."""
    command.upgrade(make_config(graph, model_cls), revision)


def stamp(graph: Any, revision: str = "head", model_cls: type[Any] = Model) -> None:
    """Record `revision` as the database's current revision, without running migrations."""
    command.stamp(make_config(graph, model_cls), revision)


def current_revision(graph: Any) -> str | None:
    """The database's current revision (None when it has none).

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    with translating(), graph.postgres.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(graph: Any, model_cls: type[Any] = Model) -> str | None:
    """The code's head revision; None when the service has no migrations."""
    try:
        config = make_config(graph, model_cls)
    except CommandError:
        return None
    return ScriptDirectory.from_config(config).get_current_head()


def compare_type(
    context: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
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


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
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
