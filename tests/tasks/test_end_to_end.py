"""Every task end to end on tiny random models with the learned exit module: batch invariance of each of its policies
(a row alone and in shuffled batches of 7 and 64: the same exit and answer) at fp32 and int8, the replay backend
against the model, save/load, served = offline."""

import math
import random

import pytest
import torch

from geep.evaluation import build_table, calibrate, sweep
from geep.inference import Predictor, all_exit_logits, label_ids, predict, run_policy
from geep.modeling import MultiExitClassifier
from geep.policies import policies_for
from tests import helpers

N = 70
TOL = 1e-4  # a decision this close to its knob may flip by float noise between batchings: such rows are left out


def gap_knob(values: torch.Tensor) -> float:
    """The middle of the widest gap between the middle third of ``values``: a knob no value sits near."""
    v = sorted(values.flatten().tolist())
    lo, hi = len(v) // 3, 2 * len(v) // 3
    i = max(range(lo, hi), key=lambda j: v[j + 1] - v[j])
    return (v[i] + v[i + 1]) / 2


def knob_and_near(policy: str, model, outputs: torch.Tensor):
    """A knob in the middle of what the model's exits realise, and the rows (N,) whose decision at some exit before
    the last lies within TOL of it (or of a tie), which batch invariance cannot promise to the last bit."""
    task = model.config.task
    K = model.config.num_outputs
    x, u = outputs[:, :-1, :K], outputs[:, :-1, K:]  # task outputs and the module's signal before the last exit
    none = torch.zeros(x.shape[0], dtype=torch.bool)
    if policy == "lte":
        s = torch.sigmoid(u[..., 0])
        knob = gap_knob(s[:, 1])
        return knob, ((s - knob).abs() < TOL).any(1)
    if policy == "margin":
        m = (torch.sigmoid(x) - 0.5).abs().min(-1).values
        knob = gap_knob(m[:, 1])
        return knob, ((m - knob).abs() < TOL).any(1)
    if policy == "pabee":
        if task == "regression":
            moved = (x[:, 1:, 0] - x[:, :-1, 0]).abs()
            return 1, ((moved - 0.1).abs() < TOL).any(1)
        return 1, (x.abs() < TOL).any(-1).any(1)  # a sigmoid at 1/2
    if policy == "elbert":
        from geep.policies import entropy

        C = x.shape[-1]
        norm = entropy(x.reshape(-1, C)).view(x.shape[:2]) / math.log(C)
        knob = gap_knob(norm[:, 0])
        top = x.softmax(-1).max(-1).values
        return knob, ((norm - knob).abs() < TOL).any(1) | ((top - 0.5).abs() < TOL).any(1)
    if policy == "vote":
        E = outputs.shape[1]
        votes = outputs[..., :K].softmax(-1).cumsum(1)[:, :-1]
        knob = gap_knob(votes.max(-1).values[:, 1] / E)
        top2 = votes.topk(2, -1).values
        return knob, ((top2[..., 0] - knob * E).abs() < TOL).any(1) | ((top2[..., 0] - top2[..., 1]) < TOL).any(1)
    if policy == "oracle":
        return None, (x.abs() < TOL).any(-1).any(1) if task == "multi-label" else none
    return None, none


def labels_for(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if model.config.task == "regression":
        return torch.randn(N, generator=g) * 1.5 + 2.5
    if model.config.task == "multi-label":
        return (torch.rand((N, model.config.num_labels), generator=g) < 0.4).float()
    return torch.randint(0, model.config.num_labels, (N,), generator=g)


# Every policy of the new tasks, and lte for a classifier (its other policies: tests/inference/test_predictor.py and
# test_precision.py). geep and geep-verify: test_the_replay_backend_scores_a_knob_as_the_model_runs_it.
CASES = [(task, policy) for task in ("regression", "multi-label")
         for policy in policies_for(task, signal="lte") if policy not in ("geep", "geep-verify")]
CASES += [("classification", "lte")]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("task, policy", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_every_policy_of_every_task_is_batch_invariant(task_model, task, policy, precision):
    model = task_model(task)
    texts = helpers.random_texts(N, seed=0)
    encoded = model.tokenize(texts)
    outputs = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits  # (N, E, K + 1)
    knob, near = knob_and_near(policy, model, outputs)
    assert int(near.sum()) <= 3
    labels = labels_for(model)
    alone = run_policy(model, encoded, policy, knob, batch_size=1, labels=labels, precision=precision)
    if policy != "full":
        assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    runs = []
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(N))
        random.Random(seed).shuffle(order)
        runs.append(run_policy(model, encoded, policy, knob, batch_size=size, order=order, labels=labels,
                               precision=precision))
    ok = ~near
    for run in runs:
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        if task == "multi-label":
            assert torch.equal(run.predictions[ok], alone.predictions[ok])
        elif task == "classification":
            assert torch.equal(run.predictions[ok], alone.predictions[ok])
        torch.testing.assert_close(run.predictions[ok].float(), alone.predictions[ok].float(), atol=1e-4, rtol=0)
        torch.testing.assert_close(run.probabilities[ok], alone.probabilities[ok], atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", ["regression", "multi-label"])
def test_the_replay_backend_scores_a_knob_as_the_model_runs_it(task_model, task):
    """Calibration and the bench run the one scheduler on recorded outputs: each knob's metric and exits equal a run of
    the model at that knob, for every policy of the task (the geep ones through a table built with the task's rule)."""
    model = task_model(task)
    texts = helpers.random_texts(N, seed=0)
    build_table(model, helpers.random_texts(40, seed=5))
    encoded = model.tokenize(texts)
    y = labels_for(model)
    policies = [p for p in policies_for(task, signal="lte") if p not in ("full", "oracle")]
    result = sweep(model, encoded, y, policies=policies, batch_size=8, grid_points=5)
    assert result.full.metric == model.task.primary
    for name in policies:
        for point in result.points[name][1:-1]:
            run = run_policy(model, encoded, name, point.knob, batch_size=8)
            assert model.task.score(run.predictions, y) == pytest.approx(point.score, abs=1e-6), (name, point.knob)
            assert float(run.exit_layer.float().mean()) == pytest.approx(point.mean_exit_layer), (name, point.knob)


@pytest.mark.parametrize("task", ["regression", "multi-label", "classification"])
def test_save_load_round_trip(task_model, task, tmp_path):
    model = task_model(task)
    texts = helpers.random_texts(20, seed=2)
    before = predict(model, texts, policy="lte", knob=0.5)
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    assert (loaded.config.task, loaded.config.exit_module, loaded.config.target_mean) == \
        (task, "lte", 2.5 if task == "regression" else None)
    after = predict(loaded, texts, policy="lte", knob=0.5)
    assert after.labels == before.labels and torch.equal(after.exit_layer, before.exit_layer)
    torch.testing.assert_close(after.probabilities, before.probabilities)


def test_each_task_writes_its_own_rows(task_model):
    reg = predict(task_model("regression"), ["good film", "bad"], policy="full")
    assert [set(r) for r in reg.rows(task_model("regression").task)] == [{"prediction", "exit_layer"}] * 2
    assert all(isinstance(v, float) for v in reg.labels) and reg.probabilities.shape == (2, 0)
    ml_model = task_model("multi-label")
    ml = predict(ml_model, ["good film"], policy="full")
    row = ml.rows(ml_model.task)[0]
    assert set(row) == {"prediction", "probabilities", "exit_layer"} and set(row["probabilities"]) == \
        {"sport", "stock", "vote"}
    assert row["prediction"] == [name for name, p in row["probabilities"].items() if p >= 0.5]


@pytest.mark.parametrize("task", ["regression", "multi-label"])
def test_served_answers_equal_offline_prediction_alone(task_model, task):
    from geep.serving import ServeSettings, create_app
    from tests.serving.conftest import client, serving

    model = task_model(task)
    texts = helpers.random_texts(12, seed=4)
    outputs = all_exit_logits(model, texts, batch_size=16).logits
    knob, near = knob_and_near("lte", model, outputs)
    texts = [t for t, bad in zip(texts, near.tolist()) if not bad]
    app = create_app(model, ServeSettings(policy="lte", threshold=knob, max_wait_ms=1.0))
    with serving(app) as url, client(url) as http:
        r = http.post("/predict", json={"inputs": texts, "return_probabilities": True})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        info = http.get("/info").json()
    assert info["task"] == task
    for text, item in zip(texts, got):
        alone = predict(model, [text], policy="lte", knob=knob)
        assert item["exit_layer"] == int(alone.exit_layer[0])
        if task == "regression":
            assert set(item) == {"score", "exit_layer"} and item["score"] == pytest.approx(alone.labels[0], abs=1e-5)
        else:
            assert item["labels"] == alone.labels[0]
            assert item["probabilities"] == pytest.approx(dict(zip(model.label_names,
                                                                   alone.probabilities[0].tolist())), abs=1e-6)


def test_calibrate_budgets_the_task_s_metric(task_model):
    model = task_model("regression")
    texts = helpers.random_texts(N, seed=0)
    y = labels_for(model)
    chosen = calibrate(model, texts, y.tolist(), max_accuracy_drop=100)
    assert set(chosen) == {"pabee", "lte"} and all(p.metric == "pearson" for p in chosen.values())
    # any drop allowed: the fastest knob wins, every row at the first exit
    assert chosen["lte"].mean_exit_layer == 1.0 and model.config.stored_policy("fp32") in ("pabee", "lte")
    assert Predictor(model).policy.name == model.config.stored_policy("fp32")
    # Pearson is not a mean of right rows: no paired bound, the point estimate, and the record says so
    evidence = model.config.stored_evidence("fp32", "lte")
    assert evidence["confidence"] is None and evidence["drop_bound"] is None and evidence["metric"] == "pearson"
    assert all(p.lost == p.gained == p.rows == 0 for p in chosen.values())
    assert label_ids(model, ["1.5", 2]).tolist() == [1.5, 2.0]
