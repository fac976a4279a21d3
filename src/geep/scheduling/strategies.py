"""Strategies: which pool runs next and which of its rows. Small objects apart from the scheduler's mechanism.

- :class:`Shrinking` (``shrink``): the published baselines' batching. Fresh rows in the caller's order (by
  default sorted by length) are cut into batches; a batch runs exit by exit until its last row has left, shrinking
  as rows leave, before the next batch starts. Rows never join another batch.
- :class:`Pooled` (``pooled``): the step with the nearest target exit first; among the pools with that target,
  the deepest first, so rows that continued past an exit run before fresh rows. Fresh rows are sorted by
  (length, the caller's order); rows continuing from an earlier exit are pooled across batches, sorted by length
  and re-padded to their own longest. With predicted exit layers this is GEEP's sorted buckets (every row runs to
  exactly its predicted layer and reads one head there) with pooled continuation for the rows a policy lets go on
  (``geep-verify``); without them it is a layer-by-layer policy re-batched between exits.
- :class:`LayerPools` (``layer``): a server's layer-level continuous batching. Rows join the pool at layer 0 as
  requests arrive; a step takes up to a batch of rows from one pool (its oldest row and the rows nearest that row's
  length, see :data:`FILLS`) and runs them to its target exit;
  rows that continue join the next exit's pool, where they batch with other requests' rows. A pool of fresh rows
  waits at most ``max_wait`` (from its oldest row's arrival) for a fuller batch; pools of continuing rows never wait.
  Which ready pool runs next is the ``order`` rule (see :data:`POOL_ORDERS`).

In a server, :class:`Shrinking` with ``max_wait`` is early exit as served today: batches formed as a dynamic
batcher forms them (full, or after ``max_wait``), each run to its end before the next starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from geep.errors import GeepError
from geep.scheduling.scheduler import Pool, Row, Scheduler, Strategy


def _by_key(row: Row):
    return row.key


def _by_length_then_key(row: Row):
    return row.length, row.key


def _by_length(row: Row) -> int:
    return row.length


def oldest_arrival(pool: Pool) -> float:
    return min(row.arrival for row in pool.rows)


def fresh_ready_at(pool: Pool, batch_size: int, max_wait: float) -> float:
    """When a pool may run: at once (-inf) when it holds a full batch or its rows have run before, else
    ``max_wait`` after its oldest row arrived (a dynamic batcher's rule)."""
    if pool.layer > 0 or len(pool) >= batch_size or max_wait <= 0:
        return -math.inf
    return oldest_arrival(pool) + max_wait


class Shrinking(Strategy):
    """Length-sorted batches that shrink as rows leave (see the module docstring). ``max_wait``: how long a new
    batch waits for more rows when it is not full (a server's clock; 0 offline)."""

    name = "shrink"

    def __init__(self, max_wait: float = 0.0) -> None:
        self.max_wait = max_wait

    def _next(self, pools: list[Pool]) -> tuple[Pool, bool]:
        """The pool to run next, and whether it is the batch in flight."""
        running = [pool for pool in pools if pool.layer > 0]
        if running:  # the batch in flight, to its end; it is one pool: its rows share a layer and a target
            return max(running, key=lambda p: p.layer), True
        return min(pools, key=lambda p: p.target), False

    def pick(self, scheduler: Scheduler, now: float = 0.0) -> tuple[Pool, list[Row]] | None:
        pools = scheduler.nonempty_pools()
        if not pools:
            return None
        pool, running = self._next(pools)
        if running:
            return pool, pool.take(len(pool))
        if fresh_ready_at(pool, scheduler.batch_size, self.max_wait) > now:
            return None
        return pool, pool.take(scheduler.batch_size, _by_key)

    def ready_at(self, scheduler: Scheduler) -> float:
        pool, _ = self._next(scheduler.nonempty_pools())
        return fresh_ready_at(pool, scheduler.batch_size, self.max_wait)


class Pooled(Strategy):
    """Nearest target first, deepest pool first, rows pooled across batches (see the module docstring)."""

    name = "pooled"

    def pick(self, scheduler: Scheduler, now: float = 0.0) -> tuple[Pool, list[Row]] | None:
        pools = scheduler.nonempty_pools()
        if not pools:
            return None
        target = min(pool.target for pool in pools)
        pool = max((p for p in pools if p.target == target), key=lambda p: p.layer)
        key = _by_length_then_key if pool.layer == 0 else _by_length
        return pool, pool.take(scheduler.batch_size, key)


# Which ready pool a LayerPools step runs next: the smallest key first. The default, deepest with the `length`
# fill below, was chosen by measurement (benchmarks/serve_schedule_sim.py: the real scheduler on recorded exits and
# a virtual clock; BENCHMARKS.md): with first-come batch-mates, deepest and oldest both run exactly as `shrink` does
# (continuing rows are always the oldest), fullest and shallowest starve deep rows (p95 far up past half capacity);
# deepest with `length` batch-mates had the highest capacity and the lowest p95 near it.
#   oldest:  the pool whose oldest row arrived first (first come, first served over requests), deeper on a tie;
#   deepest: the deepest pool first (finish the work in flight before starting new rows), then the oldest;
#   fullest: the pool with the most rows first (the largest batch), then the oldest;
#   shallowest: fresh rows first (a row that may leave at the next exit), then the oldest; continuing rows wait,
#     and pool across batches, while fresh rows keep arriving.
POOL_ORDERS: dict[str, Callable[[Pool], tuple]] = {
    "shallowest": lambda pool: (pool.layer, oldest_arrival(pool)),
    "oldest": lambda pool: (oldest_arrival(pool), -pool.layer),
    "deepest": lambda pool: (-pool.layer, pool.target, oldest_arrival(pool)),
    "fullest": lambda pool: (-len(pool), oldest_arrival(pool)),
}


# Which rows of the chosen pool a LayerPools step takes (up to a batch):
#   arrival: the oldest rows (first come, first served);
#   length:  the oldest row, then the rows nearest its length (older first on a tie): the oldest row is never left
#     behind, and a batch of mixed lengths is not padded to its longest row for rows far shorter.
FILLS = ("arrival", "length")


class LayerPools(Strategy):
    """Layer-level continuous batching for a server (see the module docstring). ``max_wait``: how long a pool of
    fresh rows waits for a fuller batch, in the unit of the rows' arrival times; ``order``: a key of
    :data:`POOL_ORDERS`; ``fill``: one of :data:`FILLS`. Rows' ``key`` is their callers' order (a server numbers
    rows as they arrive)."""

    name = "layer"

    def __init__(self, max_wait: float = 0.0, order: str = "deepest", fill: str = "length") -> None:
        if order not in POOL_ORDERS:
            raise GeepError(f"unknown pool order {order!r}; choose one of: {', '.join(POOL_ORDERS)}")
        if fill not in FILLS:
            raise GeepError(f"unknown fill {fill!r}; choose one of: {', '.join(FILLS)}")
        self.max_wait, self.order, self.fill = max_wait, order, fill

    def pick(self, scheduler: Scheduler, now: float = 0.0) -> tuple[Pool, list[Row]] | None:
        ready = [pool for pool in scheduler.nonempty_pools()
                 if fresh_ready_at(pool, scheduler.batch_size, self.max_wait) <= now]
        if not ready:
            return None
        pool = min(ready, key=POOL_ORDERS[self.order])
        if self.fill == "arrival" or len(pool) <= scheduler.batch_size:
            return pool, pool.take(scheduler.batch_size, _by_key)
        oldest = min(pool.rows, key=_by_key)
        return pool, pool.take(scheduler.batch_size,
                               lambda row: (row is not oldest, abs(row.length - oldest.length), row.key))

    def ready_at(self, scheduler: Scheduler) -> float:
        return min(fresh_ready_at(pool, scheduler.batch_size, self.max_wait) for pool in scheduler.nonempty_pools())


STRATEGIES: dict[str, type[Strategy]] = {"shrink": Shrinking, "pooled": Pooled, "layer": LayerPools}


def get_strategy(name: str, **options: object) -> Strategy:
    """A new strategy of the named kind (``shrink``, ``pooled`` or ``layer``), with its options (``max_wait``,
    ``order``)."""
    if name not in STRATEGIES:
        raise GeepError(f"unknown schedule {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](**options)
