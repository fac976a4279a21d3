"""The layer scheduler: it plans which rows run next, from which layer to which exit; it never runs the model.

After vLLM's v1 scheduler (``vllm/v1/core/sched/interface.py``): the scheduler plans, an executor runs the plan on
a backend, and the results come back to the scheduler.

- :meth:`Scheduler.add` takes rows (token ids, arrival time, a predicted exit layer where a policy predicts one).
  They wait in the pool at layer 0.
- :meth:`Scheduler.schedule` returns the next :class:`Step`: rows drawn from ONE pool (so all at the same layer),
  the layer they run to, padded to their own longest row. Which pool and which rows is the strategy's choice
  (``geep.scheduling.strategies``): length-sorted batches that shrink, GEEP's sorted buckets with pooled
  continuation, or a server's layer-level batching (``geep.scheduling.layer_pools``). A server passes its clock's
  ``now``, so a strategy may wait for a fuller batch; :meth:`Scheduler.ready_at` says until when. The scheduler
  never reads a clock itself: offline runs pass nothing and every row arrives at 0.
- :meth:`Scheduler.update` takes, per row of the step, whether it leaves (the policy decided, not the scheduler):
  leaving rows are finished at once, the others join the pool of their next exit.

Pools are keyed by (layer, target): ``layer`` is how many layers a row has run (its hidden state is h_layer) and
``target`` the exit whose head it reads next: the first exit of E after its layer, never before its predicted
layer (so rows predicted deep skip the heads before it), or L for a policy that reads only the teacher. A step
always runs its rows to their common target and reads that head for all of them.

Between steps a row's hidden state and policy memory stay with the executor, in the output of the step that last
ran the row: ``Row.group`` names that step and ``Row.slot`` the row's index in it. When a step draws rows from
several groups the executor pools them (the backend's ``gather``), so per-row memory travels with its rows.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Row:
    """One input row in the scheduler. The caller sets the first five fields; the scheduler owns the rest."""

    id: int  # the caller's id for it (offline: its index in the input)
    input_ids: Sequence[int]
    token_type_ids: Sequence[int] | None = None
    arrival: float = 0.0  # when it arrived (a server's clock; offline all rows arrive at 0)
    predicted: int | None = None  # its predicted exit layer (GEEP), an exit of E; None: read every exit
    key: Any = 0  # its place among fresh rows (a position in the caller's order)
    length: int = field(init=False)  # its number of tokens
    layer: int = 0  # layers run so far: its hidden state is h_layer
    target: int = 0  # the exit whose head it reads next
    group: int = -1  # the step whose output holds h_layer (-1: not embedded yet)
    slot: int = -1  # its index in that step

    def __post_init__(self) -> None:
        self.length = len(self.input_ids)


@dataclass(eq=False, slots=True)
class Step:
    """A batch to run: ``rows`` (all at layer ``start``) run layers start+1 .. ``end`` and read exit ``end``'s head.
    The batch is padded to ``seq_len``, its longest row."""

    id: int
    rows: list[Row]
    start: int
    end: int
    seq_len: int

    @property
    def size(self) -> int:
        return len(self.rows)


class Pool:
    """Rows waiting at one (layer, target), in arrival order until a strategy sorts them."""

    __slots__ = ("layer", "target", "rows", "sorted_by")

    def __init__(self, layer: int, target: int) -> None:
        self.layer, self.target = layer, target
        self.rows: list[Row] = []
        self.sorted_by: Any = None  # the key function the rows are sorted by, None when rows were added since

    def take(self, n: int, key: Any = None) -> list[Row]:
        """The first ``n`` rows after a stable sort by ``key`` (None: arrival order), removed from the pool."""
        if key is not None and self.sorted_by is not key:
            self.rows.sort(key=key)
            self.sorted_by = key
        taken = self.rows[:n]
        del self.rows[:n]
        return taken

    def __len__(self) -> int:
        return len(self.rows)


class Scheduler:
    """Pools of rows per (layer, target) and a strategy that picks the next step (see the module docstring).

    ``exit_layers``: E (L is added); ``batch_size``: the most rows a step takes; ``reads_exits`` False: every row's
    only target is L (a policy that reads the teacher alone, ``full``).
    """

    def __init__(self, exit_layers: Sequence[int], num_layers: int, strategy: "Strategy", *, batch_size: int,
                 reads_exits: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.exits = sorted(set(exit_layers) | {num_layers})
        self.num_layers = num_layers
        self.strategy = strategy
        self.batch_size = batch_size
        self.reads_exits = reads_exits
        self.pools: dict[tuple[int, int], Pool] = {}
        self._ids = itertools.count()
        self._waiting = 0

    # ------------------------------------------------------------------------------------------------ rows
    def next_exit(self, row: Row) -> int:
        """The exit whose head ``row`` reads next: the first exit after its layer, not before its predicted one."""
        if not self.reads_exits:
            return self.num_layers
        floor = row.layer + 1 if row.predicted is None else max(row.layer + 1, row.predicted)
        return self.exits[bisect.bisect_left(self.exits, floor)]

    def add(self, rows: Iterable[Row]) -> None:
        """New rows wait at layer 0."""
        for row in rows:
            if row.predicted is not None and row.predicted not in self.exits:
                raise ValueError(f"row {row.id}: predicted layer {row.predicted} is not an exit of {self.exits}")
            row.layer, row.group, row.slot = 0, -1, -1
            self._enqueue(row)

    def _enqueue(self, row: Row) -> None:
        row.target = self.next_exit(row)
        pool = self.pools.get((row.layer, row.target))
        if pool is None:
            pool = self.pools[(row.layer, row.target)] = Pool(row.layer, row.target)
        pool.rows.append(row)
        pool.sorted_by = None
        self._waiting += 1

    def __len__(self) -> int:
        """Rows waiting in the pools (not counting those in a step being run)."""
        return self._waiting

    def nonempty_pools(self) -> list[Pool]:
        return [pool for pool in self.pools.values() if pool.rows]

    # ------------------------------------------------------------------------------------------- planning
    def schedule(self, now: float = 0.0) -> Step | None:
        """The next step, or None when no row waits (or the strategy chooses to wait). ``now``: the caller's clock,
        in the same unit as the rows' ``arrival``."""
        picked = self.strategy.pick(self, now)
        if picked is None:
            return None
        pool, rows = picked
        if not rows:
            raise RuntimeError(f"{type(self.strategy).__name__} picked no rows")
        self._waiting -= len(rows)
        if not pool.rows:
            del self.pools[(pool.layer, pool.target)]
        return Step(next(self._ids), rows, pool.layer, pool.target, max(row.length for row in rows))

    def ready_at(self) -> float | None:
        """The earliest ``now`` at which :meth:`schedule` returns a step with the rows waiting now (-inf: at once),
        or None when no row waits: how long a server's worker may sleep when nothing new arrives."""
        if not self._waiting:
            return None
        return self.strategy.ready_at(self)

    def update(self, step: Step, leave: Sequence[bool]) -> list[Row]:
        """Applies the policy's decision for each row of ``step`` (every row leaves at L): returns the rows that
        finished, in step order; the others move to the pool of their next exit."""
        if len(leave) != step.size:
            raise ValueError(f"{len(leave)} decisions for a step of {step.size} rows")
        finished = []
        last = step.end == self.num_layers
        for i, (row, out) in enumerate(zip(step.rows, leave)):
            row.layer = step.end
            if out or last:
                finished.append(row)
            else:
                row.group, row.slot = step.id, i
                self._enqueue(row)
        return finished

    def drop(self, ids: Iterable[int]) -> list[Row]:
        """Removes waiting rows by id (a server's timed-out or disconnected requests); returns those removed."""
        ids = set(ids)
        dropped = []
        for key, pool in list(self.pools.items()):
            keep = [row for row in pool.rows if row.id not in ids]
            if len(keep) != len(pool.rows):
                dropped += [row for row in pool.rows if row.id in ids]
                pool.rows = keep
                if not keep:
                    del self.pools[key]
        self._waiting -= len(dropped)
        return dropped


class Strategy:
    """Chooses the next step's pool and rows: ``pick(scheduler, now) -> (pool, rows taken from it) or None``.

    A strategy that may wait for a fuller batch returns None while it waits and says in :meth:`ready_at` until
    when; the others never wait."""

    name: str = ""

    def pick(self, scheduler: Scheduler, now: float = 0.0) -> tuple[Pool, list[Row]] | None:
        raise NotImplementedError

    def ready_at(self, scheduler: Scheduler) -> float:
        """The earliest time :meth:`pick` chooses a step with the rows waiting now (-inf: at once)."""
        return -math.inf
