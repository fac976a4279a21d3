import pytest

from geep.evaluation import KnobPoint, choose_knob
from geep.errors import GeepError

# A hand-made table: knob -> (accuracy, FLOPs speed-up). Full accuracy is 0.90. These points carry no paired counts:
# they test the point-estimate rule (confidence=None, the build threshold S's); the bound is tested in test_bounds.py.
TABLE = [(0.0, 0.90, 0.97), (0.2, 0.90, 1.5), (0.4, 0.89, 2.2), (0.6, 0.86, 3.1), (0.8, 0.80, 4.0), (1.0, 0.70, 5.5)]
POINTS = [KnobPoint("fastbert", k, a, s, 1.0) for k, a, s in TABLE]


def test_target_speedup_picks_the_most_accurate_fast_enough_knob():
    assert choose_knob(POINTS, 0.90, target_speedup=2.0, confidence=None).knob == 0.4
    assert choose_knob(POINTS, 0.90, target_speedup=3.1, confidence=None).knob == 0.6  # the bound is inclusive
    assert choose_knob(POINTS, 0.90, target_speedup=1.0, confidence=None).knob == 0.2  # tie on accuracy: the faster


def test_max_accuracy_drop_picks_the_fastest_accurate_enough_knob():
    assert choose_knob(POINTS, 0.90, max_accuracy_drop=1.0, confidence=None).knob == 0.4
    assert choose_knob(POINTS, 0.90, max_accuracy_drop=0.0, confidence=None).knob == 0.2
    assert choose_knob(POINTS, 0.90, max_accuracy_drop=10.0, confidence=None).knob == 0.8


def test_unreachable_targets_name_the_best_reachable_value():
    with pytest.raises(GeepError, match="best reachable is 5.50x"):
        choose_knob(POINTS, 0.90, target_speedup=6.0, confidence=None)
    with pytest.raises(GeepError, match="smallest reachable drop is 1.00 points"):
        choose_knob(POINTS, 0.91, max_accuracy_drop=0.5, confidence=None)


def test_exactly_one_target():
    with pytest.raises(GeepError, match="exactly one"):
        choose_knob(POINTS, 0.9)
    with pytest.raises(GeepError, match="exactly one"):
        choose_knob(POINTS, 0.9, target_speedup=2.0, max_accuracy_drop=1.0)


def test_sweep_equals_running_each_knob(make_model):
    """Accuracy and FLOPs of every knob, replayed from one all-exits pass, equal an online run of that knob."""
    import torch

    from geep.evaluation import build_table, sweep
    from geep.inference import run_policy
    from tests.helpers import random_texts

    model = make_model(exit_layers=[1, 2, 3, 4], head="attention", pooling="mean")
    with torch.no_grad():
        for head in model.heads.values():  # spread the tiny model's logits so exits differ
            head.classifier.weight.mul_(30.0)
    build_table(model, random_texts(30, seed=8), build_threshold=0.5)
    texts = random_texts(37, seed=9)
    encoded = model.tokenize(texts)
    labels = torch.randint(0, 3, (37,), generator=torch.Generator().manual_seed(0))
    policies = ["full", "fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "oracle"]
    result = sweep(model, encoded, labels, policies=policies, batch_size=5, grid_points=5)
    full = run_policy(model, encoded, "full", batch_size=5)
    assert result.full_flops == full.flops.total
    full_right = full.probabilities.argmax(-1) == labels
    distinct, disagreed = set(), 0
    for name in policies:
        for point in result.points[name]:
            run = run_policy(model, encoded, name, point.knob, batch_size=5, labels=labels)
            right = run.probabilities.argmax(-1) == labels
            accuracy = float(right.double().mean())
            assert abs(point.accuracy - accuracy) < 1e-9, (name, point.knob)
            # the paired counts the drop bound reads: rows full gets right and the knob wrong, and the reverse
            assert (point.lost, point.gained, point.rows) == (int((full_right & ~right).sum()),
                                                              int((right & ~full_right).sum()), 37)
            disagreed += point.lost + point.gained > 0
            assert point.flops_speedup == result.full_flops / run.flops.total, (name, point.knob)
            assert point.mean_exit_layer == float(run.exit_layer.float().mean())
            distinct.add(round(point.flops_speedup, 6))
    assert len(distinct) > 5  # the knobs really changed what ran
    assert disagreed >= 1  # some knob changed which rows were right (the counts above are not all zero)
    assert result.points["full"][0].flops_speedup == 1.0
