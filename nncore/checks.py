"""Argument checks shared by every nncore module.

Each ``check_*`` function either returns the value in a canonical form
(Python ``int``/``float``/``str``, ``numpy.dtype``) or raises ``error``
(``ValueError`` unless the caller passes a subclass such as
:class:`nncore.datasets.DatasetError`, or ``TypeError``) with a message in
scikit-learn's style that names the parameter, its owner (the class or
function it belongs to), the allowed values and the value received::

    The 'eta' parameter of TrainConfig must be a float in the range (0.0, inf). Got -1 instead.

Conventions:

* integers: ``int`` and NumPy integer scalars; ``bool`` (and ``numpy.bool_``)
  is never accepted as a number.
* real numbers: every :class:`numbers.Real` (``int``, ``float``,
  ``fractions.Fraction``, NumPy integer and floating scalars such as
  ``numpy.float32``), ``bool`` excluded, returned as a Python ``float``.
* ranges are written in interval notation: ``[low, high]`` closed, ``(low,
  high)`` open, ``inf`` for "no upper bound" (always open, so ``inf`` itself
  and ``nan`` are rejected by every float range).

Imports only NumPy and the standard library.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_float_dtype",
    "check_instance",
    "check_int",
    "check_int_sequence",
    "check_real",
    "describe_range",
    "invalid",
    "is_int",
    "is_real",
]

#: Longest ``repr`` of a received value quoted in a message (longer ones are cut).
MAX_SHOWN = 80


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 3] + "..."
    return text


def invalid(
    name: str, owner: str, expected: str, got: Any, *, error: type[Exception] = ValueError
) -> Exception:
    """The exception for a bad argument (returned, so callers write ``raise invalid(...)``).

    Message: ``The '<name>' parameter of <owner> must be <expected>. Got <repr(got)> instead.``
    """
    return error(f"The {name!r} parameter of {owner} must be {expected}. Got {_show(got)} instead.")


def is_int(value: Any) -> bool:
    """``True`` for ``int`` and NumPy integer scalars, ``False`` for ``bool`` and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """``True`` for any :class:`numbers.Real` (NumPy scalars included) except ``bool``/``numpy.bool_``."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _fmt(bound: float) -> str:
    return "inf" if bound == math.inf else "-inf" if bound == -math.inf else repr(bound)


def describe_range(
    low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False,
    as_float: bool = True,
) -> str:
    """Interval notation of a range, e.g. ``(0.0, inf)``, ``[1, 10]`` (``None``: unbounded)."""
    conv = float if as_float else int
    lo = "(-inf" if low is None else ("(" if low_open else "[") + _fmt(conv(low))
    hi = "inf)" if high is None else _fmt(conv(high)) + (")" if high_open else "]")
    return f"{lo}, {hi}"


def check_int(
    value: Any, name: str, owner: str, *, low: int | None = None, high: int | None = None,
    error: type[Exception] = ValueError,
) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (bounds inclusive; ``None``: unbounded)."""
    if is_int(value) and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    raise invalid(name, owner, f"an int in the range {describe_range(low, high, as_float=False)}", value,
                  error=error)


def check_real(
    value: Any, name: str, owner: str, *, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False, error: type[Exception] = ValueError,
) -> float:
    """``value`` as a finite ``float`` in the range given by ``low``/``high`` and their openness.

    Any real number type is accepted (see the module doc); ``nan`` and ``inf``
    never are.
    """
    if is_real(value):
        v = float(value)
        ok = math.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if ok:
            return v
    rng = describe_range(low, high, low_open=low_open, high_open=high_open)
    raise invalid(name, owner, f"a float in the range {rng}", value, error=error)


def check_choice(
    value: Any, name: str, owner: str, options: Iterable[str], *, error: type[Exception] = ValueError
) -> str:
    """``value`` if it is one of the strings ``options``."""
    options = tuple(options)
    if isinstance(value, str) and value in options:
        return value
    listed = ", ".join(repr(o) for o in options)
    raise invalid(name, owner, f"a str among {{{listed}}}", value, error=error)


def check_float_dtype(
    value: Any, name: str, owner: str, *, allowed: Sequence[str] | None = None,
    error: type[Exception] = ValueError,
) -> np.dtype:
    """``np.dtype(value)`` if it is a floating dtype (and its name is in ``allowed`` when given).

    ``None`` means NumPy's default, ``float64``, as in ``np.dtype(None)``.
    """
    try:
        dt: np.dtype | None = np.dtype(value)
    except (TypeError, ValueError):
        dt = None
    if dt is not None and dt.kind == "f" and (allowed is None or dt.name in allowed):
        return dt
    if allowed is None:
        expected = "a floating NumPy dtype (e.g. 'float32', 'float64')"
    else:
        expected = "a NumPy dtype among {" + ", ".join(repr(a) for a in allowed) + "}"
    raise invalid(name, owner, expected, value, error=error)


def check_instance(
    value: Any, name: str, owner: str, types: type | tuple[type, ...], *, what: str | None = None,
    error: type[Exception] = ValueError,
) -> Any:
    """``value`` if ``isinstance(value, types)``; ``what`` describes the types in the message."""
    if isinstance(value, types):
        return value
    if what is None:
        ts = types if isinstance(types, tuple) else (types,)
        what = "an instance of " + " or ".join(
            t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}" for t in ts
        )
    raise invalid(name, owner, what, value, error=error)


def check_int_sequence(
    value: Any, name: str, owner: str, *, min_len: int = 0, low: int | None = None,
    error: type[Exception] = ValueError,
) -> list[int]:
    """``value`` as a list of ``int`` (each ``>= low``), at least ``min_len`` long.

    Strings and mappings are not sequences of ints here.
    """
    items: list[Any] | None = None
    if not isinstance(value, (str, bytes, dict)):
        try:
            items = list(value)
        except TypeError:
            items = None
    if items is not None and len(items) >= min_len and all(
        is_int(v) and (low is None or v >= low) for v in items
    ):
        return [int(v) for v in items]
    each = "ints" if low is None else f"ints in the range {describe_range(low, None, as_float=False)}"
    raise invalid(name, owner, f"a sequence of at least {min_len} {each}", value, error=error)
