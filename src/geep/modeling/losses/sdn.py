"""``sdn``: Shallow-Deep Networks' weighted loss (Kaya, Hong & Dumitras, "Shallow-Deep Networks: Understanding and
Mitigating Network Overthinking", ICML 2019, the "SDN training" of a network trained with its internal classifiers).

The loss at a training step is the weighted sum

    L = sum_{k in E, k < L} tau_k * loss(S_k(h_k), y)  +  loss(T(h_L), y)

(classification: cross entropy; any task: the task's exit loss), where the final classifier weighs 1 and each
internal classifier's weight grows linearly over training, from 0.01 up to its final value C_k:

    tau_k(p) = min(C_k, 0.01 + p * C_k),    p = the fraction of training done, in (0, 1].

What was checked, and where geep departs from it:
- The schedule and the weights are the authors' code (github.com/yigitcankaya/Shallow-Deep-Networks,
  ``model_funcs.py``: ``sdn_train``, ``cur_coeffs = np.minimum(max_coeffs, 0.01 + epoch * (max_coeffs / epochs))``,
  ``sdn_training_step``: ``coeffs[i] * CE`` for each internal classifier plus the final classifier's CE unweighted).
- C_k: the code's ``max_coeffs`` are 0.15, 0.30, ..., 0.90 for six internal classifiers that it places at 15%, 30%,
  ..., 90% of the network's FLOPs (``network_architectures.py``: ``add_ic``), i.e. each classifier's final weight is
  its relative position in the network's cost. A Transformer's layers cost the same, so exit k of L gets
  C_k = k / L (the exit heads' own cost left out). ``final=`` overrides them.
- The authors update tau once per epoch (p = epoch / epochs, over 100 epochs); geep trains 2-3 epochs, so tau is
  updated at every step, p = step / steps of the stage (the step being counted, 1-based): the two agree at each
  epoch's last step, and the weights still start near 0.01.
- Not verified here: the paper's own wording of the schedule (its PDF was not available to this implementation;
  the formula above is the released code's).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor

from geep.tasks import Task

START = 0.01  # tau_k at the start of training (the authors' 0.01)


def sdn_weights(exit_layers: Sequence[int], progress: float, *, start: float = START,
                final: Sequence[float] | None = None) -> Tensor:
    """Each exit's weight at ``progress`` (the fraction of training done, in [0, 1]): tau_k for k < L, 1 for L.

    ``final`` (one per exit before L; default k / L, L = ``exit_layers[-1]``) are the C_k. Returns (|E|,) float32.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must lie in [0, 1], got {progress}")
    layers = list(exit_layers)
    num_layers = layers[-1]
    caps = torch.tensor([k / num_layers for k in layers[:-1]] if final is None else list(final), dtype=torch.float32)
    if caps.shape != (len(layers) - 1,):
        raise ValueError(f"final needs one weight per exit before the last ({len(layers) - 1}), got {len(caps)}")
    tau = torch.minimum(caps, start + progress * caps)  # (|E|-1,)
    return torch.cat([tau, torch.ones(1)])


def sdn_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
             task: Task, progress: float = 1.0, start: float = START,
             final: Sequence[float] | None = None) -> Tensor:
    """SDN's loss: sum_k w_k * loss_k with w = :func:`sdn_weights` at ``progress`` (default 1.0: the final weights).

    exit_logits (|E|, B, K), labels as the task's targets (classification: (B,) class ids).
    """
    weights = sdn_weights(exit_layers, progress, start=start, final=final).to(exit_logits)  # (|E|,)
    return (weights * task.per_exit_loss(exit_logits, labels)).sum()


def sdn_schedule(progress: float) -> Callable[..., Tensor]:
    """The loss of a training step taken at ``progress`` (what :class:`~geep.modeling.objectives.Stage` calls)."""
    return partial(sdn_loss, progress=progress)


__all__ = ["START", "sdn_loss", "sdn_schedule", "sdn_weights"]
