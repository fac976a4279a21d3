"""int8 on the CPU: every Linear of the encoder as an int8 matrix product with a scale per row (per token).

Each ``nn.Linear`` of the encoder's layers becomes an :class:`Int8Linear`: its weight W (N, K) is stored once as
int8 with one scale per output channel (symmetric, ``w_scale[n] = max|W[n]| / 127``); at run time each row of the
input (each token) gets its own scale (``x_scale[m] = max|x[m]| / 127``), the int8 product is accumulated exactly
in int32 by ``torch._int_mm`` (PyTorch's int8 GEMM, the kernel torchao's int8 configs call as well) and rescaled
in fp32: ``y = (x_q @ W_q^T) * x_scale * w_scale + b``. This is the arithmetic of torchao's
``Int8DynamicActivationInt8WeightConfig`` (per-token dynamic activations, per-channel weights) without its
generic quantisation ops, which cost more than the product itself on a CPU (``benchmarks/int8_choice.py``).

Batch invariance: a row's scales come from that row alone, the int32 accumulation is exact, and the rescaling is
one correctly rounded operation at a time (no fused multiply-add, whose vector and scalar paths round differently),
so a row's output is the same bits whatever its batch-mates or its place in the batch (torch's
``quantize_dynamic`` and ONNX Runtime's ``DynamicQuantizeLinear`` take one activation scale per tensor: a row's
result moves with its batch). Attention, the one operation that mixes tokens, is made independent of the padding by
``geep.runtime.exact_attention`` (each row attends over its own length).

Embeddings, layer norms, attention and the exit heads stay fp32: the heads are a few percent of a layer's FLOPs and
their confidences decide who exits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

QMAX = 127  # symmetric int8: [-127, 127], so negating a value never overflows
# Tokens quantised and multiplied at a time. A batch of 32 rows of 128 tokens is 4096 tokens: quantising and rescaling
# it whole makes temporaries of tens of MB that miss every cache (and are page-faulted in afresh each call), which
# made batch 32 slower per row than batch 1; blocks of 512 tokens keep them in cache (benchmarks/int8_choice.py).
BLOCK_TOKENS = 512


def row_scales(x: Tensor) -> Tensor:
    """The symmetric int8 scale of each row of x (M, K): max|x[m]| / 127 -> (M, 1) fp32 (never 0)."""
    # amax and amin read x twice but allocate nothing: cheaper than x.abs().amax(), which writes a copy of x.
    peak = torch.maximum(x.amax(-1, keepdim=True), x.amin(-1, keepdim=True).neg_())  # (M, 1)
    return peak.clamp_(min=1e-12).div_(QMAX)


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 of each row of x (M, K): (x_q (M, K) int8, scale (M, 1) fp32) with x ~= x_q * scale."""
    scale = row_scales(x)
    return torch.div(x, scale).round_().to(torch.int8), scale


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
        """x (..., K) fp32 -> (..., N) fp32, ``BLOCK_TOKENS`` tokens at a time (each token is independent)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (M, K)
        y = torch.empty((x.shape[0], self.out_features), dtype=torch.float32, device=x.device)  # (M, N)
        for start in range(0, x.shape[0], BLOCK_TOKENS):
            x_q, x_scale = quantize_rows(x[start:start + BLOCK_TOKENS])  # (m, K) int8, (m, 1)
            block = y[start:start + BLOCK_TOKENS]  # (m, N)
            block.copy_(torch._int_mm(x_q, self.weight_t))  # exact int32 sums, in fp32
            block.mul_(x_scale).mul_(self.weight_scale)  # one rounding each: the same bits in any lane
            if self.bias is not None:
                block.add_(self.bias)
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
