import math
import random

import pytest
import torch

from geep.errors import GeepError
from geep.evaluation import build_table, replay
from geep.inference import all_exit_logits, predict, run_policy
from geep.policies import POLICIES, Memory, Policy, entropy, policies_for
from geep.tokens import token_lengths
from tests import helpers
from tests.helpers import make_decisive

N_ROWS = 70




def random_texts(n: int = N_ROWS, seed: int = 0) -> list[str]:
    return helpers.random_texts(n, seed)


@pytest.fixture
def setup(make_model):
    texts = random_texts()
    model = make_decisive(make_model(), texts)
    encoded = model.tokenize(texts)
    recorded = all_exit_logits(model, encoded, batch_size=16)
    labels = torch.randint(0, 3, (N_ROWS,), generator=torch.Generator().manual_seed(1))
    # An exit table whose build threshold S sits mid-range, so the geep policies' rows exit at different layers.
    S = float((entropy(recorded.logits[:, 1]) / math.log(3)).median())
    build_table(model, random_texts(N_ROWS, seed=9), build_threshold=S)
    return model, texts, encoded, recorded, labels


def knobs_for(model, logits):
    """A knob per policy in the middle of what this model's exits realise, so rows exit at different layers."""
    first = entropy(logits[:, 0])  # (N,) entropy at the first exit
    C = model.config.num_labels
    top = logits[:, 0].softmax(-1).max(-1).values
    E = logits.shape[1]
    votes = logits.softmax(-1).cumsum(1).max(-1).values / E  # (N, E): the leading class's share of every vote
    return {"full": None, "fastbert": float(first.median()) / math.log(C), "deebert": float(first.median()),
            "confidence": float(top.median()), "pabee": 1, "oracle": None, "geep": 0.5, "geep-verify": 0.3,
            "elbert": 0.5 * float(first.median()) / math.log(C), "vote": float(votes[:, E // 2].median())}


# The policies a classifier without an exit module runs (lte needs one: tests/tasks).
CLASSIFICATION = policies_for("classification")

model_threshold = [0.0]  # geep-verify's S, set by the tests that use it


def near_threshold(policy: str, knob, logits, tol: float = 1e-5):
    """Rows (N,) bool whose decision could flip by float noise at some exit before the last."""
    x = logits[:, :-1]  # (N, E-1, C)
    if policy in ("fastbert", "deebert", "confidence"):
        C = x.shape[-1]
        if policy == "confidence":
            score = x.softmax(-1).max(-1).values
        else:
            score = entropy(x.reshape(-1, C)).view(x.shape[:2]) / (math.log(C) if policy == "fastbert" else 1.0)
        return ((score - knob).abs() < tol).any(1)
    if policy == "geep-verify":  # the fastbert rule at S, from the predicted exit on
        S = model_threshold[0]
        return ((entropy(x.reshape(-1, x.shape[-1])).view(x.shape[:2]) / math.log(x.shape[-1]) - S).abs()
                < tol).any(1)
    if policy in ("pabee", "oracle"):
        top2 = x.topk(2, dim=-1).values
        return ((top2[..., 0] - top2[..., 1]) < tol).any(1)
    if policy == "elbert":  # the entropy rule at the knob, or a class's probability at the window's 1/2
        C = x.shape[-1]
        norm = entropy(x.reshape(-1, C)).view(x.shape[:2]) / math.log(C)
        top = x.softmax(-1).max(-1).values
        top2 = x.topk(2, dim=-1).values
        return ((norm - knob).abs() < tol).any(1) | ((top - 0.5).abs() < tol).any(1) | \
            ((top2[..., 0] - top2[..., 1]) < tol).any(1)
    if policy == "vote":  # the leading vote at t |E|, or two classes tied in the vote
        E = logits.shape[1]
        votes = logits.softmax(-1).cumsum(1)[:, :-1]  # (N, E-1, C)
        top2 = votes.topk(2, dim=-1).values
        return ((top2[..., 0] - knob * E).abs() < tol).any(1) | ((top2[..., 0] - top2[..., 1]) < tol).any(1)
    return torch.zeros(x.shape[0], dtype=torch.bool)


@pytest.mark.parametrize("policy", CLASSIFICATION)
def test_batch_invariance(setup, policy):
    """A row's label and exit layer are the same alone, in shuffled batches of 7 and 64, and through predict."""
    model, texts, encoded, recorded, labels = setup
    knob = knobs_for(model, recorded.logits)[policy]
    model_threshold[0] = model.config.exit_table["build_threshold"]
    kw = dict(labels=labels)
    alone = run_policy(model, encoded, policy, knob, batch_size=1, **kw)
    if policy != "full":
        assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    near = near_threshold(policy, knob, recorded.logits)
    assert int(near.sum()) <= 3
    runs = []
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(N_ROWS))
        random.Random(seed).shuffle(order)
        runs.append(run_policy(model, encoded, policy, knob, batch_size=size, order=order, **kw))
    out = predict(model, texts, policy=policy, knob=knob, batch_size=32, labels=labels)
    runs.append(out)
    ok = ~near
    for run in runs:
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.probabilities[ok].argmax(-1), alone.probabilities[ok].argmax(-1))
        torch.testing.assert_close(run.probabilities[ok], alone.probabilities[ok], atol=1e-5, rtol=0)
    assert out.labels == [model.label_names[i] for i in out.label_ids.tolist()]


@pytest.mark.parametrize("policy", CLASSIFICATION)
def test_torch_and_replay_backends_agree_row_by_row(setup, policy):
    """The one scheduler run on the model (torch backend) and on the recorded all-exit logits (replay backend):
    each row's exit and probabilities, and the FLOPs call by call, are the same."""
    model, _, encoded, recorded, labels = setup
    knob = knobs_for(model, recorded.logits)[policy]
    online = run_policy(model, encoded, policy, knob, batch_size=7, labels=labels)
    probabilities, exit_layer, flops = replay(model, recorded.logits, encoded, policy, knob, batch_size=7,
                                               labels=labels)
    model_threshold[0] = model.config.exit_table["build_threshold"]
    ok = ~near_threshold(policy, knob, recorded.logits)
    if policy != "full":
        assert len(set(online.exit_layer.tolist())) >= 2
    assert torch.equal(exit_layer[ok], online.exit_layer[ok])
    torch.testing.assert_close(online.probabilities[ok], probabilities[ok], atol=1e-5, rtol=0)
    if bool(ok.all()):  # the same exits, so the same steps
        assert flops.layer_calls == online.flops.layer_calls and flops.head_calls == online.flops.head_calls
        assert flops.total == online.flops.total > 0


class Recorder(Policy):
    """A test policy: row r leaves at exit index plan[r]; it records every exit's logits under each row's id,
    which it keeps in its per-row memory (so a memory indexed apart from the rows would be caught too)."""

    name = "recorder"

    def __init__(self, plan: torch.Tensor):
        self.plan, self.seen = plan, {}

    def start(self, batch_size, device, labels=None) -> Memory:
        return {"row": labels, "step": torch.zeros(batch_size, dtype=torch.long)}

    def decide(self, logits, knob, memory):
        for r, row in enumerate(memory["row"].tolist()):
            self.seen.setdefault(row, []).append(logits[r].clone())
        leave = memory["step"] >= self.plan[memory["row"]]
        return leave, {"row": memory["row"], "step": memory["step"] + 1}


def test_survivors_logits_equal_running_alone(make_model):
    """Rows leave a padded batch mid-way (the longest first); every survivor's logits at every exit equal its
    logits when run alone. An unsliced attention mask or an untrimmed/shifted batch would break this."""
    model = make_decisive(make_model(head="attention", pooling="mean"), random_texts(20, seed=3))
    texts = ["good movie " * 12, "bad", "the plot was fine", "a very very bad film and not a good plot",
             "great", "awful awful awful", "the team won the match and the vote"]
    encoded = model.tokenize(texts)
    n = len(texts)
    lengths = token_lengths(encoded)
    plan = torch.tensor([0, 3, 1, 3, 0, 2, 3])  # exit index per row; 3 = the last exit (L = 4)
    assert lengths[0] == max(lengths)  # the longest row leaves first, so the batch's padding shrinks
    policy = Recorder(plan)
    run = run_policy(model, encoded, policy, None, batch_size=n, labels=torch.arange(n))
    assert run.exit_layer.tolist() == [model.exit_layers[i] for i in plan.tolist()]
    alone = torch.stack([all_exit_logits(model, {"input_ids": [encoded["input_ids"][i]],
                                                 "token_type_ids": [encoded["token_type_ids"][i]]}).logits[0]
                         for i in range(n)])  # (N, E, C)
    for row in range(n):
        seen = torch.stack(policy.seen[row])  # the exits decided on (all but L)
        assert len(seen) == min(int(plan[row]) + 1, len(model.exit_layers) - 1)
        torch.testing.assert_close(seen, alone[row, :len(seen)], atol=1e-5, rtol=1e-5)
        last = alone[row, int(plan[row])].softmax(-1)
        torch.testing.assert_close(run.probabilities[row], last, atol=1e-5, rtol=1e-5)


def test_all_exit_logits_match_forward_in_input_order(make_model):
    model = make_model(head="linear", pooling="first", exit_layers=[2, 3])
    texts = random_texts(9, seed=5)
    recorded = all_exit_logits(model, texts, batch_size=4)
    assert recorded.logits.shape == (9, 3, 3)
    assert recorded.lengths.tolist() == [len(x) for x in model.tokenize(texts)["input_ids"]]
    for i, text in enumerate(texts):
        enc = model.tokenize([text])
        batch = {k: torch.tensor(v) for k, v in enc.items()}
        with torch.no_grad():
            expected = model(**batch).exit_logits[:, 0]  # (E, C)
        torch.testing.assert_close(recorded.logits[i], expected, atol=1e-5, rtol=1e-5)


def test_predict_with_every_policy(make_model):
    model = make_model(exit_layers=[1, 3])
    texts = random_texts(6, seed=2)
    build_table(model, random_texts(20, seed=5))
    for name in CLASSIFICATION:
        labels = ["c0", "c1", "c2", "c0", "c1", "c2"] if name == "oracle" else None
        out = predict(model, texts, policy=name, batch_size=4, labels=labels)
        assert len(out) == 6 and out.probabilities.shape == (6, 3)
        assert set(out.exit_layer.tolist()) <= {1, 3, 4}
    assert predict(model, "good", policy="fastbert", knob=1.0).exit_layer.tolist() == [1]
    # geep's knob ends: tau = 0 predicts the first exit for every row, tau = 1 the last
    assert predict(model, texts, policy="geep", knob=0.0).exit_layer.tolist() == [1] * 6
    assert predict(model, texts, policy="geep", knob=1.0).exit_layer.tolist() == [4] * 6
    assert predict(model, texts, policy="geep-verify", knob=1.0).exit_layer.tolist() == [4] * 6
    model.exit_table = None
    with pytest.raises(GeepError, match="no exit table"):
        predict(model, texts, policy="geep")


def test_default_knob_comes_from_the_config(make_model):
    model = make_model()
    texts = random_texts(8, seed=4)
    model.config.default_knobs = {"fp32": {"fastbert": {"threshold": 1.0}, "confidence": {"threshold": 1.0}},
                                  "int8": {"fastbert": {"threshold": 0.0}}}
    assert predict(model, texts, policy="fastbert").exit_layer.tolist() == [1] * 8  # 1.0: the first exit
    assert predict(model, texts, policy="confidence").exit_layer.tolist() == [4] * 8  # 1.0: never early
    from geep.inference import resolve_run

    assert resolve_run(model, "fastbert", precision="int8").knob == 0.0  # each precision has its own knobs
    assert resolve_run(model, "pabee", precision="int8").knob == 2  # none stored: the policy's own default
    model.config.default_knobs = {"fp32": {"fastbert": {"threshold": 7.0}}}
    with pytest.raises(GeepError, match=r"fastbert threshold must be a number in \[0, 1\]"):
        predict(model, texts, policy="fastbert")


def test_predict_errors(make_model):
    model = make_model()
    with pytest.raises(GeepError, match="unknown policy 'nope'"):
        predict(model, ["a"], policy="nope")
    with pytest.raises(GeepError, match="oracle policy needs the true labels"):
        predict(model, ["a"], policy="oracle")
    with pytest.raises(GeepError, match="not one of the model's labels"):
        predict(model, ["a"], policy="oracle", labels=["zz"])
    with pytest.raises(GeepError, match="takes no threshold"):
        predict(model, ["a"], policy="full", knob=0.5)
    if not torch.cuda.is_available():
        with pytest.raises(GeepError, match="CUDA is not available"):
            predict(model, ["a"], device="cuda")
    assert len(predict(model, [])) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy", CLASSIFICATION)
def test_cuda_matches_cpu(setup, policy):
    model, texts, _, recorded, labels = setup
    knob = knobs_for(model, recorded.logits)[policy]
    cpu = predict(model, texts, policy=policy, knob=knob, batch_size=7, labels=labels)
    gpu = predict(model, texts, policy=policy, knob=knob, batch_size=7, labels=labels, device="cuda")
    ok = ~near_threshold(policy, knob, recorded.logits, tol=1e-3)
    assert model.device.type == "cuda" and int((~ok).sum()) <= 5
    assert torch.equal(gpu.exit_layer[ok], cpu.exit_layer[ok]) and torch.equal(gpu.label_ids[ok], cpu.label_ids[ok])
    torch.testing.assert_close(gpu.probabilities[ok], cpu.probabilities[ok], atol=1e-3, rtol=0)


def test_predict_accepts_a_string_and_a_list(make_model):
    model = make_model()
    one = predict(model, "good movie")
    many = predict(model, ["good movie", "", "the plot was not very good and the film was bad"], batch_size=2)
    assert len(one) == 1 and len(many) == 3
    assert one.labels[0] in model.label_names
    assert many.probabilities.shape == (3, 3)
    torch.testing.assert_close(many.probabilities.sum(-1), torch.ones(3))
    torch.testing.assert_close(one.probabilities[0], many.probabilities[0], atol=1e-5, rtol=1e-5)
    assert many.exit_layer.tolist() == [4, 4, 4]


def test_a_predictor_resolves_its_run_once_at_construction(make_model, monkeypatch):
    """Predictor checks at construction and never again: with every resolver broken afterwards, calls still run,
    and give what a fresh ``geep.predict`` at the same knob gives."""
    from geep.inference import Predictor, RunSpec
    import geep.inference.predictor as predictor_module
    import geep.inference.spec as spec_module

    model = make_model()
    texts = random_texts(12, seed=3)
    predictor = Predictor(model, "fastbert", 0.4, batch_size=5)
    assert isinstance(predictor.spec, RunSpec)
    assert (predictor.spec.policy.name, predictor.spec.knob, predictor.spec.batch_size) == ("fastbert", 0.4, 5)
    expected = predict(model, texts, policy="fastbert", knob=0.4, batch_size=5)

    def broken(*args, **kwargs):
        raise AssertionError("resolved again")

    monkeypatch.setattr(spec_module, "resolve_run", broken)
    monkeypatch.setattr(predictor_module, "resolve_run", broken)
    monkeypatch.setattr(spec_module, "check_precision", broken)
    monkeypatch.setattr(POLICIES["fastbert"], "resolve_knob", broken)
    out = predictor(texts)
    assert out.labels == expected.labels
    assert out.exit_layer.tolist() == expected.exit_layer.tolist()
    assert torch.equal(out.probabilities, expected.probabilities)
    with pytest.raises(AssertionError, match="resolved again"):  # the one-shot API does resolve, once per call
        predict(model, texts, policy="fastbert", knob=0.4)


def test_a_spec_is_frozen_and_says_what_runs(make_model):
    from dataclasses import FrozenInstanceError

    from geep.inference import resolve_run

    model = make_model()
    spec = resolve_run(model, "pabee", 1, batch_size=8)
    assert spec.describe() == "pabee (patience=1) at fp32"
    assert spec.schedule == "shrink" and spec.device == model.device
    with pytest.raises(FrozenInstanceError):
        spec.knob = 2
    with pytest.raises(GeepError, match="the 'shrink' schedule cannot"):
        resolve_run(model, "geep", 0.5, schedule="shrink")
