"""How much accuracy a knob may lose against ``full``, stated with confidence: the bound calibration stores.

A knob's accuracy drop on dev is a point estimate; on a few hundred rows a 1-point budget is two rows, and the
fastest knob whose point estimate meets it is, by selection, the one that was luckiest on dev. Calibration instead
tests each knob against ``full`` with a one-sided upper confidence bound on its drop, and walks the knobs in a fixed
order so that the whole choice holds at the stated confidence.

**The bound (paired; Tango's score bound).** Per dev row i, the paired outcome is
d_i = [full right] - [knob right] in {-1, 0, 1}; the drop is mean(d) = q_lost - q_gained, estimated by (b - c) / n
from b rows where full is right and the knob wrong (``lost``) and c rows the reverse (``gained``). The stored bound is
the one-sided score bound on that difference of paired proportions (Tango 1998, Statistics in Medicine 17:891,
eq. 4-5; recommended for small samples by Fagerland, Lydersen & Laake 2014, Statistics in Medicine 33:2850): the
largest Delta whose score statistic, with q_gained estimated by restricted maximum likelihood at Delta, is still
above -z. It estimates the rate of disagreement too, so no disagreement on n rows bounds the drop at
z^2 / (n + z^2) (0.81 points on 200 rows at 90%), not at 0, and a knob that only lost rows gets the Wilson bound on
b / n, not b / n itself.

The exact conditional alternative (:func:`conditional_drop_bound`: McNemar's conditioning, McNemar 1947; the
Clopper-Pearson bound p_u on b / (b + c), Clopper & Pearson 1934, giving (2 p_u - 1)(b + c) / n) treats the rate of
disagreement as known: with c = 0 it equals the point estimate b / n at any confidence, and with no disagreement it
is 0. On bbc, where early exits disagree with full on a handful of dev rows, it let the stored knob break a 1-point
budget on held-out rows in 6-8 of 10 dev draws against 2-4 for the score bound (BENCHMARKS.md, "Calibration you can
trust"), so geep stores the score bound; the conditional one stays for that comparison.

**Many knobs: fixed-sequence testing (Learn then Test).** Choosing the fastest of many knobs that pass is a
multiple-comparison problem: with 41 knobs tested each at 90%, some pass by luck. Following "Learn then Test"
(Angelopoulos, Bates, Candes, Jordan, Lei 2021, arXiv:2110.01052, sec. 3, fixed-sequence testing), the null
hypothesis "knob j loses more than the budget" is tested along an order fixed before the labels are read, from the
slowest knob to the fastest; testing stops at the first knob that fails. Every knob before it is certified at once:
the chance that any of them loses more than the budget is at most 1 - confidence (the family-wise error), so the
fastest of them may be stored. The order is each knob's FLOPs speed-up on the dev inputs, which reads the texts
and never the labels (for a one-number knob it is the knob's own order; geep-verify's (tau, t) pairs have no other).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import beta, norm

from geep.errors import GeepError

DEFAULT_CONFIDENCE = 0.9


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float strictly between 0 and 1; GeepError (one line) otherwise, nan and bools included."""
    ok = isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and math.isfinite(confidence)
    if not ok or not 0 < confidence < 1:
        raise GeepError(f"the confidence must be a number strictly between 0 and 1 (e.g. 0.9), got {confidence!r}")
    return float(confidence)


def clopper_pearson_upper(successes: int, trials: int, confidence: float) -> float:
    """The one-sided Clopper-Pearson upper bound on a binomial proportion: the p at which P(X <= successes) for
    X ~ Binomial(trials, p) falls to 1 - confidence (1.0 when successes == trials or there are no trials)."""
    if not 0 <= successes <= trials:
        raise GeepError(f"a binomial count must lie in 0..{trials}, got {successes}")
    if successes == trials:
        return 1.0
    return float(beta.ppf(confidence, successes + 1, trials - successes))


def drop_upper_bound(lost: int, gained: int, rows: int, confidence: float) -> float:
    """The upper bound on a knob's accuracy drop against ``full`` (a fraction of rows, not points), at
    ``confidence``, from ``lost`` rows (full right, the knob wrong) and ``gained`` rows (the reverse) of ``rows``:
    Tango's score bound (:func:`score_upper_bound`), the bound calibration stores."""
    return score_upper_bound(lost, gained, rows, confidence)


def conditional_drop_bound(lost: int, gained: int, rows: int, confidence: float) -> float:
    """The exact conditional bound (2 p_u - 1) * (lost + gained) / rows, p_u the Clopper-Pearson bound on
    lost / (lost + gained): 0 when the two never disagree (see the module docstring for why it is not stored)."""
    if rows <= 0:
        raise GeepError("a drop bound needs at least one dev row")
    discordant = lost + gained
    if discordant == 0:
        return 0.0
    return (2.0 * clopper_pearson_upper(lost, discordant, confidence) - 1.0) * discordant / rows


def fixed_sequence(bounds: Sequence[float], budget: float) -> int:
    """How many hypotheses, taken in their order, pass before the first whose bound exceeds ``budget`` (the
    fixed-sequence test: everything after the first failure is not tested)."""
    for i, bound in enumerate(bounds):
        if bound > budget + 1e-12:
            return i
    return len(bounds)


def score_upper_bound(lost: int, gained: int, rows: int, confidence: float) -> float:
    """Tango's score bound on the paired drop q_lost - q_gained (a fraction of rows), at ``confidence``: the largest
    Delta whose score statistic (b - c - n Delta) / sqrt(n (2 q~_c + Delta (1 - Delta))) is still >= -z, with q~_c
    the maximum-likelihood q_gained given Delta (Tango 1998, Statistics in Medicine 17:891, eq. 4-5; recommended for
    small samples by Fagerland, Lydersen & Laake 2014, Statistics in Medicine 33:2850). Unlike the conditional
    bound, the rate of disagreement is estimated too: it is not 0 when the two never disagree."""
    if rows <= 0:
        raise GeepError("a drop bound needs at least one dev row")
    b, c, n = lost, gained, rows
    z = float(norm.ppf(confidence))

    def score(delta: float) -> float:
        A, B, C = 2.0 * n, -b - c + (2.0 * n - b + c) * delta, -c * delta * (1.0 - delta)
        q_gained = (math.sqrt(max(B * B - 4.0 * A * C, 0.0)) - B) / (2.0 * A)
        variance = n * (2.0 * q_gained + delta * (1.0 - delta))
        return (b - c - n * delta) / math.sqrt(variance) if variance > 0 else -math.inf

    lo, hi = (b - c) / n, 1.0
    for _ in range(60):  # bisection: the score falls as Delta grows past the estimate
        mid = (lo + hi) / 2.0
        if score(mid) >= -z:
            lo = mid
        else:
            hi = mid
    return lo
