"""The FLOPs formulas against torch's own counter, and the engine's count against what actually ran.

``FlopCounterMode`` counts matrix products only. On the CPU it does not see inside the fused attention kernel,
so every count here runs under the math backend of ``scaled_dot_product_attention``, which it does see; then the
formulas claim, and the tests check, exact equality.
"""

from collections import Counter

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertModel

from tests.helpers import random_batch, tiny_bert_config
from geep.inference import run_policy
from geep.modeling.backbone import Backbone
from geep.modeling.heads import build_head
from geep.runtime.flops import FlopsCount, FlopsSpec, attention_head_flops, layer_flops, linear_head_flops
from tests.helpers import make_decisive, random_texts




def counted(fn, *args, **kwargs) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("B, T", [(1, 1), (3, 7), (5, 16)])
def test_layer_formula_matches_flop_counter(attn, B, T):
    config = tiny_bert_config(attn_implementation=attn)
    backbone = Backbone(BertModel(config).eval())
    hidden = torch.randn(B, T, config.hidden_size)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, T // 2 + 1:] = 0  # padding changes nothing: padded positions are computed too
    layer_mask = backbone.attention_mask_for(hidden, mask)
    assert counted(backbone.layer, 2, hidden, layer_mask) == B * layer_flops(T, config.hidden_size,
                                                                             config.intermediate_size)


@pytest.mark.parametrize("kind", ["attention", "linear"])
@pytest.mark.parametrize("pooling", ["first", "mean"])
@pytest.mark.parametrize("B, T", [(1, 1), (4, 9)])
def test_head_formulas_match_flop_counter(kind, pooling, B, T):
    H, C, w = 32, 5, 16
    head = build_head(kind, H, C, pooling, width=w).eval()
    hidden = torch.randn(B, T, H)
    mask = torch.ones(B, T, dtype=torch.long)
    expected = (attention_head_flops(T, H, w, C, pooling) if kind == "attention" else linear_head_flops(H, C))
    assert counted(head, hidden, mask) == B * expected


def test_first_pooling_attention_head_is_cheaper_and_linear_in_T():
    f = [attention_head_flops(T, 384, 128, 2, "first") for T in (10, 20, 30)]
    assert f[2] - f[1] == f[1] - f[0]  # only the first query attends: no T^2 term
    assert attention_head_flops(30, 384, 128, 2, "mean") > f[2]


def record_calls(model):
    """Forward hooks counting (k, rows, padded length) per call of every layer and head."""
    layers, heads, handles = Counter(), Counter(), []
    for k, layer in enumerate(model.backbone.layers, 1):
        handles.append(layer.register_forward_hook(
            lambda m, args, out, k=k: layers.update([(k, *args[0].shape[:2])])))
    for k, head in model.heads.items():
        handles.append(head.register_forward_hook(
            lambda m, args, out, k=int(k): heads.update([(k, *args[0].shape[:2])])))
    return layers, heads, handles


@pytest.mark.parametrize("policy, knob", [("full", None), ("fastbert", 0.4), ("confidence", 0.6), ("pabee", 1),
                                          ("oracle", None)])
def test_counted_work_is_what_ran(make_model, policy, knob):
    """The engine's record equals what forward hooks saw, and its FLOPs equal torch's count of the whole run
    (the embeddings are lookups: nothing else in a run multiplies matrices)."""
    texts = random_texts(40, seed=7)
    model = make_decisive(make_model(head="attention", pooling="first", exit_layers=[1, 2, 4]), texts)
    encoded = model.tokenize(texts)
    labels = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(0))
    layers, heads, handles = record_calls(model)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run = run_policy(model, encoded, policy, knob, batch_size=8, labels=labels)
    finally:
        for h in handles:
            h.remove()
    if policy != "full":
        assert len(set(run.exit_layer.tolist())) >= 2
    assert run.flops.layer_calls == layers
    assert run.flops.head_calls == heads
    assert run.flops.total == counter.get_total_flops()
    assert run.flops.total == run.flops.layers + run.flops.heads
    if policy == "full":  # one call of each layer per batch of 8 length-sorted rows, and only the teacher
        assert sum(n for (k, _, _), n in run.flops.layer_calls.items() if k == 1) == 5
        assert set(k for k, _, _ in run.flops.head_calls) == {4}


def test_linear_head_model_counts_and_mixed_teacher(make_model):
    model = make_model(head="linear", pooling="mean", teacher_head="attention", teacher_pooling="first")
    spec = FlopsSpec.from_model(model)
    assert spec.heads[1] == ("linear", "mean", 128) and spec.heads[4] == ("attention", "first", 128)
    batch = random_batch(batch_size=3, seq_len=6)
    state = model.embed(**batch)
    count = FlopsCount(spec)
    for k in model.exit_layers:
        count.add_layer(k, 3, 6)
        count.add_head(k, 3, 6)

    def run_all():
        s = state
        for k in model.exit_layers:
            s = model.run_layers(s, k)
            model.exit_logits(s)

    assert counted(run_all) == count.total
