"""A cascade run by the one scheduler and executor: exits and FLOPs on a hand-worked case, answers in the first
member's label order, and batch invariance at fp32 and int8 (a row's label, exit member and layer, and
probabilities are the same alone or in a batch of 64)."""

from __future__ import annotations

import pytest
import torch

from geep.inference import predict
from geep.inference.runs import all_exit_logits, run_policy
from geep.modeling.cascade import Cascade
from geep.policies import entropy
from tests.helpers import random_texts, tiny_member, widest_gap

TEXTS = random_texts(64, seed=11, max_words=30)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """Member 1: 1 layer, one exit; member 2: 3 layers, exits 1-3. The cascade has layers 1..4, exits 1..4,
    boundary 1."""
    d = tmp_path_factory.mktemp("cascade")
    tiny_member(d / "small", 1, [1], seed=0, texts=TEXTS)
    tiny_member(d / "large", 3, [1, 2, 3], seed=1, texts=TEXTS)
    c = Cascade.from_members([d / "small", d / "large"], d / "c")
    c.save_pretrained(d / "c")
    return Cascade.from_pretrained(d / "c")


def test_layout(cascade):
    assert (cascade.num_layers, cascade.exit_layers, cascade.boundaries, cascade.offsets) == (4, [1, 2, 3, 4], [1],
                                                                                                [0, 1])
    assert cascade.exit_members(torch.tensor([1, 2, 4])).tolist() == [1, 2, 2]


def test_exits_and_flops_on_a_hand_worked_case(tmp_path):
    """Member 1 (1 layer) and member 2 (2 layers), linear heads, one exit each; threshold theta in the widest gap
    of member 1's max probabilities. A row leaves at layer 1 with member 1's answer when its max probability is
    >= theta, else at layer 3 with member 2's. One batch of all rows: step 1 runs layer 1 and head 1 on N rows
    padded to the longest (T1); step 2 runs layers 2 and 3 and head 3 on the n rows that go on, re-padded to
    their own longest (T2). FLOPs per row: a layer 2T(4H^2 + 2HI) + 4T^2H, a linear head 2H^2 + 2HC."""
    texts = TEXTS[:20]
    small = tiny_member(tmp_path / "small", 1, [1], seed=3, texts=texts, head="linear")
    large = tiny_member(tmp_path / "large", 2, [2], seed=4, texts=texts, head="linear")
    cascade = Cascade.from_members([tmp_path / "small", tmp_path / "large"], tmp_path / "c")
    p1 = predict(small, texts).probabilities
    p2 = predict(large, texts).probabilities
    theta = widest_gap(p1.max(-1).values)
    leaves = p1.max(-1).values >= theta
    lengths = [len(ids) for ids in cascade.tokenize(texts)["input_ids"]]
    run = run_policy(cascade, cascade.tokenize(texts), "cascade", theta, batch_size=len(texts))
    assert run.exit_layer.tolist() == [1 if out else 3 for out in leaves.tolist()]
    torch.testing.assert_close(run.probabilities, torch.where(leaves[:, None], p1, p2), atol=1e-6, rtol=0)
    H, I, C = 32, 37, 3
    def layer(T): return 2 * T * (4 * H * H + 2 * H * I) + 4 * T * T * H
    head = 2 * H * H + 2 * H * C
    N, n = len(texts), int((~leaves).sum())
    T1, T2 = max(lengths), max(length for length, out in zip(lengths, leaves.tolist()) if not out)
    assert 0 < n < N
    assert run.flops.total == N * (layer(T1) + head) + n * (2 * layer(T2) + head)


def test_answers_are_in_the_first_members_label_order(tmp_path):
    """Member 2 lists the labels in another order: its answers are read through the permutation."""
    texts = TEXTS[:16]
    tiny_member(tmp_path / "small", 1, [1], seed=0, texts=texts)
    large = tiny_member(tmp_path / "large", 2, [2], seed=1, texts=texts, labels=("c2", "c0", "c1"))
    cascade = Cascade.from_members([tmp_path / "small", tmp_path / "large"], tmp_path / "c")
    out = predict(cascade, texts, policy="cascade", knob=1.0)  # theta 1: every row goes on to member 2
    alone = predict(large, texts)
    assert out.exit_member.tolist() == [2] * len(texts)
    assert out.labels == alone.labels
    torch.testing.assert_close(out.probabilities, alone.probabilities[:, [1, 2, 0]], atol=1e-6, rtol=0)


def knobs(cascade, precision):
    """Thresholds in the widest gaps of the cascade's own scores at ``precision``: the boundary's max probability
    and member 2's normalised entropies before its last exit, so no decision is within float noise of a knob."""
    logits = all_exit_logits(cascade, TEXTS, precision=precision).logits  # (N, 4, C)
    theta = widest_gap(logits[:, 0].softmax(-1).max(-1).values)
    inner = entropy(logits[:, 1:3].reshape(-1, 3)) / torch.log(torch.tensor(3.0))
    return theta, widest_gap(inner)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("policy", ["cascade", "cascade-fastbert"])
def test_a_row_is_answered_alike_alone_or_in_a_batch_of_64(cascade, precision, policy):
    theta, t = knobs(cascade, precision)
    knob = theta if policy == "cascade" else {"threshold": t, "cascade_1": theta}
    batch = predict(cascade, TEXTS, policy=policy, knob=knob, batch_size=64, precision=precision)
    assert set(batch.exit_member.tolist()) == {1, 2}  # both members answer some rows
    for i, text in enumerate(TEXTS):
        alone = predict(cascade, [text], policy=policy, knob=knob, batch_size=1, precision=precision)
        assert (alone.labels[0], int(alone.exit_layer[0]), int(alone.exit_member[0])) == (
            batch.labels[i], int(batch.exit_layer[i]), int(batch.exit_member[i]))
        torch.testing.assert_close(alone.probabilities[0], batch.probabilities[i], atol=1e-5, rtol=0)
