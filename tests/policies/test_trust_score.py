"""Trust scores (geep/modeling/trust_score.py, geep/evaluation/fit_means.py) and the ``trust-score`` policy: the
rule, the distances and the alpha-filter on hand-worked cases, the fitted sets against representations computed row
by row here, save/load, FLOPs, the one-line errors, and batch invariance at fp32 and int8."""

import math
import random

import pytest
import torch

from geep.errors import GeepError
from geep.evaluation.fit_means import fit_trust_sets
from geep.inference import all_exit_logits, run_policy
from geep.inference.spec import resolve_run
from geep.modeling import MultiExitClassifier
from geep.modeling.trust_score import TrustSets, filter_alpha
from geep.policies import POLICIES, policies_for
from geep.runtime.flops import FlopsSpec
from geep.tasks import OutputLayout
from tests import helpers

N = 60


def test_the_rule_by_hand():
    """Row 1 predicts class 0 (logit 2); distances (0.2, 0.5, 0.4): the nearest other set is class 2 at 0.4, trust
    0.4 / 0.2 = 2. Row 2 predicts class 1; distances (0.3, 0.6, 0.9): 0.3 / 0.6 = 0.5. Row 3 predicts class 2 at
    distance 0 (a training point): 0.1 / 1e-12, huge, never infinite."""
    layout = OutputLayout("classification", 3, 3, 3, trust=3)
    policy = POLICIES["trust-score"].bind(layout)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.2, 0.5, 0.4], [0.0, 1.0, 0.0, 0.3, 0.6, 0.9],
                           [0.0, 0.0, 1.0, 0.1, 0.2, 0.0]])
    memory = policy.start(3, torch.device("cpu"))
    trust = policy.confidence_at(1, logits)
    assert trust[:2].tolist() == pytest.approx([2.0, 0.5]) and trust[2] == pytest.approx(0.1 / 1e-12)
    assert policy.decide(logits, 1.5, memory)[0].tolist() == [True, False, True]
    assert policy.decide(logits, 0.4, memory)[0].tolist() == [True, True, True]
    assert policy.decide(logits, 4.0, memory)[0].tolist() == [False] * 3  # never (explicit)
    assert policy.decide(logits, 0.0, memory)[0].tolist() == [True] * 3  # first (explicit)
    spec = policy.knob_spec(3, 3)
    assert (spec.low, spec.high, spec.never, spec.first, spec.default) == (0.0, 4.0, 4.0, 0.0, 1.5)


def test_distances_by_hand_skip_the_filtered_points():
    # one exit, two classes, M = 2, H = 2; class 0's second slot is filtered out (it would be the nearest)
    points = torch.tensor([[[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [0.0, 0.0]]]])  # (1, 2, 2, 2)
    valid = torch.tensor([[[True, False], [True, False]]])
    sets = TrustSets(points, valid, [1])
    hidden = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])  # first-token pooling: unit length (0.6, 0.8)
    d = sets.distances(1, hidden, torch.tensor([[1, 1]]), "first")
    assert d.tolist() == [pytest.approx([math.sqrt(0.4 ** 2 + 0.8 ** 2), math.sqrt(0.6 ** 2 + 0.2 ** 2)])]
    with pytest.raises(GeepError, match="at least one point per class"):
        TrustSets(points, torch.zeros((1, 2, 2), dtype=torch.bool), [1])


def test_the_alpha_filter_drops_the_points_with_the_largest_knn_radius():
    """Points 0, 0.1, 0.2, 0.35 and 5 on a line, k = 1: radii 0.1, 0.1, 0.1, 0.15, 4.65. alpha 0.2 drops
    floor(1) = 1 point: 5; alpha 0.4 drops 2: 5 and 0.35; alpha 0 drops none."""
    points = torch.tensor([[0.0], [0.1], [0.2], [0.35], [5.0]])
    assert filter_alpha(points, 0.2, neighbours=1).tolist() == [True, True, True, True, False]
    assert filter_alpha(points, 0.4, neighbours=1).tolist() == [True, True, True, False, False]
    assert filter_alpha(points, 0.0).all()
    assert filter_alpha(points[:1], 0.9).tolist() == [True]  # at least one point is kept


def reference_representations(model, encoded, rows):
    """Each row alone, stepped through the model by hand: normalise(pool(h_k)) at every exit: {row: (E, H)}."""
    out = {}
    for i in rows:
        ids = torch.tensor([encoded["input_ids"][i]])
        state = model.embed(ids, torch.ones_like(ids))
        reps = []
        for k in model.exit_layers:
            state = model.run_layers(state, k)
            h = model.backbone.output(state.hidden)[0]  # (T, H)
            pooled = h.mean(0) if model.config.pooling == "mean" else h[0]
            reps.append(pooled / pooled.norm())
        out[i] = torch.stack(reps)
    return out


@pytest.fixture
def fitted(make_model):
    model = make_model(pooling="mean")
    texts = helpers.random_texts(N, seed=0)
    encoded = model.tokenize(texts)
    labels = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        sets, settings = fit_trust_sets(model, encoded, labels, per_class=8, batch_size=16)
    return model, encoded, labels, sets, settings


def test_each_set_holds_the_representations_of_at_most_m_rows_of_its_class(fitted):
    model, encoded, labels, sets, settings = fitted
    assert settings == {"rows": 24, "per_class": 8, "alpha": 0.0, "seed": 0}
    assert sets.points.shape == (4, 3, 8, 32) and bool(sets.valid.all())
    with torch.inference_mode():
        reference = reference_representations(model, encoded, range(N))
    for c in range(3):
        of_class = [i for i in range(N) if int(labels[i]) == c]
        matched = set()
        for j in range(8):
            point = sets.points[:, c, j]  # (E, H)
            row = min(of_class, key=lambda i: float((reference[i] - point).norm()))
            assert torch.allclose(reference[row], point, atol=1e-5), (c, j)
            matched.add(row)
        assert len(matched) == 8  # eight distinct rows of the class


def test_exits_carry_the_distances_and_the_model_round_trips(fitted, tmp_path):
    model, encoded, labels, sets, settings = fitted
    model.set_trust_sets(sets, {**settings, "source": "random"})
    assert model.output_size == 6 and model.config.trust_score["per_class"] == 8
    assert "trust-score" in policies_for("classification", trust_score=True)
    assert "trust-score" not in policies_for("classification")
    out = all_exit_logits(model, encoded, batch_size=16).logits  # (N, E, 3 + 3)
    with torch.inference_mode():
        reference = reference_representations(model, encoded, range(4))
    for i in range(4):  # the distances, from the rows' representations and the points by hand
        for e in range(4):
            expected = [min(float((reference[i][e] - sets.points[e, c, j]).norm()) for j in range(8)) for c in range(3)]
            assert out[i, e, 3:].tolist() == pytest.approx(expected, abs=1e-5)
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.trust_sets.points, sets.points)
    assert torch.equal(loaded.trust_sets.valid, sets.valid)
    torch.testing.assert_close(all_exit_logits(loaded, encoded, batch_size=16).logits, out, atol=1e-5, rtol=1e-5)
    (tmp_path / "m" / "trust_score.safetensors").unlink()
    with pytest.raises(GeepError, match="trust_score.safetensors is missing; fit them again"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_flops_count_every_point_of_every_set(fitted):
    model, _, _, sets, settings = fitted
    before = FlopsSpec.from_model(model)
    model.set_trust_sets(sets, {**settings, "source": "random"})
    after = FlopsSpec.from_model(model)
    # the C distance columns count as signals (2H each) and each of the C * M points 3H
    assert after.head(1, 10) - before.head(1, 10) == 2 * 32 * 3 + 3 * 32 * 3 * 8


def test_a_model_without_sets_is_refused_in_one_line(make_model):
    with pytest.raises(GeepError, match="this model has none fitted; fit them with `geep fit-means .* --statistics "
                                        "trust-score`") as e:
        resolve_run(make_model(), "trust-score")
    assert "\n" not in str(e.value)


def test_fitting_needs_every_class_and_bounded_settings(make_model):
    model = make_model()
    encoded = model.tokenize(["good film", "bad"])
    with pytest.raises(GeepError, match="no training row of class\\(es\\) 'c2'"):
        fit_trust_sets(model, encoded, torch.tensor([0, 1]))
    with pytest.raises(GeepError, match="--trust-alpha must be in"):
        fit_trust_sets(model, encoded, torch.tensor([0, 1]), alpha=1.0)
    with pytest.raises(GeepError, match="--trust-per-class must be a positive integer"):
        fit_trust_sets(model, encoded, torch.tensor([0, 1]), per_class=0)


def trust_of(out: torch.Tensor) -> torch.Tensor:
    """The paper's ratio computed here from all-exits outputs (N, E, 3 + 3): (N, E)."""
    predicted = out[..., :3].argmax(-1)  # (N, E)
    d = out[..., 3:]
    rows = []
    for i in range(out.shape[0]):
        row = []
        for e in range(out.shape[1]):
            p = int(predicted[i, e])
            other = min(float(d[i, e, c]) for c in range(3) if c != p)
            row.append(other / (float(d[i, e, p]) + 1e-12))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def gap_knob(values: torch.Tensor) -> float:
    v = sorted(values.flatten().tolist())
    lo, hi = len(v) // 3, 2 * len(v) // 3
    i = max(range(lo, hi), key=lambda j: v[j + 1] - v[j])
    return (v[i] + v[i + 1]) / 2


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batch_invariant(fitted, precision):
    """A row's exit and label are the same alone and in shuffled batches of 7 and 64, and the exit is the first
    whose trust, computed here, reaches the knob (rows whose trust at some exit lies within 1e-4 of it are left out:
    float noise may flip them)."""
    model, encoded, labels, sets, settings = fitted
    model.set_trust_sets(sets, {**settings, "source": "random"})
    out = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits
    trust = trust_of(out)[:, :-1]  # (N, E-1)
    knob = gap_knob(trust[:, 0])
    near = ((trust - knob).abs() < 1e-4).any(1)
    assert int(near.sum()) <= 3
    alone = run_policy(model, encoded, "trust-score", knob, batch_size=1, precision=precision)
    assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    expected = torch.tensor([next((k for j, k in enumerate([1, 2, 3]) if trust[i, j] >= knob), 4) for i in range(N)])
    ok = ~near
    assert torch.equal(alone.exit_layer[ok], expected[ok])
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(N))
        random.Random(seed).shuffle(order)
        run = run_policy(model, encoded, "trust-score", knob, batch_size=size, order=order, precision=precision)
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.predictions[ok], alone.predictions[ok])


def test_class_means_and_trust_sets_together_each_read_their_own_columns(fitted):
    from geep.evaluation.fit_means import fit_class_means

    model, encoded, labels, sets, settings = fitted
    with torch.inference_mode():
        means = fit_class_means(model, encoded, labels, batch_size=16)
    model.set_class_means(means, rows=N, source="random")
    model.set_trust_sets(sets, {**settings, "source": "random"})
    out = all_exit_logits(model, encoded, batch_size=16).logits  # (N, E, 3 + 3 + 3)
    assert out.shape == (N, 4, 9)
    spec = resolve_run(model, "trust-score")
    torch.testing.assert_close(spec.policy.confidence_at(1, out[:, 0]), trust_of(out[..., [0, 1, 2, 6, 7, 8]])[:, 0]
                               .float(), rtol=1e-5, atol=1e-5)
    cm = resolve_run(model, "class-means").policy
    torch.testing.assert_close(cm.layout.class_distances(out[:, 0]), out[:, 0, 3:6])
