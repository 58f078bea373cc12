"""`rmtkd_tf.arguments`: the one set of argument checks (integers are integers, bounds are bounds)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmtkd_tf.arguments import check_bool, check_fraction, check_int_tuple, check_integer
from rmtkd_tf.errors import DataValidationError


@given(value=st.integers(-10**6, 10**6), minimum=st.integers(-5, 5), span=st.one_of(st.none(), st.integers(0, 50)))
def test_check_integer_accepts_exactly_the_integers_in_range(value, minimum, span):
    maximum = None if span is None else minimum + span
    inside = value >= minimum and (maximum is None or value <= maximum)
    for candidate in (value, np.int64(value)):
        if inside:
            result = check_integer(candidate, "x", minimum=minimum, maximum=maximum)
            assert type(result) is int and result == value
        else:
            with pytest.raises(ValueError, match=r"^x must be .*, got "):
                check_integer(candidate, "x", minimum=minimum, maximum=maximum)


@given(value=st.one_of(st.floats(), st.booleans(), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2)))
def test_check_integer_refuses_everything_that_is_not_an_integer(value):
    with pytest.raises(ValueError) as info:
        check_integer(value, "units", minimum=-10**9)
    assert "\n" not in str(info.value)


def test_check_integer_options():
    assert check_integer(None, "rank", allow_none=True) is None
    with pytest.raises(ValueError, match="rank must be a positive integer or None, got 0"):
        check_integer(0, "rank", allow_none=True)
    with pytest.raises(DataValidationError, match="limit must be an integer >= 0, got -1"):
        check_integer(-1, "limit", minimum=0, error=DataValidationError)


@pytest.mark.parametrize("value, expected", [(3, (3, 3)), ((1, 2), (1, 2)), ([4, 5], (4, 5)), (np.int32(2), (2, 2))])
def test_check_int_tuple_accepts(value, expected):
    assert check_int_tuple(value, "strides") == expected


@pytest.mark.parametrize("value", [0, 2.0, (1,), (1, 2, 3), (1, 0), (1.0, 2), "3", True, (True, 2), None])
def test_check_int_tuple_refuses(value):
    with pytest.raises(ValueError, match="strides must be a positive integer or a tuple of 2 positive integers"):
        check_int_tuple(value, "strides")


@pytest.mark.parametrize("value, options, ok", [
    (1.0, {}, True), (1.0, {"allow_one": False}, False), (0.0, {}, False), (0.0, {"allow_zero": True}, True),
    (np.float32(0.5), {}, True), (float("nan"), {}, False), (float("inf"), {}, False), (True, {}, False),
    ("0.5", {}, False), (-0.1, {"allow_zero": True}, False),
])
def test_check_fraction(value, options, ok):
    if ok:
        assert type(check_fraction(value, "f", **options)) is float
    else:
        with pytest.raises(ValueError, match="^f must be"):
            check_fraction(value, "f", **options)


def test_check_bool():
    assert check_bool(np.bool_(True), "fit") is True and check_bool(False, "fit") is False
    for value in (0, 1, "yes", None):
        with pytest.raises(ValueError, match="fit must be True or False"):
            check_bool(value, "fit")
