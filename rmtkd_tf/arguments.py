"""Argument validators shared by the layers, the rank rules, the callback and the loaders.

Pure Python (no NumPy, no TensorFlow import), so that `rmtkd_tf.spectral` can use it too. Like
Keras' `Dense(units=2.5)`, a non-integer where an integer is meant is rejected rather than
truncated; `bool` is not an integer here, NumPy integers are. Every check returns the value
as a plain Python `int` / `float` / tuple and raises `error` (ValueError by default, or one of
`rmtkd_tf.errors`' classes) with a one-line message naming the argument.

Example:
>>> check_integer(3, "units")
3
>>> check_integer(2.5, "units")
Traceback (most recent call last):
...
ValueError: units must be a positive integer, got 2.5
>>> check_integer(0, "verbose", minimum=0), check_integer(None, "rank", allow_none=True)
(0, None)
>>> check_int_tuple(3, "kernel_size"), check_int_tuple([1, 2], "strides")
((3, 3), (1, 2))
>>> check_fraction(0.25, "ratio")
0.25
"""

import math
import numbers


def _integer_range(minimum, maximum):
    if maximum is not None:
        return f"an integer in [{minimum}, {maximum}]"
    if minimum == 1:
        return "a positive integer"
    return f"an integer >= {minimum}"


def check_integer(value, name, *, minimum=1, maximum=None, allow_none=False, error=ValueError):
    """`value` as an `int` in `[minimum, maximum]` (`maximum=None`: no upper bound), else raise `error`.

    `allow_none=True` lets `None` through (an optional argument). Floats are rejected even when
    integral (`3.0`), as Keras' `Dense` rejects them; `numbers.Integral` (NumPy integers) is accepted.

    >>> check_integer(4, "rank of 'dense'", maximum=3)
    Traceback (most recent call last):
    ...
    ValueError: rank of 'dense' must be an integer in [1, 3], got 4
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or (
        maximum is not None and value > maximum
    ):
        suffix = " or None" if allow_none else ""
        raise error(f"{name} must be {_integer_range(minimum, maximum)}{suffix}, got {value!r}")
    return int(value)


def check_int_tuple(value, name, *, length=2, minimum=1, error=ValueError):
    """An integer or a sequence of `length` integers (each `>= minimum`) as a tuple of `length` ints.

    What Keras' convolutions take for `kernel_size`, `strides` and `dilation_rate`.

    >>> check_int_tuple((3, 2.5), "kernel_size")
    Traceback (most recent call last):
    ...
    ValueError: kernel_size must be a positive integer or a tuple of 2 positive integers, got (3, 2.5)
    """
    what = _integer_range(minimum, None)
    message = f"{name} must be {what} or a tuple of {length} {what.removeprefix('a ').removeprefix('an ')}s, got {value!r}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        items = (value,) * length
    elif isinstance(value, (list, tuple)) and len(value) == length:
        items = tuple(value)
    else:
        raise error(message)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in items):
        raise error(message)
    return tuple(int(v) for v in items)


def check_fraction(value, name, *, allow_zero=False, allow_one=True, error=ValueError):
    """`value` as a `float` in `(0, 1]` (bounds opened or closed by `allow_zero` / `allow_one`), else raise `error`.

    >>> check_fraction(1.0, "tau", allow_one=False)
    Traceback (most recent call last):
    ...
    ValueError: tau must be in (0, 1), got 1.0
    """
    interval = ("[0, " if allow_zero else "(0, ") + ("1]" if allow_one else "1)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise error(f"{name} must be a number in {interval}, got {value!r}")
    low_ok = value > 0.0 or (allow_zero and value == 0.0)
    high_ok = value < 1.0 or (allow_one and value == 1.0)
    if not (low_ok and high_ok):
        raise error(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_bool(value, name, *, error=ValueError):
    """`value` as a `bool`: `True`/`False` (or a NumPy bool) only, not `0`, `1` or `"yes"`.

    >>> check_bool("yes", "fit")
    Traceback (most recent call last):
    ...
    ValueError: fit must be True or False, got 'yes'
    """
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not (isinstance(value, bool) or numpy_bool):
        raise error(f"{name} must be True or False, got {value!r}")
    return bool(value)
