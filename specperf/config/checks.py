"""Validators for YAML values: each returns the value or raises a ConfigError naming the file, key path, the bad
value, what is allowed, and the fix."""

from __future__ import annotations

import difflib
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from specperf.errors import ConfigError

_SHOW_CHARS = 80  # longest repr of a bad value quoted in an error message


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


# Bounded repr: a YAML file can nest aliases into a value with billions of leaves (a "billion laughs" document),
# whose full repr would never finish; this one stops at a few levels and items.
class _BoundedRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to text (sys.get_int_max_str_digits)
            return f"<an integer of {x.bit_length()} bits>"


_REPR = _BoundedRepr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 4, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = _SHOW_CHARS, _SHOW_CHARS, _SHOW_CHARS


def show_value(value: object) -> str:
    """A short ``repr`` of a bad value with its YAML-ish type, for error messages."""
    text = _REPR.repr(value)
    if len(text) > _SHOW_CHARS:
        text = text[:_SHOW_CHARS - 3] + "..."
    return f"{text} ({_type_name(value)})"


@dataclass(frozen=True)
class At:
    """Where a value sits: its source (file name) and key path, e.g. ``drafts[1].model``."""

    source: str
    path: str = ""

    def key(self, name: str) -> At:
        return At(self.source, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> At:
        return At(self.source, f"{self.path}[{i}]")

    @property
    def where(self) -> str:
        return f"'{self.path}'" if self.path else "top level"

    def error(self, value: object, expected: str, fix: str) -> ConfigError:
        """'source: path: got VALUE (type); expected ALLOWED; fix: FIX'."""
        return ConfigError(f"{self.source}: {self.path or 'top level'}: got {show_value(value)}; "
                           f"expected {expected}; fix: {fix}")


def suggest(word: object, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _unknown_key(key: object, at: At, keys: Sequence[str]) -> ConfigError:
    place = "at top level" if not at.path else f"in {at.where}"
    return ConfigError(f"unknown key {key!r} {place} of {at.source}; {suggest(key, keys)}"
                       f"valid keys: {', '.join(keys)}; fix: rename or remove it")


def check_mapping(value: object, at: At, keys: Sequence[str]) -> dict[str, Any]:
    """``value`` as a dict whose keys are all in ``keys``; null counts as an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise at.error(value, f"a mapping with keys {', '.join(keys)}", "write it as 'key: value' lines")
    for key in value:
        if not isinstance(key, str) or key not in keys:
            raise _unknown_key(key, at, keys)
    return dict(value)


def required_key(data: Mapping[str, Any], key: str, at: At, example: str) -> Any:
    if key not in data:
        raise ConfigError(f"missing required key {key!r} {'at top level' if not at.path else 'in ' + at.where} "
                          f"of {at.source}; fix: add it, e.g. {example}")
    return data[key]


def check_str(value: object, at: At, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise at.error(value, "a non-empty string", f"write e.g. {example}")
    return value


def check_choice(value: object, at: At, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = suggest(value, choices) if isinstance(value, str) else ""
        raise at.error(value, f"one of {', '.join(choices)}", f"{hint}use one of the allowed values")
    return value


def check_bool(value: object, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.error(value, "a boolean (true or false)", "write true or false, unquoted")
    return value


def check_int(value: object, at: At, lo: int, hi: int | None = None) -> int:
    """An int (not a bool) in [lo, hi] (no upper bound when hi is None)."""
    allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error(value, allowed, "write a plain integer, unquoted")
    if value < lo or (hi is not None and value > hi):
        raise at.error(value, allowed, "use a value in the allowed range")
    return value


def _describe_range(lo: float | None, hi: float | None, open_bounds: bool) -> str:
    if lo is not None and hi is not None:
        return f"a number in {'(' if open_bounds else '['}{lo:g}, {hi:g}{')' if open_bounds else ']'}"
    return f"a number {'>' if open_bounds else '>='} {lo:g}" if lo is not None else "a number"


def check_float(value: object, at: At, lo: float | None = None, hi: float | None = None,
                *, open_bounds: bool = False) -> float:
    """A finite number (int or float, not bool) within [lo, hi], or (lo, hi) if open_bounds."""
    allowed = _describe_range(lo, hi, open_bounds)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise at.error(value, allowed, "write a plain number, unquoted")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise at.error(value, allowed, "use a value in the allowed range") from None
    below = lo is not None and (number <= lo if open_bounds else number < lo)
    above = hi is not None and (number >= hi if open_bounds else number > hi)
    if not math.isfinite(number) or below or above:
        raise at.error(value, allowed, "use a finite value in the allowed range")
    return number


def as_list(value: object) -> list[Any]:
    """A scalar or string as a one-element list; a list, tuple or range as a list."""
    return list(value) if isinstance(value, (list, tuple, range)) else [value]


def check_int_tuple(value: object, at: At, lo: int, hi: int | None, example: str) -> tuple[int, ...]:
    """An int or a non-empty list of distinct ints, each in [lo, hi]."""
    if isinstance(value, (list, tuple)) and not value:
        raise at.error(value, "an integer or a non-empty list of integers", f"write e.g. {example}")
    items = as_list(value)
    numbers: list[int] = []
    for i, item in enumerate(items):
        item_at = at.index(i) if isinstance(value, (list, tuple)) else at
        number = check_int(item, item_at, lo, hi)
        if number in numbers:
            raise item_at.error(item, "distinct values", f"remove the duplicate {number}")
        numbers.append(number)
    return tuple(numbers)
