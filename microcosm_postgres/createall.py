"""Command-line entry point: create the service's tables (`--drop` / `-D` drops them first).

    def main():
        graph = create_object_graph(name="example")
        createall.main(graph)

Arguments it does not know are returned for the service's own parser.

"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from microcosm_postgres.models import Model
from microcosm_postgres.operations import create_all, drop_all

__all__ = ["main"]


def main(graph: Any, args: Sequence[str] | None = None, *, model_cls: type[Any] = Model) -> list[str]:
    """Create the tables of `model_cls.metadata` (after dropping them with `--drop`/`-D`).

    Prints what it did, and returns the arguments it left alone.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    parser = argparse.ArgumentParser(prog=f"{graph.metadata.name}-createall", add_help=False)
    parser.add_argument("-D", "--drop", action="store_true", help="drop the tables first")
    options, remaining = parser.parse_known_args(sys.argv[1:] if args is None else list(args))
    where = graph.postgres.url.render_as_string(hide_password=True)
    tables = ", ".join(sorted(model_cls.metadata.tables)) or "(none)"
    if options.drop:
        drop_all(graph, model_cls)
        print(f"Dropped tables in {where}: {tables}")
    create_all(graph, model_cls)
    print(f"Created tables in {where}: {tables}")
    return remaining
