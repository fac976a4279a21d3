"""Class means (geep/modeling/class_means.py, geep/evaluation/fit_means.py) and the ``class-means`` policy: distances
and means checked against plain references computed here, the rule on a hand-worked case, save/load, the one-line
errors, and batch invariance at fp32 and int8."""

import math
import random

import pytest
import torch

from geep.errors import GeepError
from geep.evaluation.fit_means import fit_class_means
from geep.inference import all_exit_logits, run_policy
from geep.inference.spec import resolve_run
from geep.modeling import MultiExitClassifier
from geep.modeling.class_means import ClassMeans
from geep.policies import POLICIES, policies_for
from geep.tasks import OutputLayout
from tests import helpers

N = 60


def test_distances_by_hand():
    # one exit, two classes, H = 2; first-token pooling of h = (3, 4): unit length (0.6, 0.8)
    means = ClassMeans(torch.tensor([[[1.0, 0.0], [0.0, 0.5]]]), [1])
    hidden = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])  # (B=1, T=2, H=2)
    d = means.distances(1, hidden, torch.tensor([[1, 1]]), "first")
    assert d.tolist() == [pytest.approx([math.sqrt(0.4 ** 2 + 0.8 ** 2), math.sqrt(0.6 ** 2 + 0.3 ** 2)])]
    # mean pooling reads only the unpadded token: the same row with its second token masked
    d_mean = means.distances(1, hidden, torch.tensor([[1, 0]]), "mean")
    torch.testing.assert_close(d_mean, d)


def test_the_rule_by_hand():
    layout = OutputLayout("classification", 2, 2, 3, distances=2)
    policy = POLICIES["class-means"].bind(layout)
    # rows: task logits (2), then the distances (2); nearest 0.3, 0.9, 0.5
    logits = torch.tensor([[1.0, 0.0, 0.3, 1.2], [0.0, 1.0, 1.1, 0.9], [0.0, 0.0, 0.5, 0.5]])
    memory = policy.start(3, torch.device("cpu"))
    assert policy.decide(logits, 0.5, memory)[0].tolist() == [True, False, True]
    assert policy.decide(logits, 0.4, memory)[0].tolist() == [True, False, False]
    assert policy.decide(logits, 0.0, memory)[0].tolist() == [False] * 3  # never (explicit)
    assert policy.decide(logits, 2.0, memory)[0].tolist() == [True] * 3  # first (explicit)
    spec = policy.knob_spec(2, 3)
    assert (spec.low, spec.high, spec.never, spec.first, spec.default) == (0.0, 2.0, 0.0, 2.0, 0.5)


def reference_means(model, encoded, labels):
    """Every row alone, stepped through the model by hand: mean over each class of normalise(pool(h_k))."""
    sums = {k: torch.zeros((model.config.num_labels, 32)) for k in model.exit_layers}
    for i, y in enumerate(labels.tolist()):
        ids = torch.tensor([encoded["input_ids"][i]])
        mask = torch.ones_like(ids)
        state = model.embed(ids, mask)
        for k in model.exit_layers:
            state = model.run_layers(state, k)
            h = model.backbone.output(state.hidden)[0]  # (T, H)
            pooled = h.mean(0) if model.config.pooling == "mean" else h[0]
            sums[k][y] += pooled / pooled.norm()
    counts = torch.bincount(labels, minlength=model.config.num_labels).float()
    return torch.stack([sums[k] / counts[:, None] for k in model.exit_layers])


@pytest.fixture
def fitted(make_model):
    model = make_model(pooling="mean")
    texts = helpers.random_texts(N, seed=0)
    encoded = model.tokenize(texts)
    labels = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        means = fit_class_means(model, encoded, labels, batch_size=16)  # padded batches of 16
    return model, encoded, labels, means


def test_fitted_means_equal_a_row_by_row_reference(fitted):
    model, encoded, labels, means = fitted
    with torch.inference_mode():
        expected = reference_means(model, encoded, labels)
    torch.testing.assert_close(means.means, expected, atol=1e-5, rtol=1e-5)


def test_exits_carry_the_distances_and_the_model_round_trips(fitted, tmp_path):
    model, encoded, labels, means = fitted
    before = model.output_size
    model.set_class_means(means, rows=N, source="random")
    assert model.output_size == before + 3 and model.config.class_means["rows"] == N
    assert "class-means" in policies_for("classification", class_means=True)
    assert "class-means" not in policies_for("classification")
    out = all_exit_logits(model, encoded, batch_size=16).logits  # (N, E, 3 + 3)
    assert out.shape == (N, 4, 6) and ((out[..., 3:] >= 0) & (out[..., 3:] <= 2)).all()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "class_means.safetensors").is_file()
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.class_means.means, means.means)
    torch.testing.assert_close(all_exit_logits(loaded, encoded, batch_size=16).logits, out, atol=1e-5, rtol=1e-5)
    # a missing or mis-shaped file: one line
    (tmp_path / "m" / "class_means.safetensors").unlink()
    with pytest.raises(GeepError, match="class_means.safetensors is missing; fit them again"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")
    ClassMeans(torch.zeros((4, 2, 32)), model.exit_layers).save(tmp_path / "m" / "class_means.safetensors", ["a"])
    with pytest.raises(GeepError, match=r"of shape \(4, 2, 32\), but the model needs \(4, 3, 32\)"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_a_model_without_means_is_refused_in_one_line(make_model):
    with pytest.raises(GeepError, match="this model has none fitted; fit them with `geep fit-means") as e:
        resolve_run(make_model(), "class-means")
    assert "\n" not in str(e.value)


def test_fitting_needs_every_class_and_a_classifier(make_model):
    model = make_model()
    encoded = model.tokenize(["good film", "bad"])
    with pytest.raises(GeepError, match="no training row of class\\(es\\) 'c2'"):
        fit_class_means(model, encoded, torch.tensor([0, 1]))


def gap_knob(values: torch.Tensor) -> float:
    v = sorted(values.flatten().tolist())
    lo, hi = len(v) // 3, 2 * len(v) // 3
    i = max(range(lo, hi), key=lambda j: v[j + 1] - v[j])
    return (v[i] + v[i + 1]) / 2


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batch_invariant(fitted, precision):
    """A row's exit and label are the same alone and in shuffled batches of 7 and 64 (rows whose nearest distance at
    some exit lies within 1e-4 of the knob are left out: float noise may flip them)."""
    model, encoded, labels, means = fitted
    model.set_class_means(means, rows=N, source="random")
    out = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits
    nearest = out[:, :-1, 3:].min(-1).values  # (N, E-1)
    knob = gap_knob(nearest[:, 1])
    near = ((nearest - knob).abs() < 1e-4).any(1)
    assert int(near.sum()) <= 3
    alone = run_policy(model, encoded, "class-means", knob, batch_size=1, precision=precision)
    assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(N))
        random.Random(seed).shuffle(order)
        run = run_policy(model, encoded, "class-means", knob, batch_size=size, order=order, precision=precision)
        ok = ~near
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.predictions[ok], alone.predictions[ok])
