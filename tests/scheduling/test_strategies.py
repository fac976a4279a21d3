"""The server's strategies on a clock the test controls: LayerPools (layer-level continuous batching) and
Shrinking with a wait for a fuller batch. No model: rows are plain token lists, ``now`` is passed in."""

from __future__ import annotations

import math

import pytest
import torch

from geep.errors import GeepError
from geep.scheduling import POOL_ORDERS, LayerPools, Row, Scheduler, Shrinking, get_strategy
from tests import helpers
from tests.scheduling.test_scheduler import Planned, encoded_of, recorded


def rows(ids, arrival: float, length: int = 2) -> list[Row]:
    return [Row(i, [1] * length, arrival=arrival, key=i) for i in ids]


def test_a_fresh_pool_waits_for_a_full_batch_at_most_max_wait():
    scheduler = Scheduler([1, 2, 3], 3, LayerPools(max_wait=0.005), batch_size=4)
    scheduler.add(rows([0, 1], arrival=10.0))
    assert scheduler.ready_at() == pytest.approx(10.005)
    assert scheduler.schedule(now=10.004) is None  # not full, not waited long enough
    scheduler.add(rows([2, 3], arrival=10.003))
    assert scheduler.ready_at() == -math.inf  # full: at once
    step = scheduler.schedule(now=10.003)
    assert [r.id for r in step.rows] == [0, 1, 2, 3] and (step.start, step.end) == (0, 1)
    scheduler.add(rows([4], arrival=11.0))
    assert scheduler.schedule(now=11.0049) is None
    assert [r.id for r in scheduler.schedule(now=11.005).rows] == [4]
    assert scheduler.ready_at() is None  # nothing waits


def test_continuing_rows_never_wait_and_join_rows_of_other_steps():
    """Rows that continue from two different first steps are pooled at exit 2 and run in one step."""
    scheduler = Scheduler([1, 2, 3], 3, LayerPools(max_wait=1.0, order="shallowest"), batch_size=2)
    scheduler.add(rows([0, 1], arrival=0.0))
    first = scheduler.schedule(now=0.0)
    scheduler.update(first, [True, False])  # row 0 leaves at 1, row 1 goes on
    assert scheduler.ready_at() == -math.inf  # a pool of continuing rows is ready at once
    scheduler.add(rows([2, 3], arrival=0.1))
    second = scheduler.schedule(now=0.1)  # shallowest: the fresh full batch first
    assert [r.id for r in second.rows] == [2, 3]
    scheduler.update(second, [False, True])
    third = scheduler.schedule(now=0.1)
    assert [r.id for r in third.rows] == [1, 2] and (third.start, third.end) == (1, 2)
    assert {r.group for r in third.rows} == {first.id, second.id}  # rows of two steps, pooled


@pytest.mark.parametrize("order,expected", [("deepest", (2, 3)), ("oldest", (1, 2)), ("fullest", (0, 1)),
                                            ("shallowest", (0, 1))])
def test_pool_orders(order, expected):
    """Three ready pools: (2, 3) holds row 1 (arrived at 0.5), (1, 2) row 0 (arrived first, at 0), (0, 1) three
    fresh rows (arrived at 0.9). Each order picks the pool its rule names."""
    strategy = LayerPools()
    scheduler = Scheduler([1, 2, 3], 3, strategy, batch_size=1)
    scheduler.add([Row(1, [1, 1], arrival=0.5, key=0), Row(0, [1, 1], arrival=0.0, key=1)])
    for setup in ("deepest", "deepest", "shallowest"):  # row 1 to (1, 2), then to (2, 3); row 0 to (1, 2)
        strategy.order = setup
        step = scheduler.schedule(now=1.0)
        scheduler.update(step, [False] * step.size)
    assert {pool: [r.id for r in p.rows] for pool, p in scheduler.pools.items()} == {(1, 2): [0], (2, 3): [1]}
    scheduler.batch_size = 4
    scheduler.add(rows([2, 3, 4], arrival=0.9))
    strategy.order = order
    step = scheduler.schedule(now=1.0)
    assert (step.start, step.end) == expected


def test_unknown_pool_order_is_one_line():
    with pytest.raises(GeepError, match="unknown pool order 'random'; choose one of: " + ", ".join(POOL_ORDERS)):
        LayerPools(order="random")


def test_shrinking_waits_for_a_new_batch_but_not_in_flight_and_admits_nobody_then():
    scheduler = Scheduler([1, 2, 3], 3, Shrinking(max_wait=0.5), batch_size=3)
    scheduler.add(rows([0, 1], arrival=0.0))
    assert scheduler.schedule(now=0.4) is None and scheduler.ready_at() == 0.5
    step = scheduler.schedule(now=0.5)
    scheduler.update(step, [False, True])
    scheduler.add(rows([2, 3, 4], arrival=0.6))  # a full batch waits while the batch in flight runs
    step = scheduler.schedule(now=0.6)
    assert [r.id for r in step.rows] == [0] and step.start == 1
    scheduler.update(step, [False])
    assert [r.id for r in scheduler.schedule(now=0.6).rows] == [0]
    assert [r.id for r in scheduler.schedule(now=0.6).rows] == [2, 3, 4]


@pytest.mark.parametrize("schedule", ["layer", "pooled", "shrink"])
def test_every_schedule_gives_each_row_its_planned_exit_offline(schedule):
    plan = [3, 1, 2, 3, 2, 1, 3, 3]
    policy = Planned(plan)
    _, exits = helpers.run_offline(recorded(8, 3), policy, None, encoded_of([5, 2, 7, 3, 4, 6, 1, 8]), batch_size=3,
                        schedule=schedule, labels=torch.arange(8))
    assert exits.tolist() == plan
    assert all(a == b for a, b in policy.seen)
    assert isinstance(get_strategy("layer", max_wait=0.1, order="oldest"), LayerPools)


@pytest.mark.parametrize("fill,expected", [("length", [0, 4, 2]), ("arrival", [0, 1, 2])])
def test_a_full_pool_takes_its_oldest_row_and_the_rows_nearest_its_length(fill, expected):
    """Five fresh rows, a batch of 3: ``length`` takes the oldest row (10 tokens) and the two nearest it in length
    (9, then 12: the older of 12 and 8 is row 2), so the step pads to 12, not to 40."""
    scheduler = Scheduler([1, 2], 2, LayerPools(fill=fill), batch_size=3)
    lengths = [10, 40, 12, 8, 9]
    scheduler.add([Row(i, [1] * n, arrival=float(i), key=i) for i, n in enumerate(lengths)])
    step = scheduler.schedule(now=10.0)
    assert [r.id for r in step.rows] == expected
    assert step.seq_len == max(lengths[i] for i in expected)
    with pytest.raises(GeepError, match="unknown fill 'random'"):
        LayerPools(fill="random")
