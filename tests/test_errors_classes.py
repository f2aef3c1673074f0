"""Every error class is constructible as services construct it: (), ("message"), ("message", cause)."""

from __future__ import annotations

import pytest

from microcosm_postgres import errors
from microcosm_postgres.errors import PersistenceError

CLASSES = sorted(
    (
        value
        for value in (getattr(errors, name) for name in errors.__all__)
        if isinstance(value, type) and issubclass(value, PersistenceError)
    ),
    key=lambda cls: cls.__name__,
)


def test_every_class_is_covered() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert names >= {
        "PersistenceError",
        "ModelNotFoundError",
        "DuplicateModelError",
        "MissingDependencyError",
        "ReferencedModelError",
        "ModelIntegrityError",
        "InvalidInputError",
        "QueryTimeoutError",
        "TransactionConflictError",
        "DatabaseUnavailableError",
        "AuthenticationFailedError",
        "PermissionDeniedError",
        "TransactionAbortedError",
        "InvalidNameError",
        "UnsafeOperationError",
        "MigrationsBehindError",
        "SessionNotOpenError",
    }


@pytest.mark.parametrize("error_class", CLASSES, ids=lambda cls: cls.__name__)
def test_no_arguments(error_class: type[PersistenceError]) -> None:
    error = error_class()
    assert str(error) == error_class.default_message
    assert error.cause is None
    assert (error.sqlstate, error.constraint, error.table) == (None, None, None)


@pytest.mark.parametrize("error_class", CLASSES, ids=lambda cls: cls.__name__)
def test_message(error_class: type[PersistenceError]) -> None:
    error = error_class("Widget 42 not found")
    assert str(error) == "Widget 42 not found"
    assert error.message == "Widget 42 not found"


@pytest.mark.parametrize("error_class", CLASSES, ids=lambda cls: cls.__name__)
def test_message_and_cause(error_class: type[PersistenceError]) -> None:
    cause = KeyError("widget")
    with pytest.raises(error_class) as raised:
        raise error_class("Widget 42 not found", cause)
    assert str(raised.value) == "Widget 42 not found"
    assert raised.value.cause is cause
    assert raised.value.__cause__ is cause
    assert isinstance(raised.value, PersistenceError)


@pytest.mark.parametrize("error_class", CLASSES, ids=lambda cls: cls.__name__)
def test_keyword_attributes_are_kept(error_class: type[PersistenceError]) -> None:
    error = error_class("refused", sqlstate="23505", constraint="widget_name_key", table="widget")
    assert (error.sqlstate, error.constraint, error.table) == ("23505", "widget_name_key", "widget")
    assert error.status_code in (400, 403, 404, 409, 500, 503)
