"""Units of measure: which meter units greenmon knows and how they convert into each other.

This module owns the list of units (`KNOWN_UNITS`) and the exact conversion factors between
units of the same family. It is pure: no I/O, no carrier knowledge (which carrier is measured
in which reference unit lives in the registry's copy of ``energy_coefficients.csv``).

Families, each converting only within itself:

- electric energy: ``Wh``, ``kWh``, ``MWh``
- heat: ``MJ``, ``GJ``
- mass: ``kg``, ``t``
- volume: ``m3``
- normal volume: ``Nm3``

``m3`` and ``Nm3`` are deliberately *not* convertible here: turning a volume at normal conditions
into a volume at other conditions needs temperature and pressure, which a unit string does not
carry. That conversion is reference data (``greenmon/data/volume_conditions.csv``, applied by the
aggregator at the conditions the coefficient file states for the carrier).
Unit names are case-sensitive (``kwh`` is unknown; ``MWh`` is not ``mWh``).
"""

from __future__ import annotations

from fractions import Fraction
from types import MappingProxyType
from typing import Final, NamedTuple

from greenmon.errors import GreenmonError

__all__ = ["KNOWN_UNITS", "UnitError", "conversion_factor", "is_convertible"]


class UnitError(GreenmonError):
    """A unit is unknown, or two units cannot be converted into each other."""


class _Unit(NamedTuple):
    family: str
    scale: Fraction  # size of one unit, expressed in the family's base unit


_UNITS: Final = MappingProxyType(
    {
        "Wh": _Unit("electric energy", Fraction(1, 1000)),
        "kWh": _Unit("electric energy", Fraction(1)),
        "MWh": _Unit("electric energy", Fraction(1000)),
        "MJ": _Unit("heat", Fraction(1)),
        "GJ": _Unit("heat", Fraction(1000)),
        "kg": _Unit("mass", Fraction(1)),
        "t": _Unit("mass", Fraction(1000)),
        "m3": _Unit("volume", Fraction(1)),
        "Nm3": _Unit("normal volume", Fraction(1)),
    }
)

KNOWN_UNITS: Final[frozenset[str]] = frozenset(_UNITS)
"""Every unit greenmon accepts for a meter or a reading."""


def _lookup(unit: str) -> _Unit:
    try:
        return _UNITS[unit]
    except (KeyError, TypeError):
        known = ", ".join(sorted(KNOWN_UNITS))
        raise UnitError(f"unknown unit {unit!r} (known: {known})") from None


def is_convertible(a: str, b: str) -> bool:
    """True if both units are known and belong to the same family."""
    ua, ub = _UNITS.get(a), _UNITS.get(b)
    return ua is not None and ub is not None and ua.family == ub.family


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """The number to multiply a quantity in `from_unit` by to express it in `to_unit`.

    Factors are exact decimal values (``conversion_factor("Wh", "kWh") == 0.001``,
    ``conversion_factor("MWh", "kWh") == 1000.0``). Raises `UnitError` when a unit is unknown
    or the two units belong to different families.
    """
    src, dst = _lookup(from_unit), _lookup(to_unit)
    if src.family != dst.family:
        raise UnitError(
            f"cannot convert {from_unit!r} ({src.family}) to {to_unit!r} ({dst.family})"
        )
    return float(src.scale / dst.scale)
