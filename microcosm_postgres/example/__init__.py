"""An example service: `Company` and `Employee` models and their stores.

    python -m microcosm_postgres.example

runs the README's usage against the test database (see `__main__`) and prints the count.

Importing this package binds `company_store` and `employee_store` with `@binding`, exactly
as a service's own stores do; they are deliberately not entry points, so services that
install microcosm-postgres never get these tables in their `Model.metadata`. The models
and stores import nothing from `microcosm_postgres.testing`: only `__main__` does.

"""

from __future__ import annotations

from microcosm_postgres.example.models import Company, CompanyType, Employee
from microcosm_postgres.example.stores import CompanyStore, EmployeeStore, ExampleGraph

__all__ = [
    "Company",
    "CompanyStore",
    "CompanyType",
    "Employee",
    "EmployeeStore",
    "ExampleGraph",
]
