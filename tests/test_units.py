"""greenmon.units: exact factors within a family, refusals across families."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenmon.errors import GreenmonError
from greenmon.units import KNOWN_UNITS, UnitError, conversion_factor, is_convertible


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "factor"),
    [
        ("kWh", "kWh", 1.0),
        ("Wh", "kWh", 0.001),
        ("kWh", "Wh", 1000.0),
        ("MWh", "kWh", 1000.0),
        ("kWh", "MWh", 0.001),
        ("MWh", "Wh", 1_000_000.0),
        ("Wh", "MWh", 0.000001),
        ("GJ", "MJ", 1000.0),
        ("MJ", "GJ", 0.001),
        ("t", "kg", 1000.0),
        ("kg", "t", 0.001),
        ("m3", "m3", 1.0),
        ("Nm3", "Nm3", 1.0),
    ],
)
def test_conversion_factor_is_exact(from_unit: str, to_unit: str, factor: float) -> None:
    assert conversion_factor(from_unit, to_unit) == factor
    assert is_convertible(from_unit, to_unit)


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "message"),
    [
        ("m3", "Nm3", "cannot convert 'm3' (volume) to 'Nm3' (normal volume)"),
        ("Nm3", "m3", "cannot convert 'Nm3'"),
        ("kWh", "MJ", "cannot convert 'kWh' (electric energy) to 'MJ' (heat)"),
        ("GJ", "kWh", "cannot convert"),
        ("t", "m3", "cannot convert"),
        ("kg", "kWh", "cannot convert"),
        ("kwh", "kWh", "unknown unit 'kwh'"),
        ("kWh", "mWh", "unknown unit 'mWh'"),
        ("tce", "kg", "unknown unit 'tce'"),
        ("", "kWh", "unknown unit ''"),
    ],
)
def test_conversion_refused(from_unit: str, to_unit: str, message: str) -> None:
    with pytest.raises(UnitError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        conversion_factor(from_unit, to_unit)
    assert not is_convertible(from_unit, to_unit)


def test_unit_error_is_a_greenmon_error() -> None:
    assert issubclass(UnitError, GreenmonError)


def test_known_units() -> None:
    assert {"Wh", "kWh", "MWh", "MJ", "GJ", "kg", "t", "m3", "Nm3"} == KNOWN_UNITS
    assert isinstance(KNOWN_UNITS, frozenset)


units = st.sampled_from(sorted(KNOWN_UNITS))


@given(units, units)
def test_convertible_is_symmetric_and_factors_invert(a: str, b: str) -> None:
    assert is_convertible(a, b) == is_convertible(b, a)
    if is_convertible(a, b):
        assert math.isclose(conversion_factor(a, b) * conversion_factor(b, a), 1.0, rel_tol=1e-15)
    else:
        with pytest.raises(UnitError):
            conversion_factor(a, b)


@given(units, units, units)
def test_factors_chain(a: str, b: str, c: str) -> None:
    if is_convertible(a, b) and is_convertible(b, c):
        chained = conversion_factor(a, b) * conversion_factor(b, c)
        assert math.isclose(chained, conversion_factor(a, c), rel_tol=1e-15)
