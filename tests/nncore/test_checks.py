"""nncore.checks: the shared argument checks, their accepted types, ranges and messages."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from nncore import checks
from nncore.checks import (
    check_choice,
    check_float_dtype,
    check_instance,
    check_int,
    check_int_sequence,
    check_real,
    describe_range,
    invalid,
    is_int,
    is_real,
)


class CustomError(ValueError):
    pass


# ---------------------------------------------------------------------------
# the message
# ---------------------------------------------------------------------------


def test_message_is_scikit_learn_style():
    exc = invalid("eta", "TrainConfig", "a float in the range (0.0, inf)", -1)
    assert type(exc) is ValueError
    assert str(exc) == "The 'eta' parameter of TrainConfig must be a float in the range (0.0, inf). Got -1 instead."


def test_message_quotes_strings_and_uses_the_error_class():
    exc = invalid("penalty", "Regularizer", "a str among {'l2'}", "l3", error=TypeError)
    assert type(exc) is TypeError
    assert str(exc).endswith("Got 'l3' instead.")


def test_long_values_are_cut():
    exc = invalid("x", "f", "short", list(range(1000)))
    shown = str(exc).split("Got ", 1)[1].removesuffix(" instead.")
    assert len(shown) == checks.MAX_SHOWN and shown.endswith("...") and shown.startswith("[0, 1, 2")


@pytest.mark.parametrize(("args", "kwargs", "text"), [
    ((0.0, None), {"low_open": True}, "(0.0, inf)"),
    ((0.0, 1.0), {"high_open": True}, "[0.0, 1.0)"),
    ((0, 1), {}, "[0.0, 1.0]"),
    ((None, 5), {"as_float": False}, "(-inf, 5]"),
    ((1, None), {"as_float": False}, "[1, inf)"),
    ((None, None), {}, "(-inf, inf)"),
])
def test_describe_range(args, kwargs, text):
    assert describe_range(*args, **kwargs) == text


# ---------------------------------------------------------------------------
# type predicates
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (3, True), (np.int64(3), True), (np.uint8(3), True), (-2, True),
    (True, False), (np.bool_(True), False), (3.0, False), (np.float64(3), False), ("3", False), (None, False),
])
def test_is_int(value, expected):
    assert is_int(value) is expected


@pytest.mark.parametrize(("value", "expected"), [
    (1, True), (1.5, True), (np.float32(1.5), True), (np.float16(1.5), True), (np.float64(1.5), True),
    (np.int64(2), True), (Fraction(1, 3), True), (math.nan, True),  # a real number; ranges reject it
    (True, False), (False, False), (np.bool_(True), False), ("1", False), (None, False),
    (complex(1, 0), False), (Decimal("1"), False), (np.array([1.0]), False),
])
def test_is_real(value, expected):
    assert is_real(value) is expected


# ---------------------------------------------------------------------------
# check_int / check_real
# ---------------------------------------------------------------------------


def test_check_int_bounds_are_inclusive_and_result_is_python_int():
    assert check_int(1, "n", "f", low=1) == 1
    out = check_int(np.int32(5), "n", "f", low=0, high=5)
    assert out == 5 and type(out) is int
    with pytest.raises(ValueError, match=r"^The 'n' parameter of f must be an int in the range \[1, inf\)\. "
                                         r"Got 0 instead\.$"):
        check_int(0, "n", "f", low=1)
    with pytest.raises(ValueError, match=r"\[0, 5\]\. Got 6 instead"):
        check_int(6, "n", "f", low=0, high=5)


@pytest.mark.parametrize("value", [True, 2.0, "2", None, np.float64(2.0)])
def test_check_int_rejects_non_integers(value):
    with pytest.raises(CustomError, match="'n' parameter of f must be an int"):
        check_int(value, "n", "f", low=0, error=CustomError)


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float16(0.25), np.int64(1), Fraction(1, 4)])
def test_check_real_accepts_every_real_type_and_returns_float(value):
    out = check_real(value, "x", "f", low=0.0, high=1.0)
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize(("value", "kwargs", "ok"), [
    (0.0, {"low": 0.0}, True), (0.0, {"low": 0.0, "low_open": True}, False),
    (1.0, {"high": 1.0}, True), (1.0, {"high": 1.0, "high_open": True}, False),
    (-1e-300, {"low": 0.0}, False), (1e308, {}, True),
    (math.inf, {}, False), (-math.inf, {}, False), (math.nan, {}, False), (np.float32("nan"), {"low": 0.0}, False),
])
def test_check_real_ranges_and_non_finite(value, kwargs, ok):
    if ok:
        assert check_real(value, "x", "f", **kwargs) == value
    else:
        with pytest.raises(ValueError, match="'x' parameter of f must be a float in the range"):
            check_real(value, "x", "f", **kwargs)


def test_check_real_message_names_the_range():
    with pytest.raises(ValueError, match=r"^The 'momentum' parameter of TrainConfig must be a float in the range "
                                         r"\[0\.0, 1\.0\)\. Got 1\.0 instead\.$"):
        check_real(1.0, "momentum", "TrainConfig", low=0.0, high=1.0, high_open=True)


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.5", None, complex(0.5, 0), Decimal("0.5")])
def test_check_real_rejects_non_reals(value):
    with pytest.raises(ValueError, match="must be a float"):
        check_real(value, "x", "f")


# ---------------------------------------------------------------------------
# choices, dtypes, instances, sequences
# ---------------------------------------------------------------------------


def test_check_choice():
    assert check_choice("l1", "penalty", "f", ("none", "l2", "l1")) == "l1"
    with pytest.raises(ValueError, match=r"^The 'penalty' parameter of f must be a str among "
                                         r"\{'none', 'l2', 'l1'\}\. Got 'l3' instead\.$"):
        check_choice("l3", "penalty", "f", ("none", "l2", "l1"))
    with pytest.raises(ValueError, match="Got 1 instead"):
        check_choice(1, "k", "f", ("1",))  # not a string: refused even if it prints the same


@pytest.mark.parametrize("value", ["float32", np.float64, np.dtype("f4"), "float16", "f8"])
def test_check_float_dtype_accepts_floating_dtypes(value):
    assert check_float_dtype(value, "dtype", "f") == np.dtype(value)


def test_check_float_dtype_none_is_numpys_default_float64():
    assert check_float_dtype(None, "dtype", "f") == np.float64


@pytest.mark.parametrize("value", [np.int32, "int8", "not-a-dtype", bool, object, "c16"])
def test_check_float_dtype_rejects_others(value):
    with pytest.raises(ValueError, match="'dtype' parameter of f must be a floating NumPy dtype"):
        check_float_dtype(value, "dtype", "f")


def test_check_float_dtype_allowed_list():
    assert check_float_dtype("float32", "dtype", "Net", allowed=("float64", "float32")) == np.float32
    with pytest.raises(ValueError, match=r"must be a NumPy dtype among \{'float64', 'float32'\}\. Got 'float16'"):
        check_float_dtype("float16", "dtype", "Net", allowed=("float64", "float32"))


def test_check_instance():
    rng = np.random.default_rng(0)
    assert check_instance(rng, "rng", "f", np.random.Generator) is rng
    with pytest.raises(ValueError, match=r"must be an instance of int or str\. Got 2\.5 instead"):
        check_instance(2.5, "x", "f", (int, str))
    with pytest.raises(TypeError, match=r"must be a Generator please\. Got 3 instead"):
        check_instance(3, "rng", "f", np.random.Generator, what="a Generator please", error=TypeError)


@pytest.mark.parametrize("value", [[3, 4], (3, np.int64(4)), np.array([3, 4]), range(3, 5)])
def test_check_int_sequence_accepts_sequences_of_ints(value):
    out = check_int_sequence(value, "sizes", "f", min_len=2, low=1)
    assert out == list(value) and all(type(v) is int for v in out)


@pytest.mark.parametrize("value", [[3], [], [3, 0], [3, 2.5], [3, True], "34", {3: 4, 5: 6}, 7, None])
def test_check_int_sequence_rejects(value):
    with pytest.raises(ValueError, match=r"'sizes' parameter of f must be a sequence of at least 2 ints in the "
                                         r"range \[1, inf\)"):
        check_int_sequence(value, "sizes", "f", min_len=2, low=1)
