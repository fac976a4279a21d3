"""The scheduler and its strategies, without a model: plans, pools, re-batching, and memory that follows its rows."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from geep.inference.executor import Executor
from geep.policies import Memory, Policy
from geep.runtime import FlopsCount, FlopsSpec, ReplayBackend
from geep.scheduling import Pooled, Row, Scheduler, Shrinking
from tests import helpers


class Planned(Policy):
    """Row r leaves at layer plan[r] (every layer is an exit). Its memory holds each row's id and the layers it
    has seen, so memory indexed apart from its rows would be caught: ``seen`` records (row id in memory, row id
    in the state) at every decision."""

    name = "planned"

    def __init__(self, plan: list[int]):
        self.plan = torch.tensor(plan)
        self.seen: list[tuple[int, int]] = []
        self.batches: list[list[int]] = []

    def start(self, batch_size, device, labels=None) -> Memory:
        return {"row": labels, "layer": torch.zeros(batch_size, dtype=torch.long)}

    def decide(self, logits, knob, memory):
        layer = memory["layer"] + 1
        rows = memory["row"]
        # the replay backend's logits are one-hot on the row id: the state's row, read back from the head
        state_rows = logits.argmax(-1)
        self.seen += list(zip(rows.tolist(), state_rows.tolist()))
        self.batches.append(rows.tolist())
        return layer >= self.plan[rows], {"row": rows, "layer": layer}


def recorded(n: int, L: int) -> ReplayBackend:
    """A replay backend over n rows whose logits at every exit are one-hot on the row's own id."""
    logits = torch.eye(n).repeat(L, 1, 1).transpose(0, 1) * 10.0  # (n, L, n)
    return ReplayBackend(logits, list(range(1, L + 1)), L)


def spec(L: int, C: int) -> FlopsSpec:
    return FlopsSpec(hidden=4, intermediate=8, num_labels=C, heads={k: ("linear", "first", 8) for k in range(1, L + 1)})


def encoded_of(lengths: list[int]) -> dict:
    return {"input_ids": [[7] * n for n in lengths]}


def run(strategy: str, lengths: list[int], plan: list[int], *, batch_size: int, L: int = 3, order=None):
    n = len(lengths)
    policy = Planned(plan)
    flops = FlopsCount(spec(L, n))
    _, exits = helpers.run_offline(recorded(n, L), policy, None, encoded_of(lengths), batch_size=batch_size,
                        schedule=strategy, order=order, labels=torch.arange(n), flops=flops)
    return exits, flops, policy


def test_shrinking_batches_keep_their_rows_and_trim_padding_as_rows_leave():
    lengths = [2, 3, 5, 6, 9]  # already in length order; batch size 3 -> [2, 3, 5] and [6, 9]
    exits, flops, policy = run("shrink", lengths, [1, 3, 2, 3, 1], batch_size=3)
    assert exits.tolist() == [1, 3, 2, 3, 1]
    assert flops.layer_calls == Counter({(1, 3, 5): 1, (2, 2, 5): 1, (3, 1, 3): 1,  # batch 1 trims to row 1's 3
                                         (1, 2, 9): 1, (2, 1, 6): 1, (3, 1, 6): 1})
    assert flops.head_calls == flops.layer_calls  # a head at every exit for the rows still in
    assert policy.batches == [[0, 1, 2], [1, 2], [3, 4], [3]]  # the batch runs to its end; nobody joins it
    assert all(a == b for a, b in policy.seen)  # each row's memory is its own


def test_shrinking_follows_the_callers_order():
    exits, flops, policy = run("shrink", [4, 4, 4, 4], [1, 1, 1, 1], batch_size=2, order=[3, 1, 0, 2])
    assert policy.batches == [[3, 1], [0, 2]]


def test_pooled_rebatches_rows_between_exits_and_memory_follows_them():
    lengths = [5, 2, 7, 3, 4, 6, 1, 8]
    plan = [3, 1, 2, 3, 2, 1, 3, 3]
    exits, flops, policy = run("pooled", lengths, plan, batch_size=3)
    assert exits.tolist() == plan
    # fresh rows by (length, input order), all to exit 1 first: [6, 1, 3], [4, 0, 5], [2, 7]
    assert policy.batches[:3] == [[6, 1, 3], [4, 0, 5], [2, 7]]
    # the survivors of all three batches pooled at layer 1, sorted by length, re-batched by 3
    assert policy.batches[3:5] == [[6, 3, 4], [0, 2, 7]]
    assert len(policy.batches) == 5  # at L every row leaves: no decision; rows 6, 3, 0 then 7 ran layer 3
    assert flops.layer_calls[(3, 3, 5)] == 1 and flops.layer_calls[(3, 1, 8)] == 1
    assert all(a == b for a, b in policy.seen)  # memory went with every row through the re-batching
    assert flops.layer_calls[(2, 3, 4)] == 1 and flops.layer_calls[(2, 3, 8)] == 1  # padded to their own longest


def test_predicted_layers_skip_heads_and_buckets_run_to_exactly_their_layer():
    n, L = 6, 4
    policy = Planned([4] * n)  # would never leave early: every head read is recorded
    predicted = [2, 4, 2, 1, 4, 2]
    backend = recorded(n, L)
    flops = FlopsCount(spec(L, n))
    _, exits = helpers.run_offline(backend, policy, None, encoded_of([3, 1, 2, 5, 4, 6]), batch_size=2, schedule="pooled",
                        predicted=predicted, labels=torch.arange(n), flops=flops)
    first_read = {}
    for row, _ in policy.seen:
        first_read.setdefault(row, len(first_read))
    heads = Counter()
    for (k, rows, _), count in flops.head_calls.items():
        heads[k] += rows * count
    assert heads[1] == 1 and heads[2] == 4  # no head before a row's predicted layer
    assert exits.tolist() == [4] * n  # they continued (the policy never lets go) up to L


def test_scheduler_pools_updates_and_drops():
    scheduler = Scheduler([1, 2, 3], 3, Pooled(), batch_size=2)
    rows = [Row(i, [1] * (i + 1), key=i) for i in range(3)]
    scheduler.add(rows)
    assert len(scheduler) == 3
    step = scheduler.schedule()
    assert [r.id for r in step.rows] == [0, 1] and (step.start, step.end, step.seq_len) == (0, 1, 2)
    finished = scheduler.update(step, [True, False])
    assert [r.id for r in finished] == [0]
    assert (rows[1].layer, rows[1].target, rows[1].group, rows[1].slot) == (1, 2, step.id, 1)
    assert [r.id for r in scheduler.drop([2])] == [2] and len(scheduler) == 1
    step = scheduler.schedule()
    assert [r.id for r in step.rows] == [1] and (step.start, step.end) == (1, 2)
    assert scheduler.update(step, [False]) == [] and scheduler.schedule().end == 3
    with pytest.raises(ValueError, match="not an exit"):
        scheduler.add([Row(9, [1], predicted=4)])


def test_full_reads_only_the_teacher():
    scheduler = Scheduler([1, 2, 3], 3, Shrinking(), batch_size=4, reads_exits=False)
    scheduler.add([Row(0, [1, 2])])
    step = scheduler.schedule()
    assert (step.start, step.end) == (0, 3)


def test_executor_forgets_a_group_once_its_rows_have_moved_on():
    n, L = 4, 3
    scheduler = Scheduler(list(range(1, L + 1)), L, Pooled(), batch_size=4)
    scheduler.add([Row(i, [1, 1], key=i) for i in range(n)])
    policy = Planned([1, 2, 3, 3])
    executor = Executor(scheduler, recorded(n, L), policy, labels=torch.arange(n))
    done = [f for f in executor.run()]
    assert sorted(r.id for f in done for r in f.rows) == [0, 1, 2, 3]
    assert executor.groups == {}
