"""The new exit rules on hand-worked recorded outputs, each run by the one scheduler and executor on the replay
backend (every layer an exit): lte, margin, elbert, vote, and pabee on label sets and scores."""

import math

import pytest
import torch

from geep.errors import GeepError
from geep.inference.offline import run_rows
from geep.inference.rows import Prepared
from geep.inference.spec import RunSpec
from geep.policies import get_policy
from geep.runtime.replay import ReplayBackend
from geep.tasks import Classification, MultiLabel, OutputLayout, Regression

E = 4
LOGIT_3_4 = math.log(3)  # sigmoid = 3/4


def replay(policy: str, outputs: torch.Tensor, knob, task, signals: int = 0, labels=None):
    """(exit index (N,), answers) of rows whose every exit's outputs are ``outputs`` (N, E, K + S)."""
    N, _, width = outputs.shape
    bound = get_policy(policy).bind(OutputLayout(task.name, width - signals, signals, E))
    spec = RunSpec(bound, knob, "fp32", bound.schedule, torch.device("cpu"), N, task)
    answered = run_rows(ReplayBackend(outputs, list(range(1, E + 1)), E), spec, Prepared({"input_ids": [[0]] * N}, None),
                        labels=labels)
    return answered.exit_layer - 1, answered


def test_lte_leaves_where_the_learned_certainty_reaches_t():
    task = Classification(("a", "b"))
    u = torch.tensor([[-2.0, 0.0, 2.0, 3.0], [1.0, -1.0, 0.0, 0.0]])  # the module's logits per exit
    outputs = torch.cat([torch.zeros((2, E, 2)), u[..., None]], -1)  # (N, E, C + 1)
    layers, _ = replay("lte", outputs, 0.6, task, signals=1)
    assert layers.tolist() == [2, 0]  # sigmoid(2) = 0.88 >= 0.6 at exit 2; sigmoid(1) = 0.73 at exit 0
    assert replay("lte", outputs, 1.0, task, signals=1)[0].tolist() == [3, 3]  # never
    assert replay("lte", outputs, 0.0, task, signals=1)[0].tolist() == [0, 0]  # first


def test_margin_waits_until_no_label_is_near_one_half():
    task = MultiLabel(("x", "y"))
    z = torch.tensor([[[LOGIT_3_4, 0.0], [LOGIT_3_4, -3.0], [3.0, -3.0], [3.0, -3.0]]])  # (1, E, 2)
    # |p - 1/2|: exit 0 (1/4, 0), exit 1 (1/4, 0.45), exit 2 (0.45, 0.45)
    assert replay("margin", z, 0.2, task)[0].tolist() == [1]
    assert replay("margin", z, 0.3, task)[0].tolist() == [2]
    assert replay("margin", z, 0.5, task)[0].tolist() == [3]
    layers, answered = replay("margin", z, 0.2, task)
    assert answered.predictions.tolist() == [[True, False]] and answered.probabilities[0, 0] == pytest.approx(0.75)


def test_pabee_counts_an_unchanged_label_set_and_a_score_that_barely_moves():
    sets = torch.tensor([[[1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [1.0, 1.0]]])  # {x} {x} {x,y} {x,y}
    assert replay("pabee", sets, 1, MultiLabel(("x", "y")))[0].tolist() == [1]
    assert replay("pabee", sets, 2, MultiLabel(("x", "y")))[0].tolist() == [3]
    task = Regression((), target_mean=10.0, target_std=2.0)
    scores = torch.tensor([[0.0, 0.5, 0.55, 0.56], [1.0, 1.05, 1.5, 1.52]])[..., None]  # standardised, (N, E, 1)
    # moves under 0.1: row 0 from exit 1 to 2 and 2 to 3; row 1 from 0 to 1 and from 2 to 3
    layers, answered = replay("pabee", scores, 1, task)
    assert layers.tolist() == [2, 1]
    assert answered.predictions.tolist() == pytest.approx([10 + 2 * 0.55, 10 + 2 * 1.05])  # in the data's units
    assert replay("pabee", scores, 2, task)[0].tolist() == [3, 3]


def test_elbert_exits_on_low_entropy_or_a_held_majority():
    task = Classification(("a", "b", "c"))
    # row 0: p(a) = 0.6 at every exit (a window of 2 majorities ends at exit 1); row 1: one-hot at exit 2 (entropy 0);
    # row 2: the majority class changes, the entropy stays high
    p = torch.tensor([[[0.6, 0.2, 0.2]] * E,
                      [[0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [1 - 2e-9, 1e-9, 1e-9], [0.4, 0.3, 0.3]],
                      [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.6, 0.2, 0.2], [0.2, 0.6, 0.2]]])
    logits = p.log()
    assert replay("elbert", logits, 0.05, task)[0].tolist() == [1, 2, 3]  # window N = max(2, ceil(4 / 3)) = 2
    assert replay("elbert", logits, 0.0, task)[0].tolist() == [3, 3, 3]  # never, the window included
    assert replay("elbert", logits, 1.0, task)[0].tolist() == [0, 0, 0]


def test_vote_answers_the_mean_softmax_and_stops_once_the_leader_holds_t_of_every_vote():
    task = Classification(("a", "b"))
    p = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.9, 0.1]],
                      [[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.1, 0.9]]])
    # votes for a: row 0: 0.9, 1.1, 2.0, 2.9; row 1: 0.6, 1.2, 1.8, 1.9 (b 2.1 at the end); t |E| = 2 at t = 1/2
    layers, answered = replay("vote", p.log(), 0.5, task)
    assert layers.tolist() == [2, 3]
    assert answered.probabilities[0].tolist() == pytest.approx([2.0 / 3, 1.0 / 3])  # (0.9 + 0.2 + 0.9) / 3
    assert answered.predictions.tolist() == [0, 1]  # row 1 reached L: the vote of every exit says b
    assert answered.probabilities[1].tolist() == pytest.approx([1.9 / 4, 2.1 / 4])
    layers, answered = replay("vote", p.log(), 0.0, task)  # first: its own softmax
    assert layers.tolist() == [0, 0] and answered.probabilities[0].tolist() == pytest.approx([0.9, 0.1])


def test_oracle_on_label_sets():
    task = MultiLabel(("x", "y"))
    sets = torch.tensor([[[1.0, -1.0], [1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]]])
    assert replay("oracle", sets, None, task, labels=torch.tensor([[1.0, 1.0]]))[0].tolist() == [1]
    assert replay("oracle", sets, None, task, labels=torch.tensor([[0.0, 0.0]]))[0].tolist() == [3]


def test_a_policy_is_refused_for_a_task_it_does_not_read(task_model):
    from geep.inference.spec import resolve_run

    regression = task_model("regression", exit_module=None)
    with pytest.raises(GeepError, match="the fastbert policy reads a softmax over classes; a regression model can "
                                        "use: full, pabee, geep, geep-verify$"):
        resolve_run(regression, "fastbert")
    with pytest.raises(GeepError, match="the lte policy reads a learned exit's certainty, and this model has no exit "
                                        "module; train one with `geep train --exit-module lte`"):
        resolve_run(task_model("classification", exit_module=None), "lte")
    with pytest.raises(GeepError, match="the margin policy reads each label's sigmoid; a classification model"):
        resolve_run(task_model("classification"), "margin")
    with pytest.raises(GeepError, match="the vote policy .* a multi-label model can use: full, pabee, geep, "
                                        "geep-verify, oracle, lte, margin$"):
        resolve_run(task_model("multi-label"), "vote")
