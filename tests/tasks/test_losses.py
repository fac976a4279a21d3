"""Every task's loss, distillation, learned-exit target and answer on tiny hand-worked cases (the expected values
are worked out here from the definitions, not by the code under test)."""

import math

import pytest
import torch

from geep.errors import GeepError
from geep.modeling.objectives import OBJECTIVES, every_exit_loss, geep_loss, learned_exit_loss, pabee_loss, \
    teacher_loss
from geep.tasks import TASKS, Classification, MultiLabel, Regression, get_task

CLS = Classification(("a", "b"))
ML = MultiLabel(("x", "y"))
REG = Regression((), target_mean=10.0, target_std=2.0)
LN3 = math.log(3)


def test_registry():
    assert list(TASKS) == ["classification", "regression", "multi-label", "token-classification"]
    assert get_task("regression") is Regression
    with pytest.raises(GeepError, match="unknown task 'x'; choose one of: classification, regression, multi-label, "
                       "token-classification"):
        get_task("x")
    assert (CLS.num_outputs, ML.num_outputs, REG.num_outputs) == (2, 2, 1)
    assert (CLS.primary, ML.primary, REG.primary) == ("accuracy", "micro_f1", "pearson")


def test_classification_cross_entropy_and_kl():
    # CE of logits (2, 0) for class 0: -log(e^2 / (e^2 + 1)) = log(1 + e^-2)
    assert float(CLS.loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))) == pytest.approx(math.log(1 + math.exp(-2)))
    # teacher p = (1/2, 1/2), student p = (3/4, 1/4): KL(p_T || p_S) = 1/2 log(2/3) + 1/2 log(2)
    kl = CLS.distillation(torch.tensor([[[LN3, 0.0]]]), torch.tensor([[0.0, 0.0]]))
    assert float(kl) == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2), abs=1e-6)


def test_multi_label_binary_cross_entropy_and_binary_kl():
    # logits (0, ln 3) for labels {x}: -log sigmoid(0) = log 2 and -log(1 - sigmoid(ln 3)) = -log(1/4); mean of both
    bce = ML.loss(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]))
    assert float(bce) == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)
    per_exit = ML.per_exit_loss(torch.tensor([[[0.0, LN3]], [[0.0, 0.0]]]), torch.tensor([[1.0, 0.0]]))
    assert per_exit.tolist() == pytest.approx([(math.log(2) + math.log(4)) / 2, math.log(2)], abs=1e-6)
    # teacher sigmoid 1/2 on both labels, student 3/4 and 1/2: the first label's binary KL is 1/2 log(2/3) + 1/2
    # log(2), the second's 0; averaged over the two labels
    kl = ML.distillation(torch.tensor([[[LN3, 0.0]]]), torch.tensor([[0.0, 0.0]]))
    assert float(kl) == pytest.approx((0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2, abs=1e-6)


def test_regression_squared_error_on_the_standardised_score():
    # the head learns (y - 10) / 2: targets 10 and 12 are 0 and 1
    targets = REG.train_targets(torch.tensor([10.0, 12.0]))
    assert targets.tolist() == [0.0, 1.0]
    assert float(REG.loss(torch.tensor([[1.0], [3.0]]), targets)) == pytest.approx((1 + 4) / 2)
    # two students against the teacher (2, 2): squared errors (1, 1) and (0, 4), each averaged over the batch
    students = torch.tensor([[[1.0], [3.0]], [[2.0], [4.0]]])
    assert float(REG.distillation(students, torch.tensor([[2.0], [2.0]]))) == pytest.approx(1.0 + 2.0)
    # the answer is the score in the data's units: 10 + 2 * 0.5
    assert REG.answer(torch.tensor([[0.5]])).predictions.tolist() == [11.0]


def test_what_a_learned_exit_learns_is_how_right_each_exit_is():
    outputs = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # one exit, two rows: argmax 0, 1
    assert CLS.exit_is_right(outputs, torch.tensor([0, 0])).tolist() == [[1.0, 0.0]]
    ml = torch.tensor([[[1.0, -1.0], [1.0, 1.0]]])  # label sets {x}, {x, y}
    assert ML.exit_is_right(ml, torch.tensor([[1.0, 0.0], [1.0, 0.0]])).tolist() == [[1.0, 0.0]]
    # BERxiT's regression target: 1 - tanh(|y_k - y|), in the head's standardised units
    right = REG.exit_is_right(torch.tensor([[[0.5], [0.0]]]), torch.tensor([0.0, 0.0]))
    assert right[0].tolist() == pytest.approx([1 - math.tanh(0.5), 1.0])
    # the module's loss: (sigmoid(u) - target)^2 averaged over rows, summed over exits; u = 0 is sigmoid 1/2
    loss = learned_exit_loss(torch.zeros((1, 2, 1)), outputs, torch.tensor([0, 0]), task=CLS)
    assert float(loss) == pytest.approx(((0.5 - 1) ** 2 + (0.5 - 0) ** 2) / 2)


def test_objectives_take_the_task_s_losses():
    """geep's loss for a regression model: the teacher's squared error on every diverse output plus each student's
    squared error to the teacher; pabee's: each exit's squared error weighted by its depth."""
    exits = torch.tensor([[[1.0]], [[3.0]]])  # E = (1, 2), one row; the teacher says 3
    diverse = torch.zeros((0, 1, 1))
    y = torch.tensor([2.0])
    assert float(geep_loss(exits, diverse, y, [1, 2], task=REG)) == pytest.approx((3 - 2) ** 2 + (1 - 3) ** 2)
    assert float(pabee_loss(exits, None, y, [1, 2], task=REG)) == pytest.approx((1 * 1 + 2 * 1) / 3)
    assert float(teacher_loss(exits, None, y, [1, 2], task=REG)) == pytest.approx(1.0)


def test_berxit_alternates_the_teacher_s_loss_with_every_exit_s():
    (stage,) = OBJECTIVES["berxit"].stages
    assert stage.loss_at(1) is teacher_loss and stage.loss_at(2) is every_exit_loss and stage.loss_at(3) is teacher_loss
    exits = torch.tensor([[[1.0]], [[3.0]]])
    y = torch.tensor([2.0])
    assert float(every_exit_loss(exits, None, y, [1, 2], task=REG)) == pytest.approx(1.0 + 1.0)


def test_metrics_come_from_the_libraries_on_hand_worked_cases():
    m = CLS.metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    # accuracy 3/4; F1 of class 0: 2/(2+1) = 2/3 (tp 1, fp 1), of class 1: 4/5 (tp 2, fn 1)
    assert m["accuracy"] == 0.75 and m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    pred = torch.tensor([[True, False], [True, True], [False, False]])
    gold = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = ML.metrics(pred, gold)
    # micro: tp 2, fp 1, fn 1 -> F1 4/6; per label, x: tp 2, fp 0, fn 0 -> 1; y: tp 0, fp 1, fn 1 -> 0
    assert m["micro_f1"] == pytest.approx(4 / 6) and m["macro_f1"] == pytest.approx(0.5) and m["accuracy"] == 1 / 3
    m = REG.metrics(torch.tensor([1.0, 2.0, 3.0, 5.0]), torch.tensor([2.0, 4.0, 6.0, 7.0]))
    x, y = [1.0, 2.0, 3.0, 5.0], [2.0, 4.0, 6.0, 7.0]
    mx, my = sum(x) / 4, sum(y) / 4
    r = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sum((a - mx) ** 2 for a in x)
                                                                     * sum((b - my) ** 2 for b in y))
    assert m["pearson"] == pytest.approx(r) and m["spearman"] == pytest.approx(1.0)
    assert REG.metrics(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0]))["pearson"] == 0.0  # a constant


@pytest.mark.parametrize("values, message", [
    (["3.5", "abc"], "data row 2's label 'abc' is not a number"),
    (["nan"], "data row 1's label is 'nan'; a regression label must be finite"),
    ([float("inf")], "must be finite"),
])
def test_a_regression_label_that_is_not_a_finite_number_is_one_line(values, message):
    with pytest.raises(GeepError, match=message):
        REG.read_labels(values, "data")


def test_multi_label_labels_from_lists_or_joined_names():
    assert ML.read_labels([["y", "x"], "x, y", "y", []], "data") == [["x", "y"], ["x", "y"], ["y"], []]
    assert ML.targets([["x"], []]).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(GeepError, match="data row 2 has no label"):
        ML.read_labels([["x"], ""], "data")
    with pytest.raises(GeepError, match=r"dev: label\(s\) never seen in training: 'z'"):
        ML.targets([["x", "z"]], "dev")
    assert MultiLabel(("x", "y"), separator="|").read_labels(["x|y"], "d") == [["x", "y"]]
