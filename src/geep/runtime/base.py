"""The backend seam: the few operations the executor needs from whatever holds the model.

A backend runs batches of rows ("states", opaque to the executor) from layer to layer and reads exit heads:

- ``embed(row_ids, input_ids, token_type_ids, halt_tokens=False)``: h_0 of a batch of rows (token ids as unpadded
  lists), padded to its longest row; with ``halt_tokens`` (a policy that ``halts_tokens``: HashEE), each token halts
  after the layer the model's token hash gives it: later layers run only the tokens still active, halted ones kept
  as keys and values (``geep.runtime.token_halting``), so ``run_layers`` keeps the executor's one path;
- ``token_layers(state)``: (B, T) each token's last layer in a state whose tokens halt (0 at padding), else None:
  what the executor counts such a step's FLOPs from (each token's own layers);
- ``run_layers(state, to_layer)``: layers ``state's layer + 1 .. to_layer`` on every row of the state;
- ``read_head(state)``: outputs (B, K + S) of the head at the state's layer (the task's K, then the exit module's S);
- ``select(state, keep)``: the rows ``keep`` (long indices, in that order), every per-row tensor indexed together
  and padding no kept row needs trimmed;
- ``gather(parts, order)``: rows picked from several states, concatenated, then put in ``order`` (positions into
  the concatenation) and trimmed: rows of different batches pooled into one;
- ``row_ids(state)``: (B,) the caller's id of each row.

Backends: ``TorchBackend`` (the PyTorch module) and ``ReplayBackend`` (recorded all-exit logits: calibration and
the bench get exits and FLOPs by running the real scheduler on it). Precisions other than fp32 run a prepared copy
of the model (int8 Linears, or cast to fp16/bf16) on ``TorchBackend``; ``geep.runtime.precision.make_backend`` is
the one place that chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor


class Backend(Protocol):
    """What the executor runs rows on (see the module docstring)."""

    num_layers: int
    exit_layers: list[int]
    num_outputs: int  # columns of read_head's output: the task's, then the exit module's signals
    device: torch.device

    def embed(self, row_ids: Sequence[int], input_ids: Sequence[Sequence[int]],
              token_type_ids: Sequence[Sequence[int]] | None = None, halt_tokens: bool = False) -> Any: ...

    def token_layers(self, state: Any) -> Tensor | None: ...

    def run_layers(self, state: Any, to_layer: int) -> Any: ...

    def read_head(self, state: Any) -> Tensor: ...

    def select(self, state: Any, keep: Tensor) -> Any: ...

    def gather(self, parts: Sequence[tuple[Any, Tensor]], order: Tensor) -> Any: ...

    def row_ids(self, state: Any) -> Tensor: ...
