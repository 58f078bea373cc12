"""Is a student's accuracy drop within `max_drop`? A paired comparison with a confidence interval.

Teacher and student are scored on the *same* validation examples, so the comparison is paired: only
the discordant examples carry information about the drop. With `n` examples of which `b` the teacher
gets right and the student wrong, and `c` the other way round, the drop in accuracy is
`100 (b - c) / n` points, and its sampling error depends on `b + c`, not on the two accuracies.
Comparing two unpaired accuracies (or a point estimate against `max_drop`) ignores this: on 750
examples one example is 0.13 points, and a point drop of 0.5 may well hide a true drop of 2.

The interval is Tango's asymptotic score interval for a difference of paired proportions
(T. Tango, Stat. Med. 17:891-908, 1998). Why this one: it is among the intervals that Fagerland, Lydersen
& Laake ("Recommended tests and confidence intervals for paired binomial proportions", Stat. Med.
33:2850-2875, 2014) recommend for the paired difference, with coverage close to nominal for small and
moderate `n` (tests/test_acceptance.py checks this by simulation); like Wilson's interval it inverts
a score test, so it stays inside [-100, 100] points, is defined at 0 discordant pairs (then it is
`±z²/(n + z²)`, a Wilson-like interval around 0) and at the edges (all examples discordant one way),
and needs no continuity fudge. An exact conditional binomial test on the discordant pairs answers
"is the student worse at all?", not "by how many points?", and Wald intervals collapse to a point at
0 discordant pairs. Its one-sided upper bound is slightly liberal when the student is clearly better
than its teacher (few lost, many gained examples), which is not where an accept decision is close.

A step is accepted only when the **upper** bound of the two-sided `confidence` interval is at most
`max_drop` (`accept_drop`): the true drop then exceeds `max_drop` with probability at most
`(1 - confidence) / 2` (a one-sided 97.5% bound for the default 0.95). The price is that small
validation sets reject good students: `examples_needed` says how many examples a `max_drop` needs.

Pure Python/NumPy/SciPy, no TensorFlow (`rmtkd_tf.evaluation.per_example_correct` scores a model).

>>> import numpy as np
>>> teacher = np.array([True] * 95 + [False] * 5)
>>> student = teacher.copy(); student[:3] = False  # 3 examples lost, none gained
>>> estimate = paired_accuracy_drop(teacher, student)
>>> estimate.drop, estimate.n_discordant, round(estimate.lower, 2), round(estimate.upper, 2)
(3.0, 3, -0.81, 8.45)
>>> accept_drop(estimate, max_drop=1.0), accept_drop(estimate, max_drop=10.0)
(False, True)
>>> examples_needed(1.0, discordance=0.1)
3872
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.errors import RMTKDError

METHOD = "Tango score interval (paired difference)"
DEFAULT_DISCORDANCE = 0.1  # assumed share of examples that teacher and student score differently
LARGEST_VALIDATION = 10**9  # examples_needed's search ceiling


@dataclasses.dataclass(frozen=True)
class DropEstimate:
    """Accuracy drop of a student against its teacher on the same examples, in accuracy points.

    `drop = teacher accuracy - student accuracy`; `lower`/`upper` bound it at `confidence` (two-sided).
    `teacher_only` examples the teacher gets right and the student wrong, `student_only` the reverse;
    `n_discordant` is their sum.
    """

    drop: float
    lower: float
    upper: float
    n: int
    n_discordant: int
    teacher_only: int
    student_only: int
    confidence: float
    method: str = METHOD

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def paired_accuracy_drop(teacher_correct, student_correct, confidence: float = 0.95) -> DropEstimate:
    """Drop of accuracy from teacher to student with a `confidence` interval, both in points.

    Args:
        teacher_correct, student_correct: one boolean per validation example (same examples, same
            order), e.g. from `rmtkd_tf.evaluation.per_example_correct`.
        confidence: two-sided level of the interval, in (0, 1).

    >>> paired_accuracy_drop([True, True, False, True], [True, False, False, True]).drop
    25.0
    """
    teacher = _as_bool_vector(teacher_correct, "teacher_correct")
    student = _as_bool_vector(student_correct, "student_correct")
    if len(teacher) != len(student):
        raise RMTKDError(f"teacher and student must be scored on the same examples: {len(teacher)} vs {len(student)}")
    teacher_only = int(np.count_nonzero(teacher & ~student))
    student_only = int(np.count_nonzero(student & ~teacher))
    return drop_from_counts(teacher_only, student_only, len(teacher), confidence)


def drop_from_counts(teacher_only: int, student_only: int, n: int, confidence: float = 0.95) -> DropEstimate:
    """`paired_accuracy_drop` from the discordant counts alone (they are sufficient statistics).

    >>> estimate = drop_from_counts(0, 0, 100)  # no discordant pair: 0, with a Wilson-like interval
    >>> estimate.drop, round(estimate.lower, 3), round(estimate.upper, 3)
    (0.0, -3.699, 3.699)
    """
    _check_confidence(confidence)
    for name, value in (("teacher_only", teacher_only), ("student_only", student_only), ("n", n)):
        check_integer(value, f"{name} (a count)", minimum=0, error=RMTKDError)
    if n == 0:
        raise RMTKDError("cannot estimate an accuracy drop on 0 validation examples")
    if teacher_only + student_only > n:
        raise RMTKDError(f"{teacher_only} + {student_only} discordant examples exceed the {n} examples")
    lower, upper = tango_interval(teacher_only, student_only, n, _z(confidence))
    return DropEstimate(
        drop=100.0 * (teacher_only - student_only) / n,
        lower=100.0 * lower,
        upper=100.0 * upper,
        n=int(n),
        n_discordant=int(teacher_only + student_only),
        teacher_only=int(teacher_only),
        student_only=int(student_only),
        confidence=float(confidence),
    )


def accept_drop(estimate: DropEstimate, max_drop: float) -> bool:
    """True when the upper confidence bound of the drop is at most `max_drop` points.

    >>> accept_drop(drop_from_counts(0, 0, 1000), 1.0), accept_drop(drop_from_counts(0, 0, 100), 1.0)
    (True, False)
    """
    if max_drop is None or not math.isfinite(max_drop) or max_drop < 0:
        raise RMTKDError(f"max_drop must be a finite number of accuracy points >= 0, got {max_drop!r}")
    return estimate.upper <= max_drop


def examples_needed(
    max_drop: float, discordance: float = DEFAULT_DISCORDANCE, confidence: float = 0.95, power: float = 0.5
) -> int:
    """Validation examples for a student with zero true drop to be accepted with probability `power`.

    Assumes a share `discordance` of the examples is scored differently by teacher and student
    (half each way, so the true drop is 0): 10% by default, typical of a compressed student
    that keeps its teacher's accuracy; more disagreement needs proportionally more examples. With the
    default `power=0.5` the answer is the size at which the upper bound of a student that loses nothing
    equals `max_drop` (accepted at even odds); roughly `z² · discordance / (max_drop / 100)²`.

    >>> examples_needed(1.0), examples_needed(2.0), examples_needed(1.0, discordance=0.05)
    (3872, 990, 1988)
    >>> examples_needed(1.0, power=0.8) > examples_needed(1.0)
    True
    """
    if max_drop is None or not math.isfinite(max_drop) or max_drop <= 0:
        raise RMTKDError(f"no validation set is large enough for max_drop={max_drop!r}: it must be > 0 points")
    if not 0 < discordance <= 1:
        raise RMTKDError(f"discordance must be a share of the examples in (0, 1], got {discordance!r}")
    if not 0 < power < 1:
        raise RMTKDError(f"power must be in (0, 1), got {power!r}")
    z, z_power = _z(confidence), norm.ppf(power)

    def upper_bound(n):
        # Accepted with probability `power` when the bound holds at the `power` quantile of the observed
        # b - c, which under zero drop is about normal with mean 0 and sd sqrt(n d).
        shift = z_power * math.sqrt(n * discordance)
        teacher_only = min(float(n), (n * discordance + shift) / 2)
        student_only = max(0.0, (n * discordance - shift) / 2)
        return 100.0 * tango_interval(teacher_only, student_only, n, z)[1]

    if upper_bound(LARGEST_VALIDATION) > max_drop:
        raise RMTKDError(f"max_drop={max_drop} needs more than {LARGEST_VALIDATION} validation examples")
    low, high = 1, LARGEST_VALIDATION  # upper_bound(high) <= max_drop; find the smallest such n
    while low < high:
        middle = (low + high) // 2
        if upper_bound(middle) <= max_drop:
            high = middle
        else:
            low = middle + 1
    return low


def too_few_warning(
    n: int, max_drop: float, discordance: float = DEFAULT_DISCORDANCE, confidence: float = 0.95
) -> str | None:
    """One `warning:` line when `n` validation examples are too few for `max_drop`, else None.

    >>> too_few_warning(5000, 1.0) is None
    True
    >>> print(too_few_warning(750, 1.0))  # doctest: +NORMALIZE_WHITESPACE
    warning: 750 validation examples are too few for a max drop of 1 point at 95% confidence: a student that
    loses nothing is accepted at even odds only from about 3872 examples (assuming 10% of the examples are
    scored differently by teacher and student), so good steps will be rolled back; use a larger validation
    set or a larger max drop
    """
    if max_drop <= 0:
        return (
            f"warning: a max drop of {max_drop:g} points accepts a step only when the student is confidently "
            "better than its teacher on validation; most steps will be rolled back"
        )
    needed = examples_needed(max_drop, discordance=discordance, confidence=confidence)
    if n >= needed:
        return None
    return (
        f"warning: {n} validation examples are too few for a max drop of {max_drop:g} point"
        f"{'' if max_drop == 1 else 's'} at {100 * confidence:g}% confidence: a student that loses nothing is "
        f"accepted at even odds only from about {needed} examples (assuming {100 * discordance:g}% of the examples "
        "are scored differently by teacher and student), so good steps will be rolled back; use a larger "
        "validation set or a larger max drop"
    )


def describe(estimate: DropEstimate, max_drop: float | None = None) -> str:
    """One line: the drop, its interval and, with `max_drop`, the decision.

    >>> describe(drop_from_counts(3, 1, 500), max_drop=1.0)
    'drop 0.40 points, 95% interval [-0.58, 1.57] (n=500, 4 discordant: 3 lost, 1 gained; Tango score interval (paired difference)); upper bound 1.57 > max drop 1: rejected'
    """
    text = (
        f"drop {estimate.drop:.2f} points, {100 * estimate.confidence:g}% interval "
        f"[{estimate.lower:.2f}, {estimate.upper:.2f}] (n={estimate.n}, {estimate.n_discordant} discordant: "
        f"{estimate.teacher_only} lost, {estimate.student_only} gained; {estimate.method})"
    )
    if max_drop is not None:
        accepted = accept_drop(estimate, max_drop)
        text += (
            f"; upper bound {estimate.upper:.2f} {'<=' if accepted else '>'} max drop {max_drop:g}: "
            f"{'accepted' if accepted else 'rejected'}"
        )
    return text


# --- the interval --------------------------------------------------------------------------------------


def tango_interval(teacher_only: float, student_only: float, n: float, z: float) -> tuple[float, float]:
    """Tango's score interval for `p12 - p21` (as proportions in [-1, 1]) at critical value `z`.

    The bounds are the `delta` where the score statistic
    `(b - c - n delta) / sqrt(n (2 q(delta) + delta (1 - delta)))` equals `-z` (upper) and `+z` (lower),
    with `q(delta)` the maximum-likelihood `p21` under `p12 - p21 = delta`. Counts may be non-integer
    (`examples_needed` uses expected counts).

    >>> lower, upper = tango_interval(0, 0, 100, 1.96)  # 0 discordant pairs: ±z²/(n + z²)
    >>> round(upper, 6) == round(1.96**2 / (100 + 1.96**2), 6) and lower == -upper
    True
    >>> tango_interval(10, 0, 10, 1.96)[1], tango_interval(0, 10, 10, 1.96)[0]  # all discordant one way
    (1.0, -1.0)
    """
    b, c = float(teacher_only), float(student_only)
    # Var(b - c) vanishes at the estimate only in three cases, where the statistic is 0/0 there;
    # its limits give these closed forms (the root-finding below needs a positive gap at the estimate).
    if b == 0 and c == 0:
        half_width = z * z / (n + z * z)
        return -half_width, half_width
    if b == n:
        return (n - z * z) / (n + z * z), 1.0
    if c == n:
        return -1.0, -(n - z * z) / (n + z * z)
    estimate = (b - c) / n

    def score_numerator_minus(sign):
        # (b - c - n delta) + sign * z * sd(delta): decreasing in delta; its root is a bound.
        return lambda delta: (b - c - n * delta) + sign * z * math.sqrt(_null_variance(b, c, n, delta))

    upper_gap, lower_gap = score_numerator_minus(+1), score_numerator_minus(-1)
    upper = brentq(upper_gap, estimate, 1.0, xtol=1e-12)
    lower = brentq(lower_gap, -1.0, estimate, xtol=1e-12)
    return lower, upper


def _null_variance(b: float, c: float, n: float, delta: float) -> float:
    """`Var(b - c)` under `p12 - p21 = delta`, with `p21` at its restricted maximum-likelihood value."""
    spread = delta * (1.0 - delta)
    w = -b - c + (2.0 * n - b + c) * delta
    root = math.sqrt(max(w * w + 8.0 * n * c * spread, 0.0))
    # q solves 2n q² + w q - c delta (1 - delta) = 0; the second form avoids cancellation when w > 0.
    q = (root - w) / (4.0 * n) if w <= 0 else 2.0 * c * spread / (root + w)
    return max(n * (2.0 * q + spread), 0.0)


def _z(confidence: float) -> float:
    _check_confidence(confidence)
    return float(norm.ppf(0.5 + confidence / 2.0))


def _check_confidence(confidence) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) or not 0 < confidence < 1:
        raise RMTKDError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")


def _as_bool_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise RMTKDError(f"{name} must be one value per example (1-D), got shape {array.shape}")
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise RMTKDError(f"{name} must be booleans (or 0/1), got values other than 0 and 1")
        array = array.astype(bool)
    return array
