"""An example service: `Company` and `Employee` models and their stores.

    python -m microcosm_postgres.example

runs the README's usage against the configured database (`example_test_db` as user
`example` on localhost, unless `EXAMPLE__POSTGRES__*` says otherwise) and prints the count.

The stores bind themselves with `@binding` when this module is imported, exactly as a
service's own stores do; they are deliberately not entry points, so services that
install microcosm-postgres never get these tables in their `Model.metadata`.

"""

from __future__ import annotations

import sys
from enum import Enum, unique
from typing import Any
from uuid import UUID

from microcosm.api import binding, create_object_graph
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, Query, mapped_column

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DatabaseUnavailableError
from microcosm_postgres.models import EntityMixin, Model
from microcosm_postgres.store import Store
from microcosm_postgres.testing.database import TestDatabaseError, ensure_test_database, test_server
from microcosm_postgres.types import EnumType

__all__ = [
    "Company",
    "CompanyStore",
    "CompanyType",
    "Employee",
    "EmployeeStore",
    "main",
]


@unique
class CompanyType(Enum):
    private = "private"
    public = "public"


class Company(EntityMixin, Model):
    __tablename__ = "company"

    name: Mapped[str | None] = mapped_column(String(255), unique=True)
    type: Mapped[CompanyType | None] = mapped_column(EnumType(CompanyType))


class Employee(EntityMixin, Model):
    __tablename__ = "employee"

    first: Mapped[str] = mapped_column(String(255), nullable=False)
    last: Mapped[str] = mapped_column(String(255), nullable=False)
    other: Mapped[str | None] = mapped_column(String(255), nullable=True)
    company_id: Mapped[UUID] = mapped_column(ForeignKey("company.id"), nullable=False)


@binding("company_store")
class CompanyStore(Store[Company]):
    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Company, auto_filter_fields=[Company.name])


@binding("employee_store")
class EmployeeStore(Store[Employee]):
    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Employee)

    def search_by_company(self, company_id: UUID, **kwargs: Any) -> list[Employee]:
        return self.search(company_id=company_id, **kwargs)

    def _filter(
        self, query: Query[Employee], company_id: Any = None, first: Any = None, **filters: Any
    ) -> Query[Employee]:
        if company_id is not None:
            query = query.filter(Employee.company_id == company_id)
        if first is not None:
            query = query.filter(Employee.first == first)
        return super()._filter(query, **filters)

    def _order_by(self, query: Query[Employee], **filters: Any) -> Query[Employee]:
        return query.order_by(Employee.last.asc())


def main() -> int:
    """Run the README usage and print the company count.

    Uses the configured server, or a throwaway one when none answers (see
    `microcosm_postgres.testing.database`), creating the example role and database when
    they are missing. Exits 1, saying where it tried and what to do, when neither works.

    """
    try:
        with test_server("example") as server:
            print(f"Using PostgreSQL at {server.host}:{server.port} ({server.source})")
            graph: Any = create_object_graph(name="example", testing=True)
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


def _usage(graph: Any) -> int:
    [company_store] = graph.use("company_store")
    with SessionContext(graph) as context:
        context.recreate_all()
        with transaction():
            company_store.create(Company(name="Acme"))
        print(company_store.count())
    return 0


if __name__ == "__main__":
    sys.exit(main())
