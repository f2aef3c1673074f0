"""Alembic environment script shipped with microcosm-postgres (not a module to import).

Everything comes from `config.attributes`, set by `microcosm_postgres.migrate`:
the engine, the target metadata, the tables routed to that engine (None when the
service routes nothing elsewhere) and extra `context.configure` options.
Nothing is read from files or kept between runs, so two graphs in one process can
migrate one after the other.

"""

from typing import Any

from alembic import context

from microcosm_postgres.migrate import ENGINE, METADATA, OPTIONS, TABLES, compare_type, render_item

config = context.config
engine = config.attributes[ENGINE]
options = {"render_item": render_item, "compare_type": compare_type, **config.attributes.get(OPTIONS, {})}
own_tables: frozenset[str] | None = config.attributes.get(TABLES)

if own_tables is not None:
    # Several engines: autogenerate and `check` see only the tables routed to this engine, and
    # never propose dropping a table that belongs to another engine.
    routed_here: frozenset[str] = own_tables
    other_tables = {table.name for key, table in config.attributes[METADATA].tables.items() if key not in routed_here}
    configured_include = options.get("include_object")

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table":
            if not reflected and obj.key not in routed_here:
                return False
            if reflected and compare_to is None and name in other_tables:
                return False
        return configured_include is None or bool(configured_include(obj, name, type_, reflected, compare_to))

    options["include_object"] = include_object

if context.is_offline_mode():
    context.configure(
        url=engine.url.render_as_string(hide_password=False),
        target_metadata=config.attributes[METADATA],
        literal_binds=True,
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=config.attributes[METADATA], **options)
        with context.begin_transaction():
            context.run_migrations()
