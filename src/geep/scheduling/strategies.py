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
"""

from __future__ import annotations

from geep.errors import GeepError
from geep.scheduling.scheduler import Pool, Row, Scheduler, Strategy


def _by_key(row: Row):
    return row.key


def _by_length_then_key(row: Row):
    return row.length, row.key


def _by_length(row: Row) -> int:
    return row.length


class Shrinking(Strategy):
    """Length-sorted batches that shrink as rows leave (see the module docstring)."""

    name = "shrink"

    def pick(self, scheduler: Scheduler) -> tuple[Pool, list[Row]] | None:
        pools = scheduler.nonempty_pools()
        if not pools:
            return None
        running = [pool for pool in pools if pool.layer > 0]
        if running:  # the batch in flight, to its end; it is one pool: its rows share a layer and a target
            pool = max(running, key=lambda p: p.layer)
            return pool, pool.take(len(pool))
        pool = min(pools, key=lambda p: p.target)
        return pool, pool.take(scheduler.batch_size, _by_key)


class Pooled(Strategy):
    """Nearest target first, deepest pool first, rows pooled across batches (see the module docstring)."""

    name = "pooled"

    def pick(self, scheduler: Scheduler) -> tuple[Pool, list[Row]] | None:
        pools = scheduler.nonempty_pools()
        if not pools:
            return None
        target = min(pool.target for pool in pools)
        pool = max((p for p in pools if p.target == target), key=lambda p: p.layer)
        key = _by_length_then_key if pool.layer == 0 else _by_length
        return pool, pool.take(scheduler.batch_size, key)


STRATEGIES: dict[str, type[Strategy]] = {"shrink": Shrinking, "pooled": Pooled}


def get_strategy(name: str) -> Strategy:
    """A new strategy of the named kind (``shrink`` or ``pooled``)."""
    if name not in STRATEGIES:
        raise GeepError(f"unknown schedule {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
