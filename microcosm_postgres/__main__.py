"""`python -m microcosm_postgres COMMAND ...`: maintenance commands.

usage: python -m microcosm_postgres COMMAND [OPTIONS]

commands:
  provision   create a service's role and database(s) by convention
              (`python -m microcosm_postgres provision --help` for its options)

Per-service commands (create tables, migrations) run through the service's own graph:
see `microcosm_postgres.createall` and `microcosm_postgres.migrate`.

"""

from __future__ import annotations

import sys
from collections.abc import Callable

from microcosm_postgres.provision import main as provision_main

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, Callable[[list[str]], int]] = {"provision": provision_main}

_USAGE = "\n\n".join(__doc__.strip().split("\n\n")[1:3])


def main(argv: list[str] | None = None) -> int:
    """Run one command; `--help` prints usage to stdout (exit 0), mistakes go to stderr (exit 2)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if not args:
        print(f"{_USAGE}\n\nerror: no command given", file=sys.stderr)
        return 2
    if args[0] not in COMMANDS:
        print(f"{_USAGE}\n\nerror: unknown command {args[0]!r} (known: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
