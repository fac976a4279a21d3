"""Temperature scaling, the Difficulty Inversion Score, and calibrating a cascade (one threshold per boundary
under the single-model rule, each boundary member's temperature stored per precision)."""

from __future__ import annotations

import copy

import pytest
import torch

from geep.errors import GeepError
from geep.evaluation.calibrate import calibrate
from geep.evaluation.metrics import difficulty_inversion_score
from geep.evaluation.temperature import fit_temperature
from geep.inference import predict
from geep.modeling.cascade import Cascade
from tests.helpers import random_texts, tiny_member
from tests.evaluation.test_bounds import reference_drop_bound

TEXTS = random_texts(48, seed=5)


def test_the_fitted_temperature_minimises_the_nll_on_a_fine_grid():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 3, generator=g) * 4  # over-confident
    labels = torch.where(torch.rand(200, generator=g) < 0.7, logits.argmax(-1), torch.randint(0, 3, (200,),
                                                                                              generator=g))
    def nll(T):
        return float(torch.nn.functional.cross_entropy(logits / T, labels))
    grid = [0.5 + 0.001 * i for i in range(6000)]  # 0.5 .. 6.5
    best = min(grid, key=nll)
    T = fit_temperature(logits, labels)
    assert abs(T - best) < 2e-3 and T > 1  # over-confident logits are cooled
    assert fit_temperature(logits[:0], labels[:0]) == 1.0


def test_difficulty_inversion_score_by_hand():
    """Confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong), 0.6 (right): easy {0.9, 0.7, 0.6} x hard
    {0.8, 0.6} = 6 pairs; the hard 0.8 is above the easy 0.7 and 0.6 (2 inversions), the hard 0.6 ties the easy
    0.6 (1/2). I = 2.5, DIS = 1 - 2.5 / 6."""
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.6])
    wrong = torch.tensor([False, True, False, True, False])
    assert difficulty_inversion_score(confidence, wrong) == pytest.approx(1 - 2.5 / 6)
    assert difficulty_inversion_score(torch.tensor([0.9, 0.1]), torch.tensor([False, True])) == 1.0
    assert difficulty_inversion_score(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 0.0
    assert difficulty_inversion_score(confidence, torch.zeros(5, dtype=torch.bool)) is None


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    tiny_member(d / "small", 1, [1], seed=0, texts=TEXTS)
    tiny_member(d / "large", 2, [1, 2], seed=1, texts=TEXTS)
    return Cascade.from_members([d / "small", d / "large"])


def test_calibrating_a_cascade_stores_a_threshold_per_boundary_and_the_temperature(cascade):
    """Labels = the large member's own answers: the cascade's reference (its last member alone) is 100% right, so
    at a drop of at most 10 points the threshold chosen is the fastest that keeps 90%."""
    cascade = copy.deepcopy(cascade)
    labels = predict(cascade.members[1], TEXTS).labels
    chosen = calibrate(cascade, TEXTS, labels, max_accuracy_drop=10, grid_points=11)
    assert set(chosen) == {"cascade", "cascade-fastbert", "cascade-deebert", "cascade-confidence", "cascade-pabee"}
    (T,) = cascade.config.temperatures["fp32"]
    small = predict(cascade.members[0], TEXTS)
    expected_T = fit_temperature(torch.log(small.probabilities), torch.tensor(
        [cascade.label_names.index(y) for y in labels]))
    assert T == pytest.approx(expected_T, rel=1e-6)
    theta = cascade.config.default_knobs["fp32"]["cascade"]["cascade_1"]
    out = predict(cascade, TEXTS)  # the stored default policy at its stored knob
    # the default is a policy whose knob was promised, else full (nothing faster was shown to keep the budget)
    promised = [name for name, point in chosen.items() if point.promised]
    assert cascade.config.default_policy["fp32"] in (promised or ["full"])
    run = predict(cascade, TEXTS, policy="cascade")
    accuracy = sum(a == b for a, b in zip(run.labels, labels)) / len(TEXTS)
    assert chosen["cascade"].accuracy == pytest.approx(accuracy)
    # the reference is right on every row, so no row is gained: the bound is Wilson's on the share of rows lost
    lost = round(len(TEXTS) * (1 - accuracy))
    assert chosen["cascade"].gained == 0 and chosen["cascade"].lost == lost
    each = 1 - 0.1 / len(chosen)  # the five cascade policies share the confidence (Bonferroni)
    assert chosen["cascade"].drop_bound == pytest.approx(reference_drop_bound(lost, 0, len(TEXTS), each), abs=1e-6)
    if chosen["cascade"].promised:
        assert accuracy >= 0.9 - 1e-9
    confident = (small.probabilities.log() / T).softmax(-1).max(-1).values >= theta
    assert (run.exit_member == 1).tolist() == confident.tolist()
    assert len(out) == len(TEXTS)


def test_an_unreachable_target_changes_nothing(cascade):
    cascade = copy.deepcopy(cascade)
    with pytest.raises(GeepError, match="unreachable"):
        calibrate(cascade, TEXTS, ["c0"] * len(TEXTS), target_speedup=50)
    assert cascade.config.temperatures == {} and cascade.config.default_knobs == {}
