"""Checks of option values where a stage starts: a value out of range is a one-line GagsError that names the option
and the accepted range, before anything is read or written. NaN fails every check."""

from __future__ import annotations

import math

from gags.errors import GagsError


def at_least(name: str, value: float, low: float) -> None:
    """``value >= low`` (integers and finite numbers)."""
    if not (isinstance(value, int) or math.isfinite(value)) or not value >= low:
        raise GagsError(f"{name} must be at least {low:g}, got {value}.")


def positive(name: str, value: float) -> None:
    """A finite number above 0."""
    if not (isinstance(value, int) or math.isfinite(value)) or not value > 0:
        raise GagsError(f"{name} must be a positive number, got {value}.")


def between(name: str, value: float, low: float, high: float) -> None:
    """``low <= value <= high``."""
    if not low <= value <= high:
        raise GagsError(f"{name} must be in [{low:g}, {high:g}], got {value}.")


def optional_positive(name: str, value: float | None) -> None:
    if value is not None:
        positive(name, value)


__all__ = ["at_least", "between", "optional_positive", "positive"]
