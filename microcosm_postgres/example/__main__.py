"""`python -m microcosm_postgres.example`: run the README's usage and print the company count.

Uses the configured server (`example_test_db` as user `example` on localhost, unless
`EXAMPLE__POSTGRES__*` says otherwise), or a throwaway one when none answers, creating
the example role and database when they are missing.

"""

from __future__ import annotations

import sys
from typing import cast

from microcosm.api import create_object_graph

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DatabaseUnavailableError
from microcosm_postgres.example import Company, ExampleGraph

__all__ = [
    "main",
]


def main() -> int:
    """Run the README usage and print the company count; 0 on success.

    Exits 1, saying where it tried and what to do, when no database can be reached.

    """
    # The test toolkit (throwaway servers, provisioning) only when the example runs.
    from microcosm_postgres.testing.database import TestDatabaseError, ensure_test_database, use_test_server

    try:
        with use_test_server("example") as server:
            print(f"Using PostgreSQL at {server.host}:{server.port} ({server.source})")
            graph = cast(ExampleGraph, create_object_graph(name="example", testing=True))
            url = graph.postgres.url
            try:
                ensure_test_database("example", server)
                return _usage(graph)
            except DatabaseUnavailableError as error:
                print(
                    f"Could not reach PostgreSQL at {url.host}:{url.port}, database {url.database!r}, "
                    f"user {url.username!r}: {error}\nCreate them with `createuser {url.username}` and "
                    f"`createdb -O {url.username} {url.database}`, or set EXAMPLE__POSTGRES__HOST / __PORT.",
                    file=sys.stderr,
                )
                return 1
            finally:
                graph.postgres.dispose()
    except TestDatabaseError as error:
        print(f"Could not run the example: {error}", file=sys.stderr)
        return 1


def _usage(graph: ExampleGraph) -> int:
    company_store = graph.company_store
    with SessionContext(graph) as context:
        context.recreate_all()
        with transaction():
            company_store.create(Company(name="Acme"))
        print(company_store.count())
    return 0


if __name__ == "__main__":
    sys.exit(main())
