"""Executor.run_step when a step raises: the step's rows are gone, every other row runs on as planned, and no
stored state is kept for rows that will never come back (a server's failed step)."""

from __future__ import annotations

import pytest
import torch

from geep.inference.executor import Executor
from geep.scheduling import Pooled, Row, Scheduler
from tests.scheduling.test_scheduler import Planned, recorded


class Breaks:
    """Wraps a replay backend; the first call of ``method`` on a state at layer >= 1 raises."""

    def __init__(self, backend, method: str):
        self.backend, self.method, self.broke = backend, method, False

    def __getattr__(self, name):
        attr = getattr(self.backend, name)
        if name != self.method:
            return attr

        def maybe_break(*args, **kwargs):
            state = args[0] if name != "gather" else args[0][0][0]
            if not self.broke and state.layer >= 1:
                self.broke = True
                raise RuntimeError("broken")
            return attr(*args, **kwargs)
        return maybe_break


@pytest.mark.parametrize("method", ["select", "run_layers"])  # while assembling the step, while running it
def test_a_step_that_raises_loses_only_its_rows(method):
    n, L = 4, 3
    scheduler = Scheduler(list(range(1, L + 1)), L, Pooled(), batch_size=4)
    scheduler.add([Row(i, [1, 1], key=i) for i in range(n)])
    backend = Breaks(recorded(n, L), method)
    executor = Executor(scheduler, backend, Planned([3, 3, 3, 3]), labels=torch.arange(n))
    assert executor.step().rows == []  # all four ran to exit 1 together and go on
    scheduler.batch_size = 2  # the next steps each take two of the four from that one group
    step = scheduler.schedule()
    with pytest.raises(RuntimeError, match="broken"):
        executor.run_step(step)
    lost = {row.id for row in step.rows}
    finished = [row.id for f in executor.run() for row in f.rows]
    assert sorted(finished) == sorted(set(range(n)) - lost)
    assert executor.groups == {} and len(scheduler) == 0
