"""The confidence bound calibration stores, the fixed-sequence choice and its fallback, on hand-made outcomes.

Expected values are worked out here without scipy: Tango's score bound (the stored one) from a numeric restricted
likelihood, or its closed forms (no disagreement: z^2 / (n + z^2); only lost rows: Wilson's bound on b / n); the
conditional Clopper-Pearson bound (kept for comparison) from a direct binomial sum solved by bisection, or its closed
forms (all-lost rows: p_u = 1; b of n_d with b = n_d - 1 or b = 0: a root)."""

import math
from statistics import NormalDist

import pytest

from geep.errors import GeepError
from geep.evaluation import KnobPoint, choose_knob, choose_policy
from geep.evaluation.bounds import (check_confidence, clopper_pearson_upper, conditional_drop_bound, drop_upper_bound,
                                   fixed_sequence, score_upper_bound)


def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def reference_upper(k: int, n: int, confidence: float) -> float:
    """The p at which P(X <= k), X ~ Binomial(n, p), falls to 1 - confidence, by bisection on the sum."""
    if k == n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def reference_drop_bound(lost: int, gained: int, rows: int, confidence: float) -> float:
    """The stored bound, in points: Tango's score bound worked out numerically (:func:`reference_score_bound`)."""
    return 100 * reference_score_bound(lost, gained, rows, confidence)


def reference_conditional_bound(lost: int, gained: int, rows: int, confidence: float) -> float:
    """The conditional Clopper-Pearson bound, in points."""
    d = lost + gained
    return 0.0 if d == 0 else 100 * (2 * reference_upper(lost, d, confidence) - 1) * d / rows


@pytest.mark.parametrize("k, n", [(0, 1), (1, 3), (2, 5), (7, 10), (0, 12), (3, 40), (4, 4)])
@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95])
def test_clopper_pearson_equals_the_binomial_sum(k, n, confidence):
    assert clopper_pearson_upper(k, n, confidence) == pytest.approx(reference_upper(k, n, confidence), abs=1e-9)


def test_conditional_bound_closed_forms():
    # 2 lost, 1 gained of 213 rows: P(X <= 2 | n=3, p) = 1 - p^3 = 0.1, so p_u = 0.9^(1/3).
    assert conditional_drop_bound(2, 1, 213, 0.9) == pytest.approx((2 * 0.9 ** (1 / 3) - 1) * 3 / 213, abs=1e-12)
    # Only lost rows: p_u = 1, the bound is the point estimate b / n at any confidence -- why it is not stored.
    assert conditional_drop_bound(2, 0, 200, 0.9) == pytest.approx(2 / 200)
    assert conditional_drop_bound(2, 0, 200, 0.99) == pytest.approx(2 / 200)
    # Only gained rows: (1 - p)^4 = 0.1 at p_u; the bound is negative (confidently more accurate than full).
    assert conditional_drop_bound(0, 4, 100, 0.9) == pytest.approx((2 * (1 - 0.1 ** 0.25) - 1) * 4 / 100,
                                                                   abs=1e-12)
    assert conditional_drop_bound(0, 0, 50, 0.9) == 0.0  # never disagree: no drop, however few the rows
    with pytest.raises(GeepError):
        conditional_drop_bound(0, 0, 0, 0.9)


def test_the_stored_bound_is_the_score_bound():
    """Unlike the conditional bound, it grows with the confidence even when every disagreement is a lost row, and is
    above 0 with no disagreement; a higher confidence never gives a lower bound."""
    for case in [(2, 0, 200), (0, 0, 50), (5, 5, 200), (0, 4, 100)]:
        assert drop_upper_bound(*case, 0.9) == pytest.approx(reference_score_bound(*case, 0.9), abs=1e-6)
    assert drop_upper_bound(2, 0, 200, 0.99) > drop_upper_bound(2, 0, 200, 0.9) > 2 / 200
    assert drop_upper_bound(0, 0, 50, 0.9) > 0
    assert drop_upper_bound(5, 5, 200, 0.95) > drop_upper_bound(5, 5, 200, 0.9) > 0
    with pytest.raises(GeepError):
        drop_upper_bound(0, 0, 0, 0.9)


def test_fixed_sequence_counts_until_the_first_failure():
    assert fixed_sequence([0.0, 0.5, 1.5, 0.2], 1.0) == 2  # 0.2 after the failure is not tested
    assert fixed_sequence([0.0, 1.0], 1.0) == 2  # the budget is inclusive
    assert fixed_sequence([2.0, 0.0], 1.0) == 0
    assert fixed_sequence([], 1.0) == 0


def point(knob, speedup, lost, gained, rows=1000, mean_layer=None):
    """A hand-made knob: full is right on 90% of ``rows``; the knob loses ``lost`` rows and gains ``gained``."""
    accuracy = (0.9 * rows - lost + gained) / rows
    return KnobPoint("fastbert", knob, accuracy, speedup, mean_layer if mean_layer is not None else 6 / speedup,
                     lost=lost, gained=gained, rows=rows)


def test_the_fastest_knob_before_the_first_failure_is_chosen():
    """On 1000 rows: knob 0.6 would pass on its own (3 lost rows: bound 0.62 points) but lies after 0.4, which fails
    (12 lost: 1.73 points): the sequence stops at 0.4, so 0.2 is chosen (1 lost: Wilson's 0.33 points); the point
    estimate would take 0.6 (drop 0.3)."""
    points = [point(0.0, 0.97, 0, 0), point(0.2, 1.5, 1, 0), point(0.4, 2.2, 12, 0), point(0.6, 3.1, 3, 0)]
    assert [round(reference_drop_bound(p.lost, 0, 1000, 0.9), 2) for p in points] == [0.16, 0.33, 1.73, 0.62]
    chosen = choose_knob(points, 0.9, max_accuracy_drop=1.0, confidence=0.9)
    assert chosen.knob == 0.2 and chosen.promised is True and chosen.confidence == 0.9
    assert chosen.drop_bound == pytest.approx(100 * wilson_upper(1, 1000, Z90), abs=1e-6)
    assert choose_knob(points, 0.9, max_accuracy_drop=1.0, confidence=None).knob == 0.6
    # The order is the FLOPs speed-up, not the list's: the same points listed fastest first choose the same.
    assert choose_knob(points[::-1], 0.9, max_accuracy_drop=1.0, confidence=0.9).knob == 0.2


def test_balanced_disagreement_is_bounded_above_its_point_estimate():
    """40 lost and 38 gained of 1000: the point estimate (0.2 points) meets a 1-point budget, the bound does not."""
    expected = reference_drop_bound(40, 38, 1000, 0.9)
    assert expected > 1.0
    points = [point(0.0, 0.97, 0, 0), point(0.2, 1.5, 1, 0), point(0.4, 2.2, 40, 38)]
    chosen = choose_knob(points, 0.9, max_accuracy_drop=1.0)  # default confidence 0.9
    assert chosen.knob == 0.2
    assert points[2].bound(0.9) == pytest.approx(expected, abs=1e-6)


def test_too_few_rows_to_promise_stores_the_most_accurate_faster_knob_unpromised():
    """On 50 rows even no disagreement bounds the drop at z^2 / (50 + z^2) = 3.2 points: no knob passes a 1-point
    budget. The fallback is the faster knob with the smallest bound (ties: the faster); the knob slower than full
    (0.97x) is never it."""
    points = [point(0.0, 0.97, 0, 0, rows=50), point(0.2, 1.5, 1, 0, rows=50), point(0.4, 2.2, 1, 0, rows=50),
              point(0.6, 3.1, 4, 0, rows=50)]
    chosen = choose_knob(points, 0.9, max_accuracy_drop=1.0, confidence=0.9)
    assert chosen.promised is False and chosen.knob == 0.4
    assert chosen.drop_bound == pytest.approx(100 * wilson_upper(1, 50, Z90), abs=1e-6)
    # With a budget the rows can carry (7 points: 1 lost of 50 bounds at 6.45), the same points are promised.
    again = choose_knob(points, 0.9, max_accuracy_drop=7.0, confidence=0.9)
    assert again.promised is True and again.knob == 0.4


def test_target_speedup_takes_the_smallest_bonferroni_bound():
    """Among the m = 2 knobs at least 2x faster, each is bounded at 1 - 0.1 / 2 = 0.95: 10 lost + 10 gained of 200
    (point drop 0) bounds above 2 lost + 0 gained (point drop 1 point), so the latter is chosen; the point rule takes
    the former."""
    points = [point(0.0, 0.97, 0, 0, rows=200), point(0.4, 2.2, 10, 10, rows=200), point(0.6, 3.1, 2, 0, rows=200)]
    chosen = choose_knob(points, 0.9, target_speedup=2.0, confidence=0.9)
    assert chosen.knob == 0.6 and chosen.promised is True
    assert chosen.drop_bound == pytest.approx(reference_drop_bound(2, 0, 200, 0.95), abs=1e-6)
    assert points[1].bound(0.95) == pytest.approx(reference_drop_bound(10, 10, 200, 0.95), abs=1e-6)
    assert points[1].bound(0.95) > chosen.drop_bound
    assert choose_knob(points, 0.9, target_speedup=2.0, confidence=None).knob == 0.4
    with pytest.raises(GeepError, match="best reachable is 3.10x"):
        choose_knob(points, 0.9, target_speedup=4.0)


def test_the_default_policy_is_the_fastest_promised_one_else_full():
    fast_unpromised = KnobPoint("geep", 0.3, 0.8, 5.0, 1.0, rows=200, drop_bound=3.0, promised=False)
    slow_promised = KnobPoint("fastbert", 0.2, 0.9, 2.0, 3.0, rows=200, drop_bound=0.5, promised=True)
    faster_promised = KnobPoint("pabee", 1, 0.88, 2.5, 2.5, rows=200, drop_bound=0.9, promised=True)
    chosen = {"geep": fast_unpromised, "fastbert": slow_promised, "pabee": faster_promised}
    assert choose_policy(chosen, max_accuracy_drop=1.0) == "pabee"
    assert choose_policy({"geep": fast_unpromised}, max_accuracy_drop=1.0) == "full"
    assert choose_policy(chosen, target_speedup=2.0) == "fastbert"  # the smallest bound


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), float("inf"), True, "0.9", None])
def test_a_confidence_outside_zero_one_is_refused(bad):
    with pytest.raises(GeepError, match="strictly between 0 and 1"):
        check_confidence(bad)
    with pytest.raises(GeepError, match="strictly between 0 and 1"):
        choose_knob([point(0.2, 1.5, 1, 0)], 0.9, max_accuracy_drop=1.0, confidence=bad if bad is not None else 2)


def test_a_point_without_counts_has_no_bound():
    with pytest.raises(GeepError, match="paired dev counts"):
        choose_knob([KnobPoint("fastbert", 0.2, 0.9, 1.5, 1.0)], 0.9, max_accuracy_drop=1.0)


# ---- Tango's score bound, worked out here: closed forms where it has them, else a numeric restricted likelihood.

Z90 = NormalDist().inv_cdf(0.9)


def wilson_upper(k: int, n: int, z: float) -> float:
    """The Wilson score upper bound on k / n: the larger root of (n p - k)^2 = z^2 n p (1 - p)."""
    a, b, c = n * n + z * z * n, -(2 * k * n + z * z * n), k * k
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def reference_score_bound(lost: int, gained: int, rows: int, confidence: float) -> float:
    """Tango's bound from first principles: at each Delta = q_lost - q_gained, q_gained maximises the trinomial
    log-likelihood (a golden-section search, not Tango's closed form); the score is
    (b - c - n Delta) / sqrt(n (2 q + Delta - Delta^2)); the bound is the Delta where it falls to -z (bisection)."""
    b, c, n = lost, gained, rows
    z = NormalDist().inv_cdf(confidence)

    def loglik(q: float, d: float) -> float:
        total = 0.0
        for count, share in ((b, q + d), (c, q), (n - b - c, 1 - 2 * q - d)):
            if count:
                if share <= 0:
                    return -math.inf
                total += count * math.log(share)
        return total

    def restricted_q(d: float) -> float:
        lo, hi = max(0.0, -d), (1 - d) / 2
        for _ in range(200):
            m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
            lo, hi = (m1, hi) if loglik(m1, d) < loglik(m2, d) else (lo, m2)
        return (lo + hi) / 2

    def score(d: float) -> float:
        variance = n * (2 * restricted_q(d) + d - d * d)
        return (b - c - n * d) / math.sqrt(variance) if variance > 0 else -math.inf

    lo, hi = (b - c) / n, 1.0 - 1e-12
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if score(mid) >= -z else (lo, mid)
    return lo


def test_score_bound_with_no_disagreement_is_z2_over_n_plus_z2():
    """With no discordant row the score is -sqrt(n Delta / (1 - Delta)), so the bound is z^2 / (n + z^2): 0.81
    points on 200 rows at 90% -- not 0: no disagreement seen on 200 rows does not make a rate of 0."""
    for n in (100, 200, 1000):
        assert score_upper_bound(0, 0, n, 0.9) == pytest.approx(Z90 ** 2 / (n + Z90 ** 2), abs=1e-9)
    assert 100 * score_upper_bound(0, 0, 200, 0.9) == pytest.approx(0.814, abs=1e-3)


@pytest.mark.parametrize("lost, rows", [(1, 200), (2, 200), (6, 1000), (13, 500)])
def test_score_bound_with_no_gained_row_is_wilson_on_the_lost_share(lost, rows):
    assert score_upper_bound(lost, 0, rows, 0.9) == pytest.approx(wilson_upper(lost, rows, Z90), abs=1e-9)


@pytest.mark.parametrize("lost, gained, rows, confidence", [(2, 1, 213, 0.9), (5, 5, 200, 0.9), (7, 2, 500, 0.95),
                                                           (1, 6, 100, 0.8)])
def test_score_bound_equals_a_numeric_restricted_likelihood(lost, gained, rows, confidence):
    assert score_upper_bound(lost, gained, rows, confidence) == pytest.approx(
        reference_score_bound(lost, gained, rows, confidence), abs=1e-6)
