"""Token policies (sentee, full, oracle) through the one executor: SENTEE's rule by hand, batch invariance at fp32 and
int8 (a sentence's tags and exit are the same alone or in batches of mixed lengths), and the replay backend scoring
a knob as the model runs it."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from transformers import BertModel

from geep.data.token_data import TokenData, make_windows
from geep.evaluation.sweep import sweep
from geep.inference import all_exit_logits
from geep.inference.runs import run_policy
from geep.modeling.config import GeepConfig
from geep.modeling.model import MultiExitClassifier
from geep.policies import get_policy
from geep.policies.sentee import token_uncertainty
from geep.tasks import OutputLayout
from tests import helpers

TAGS = ["B-X", "I-X", "O"]
N = 24
TOL = 1e-4


def token_model(tmp_path, head: str = "linear", seed: int = 0, spread: float = 4.0) -> MultiExitClassifier:
    torch.manual_seed(seed)
    config = GeepConfig(num_layers=4, label_names=TAGS, task="token-classification", max_length=24, head=head)
    model = MultiExitClassifier(BertModel(helpers.tiny_bert_config(4)), config, helpers.tiny_tokenizer(tmp_path))
    with torch.no_grad():
        for h in model.heads.values():
            h.classifier.weight.mul_(spread)
    return model.eval()


def token_rows(model, seed: int = 0):
    rng = random.Random(seed)
    sentences = [[rng.choice(helpers.WORDS) for _ in range(rng.randint(1, 30))] for _ in range(N)]
    tags = [[rng.choice(TAGS) for _ in s] for s in sentences]
    windows = make_windows(model.tokenizer, TokenData(sentences, tags, "t"), model.config.max_length)
    return windows, model.task.targets(windows.position_tags)


def test_sentee_leaves_when_the_largest_token_uncertainty_is_under_t() -> None:
    layout = OutputLayout("token-classification", 3 * 4, 0, 2, 0, 3)
    logits = torch.tensor([[[9.0, 0, 0], [0, 0, 0], [9, 0, 0]],  # position 1 uniform but not a real token
                           [[9.0, 0, 0], [1, 0, 0], [0, 0, 0]]])  # position 1 uncertain and real
    flag = torch.tensor([[1.0, 0, 1], [1, 1, 0]])
    out = torch.cat([logits, flag[..., None]], -1).reshape(2, -1)
    p = F.softmax(torch.tensor([1.0, 0, 0]), -1)
    u1 = float(-(p * p.log()).sum() / math.log(3))
    u0 = float(-(F.softmax(torch.tensor([9.0, 0, 0]), -1) * F.log_softmax(torch.tensor([9.0, 0, 0]), -1)).sum()
               / math.log(3))
    policy = get_policy("sentee").bind(layout)
    for t, expected in ((u0 + 1e-6, [True, False]), (u1 + 1e-6, [True, True]), (0.0, [False, False]),
                        (1.0, [True, True])):
        assert policy.decide(out, t, {})[0].tolist() == expected
    u = token_uncertainty(logits, flag.bool())
    assert u[0, 1] == 0 and u[1, 2] == 0


def _knob_and_near(policy, model, logits, labels):
    """A knob that spreads the exits, and the rows within TOL of a decision (excluded from the comparison)."""
    layout = OutputLayout("token-classification", model.config.num_outputs, 0, 4, 0, len(TAGS))
    tags, flag = layout.token_outputs(logits)  # (N, E, M, C), (N, E, M)
    if policy == "sentee":
        worst = token_uncertainty(tags, flag).amax(-1)  # (N, E)
        knob = float(worst[:, 0].median())  # about half the rows leave at the first exit
        return knob, ((worst - knob).abs() < TOL).any(1)
    top2 = tags.topk(2, -1).values
    near = (((top2[..., 0] - top2[..., 1]) < TOL) & flag).any(-1).any(1)
    return None, near


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("policy", ["sentee", "full", "oracle"])
@pytest.mark.parametrize("head", ["linear", "attention"])
def test_token_policies_are_batch_invariant(tmp_path, policy, precision, head):
    model = token_model(tmp_path, head)
    windows, labels = token_rows(model)
    encoded = model.tokenize(windows.texts)
    assert len({len(x) for x in encoded["input_ids"]}) > 5  # mixed lengths
    logits = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits
    knob, near = _knob_and_near(policy, model, logits, labels)
    assert int(near.sum()) <= 3
    alone = run_policy(model, encoded, policy, knob, batch_size=1, labels=labels, precision=precision)
    if policy == "sentee":
        assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    ok = ~near
    for size, seed in ((5, 0), (64, 1)):
        order = list(range(len(windows)))
        random.Random(seed).shuffle(order)
        run = run_policy(model, encoded, policy, knob, batch_size=size, order=order, labels=labels,
                         precision=precision)
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.predictions[ok], alone.predictions[ok])


def test_oracle_leaves_where_every_tagged_token_is_right(tmp_path):
    model = token_model(tmp_path)
    windows, labels = token_rows(model)
    encoded = model.tokenize(windows.texts)
    logits = all_exit_logits(model, encoded).logits  # (N, E, K)
    answers = [model.task.answer(logits[:, e]).predictions for e in range(4)]  # (N, M) each
    tagged = labels >= 0
    right = torch.stack([((a == labels) | ~tagged).all(-1) for a in answers], 1)  # (N, E)
    expected = [next((e + 1 for e in range(4) if right[r, e]), 4) for r in range(len(labels))]
    assert run_policy(model, encoded, "oracle", labels=labels).exit_layer.tolist() == expected


def test_the_replay_backend_scores_sentee_as_the_model_runs_it(tmp_path):
    model = token_model(tmp_path)
    windows, labels = token_rows(model)
    encoded = model.tokenize(windows.texts)
    result = sweep(model, encoded, labels, policies=["sentee"], batch_size=8, grid_points=5)
    assert result.full.metric == "entity_f1"
    for point in result.points["sentee"][1:-1]:
        run = run_policy(model, encoded, "sentee", point.knob, batch_size=8)
        assert model.task.score(run.predictions, labels) == pytest.approx(point.score, abs=1e-6)
        assert float(run.exit_layer.float().mean()) == pytest.approx(point.mean_exit_layer)
        assert run.flops.total == pytest.approx(point.flops, rel=1e-9) if hasattr(point, "flops") else True
