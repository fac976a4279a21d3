import pytest

from geep.calibrate import KnobPoint, choose_knob
from geep.errors import GeepError

# A hand-made table: knob -> (accuracy, FLOPs speed-up). Full accuracy is 0.90.
TABLE = [(0.0, 0.90, 0.97), (0.2, 0.90, 1.5), (0.4, 0.89, 2.2), (0.6, 0.86, 3.1), (0.8, 0.80, 4.0), (1.0, 0.70, 5.5)]
POINTS = [KnobPoint("fastbert", k, a, s, 1.0) for k, a, s in TABLE]


def test_target_speedup_picks_the_most_accurate_fast_enough_knob():
    assert choose_knob(POINTS, 0.90, target_speedup=2.0).knob == 0.4
    assert choose_knob(POINTS, 0.90, target_speedup=3.1).knob == 0.6  # the bound is inclusive
    assert choose_knob(POINTS, 0.90, target_speedup=1.0).knob == 0.2  # tie on accuracy: the faster


def test_max_accuracy_drop_picks_the_fastest_accurate_enough_knob():
    assert choose_knob(POINTS, 0.90, max_accuracy_drop=1.0).knob == 0.4
    assert choose_knob(POINTS, 0.90, max_accuracy_drop=0.0).knob == 0.2
    assert choose_knob(POINTS, 0.90, max_accuracy_drop=10.0).knob == 0.8


def test_unreachable_targets_name_the_best_reachable_value():
    with pytest.raises(GeepError, match="best reachable is 5.50x"):
        choose_knob(POINTS, 0.90, target_speedup=6.0)
    with pytest.raises(GeepError, match="smallest reachable drop is 1.00 points"):
        choose_knob(POINTS, 0.91, max_accuracy_drop=0.5)


def test_exactly_one_target():
    with pytest.raises(GeepError, match="exactly one"):
        choose_knob(POINTS, 0.9)
    with pytest.raises(GeepError, match="exactly one"):
        choose_knob(POINTS, 0.9, target_speedup=2.0, max_accuracy_drop=1.0)
