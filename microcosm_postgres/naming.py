"""The naming convention, in one place: database and role names, and what counts as a test database.

    database   `{name}_db`, or `{name}_test_db` when testing
    role       `{name}`, or `{name}_ro` for the read-only role

A test database is one whose name follows the test convention: `{name}_test_db`,
`{name}_test_<anything>_db` (`example_test_secondary_db`), or a per-worker copy of either
(`{name}_test_db_gw0`, made by the pytest plugin under pytest-xdist). Destructive
helpers act only on those (see `operations`).

PostgreSQL silently truncates identifiers longer than 63 bytes, which can make two
conventional names (say `{name}_db` and `{name}_test_db`) the same database: every name
made here is checked, and a longer one is refused with `InvalidNameError`.

"""

from __future__ import annotations

import re

from microcosm_postgres.errors import InvalidNameError

__all__ = [
    "MAX_IDENTIFIER_BYTES",
    "check_identifier",
    "database_name",
    "is_test_database_name",
    "read_only_username",
    "username",
]

# PostgreSQL's NAMEDATALEN - 1.
MAX_IDENTIFIER_BYTES = 63


def check_identifier(value: str, *, what: str = "identifier") -> str:
    """Return `value` when PostgreSQL can store it as an identifier unchanged.

    Raises:
        InvalidNameError: when it is empty or longer than 63 bytes (PostgreSQL would
            truncate it, possibly into another object's name).

    """
    size = len(value.encode("utf-8"))
    if not value:
        raise InvalidNameError(f"The {what} is empty; give it a name.")
    if size > MAX_IDENTIFIER_BYTES:
        raise InvalidNameError(
            f"The {what} {value!r} is {size} bytes long; PostgreSQL keeps only the first "
            f"{MAX_IDENTIFIER_BYTES} and would silently use another name. Choose a shorter name "
            "(or configure postgres.database_name / postgres.username explicitly)."
        )
    return value


def database_name(service: str, *, testing: bool = False) -> str:
    """`{service}_db`, or `{service}_test_db` when testing (checked for length).

    Raises:
        InvalidNameError: when the result would exceed PostgreSQL's identifier limit.

    """
    return check_identifier(f"{service}_test_db" if testing else f"{service}_db", what="database name")


def username(service: str, *, read_only: bool = False) -> str:
    """`{service}`, or `{service}_ro` for the read-only role (checked for length).

    Raises:
        InvalidNameError: when the result would exceed PostgreSQL's identifier limit.

    """
    return check_identifier(read_only_username(service) if read_only else service, what="role name")


def read_only_username(service: str) -> str:
    """The read-only role of `service`: `{service}_ro`."""
    return f"{service}_ro"


def is_test_database_name(database: str, service: str | None = None) -> bool:
    """Whether `database` follows the test naming convention (of `service`, when given).

    `{service}_test_db`, `{service}_test_<anything>_db`, and pytest-xdist per-worker copies
    of those (`<one of them>_gw<N>`) are test databases; anything else (`{service}_db`,
    `acme`, `test`) is not.

    """
    prefix = re.escape(service) if service is not None else r".+?"
    return re.fullmatch(rf"{prefix}_test(?:_.+)?_db(?:_gw[0-9]+)?", database) is not None
