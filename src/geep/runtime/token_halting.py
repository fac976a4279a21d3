"""Token halting: one encoder layer that computes only the tokens still active.

A halted token keeps its last hidden state (it is copied forward) and is still read by the others as a key and a
value; an active token is a query and runs the whole layer. This is the layer step of HashEE (Sun et al., "A Simple
Hash-Based Early Exiting Approach For Language Understanding and Generation", Findings of ACL 2022, Sec. 3: "the
hidden state of an exited token is copied to the upper layers" and attended to by the tokens still running) and of
per-token exits in token classification.

For layer l with states h (B, T, H), valid tokens V (the padding mask) and active tokens S ⊆ V:

    K = W_K h_V,  V = W_V h_V                        (every valid token: halted ones as they were copied)
    Q = W_Q h_S                                      (active tokens only)
    a = LN(h_S + W_O Attn(Q, K, V))                  (each row's queries over that row's keys)
    h'_S = LN(a + FFN(a)),  h'_{V \\ S} = h_{V \\ S}  (halted and padded positions returned unchanged)

The active tokens of all rows are packed into one (N, H) matrix (gathered, not masked: the query, attention-output and
feed-forward products really shrink with N), the valid tokens into one (M, H) matrix for the keys and values. Each
row then attends with its own a queries over its own n keys: rows are grouped by (n, a) and each group runs
transformers' own SDPA attention (``sdpa_attention_forward``) on (a, n) without a mask, so a row's attention has the
same shape, kernel and bits whatever its batch-mates (as ``geep.runtime.exact_attention`` does for whole rows; this
keeps int8's per-token Linears, ``geep.runtime.int8``, batch invariant too).

Every product is the layer's own module (its query, key and value Linears, its attention output's dense and
LayerNorm, its intermediate and output), found by the family's adapter (``Family.halting_modules``; BERT-shaped
families, others refuse in one line). Nothing is copied from a modelling file. Dropout follows the modules' own
training mode, and the step is differentiable: HashEE trains through it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from geep.modeling.families import Family


def halting_layer_step(family: Family, layer: nn.Module, hidden: Tensor, attention_mask: Tensor,
                       active: Tensor) -> Tensor:
    """One encoder layer on the active tokens only (see the module docstring).

    family: the encoder's adapter; layer: the layer module (``family.layers(encoder)[k - 1]``, possibly int8);
    hidden (B, T, H); attention_mask (B, T) valid tokens (bool or 0/1); active (B, T) bool, tokens that run this
    layer (active padding is ignored) -> hidden (B, T, H): active tokens' new states, every other position unchanged.
    """
    modules = family.halting_modules(layer)
    B, T, H = hidden.shape
    valid = attention_mask.bool()
    active = active.bool() & valid
    if not bool(active.any()):
        return hidden
    attention = modules.attention
    heads, d = attention.num_attention_heads, attention.attention_head_size
    lengths, counts = valid.sum(1), active.sum(1)  # (B,): keys n and queries a of each row

    x = hidden[active]  # (N, H): active tokens, row after row
    memory = hidden[valid]  # (M, H): every valid token's current state
    q = attention.query(x).view(-1, heads, d)  # (N, h, d)
    k = attention.key(memory).view(-1, heads, d)  # (M, h, d)
    v = attention.value(memory).view(-1, heads, d)  # (M, h, d)

    q_start, kv_start = counts.cumsum(0) - counts, lengths.cumsum(0) - lengths  # (B,) offsets into the packs
    dropout = attention.dropout.p if attention.training else 0.0
    pieces, places = [], []
    for n, a in torch.stack([lengths, counts], 1).unique(dim=0).tolist():
        if a == 0:
            continue
        rows = ((lengths == n) & (counts == a)).nonzero().squeeze(1)  # (b,)
        q_idx = q_start[rows, None] + torch.arange(a, device=hidden.device)  # (b, a)
        kv_idx = kv_start[rows, None] + torch.arange(n, device=hidden.device)  # (b, n)
        out, _ = sdpa_attention_forward(attention, q[q_idx].transpose(1, 2), k[kv_idx].transpose(1, 2),
                                        v[kv_idx].transpose(1, 2), None, dropout=dropout,
                                        scaling=attention.scaling, is_causal=False)  # (b, a, h, d)
        pieces.append(out.reshape(-1, heads * d))  # (b a, A)
        places.append(q_idx.reshape(-1))
    context = torch.cat(pieces)[torch.cat(places).argsort()]  # (N, A), back in packed order

    attended = modules.attention_output(context, x)  # (N, H): dense, dropout, LayerNorm(+ x)
    new = modules.output(modules.intermediate(attended), attended)  # (N, H): feed-forward, LayerNorm(+ attended)
    out = hidden.clone()
    out[active] = new.to(hidden.dtype)
    return out
