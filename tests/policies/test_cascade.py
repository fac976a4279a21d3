"""The cascade rule over member policies (geep.policies.cascade): the boundary decides by the calibrated max
probability, the member policy elsewhere, memory restarts past a boundary, the knob's names and ranges."""

from __future__ import annotations

import math

import pytest
import torch

from geep.errors import GeepError
from geep.policies import get_policy
from geep.policies.cascade import CascadeKnob, CascadePolicy


def policy(inner="full", temperatures=(1.0,)):
    return CascadePolicy(get_policy(inner), boundaries=[2], temperatures=temperatures, member_exits=3)


def test_the_boundary_leaves_rows_whose_tempered_max_probability_reaches_theta():
    """logits (ln 3, 0, 0) -> max p = 3/5 at T = 1; at T = 2, (ln 3)/2 -> sqrt(3)/(sqrt(3) + 2) = 0.464."""
    logits = torch.tensor([[math.log(3), 0.0, 0.0], [0.0, 0.0, 0.0]])
    leave, _ = policy().decide_at(2, logits, CascadeKnob(None, (0.6 - 1e-6,)), {})
    assert leave.tolist() == [True, False]  # 3/5 and 1/3
    leave, _ = policy(temperatures=(2.0,)).decide_at(2, logits, CascadeKnob(None, (0.46,)), {})
    assert leave.tolist() == [True, False]
    leave, _ = policy(temperatures=(2.0,)).decide_at(2, logits, CascadeKnob(None, (0.47,)), {})
    assert leave.tolist() == [False, False]
    one_hot = torch.tensor([[100.0, 0.0, 0.0]])  # max p rounds to exactly 1.0: theta 1 still keeps it
    assert policy().decide_at(2, one_hot, CascadeKnob(None, (1.0,)), {})[0].tolist() == [False]
    assert policy().decide_at(2, logits, CascadeKnob(None, (0.0,)), {})[0].tolist() == [True, True]


def test_inside_a_member_the_member_policy_decides_and_memory_restarts_past_a_boundary():
    p = policy("pabee")
    memory = p.start(2, torch.device("cpu"))
    a = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    leave, memory = p.decide_at(1, a, CascadeKnob(1, (1.0,)), memory)  # exit 1 of member 1: first label seen
    leave, memory = p.decide_at(2, a, CascadeKnob(1, (1.0,)), memory)  # the boundary: theta 1, all go on
    assert leave.tolist() == [False, False]
    assert memory["previous"].tolist() == [-1, -1]  # member 2 counts its own exits
    leave, memory = p.decide_at(3, a, CascadeKnob(1, (1.0,)), memory)
    assert leave.tolist() == [False, False]  # patience 1: one agreeing exit of member 2 is not enough


def test_under_full_members_only_the_boundaries_and_the_last_layer_are_read():
    assert policy().exits([1, 2, 3, 4, 5], 5) == [2, 5]
    assert policy("fastbert").exits([1, 2, 3, 4, 5], 5) == [1, 2, 3, 4, 5]
    assert policy().name == "cascade" and policy("fastbert").name == "cascade-fastbert"
    assert policy("oracle").name == "oracle"
    with pytest.raises(GeepError, match="exit table"):
        policy("geep-verify")


def test_knobs_by_name_and_range():
    p = policy("fastbert")
    assert p.knob_names == ("threshold", "cascade_1")
    stored = {"threshold": 0.2, "cascade_1": 0.95}
    assert p.resolve_knob(p.fill_knob(None, stored), 3, 5) == CascadeKnob(0.2, (0.95,))
    assert p.resolve_knob(p.fill_knob(0.4, stored), 3, 5) == CascadeKnob(0.4, (0.95,))
    assert p.resolve_knob(p.fill_knob({"cascade_1": 0.5}, stored), 3, 5) == CascadeKnob(0.2, (0.5,))
    assert p.resolve_knob(None, 3, 5) == CascadeKnob(0.3, (0.9,))  # the defaults
    assert p.knob_values(CascadeKnob(0.2, (0.95,))) == stored
    full = policy()
    assert full.resolve_knob(full.fill_knob(0.7, None), 3, 5) == CascadeKnob(None, (0.7,))
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(GeepError, match="cascade threshold of member 1"):
            full.resolve_knob(CascadeKnob(None, (bad,)), 3, 5)
    with pytest.raises(GeepError, match="no knob 'tau'"):
        p.fill_knob({"tau": 0.1}, None)
    with pytest.raises(GeepError, match="damaged"):
        p.check_stored({"cascade_1": 3.0}, 3, 5)


def test_the_grid_spans_each_boundarys_range_and_the_tail_near_one():
    grid = policy().grid(3, 5, steps=5)
    thresholds = sorted(k.thresholds[0] for k in grid)
    assert thresholds[0] == 0.0 and thresholds[-1] == 1.0 and 0.99 in thresholds and 0.5 in thresholds
    assert len(policy("fastbert").grid(3, 5, steps=5)) == 5 * len(grid)
