"""``geep`` and ``geep-verify``: exit layers predicted from the tokens before the model runs.

Knob tau in [0, 1]: each row's predicted exit is the smallest layer l whose cumulative predicted probability
reaches tau (see ``geep.exit_table``). tau = 1: every row is predicted L (never exit early); tau = 0: every row is
predicted the first exit. Default 0.5, or the model's calibrated default.

- ``geep``: sorted buckets: every row exits exactly at its predicted layer, one head call per row.
- ``geep-verify``: as ``geep``, then a row whose normalised entropy at its predicted layer is above the build
  threshold S continues, pooled with the other continuing rows, under the ``fastbert`` rule at S. tau = 1 is
  still "never exit early"; at tau = 0 every row starts at the first exit and leaves where the ``fastbert`` rule
  at S first holds (FastBERT at S with full, pooled batches), so "first exit" holds only for rows that pass.

Neither decides layer by layer, so :meth:`decide` and :meth:`replay` are not theirs: the engine hands them the
tokenised rows (:meth:`run`), and calibration replays them from the table's predictions (``geep.calibrate``).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy


class GeepPolicy(Policy):
    name = "geep"
    needs_table = True
    verify: ClassVar[bool] = False

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.5, never=1.0, first=0.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        raise TypeError(f"{self.name} predicts exits before the model runs; it has no per-layer decision")

    def replay(self, exit_logits: Tensor, knob: float | None, labels: Tensor | None = None) -> Tensor:
        raise TypeError(f"{self.name} is replayed from its table's predictions (geep.calibrate.sweep)")

    def run(self, model, encoded: dict, knob: float, *, batch_size: int = 32, labels: Tensor | None = None,
            order=None, show_progress: bool = False):
        """Predicts every row's exit layer from its tokens, then runs the sorted buckets (``order`` breaks ties)."""
        from geep.scheduler import run_geep

        return run_geep(model, encoded, knob, batch_size=batch_size, verify=self.verify, order=order,
                        show_progress=show_progress)


class GeepVerifyPolicy(GeepPolicy):
    name = "geep-verify"
    verify = True
