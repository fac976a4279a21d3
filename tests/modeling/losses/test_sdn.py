"""SDN's weighted loss (geep/modeling/losses/sdn.py) on hand-worked cases: the weights and the loss are worked out
here from the authors' formula, tau_k = min(C_k, 0.01 + p * C_k), not by the code under test."""

import math

import pytest
import torch

from geep.modeling.losses.sdn import sdn_loss, sdn_schedule, sdn_weights
from geep.modeling.objectives import OBJECTIVES
from geep.tasks import Classification, MultiLabel, Regression

CLS = Classification(("a", "b"))
LN3 = math.log(3)


def test_weights_grow_from_0_01_to_each_exit_s_relative_depth():
    # E = (1, 2, 4), L = 4: C = (1/4, 2/4); the teacher always weighs 1
    assert sdn_weights([1, 2, 4], 0.0).tolist() == pytest.approx([0.01, 0.01, 1.0])
    assert sdn_weights([1, 2, 4], 0.5).tolist() == pytest.approx([0.01 + 0.125, 0.01 + 0.25, 1.0])
    # at the end 0.01 + C > C: capped at C
    assert sdn_weights([1, 2, 4], 1.0).tolist() == pytest.approx([0.25, 0.5, 1.0])
    # capped before the end too: with C = 0.01 the cap holds from the start
    assert sdn_weights([1, 2], 0.3, final=[0.005]).tolist() == pytest.approx([0.005, 1.0])


def test_weights_at_each_epoch_end_are_the_authors_per_epoch_coefficients():
    """The released code: cur_coeffs = min(max_coeffs, 0.01 + epoch * max_coeffs / epochs), max_coeffs 0.15..0.9."""
    caps = [0.15, 0.3, 0.45, 0.6, 0.75, 0.9]
    epochs = 3
    for epoch in range(1, epochs + 1):
        expected = [min(c, 0.01 + epoch * (c / epochs)) for c in caps] + [1.0]
        got = sdn_weights([1, 2, 3, 4, 5, 6, 7], epoch / epochs, final=caps)
        assert got.tolist() == pytest.approx(expected)


def test_loss_is_the_weighted_sum_of_each_exit_s_cross_entropy():
    # one row of class 0; exit 1: logits (0, 0) -> CE log 2; exit 2: (ln 3, 0) -> p = 3/4, CE log 4/3;
    # exit 4 (teacher): (0, ln 3) -> p = 1/4, CE log 4
    logits = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]], [[0.0, LN3]]])
    y = torch.tensor([0])
    got = sdn_loss(logits, None, y, [1, 2, 4], task=CLS, progress=0.5)
    expected = 0.135 * math.log(2) + 0.26 * math.log(4 / 3) + math.log(4)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    # the stage's schedule gives the loss of a step at that progress; its plain loss is the final weights'
    (stage,) = OBJECTIVES["sdn"].stages
    assert float(stage.loss_at(7, 0.5)(logits, None, y, [1, 2, 4], task=CLS)) == pytest.approx(expected, abs=1e-6)
    final = 0.25 * math.log(2) + 0.5 * math.log(4 / 3) + math.log(4)
    assert float(stage.loss(logits, None, y, [1, 2, 4], task=CLS)) == pytest.approx(final, abs=1e-6)
    assert float(sdn_schedule(1.0)(logits, None, y, [1, 2, 4], task=CLS)) == pytest.approx(final, abs=1e-6)


def test_every_task_trains_through_its_own_loss():
    # regression, E = (1, 2): squared errors (1 - 2)^2 and (3 - 2)^2; C_1 = 1/2, at the end tau_1 = 1/2
    reg = Regression((), target_mean=0.0, target_std=1.0)
    exits = torch.tensor([[[1.0]], [[3.0]]])
    assert float(sdn_loss(exits, None, torch.tensor([2.0]), [1, 2], task=reg)) == pytest.approx(0.5 * 1 + 1)
    # multi-label, E = (1, 2), labels {x}: logits (0, 0) -> BCE mean (log 2 + log 2)/2 = log 2 at both exits;
    # at progress 0 tau_1 = 0.01
    ml = MultiLabel(("x", "y"))
    exits = torch.zeros((2, 1, 2))
    got = sdn_loss(exits, None, torch.tensor([[1.0, 0.0]]), [1, 2], task=ml, progress=0.0)
    assert float(got) == pytest.approx(0.01 * math.log(2) + math.log(2), abs=1e-6)


def test_bad_progress_and_final_weights_are_errors():
    with pytest.raises(ValueError, match=r"progress must lie in \[0, 1\]"):
        sdn_weights([1, 2], 1.5)
    with pytest.raises(ValueError, match="one weight per exit before the last"):
        sdn_weights([1, 2, 4], 0.5, final=[0.1])

