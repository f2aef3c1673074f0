from microcosm_postgres.diff import Change, Delta, Version
from microcosm_postgres.example import Company, CompanyType


def test_version_and_delta() -> None:
    company = Company(name="Acme", type=CompanyType.private)
    before = Version(company)
    company.name = "Acme 2"
    company.type = CompanyType.public
    delta = Version(company) - before
    assert isinstance(delta, Delta)
    assert delta == {
        "name": Change("Acme", "Acme 2"),
        "type": Change(CompanyType.private, CompanyType.public),
    }
    assert before["name"] == "Acme" and set(before) >= {"id", "name", "type", "created_at"}
    assert Version(company) - Version(company) == {}
