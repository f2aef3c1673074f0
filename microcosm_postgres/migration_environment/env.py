"""Alembic environment script shipped with microcosm-postgres (not a module to import).

Everything comes from `config.attributes`, set by `microcosm_postgres.migrate`:
the graph's engine, the target metadata and extra `context.configure` options.
Nothing is read from files or kept between runs, so two graphs in one process can
migrate one after the other.

"""

from alembic import context

from microcosm_postgres.migrate import ENGINE, METADATA, OPTIONS, compare_type, render_item

config = context.config
engine = config.attributes[ENGINE]
options = {"render_item": render_item, "compare_type": compare_type, **config.attributes.get(OPTIONS, {})}

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
