"""The ponder objective (PonderNet's loss, geep/modeling/losses/ponder.py) on hand-worked cases: the halting
distribution, the truncated geometric prior and the loss of one row at three exits."""

import math

import pytest
import torch

from geep.modeling.losses.ponder import geometric_prior, halting_distribution, ponder_loss
from geep.tasks import Classification


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_halting_distribution_by_hand():
    """lambda = 0.5, 0.25, (ignored: 1 at the last exit): p = 0.5, 0.5 * 0.25 = 0.125, 0.5 * 0.75 = 0.375."""
    s = torch.tensor([[logit(0.5)], [logit(0.25)], [5.0]])  # (n=3, B=1)
    p = halting_distribution(s)
    assert p[:, 0].tolist() == pytest.approx([0.5, 0.125, 0.375])
    assert float(p.sum()) == pytest.approx(1.0)


def test_geometric_prior_by_hand():
    """lambda_p = 0.5 over 3 steps: 0.5, 0.25, 0.125, renormalised by 0.875: 4/7, 2/7, 1/7."""
    assert geometric_prior(3, 0.5).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_the_loss_of_one_row_by_hand():
    """Three exits, two classes, label 0. Logits (0, 0), (ln 3, 0), (0, ln 3): cross entropies ln 2, ln(4/3), ln 4.
    p = (0.5, 0.125, 0.375) as above. Expected loss: 0.5 ln 2 + 0.125 ln(4/3) + 0.375 ln 4. KL to the prior
    (4/7, 2/7, 1/7): sum p ln(p / q). Loss = expected + 0.01 KL."""
    z = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]], [[0.0, math.log(3)]]])  # (3, 1, 2)
    s = torch.tensor([[[logit(0.5)]], [[logit(0.25)]], [[0.0]]])  # (3, 1, 1)
    p, q = [0.5, 0.125, 0.375], [4 / 7, 2 / 7, 1 / 7]
    expected = 0.5 * math.log(2) + 0.125 * math.log(4 / 3) + 0.375 * math.log(4)
    kl = sum(a * math.log(a / b) for a, b in zip(p, q))
    got = ponder_loss(z, None, torch.tensor([0]), [1, 2, 3], task=Classification(("a", "b")), exit_signals=s,
                      prior=0.5)
    assert float(got) == pytest.approx(expected + 0.01 * kl, abs=1e-6)
    # the loss trains the halting heads: halting earlier where the early exit is the better one lowers it
    s.requires_grad_(True)
    ponder_loss(z, None, torch.tensor([0]), [1, 2, 3], task=Classification(("a", "b")), exit_signals=s,
                prior=0.5).backward()
    assert s.grad[0, 0, 0] < 0 and s.grad[2, 0, 0] == 0  # the last exit's logit is not read
