"""register_flask_context with a real Flask app: each request encrypts for its X-Request-Client,
and the context is gone when the request ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.v2.encoders import REDACTED
from microcosm_postgres.encryption.v2.encryptors import current_encryptor_context, register_flask_context
from microcosm_postgres.store import Store
from tests.encryption_v2_models import Person
from tests.test_encryption_v2_columns import graph, tables  # noqa: F401  (fixtures)


@pytest.fixture
def app(graph: Any) -> Iterator[Flask]:  # noqa: F811
    app = Flask("encryption-test")
    people = Store(graph, Person, auto_filter_fields=[Person.name])

    @app.post("/people")
    def create() -> ResponseReturnValue:
        with SessionContext(graph), transaction():
            person = people.create(Person(client_id=str(request.headers.get("X-Request-Client")), name=request.json))
        return jsonify(id=str(person.id))

    @app.get("/people/<identifier>")
    def read(identifier: str) -> ResponseReturnValue:
        with SessionContext(graph):
            person = people.retrieve(identifier)
            return jsonify(name=person.name, tenant=current_encryptor_context())

    @app.get("/search/<name>")
    def search(name: str) -> ResponseReturnValue:
        with SessionContext(graph):
            return jsonify(count=len(people.search(name=name)))

    register_flask_context(graph, app)
    yield app


def test_each_request_encrypts_and_reads_as_its_client(app: Flask) -> None:
    client = app.test_client()
    created = client.post("/people", json="Alice", headers={"X-Request-Client": "client-a"})
    assert created.status_code == 200, created.text
    identifier = created.json["id"]  # type: ignore[index]
    assert current_encryptor_context() is None  # the request's context ended with it
    own = client.get(f"/people/{identifier}", headers={"X-Request-Client": "client-a"})
    assert own.json == {"name": "Alice", "tenant": "client-a"}
    other = client.get(f"/people/{identifier}", headers={"X-Request-Client": "client-b"})
    assert other.json == {"name": REDACTED, "tenant": "client-b"}
    anonymous = client.get(f"/people/{identifier}")
    assert anonymous.json == {"name": REDACTED, "tenant": None}
    assert client.get("/search/Alice", headers={"X-Request-Client": "client-a"}).json == {"count": 1}
    assert client.get("/search/Alice", headers={"X-Request-Client": "client-b"}).json == {"count": 0}
    assert current_encryptor_context() is None
