"""The ensemble diversity loss (geep/modeling/losses/ensemble.py) on hand-worked cases: the Jensen-Shannon terms are
computed here with plain Python from their definition, not by the code under test."""

import math

import pytest
import torch

from geep.errors import GeepError
from geep.modeling.losses.ensemble import diversity, ensemble_loss
from geep.modeling.objectives import OBJECTIVES
from geep.tasks import Classification, MultiLabel, Regression

CLS3 = Classification(("a", "b", "c"))
LN3 = math.log(3)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def js(p, q):
    mix = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda u: sum(a * math.log(a / m) for a, m in zip(u, mix) if a > 0)  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def reference_diversity(logits, labels):
    """sum over exits m >= 2 of the mean over n < m of the row-mean JS between the non-target softmaxes."""
    total = 0.0
    for m in range(1, len(logits)):
        per = []
        for n in range(m):
            rows = []
            for b, y in enumerate(labels):
                q_m = softmax([v for c, v in enumerate(logits[m][b]) if c != y])
                q_n = softmax([v for c, v in enumerate(logits[n][b]) if c != y])
                rows.append(js(q_m, q_n))
            per.append(sum(rows) / len(rows))
        total += sum(per) / len(per)
    return total


def test_two_exits_one_row_by_hand():
    # class 0 is right. exit 1: (0, 0, 0) -> CE log 3, non-target q = (1/2, 1/2);
    # exit 2: (5, ln 3, 0) -> CE log(1 + 4 e^-5), non-target q = (3/4, 1/4). mix (5/8, 3/8).
    logits = torch.tensor([[[0.0, 0.0, 0.0]], [[5.0, LN3, 0.0]]])
    y = torch.tensor([0])
    kl1 = 0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375)
    kl2 = 0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375)
    js12 = 0.5 * (kl1 + kl2)
    assert float(diversity(logits, y)) == pytest.approx(js12, abs=1e-6)
    ce = math.log(3) + math.log(1 + 4 * math.exp(-5))
    assert float(ensemble_loss(logits, None, y, [1, 2], task=CLS3)) == pytest.approx(ce - js12, abs=1e-6)
    got = ensemble_loss(logits, None, y, [1, 2], task=CLS3, diversity_weight=0.25)
    assert float(got) == pytest.approx(ce - 0.25 * js12, abs=1e-6)


def test_three_exits_four_classes_rows_with_their_own_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((3, 5, 4), generator=g) * 2
    labels = [0, 3, 1, 1, 2]
    expected = reference_diversity(logits.tolist(), labels)
    assert float(diversity(logits, torch.tensor(labels))) == pytest.approx(expected, abs=1e-5)
    ce = sum(float(torch.nn.functional.cross_entropy(logits[k], torch.tensor(labels))) for k in range(3))
    got = ensemble_loss(logits, None, torch.tensor(labels), [1, 2, 3], task=Classification(tuple("abcd")))
    assert float(got) == pytest.approx(ce - expected, abs=1e-5)


def test_diversity_ignores_the_target_and_is_bounded_by_log_2():
    logits = torch.tensor([[[1.0, 9.0, -9.0]], [[-3.0, -9.0, 9.0]]], requires_grad=True)
    y = torch.tensor([0])
    d = diversity(logits, y)
    assert float(d.detach()) == pytest.approx(math.log(2), abs=1e-3)  # nearly disjoint non-target distributions
    assert float(d.detach()) <= math.log(2)
    d.backward()
    assert logits.grad[:, :, 0].abs().max() == 0  # nothing flows into the right class's logit
    assert logits.grad[:, :, 1:].abs().max() > 0
    # agreement on the wrong classes is no diversity, however sure each exit is of the right class
    same = torch.tensor([[[0.0, 1.0, 2.0]], [[7.0, 1.0, 2.0]]])
    assert float(diversity(same, y)) == pytest.approx(0.0, abs=1e-7)


def test_two_classes_or_one_exit_leave_only_the_accuracy_term():
    two = torch.tensor([[[0.0, 1.0]], [[2.0, -1.0]]])
    y = torch.tensor([1])
    assert float(diversity(two, y)) == 0.0
    ce = -math.log(softmax([0.0, 1.0])[1]) - math.log(softmax([2.0, -1.0])[1])
    assert float(ensemble_loss(two, None, y, [1, 2], task=Classification(("a", "b")))) == pytest.approx(ce, abs=1e-6)
    assert float(diversity(torch.zeros((1, 2, 3)), torch.tensor([0, 1]))) == 0.0


def test_other_tasks_are_refused():
    assert OBJECTIVES["ensemble"].tasks == ("classification",)
    for task in (MultiLabel(("x", "y")), Regression((), target_mean=0.0, target_std=1.0)):
        with pytest.raises(GeepError, match=f"applies to classification only, not {task.name}"):
            OBJECTIVES["ensemble"].check_task(task.name)
        with pytest.raises(GeepError, match="classification only"):
            ensemble_loss(torch.zeros((2, 1, 2)), None, torch.zeros((1, 2)), [1, 2], task=task)
    OBJECTIVES["ensemble"].check_task("classification")
    OBJECTIVES["sdn"].check_task("regression")  # sdn applies to every task


def test_minimising_it_makes_exits_right_and_apart_on_the_wrong_classes():
    """Free logits for 3 exits x 6 rows x 4 classes, moved by gradient descent on the loss: with the diversity term
    every exit still puts the right class first, and the exits' wrong-class distributions end far further apart
    than when the same start is trained on the accuracy term alone (lambda = 0)."""
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    task = Classification(tuple("abcd"))
    ends = {}
    for weight in (0.0, 1.0):
        logits = (torch.randn((3, 6, 4), generator=torch.Generator().manual_seed(1)) * 0.1).requires_grad_(True)
        opt = torch.optim.SGD([logits], lr=0.5)
        for _ in range(300):
            opt.zero_grad()
            ensemble_loss(logits, None, labels, [1, 2, 3], task=task, diversity_weight=weight).backward()
            opt.step()
        final = logits.detach()
        assert (final.argmax(-1) == labels).all(), weight
        ends[weight] = reference_diversity(final.tolist(), labels.tolist())
    assert ends[1.0] > 100 * ends[0.0] and ends[1.0] > 0.4, ends  # measured: 0.58 against 0.0003
