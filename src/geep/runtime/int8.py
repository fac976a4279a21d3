"""int8 on the CPU: every Linear of the encoder as an int8 matrix product with a scale per row (per token).

Each ``nn.Linear`` of the encoder's layers becomes an :class:`Int8Linear`: its weight W (N, K) is stored once as
int8 with one scale per output channel (symmetric, ``w_scale[n] = max|W[n]| / 127``); at run time each row of the
input (each token) gets its own scale (``x_scale[m] = max|x[m]| / 127``), the int8 product is accumulated exactly
in int32 by ``torch._int_mm`` (PyTorch's int8 GEMM, the kernel torchao's int8 configs call as well) and rescaled
in fp32: ``y = (x_q @ W_q^T) * x_scale * w_scale + b``. This is the arithmetic of torchao's
``Int8DynamicActivationInt8WeightConfig`` (per-token dynamic activations, per-channel weights) without its
generic quantisation ops, which cost more than the product itself on a CPU (``benchmarks/int8_choice.py``).

Batch invariance: a row's scales come from that row alone and the int32 accumulation is exact, so a row's output
does not depend on its batch-mates or on padding (torch's ``quantize_dynamic`` and ONNX Runtime's
``DynamicQuantizeLinear`` take one activation scale per tensor: a row's result moves with its batch).

Embeddings, layer norms, attention scores and the exit heads stay fp32: the heads are a few percent of a layer's
FLOPs and their confidences decide who exits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

QMAX = 127  # symmetric int8: [-127, 127], so negating a value never overflows


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 of each row of x (M, K): (x_q (M, K) int8, scale (M, 1) fp32) with x ~= x_q * scale."""
    scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / QMAX  # (M, 1)
    return torch.round(x / scale).to(torch.int8), scale


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and int8 activations (per row), fp32 in and out."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # (N, K)
        w_q, w_scale = quantize_rows(weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_t", w_q.t(), persistent=False)  # (K, N) int8, a view of (N, K): _int_mm's B
        self.register_buffer("weight_scale", w_scale.view(1, -1), persistent=False)  # (1, N)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)  # (N,) or None

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) fp32 -> (..., N) fp32."""
        shape = x.shape
        x_q, x_scale = quantize_rows(x.reshape(-1, shape[-1]))  # (M, K) int8, (M, 1)
        y = torch._int_mm(x_q, self.weight_t).float()  # (M, N), exact int32 sums
        y.mul_(x_scale).mul_(self.weight_scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-token"


def quantize_linears(module: nn.Module) -> int:
    """Replaces every ``nn.Linear`` inside ``module`` (in place) by an :class:`Int8Linear`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
            count += 1
        else:
            count += quantize_linears(child)
    return count
