"""v2 encoders: value <-> text round trips, canonical texts, typed errors on bad input."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from microcosm_postgres.encryption.v2.encoders import (
    REDACTED,
    ArrayEncoder,
    DatetimeEncoder,
    DecimalEncoder,
    Encoder,
    EnumEncoder,
    IntEncoder,
    JSONEncoder,
    Nullable,
    StringEncoder,
    TextEncoder,
)
from microcosm_postgres.errors import InvalidInputError
from microcosm_postgres.models import EPOCH


class Colour(enum.Enum):
    RED = "r"
    GREEN = "g"


ROUND_TRIPS: list[tuple[Encoder[Any], Any]] = [
    (StringEncoder(), "Zoë O'Brien ✓"),
    (StringEncoder(), ""),
    (TextEncoder(), "x" * 5000),
    (IntEncoder(), -(2**40)),
    (DecimalEncoder(), Decimal("12.3400")),
    (DatetimeEncoder(), datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone.utc)),
    (EnumEncoder(Colour), Colour.GREEN),
    (JSONEncoder(), {"b": [1, 2.5, None], "a": {"x": True}}),
    (ArrayEncoder(StringEncoder()), ["a", "b,c", '"d"']),
    (ArrayEncoder(IntEncoder()), [3, 1, 2]),
    (Nullable(IntEncoder()), 7),
]


@pytest.mark.parametrize(("encoder", "value"), ROUND_TRIPS, ids=lambda item: type(item).__name__)
def test_values_round_trip(encoder: Encoder[Any], value: Any) -> None:
    text = encoder.encode(value)
    assert isinstance(text, str)
    assert encoder.decode(text) == value


def test_encodings_are_canonical_so_equal_values_have_equal_beacons() -> None:
    assert JSONEncoder().encode({"b": 1, "a": 2}) == JSONEncoder().encode({"a": 2, "b": 1}) == '{"a":2,"b":1}'
    paris = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    utc = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert DatetimeEncoder().encode(paris) == DatetimeEncoder().encode(utc)
    assert DatetimeEncoder().normalize(paris).tzinfo == timezone.utc
    assert EnumEncoder(Colour).encode("RED") == EnumEncoder(Colour).encode(Colour.RED) == "RED"
    assert DecimalEncoder().encode(5) == "5"
    assert DecimalEncoder().encode(Decimal("1.50")) == DecimalEncoder().encode(Decimal("1.5")) == "1.5"
    assert DecimalEncoder().encode(Decimal("1E+2")) == "100"
    assert DecimalEncoder().encode(Decimal("-0.00")) == "0"


BAD_INPUT: list[tuple[Encoder[Any], Any, str]] = [
    (StringEncoder(), 12, "takes a str"),
    (IntEncoder(), True, "takes an int"),
    (IntEncoder(), "12", "takes an int"),
    (DecimalEncoder(), 1.5, "a finite Decimal"),
    (DecimalEncoder(), Decimal("NaN"), "a finite Decimal"),
    (DatetimeEncoder(), datetime(2026, 1, 1), "naive datetime"),
    (DatetimeEncoder(), "2026-01-01", "takes a datetime"),
    (EnumEncoder(Colour), "BLUE", "allowed names: RED, GREEN"),
    (JSONEncoder(), {1, 2}, "JSON cannot hold"),
    (JSONEncoder(), float("nan"), "JSON cannot hold"),
    (ArrayEncoder(StringEncoder()), "abc", "takes a list"),
    (ArrayEncoder(IntEncoder()), [1, "2"], "takes an int"),
]


@pytest.mark.parametrize(("encoder", "value", "message"), BAD_INPUT, ids=lambda item: repr(item)[:30])
def test_bad_input_is_a_typed_error_naming_what_to_pass(encoder: Encoder[Any], value: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as raised:
        encoder.encode(value)
    assert raised.value.status_code == 400


def test_each_encoder_has_a_redacted_value_of_its_type() -> None:
    assert StringEncoder().redacted_value == REDACTED
    assert TextEncoder().redacted_value == REDACTED
    assert IntEncoder().redacted_value == 0
    assert DecimalEncoder().redacted_value == Decimal(0)
    assert DatetimeEncoder().redacted_value == EPOCH
    assert JSONEncoder().redacted_value == {}
    assert ArrayEncoder(IntEncoder()).redacted_value == []
    assert EnumEncoder(Colour).redacted_value is None
    assert EnumEncoder(Colour, redacted_value=Colour.RED).redacted_value is Colour.RED
    assert Nullable(StringEncoder(redacted_value="***")).redacted_value == "***"


def test_array_elements_are_encoded_one_by_one_for_beacon_arrays() -> None:
    assert ArrayEncoder(IntEncoder()).elements([1, 22]) == ["1", "22"]
    assert Nullable(ArrayEncoder(IntEncoder())).elements(None) is None
    assert StringEncoder().elements("abc") is None


def test_nested_wrappers_are_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="scalar element encoder"):
        ArrayEncoder(ArrayEncoder(IntEncoder()))
    with pytest.raises(TypeError, match="wrap the encoder once"):
        Nullable(Nullable(IntEncoder()))


def test_a_nullable_encoder_says_none_is_allowed_too() -> None:
    with pytest.raises(InvalidInputError) as raised:
        Nullable(IntEncoder()).encode("x")  # type: ignore[arg-type]  # the wrong type, on purpose
    assert (
        str(raised.value)
        == "This encrypted column takes an int (got a str): pass an int, or None (the column is Nullable)."
    )
    with pytest.raises(InvalidInputError, match="pass an int.$"):
        IntEncoder().encode("x")  # type: ignore[arg-type]
