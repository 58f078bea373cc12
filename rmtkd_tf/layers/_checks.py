"""Integer argument checks of the factorized conv layers (like Keras: a non-integer is refused, not truncated)."""

import numbers


def positive_integer(value, name):
    """`value` as an `int >= 1`; `bool` and floats (even `3.0`) are refused, as `keras.layers.Dense` does.

    >>> positive_integer(3, "rank")
    3
    >>> positive_integer(2.5, "rank")
    Traceback (most recent call last):
    ...
    ValueError: rank must be a positive integer, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_int_tuple(value, name, length):
    """A positive integer or a sequence of `length` of them, as a tuple of `length` ints.

    >>> positive_int_tuple(3, "kernel_size", 2), positive_int_tuple([5], "strides", 1)
    ((3, 3), (5,))
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * length
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"{name} must be a positive integer or a tuple of {length} positive integers, got {value!r}")
    return tuple(positive_integer(v, name) for v in value)
