"""`python -m microcosm_postgres COMMAND ...`: maintenance commands.

provision   create a service's role and database(s) by convention (see provision.py)

"""

from __future__ import annotations

import sys

from microcosm_postgres.provision import main as provision_main

__all__ = ["main"]

COMMANDS = {"provision": provision_main}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
