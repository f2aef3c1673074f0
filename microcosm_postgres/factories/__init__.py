"""microcosm factories: the `postgres` engine and the `sessionmaker`."""
