"""The int8 Linear: per-token activation scales, per-channel weight scales, exact int32 sums."""

import torch
from torch import nn

from geep.runtime.int8 import BLOCK_TOKENS, Int8Linear, quantize_linears, quantize_rows


def test_quantize_rows_is_symmetric_per_row():
    x = torch.tensor([[1.0, -2.0, 0.5], [100.0, 0.0, -50.0], [0.0, 0.0, 0.0]])
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 1)
    assert q.abs().amax(1).tolist() == [127, 127, 0]  # each row uses the whole range; a zero row stays zero
    torch.testing.assert_close(q.float() * scale, x, atol=float(scale.max()) / 2, rtol=0)


def test_int8_linear_matches_the_same_arithmetic_done_in_fp64():
    torch.manual_seed(0)
    linear = nn.Linear(40, 24)
    x = torch.randn(3, 5, 40)
    q = Int8Linear(linear)
    y = q(x)
    assert y.shape == (3, 5, 24) and y.dtype == torch.float32
    x_q, x_s = quantize_rows(x.reshape(-1, 40))
    w_q, w_s = quantize_rows(linear.weight.detach())
    expected = (x_q.double() @ w_q.double().t()) * x_s.double() * w_s.double().t() + linear.bias.double()
    torch.testing.assert_close(y.reshape(-1, 24).double(), expected, atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        assert float((y - linear(x)).abs().max()) < 0.05  # close to the fp32 layer


def test_a_rows_output_does_not_depend_on_its_batch():
    """Per-token scales and exact integer sums: a row alone equals the same row among others, bit for bit."""
    torch.manual_seed(1)
    q = Int8Linear(nn.Linear(32, 16))
    x = torch.randn(64, 32)
    x[5:] *= 100.0  # batch-mates of a much larger scale change a per-tensor scale, not a per-token one
    together = q(x)
    for i in (0, 3, 40):
        assert torch.equal(q(x[i:i + 1]), together[i:i + 1])
    many = torch.randn(2 * BLOCK_TOKENS + 7, 32)  # several blocks of tokens
    assert torch.equal(q(many)[-3:], q(many[-3:]))


def test_a_row_is_the_same_bits_at_any_place_when_widths_are_not_multiples_of_a_vector():
    """Widths of 29 and 37: a row's last values fall in a kernel's scalar tail alone and in its vector body inside a
    batch; the rescaling must round the same way in both (one operation at a time, no fused multiply-add)."""
    torch.manual_seed(2)
    q = Int8Linear(nn.Linear(29, 37))
    x = torch.randn(45, 29)
    together = q(x)
    for i in range(45):
        assert torch.equal(q(x[i:i + 1]), together[i:i + 1]), i


def test_quantize_linears_replaces_every_linear():
    block = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 3, bias=False)))
    assert quantize_linears(block) == 2
    assert isinstance(block[0], Int8Linear) and isinstance(block[2][0], Int8Linear)
    assert block(torch.randn(2, 4)).shape == (2, 3)
