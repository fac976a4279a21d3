"""FLOPs of every encoder family's layers against torch's own counter, and a whole run's count against what ran.

As in ``test_flops.py``, every count runs under SDPA's math backend, which ``FlopCounterMode`` sees into. A
ModernBERT local layer counts only the (query, key) pairs inside its window; SDPA on the CPU computes the masked
scores too, so there the counter is compared with the formula over all pairs, and the window's pairs are checked
against the sliding-window mask transformers itself builds.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers.masking_utils import create_bidirectional_sliding_window_mask

from geep.inference import run_policy
from geep.modeling.backbone import Backbone
from geep.modeling.model import MultiExitClassifier
from geep.runtime.flops import FlopsSpec, attended_pairs, shape_call_flops, shape_flops
from tests import families
from tests.helpers import random_batch, random_texts


# FlopCounterMode's module tracker cannot hook a parameter a module takes as an input (DeBERTa's relative
# embeddings) under no_grad: the counted models' weights do not require grad.


def counted(fn, *args) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("B, T", [(1, 2), (3, 9)])
@pytest.mark.parametrize("case", families.CASES)
def test_layer_formulas_match_flop_counter(case, B, T):
    """Layer k on B rows at T costs B x the per-row formula + the per-call one; layer 1 also pays for the
    embedding projection (and DeBERTa-v2's convolution), counted from the embeddings on."""
    backbone = Backbone(families.build(case).requires_grad_(False))
    shapes = backbone.layer_shapes()
    assert len(shapes) == backbone.num_layers
    batch = random_batch(batch_size=B, seq_len=T, seed=2)
    with torch.no_grad():
        state = backbone.embed(**batch)
    for k in range(2, backbone.num_layers + 1):
        shape = dataclasses.replace(shapes[k - 1], window=None)  # SDPA on the CPU computes every pair
        expected = B * shape_flops(shape, T) + shape_call_flops(shape, T)
        assert counted(backbone.layer, k, state.hidden, state.mask) == expected, k

    def embed_and_layer_1():
        s = backbone.embed(**batch)
        backbone.layer(1, s.hidden, s.mask)

    first = dataclasses.replace(shapes[0], window=None)
    assert counted(embed_and_layer_1) == B * shape_flops(first, T) + shape_call_flops(first, T)


@pytest.mark.parametrize("T", [1, 3, 4, 7, 8, 20])
def test_local_attention_pairs_are_those_of_the_sliding_mask(T):
    """ModernBERT's local layers attend only within the window: the pairs the formula counts are the True entries
    of transformers' own sliding-window mask, fewer than T^2 once T > w + 1, and the layer then costs less than a
    global one."""
    config = families.config("modernbert")
    config._attn_implementation = "sdpa"
    mask = create_bidirectional_sliding_window_mask(config=config, inputs_embeds=torch.zeros(1, T, 32),
                                                    attention_mask=torch.ones(1, T, dtype=torch.long),
                                                    allow_is_bidirectional_skip=False)
    assert attended_pairs(T, families.WINDOW) == int(mask.sum())
    shapes = Backbone(families.build("modernbert")).layer_shapes()
    assert [s.window for s in shapes] == [None, families.WINDOW, None, families.WINDOW]  # global every 2nd layer
    costs = {s.window: shape_flops(s, T) for s in shapes}
    if T > families.WINDOW + 1:
        assert attended_pairs(T, families.WINDOW) < T * T and costs[families.WINDOW] < costs[None]
    else:
        assert costs[families.WINDOW] == costs[None]


@pytest.mark.parametrize("case", families.CASES)
def test_a_whole_run_counts_what_torch_counts(case, tmp_path):
    """``full`` over texts in length-sorted batches on a fine-tuned model (its own classifier as the teacher):
    the engine's FLOPs equal torch's count of the whole run, embeddings to head (ModernBERT's rows are no longer
    than its window reaches, where its local and global layers cost the same)."""
    directory = families.save(tmp_path / "ft", case, fine_tuned=True)
    max_length = families.WINDOW + 1 if case == "modernbert" else 24
    model = MultiExitClassifier.from_encoder(directory, head="linear", max_length=max_length).eval()
    model.requires_grad_(False)
    encoded = model.tokenize(random_texts(20, seed=4, max_words=25))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        run = run_policy(model, encoded, "full", batch_size=8)
    assert run.flops.total == counter.get_total_flops()
    kind = model.config.head_spec(model.num_layers)[0]
    assert FlopsSpec.from_model(model).heads[model.num_layers][0] == kind
