"""microcosm factories: the `postgres` engine and the `sessionmaker`."""

__all__: list[str] = []
