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

(a row with no active token computes nothing, not even its keys and values.)

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

from geep.errors import GeepError
from geep.modeling.backbone import Backbone, State
from geep.modeling.families import Family
from geep.modeling.model import MultiExitClassifier, MultiExitOutput


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
    counts = active.sum(1)  # (B,): queries a of each row
    valid = valid & (counts > 0)[:, None]  # a row with no active token computes nothing, not even keys
    lengths = valid.sum(1)  # (B,): keys n of each row

    x = hidden[active]  # (N, H): active tokens, row after row
    memory = hidden[valid]  # (M, H): every valid token's current state (of rows that run)
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


def check_halting(model: MultiExitClassifier) -> None:
    """GeepError (one line) unless ``model`` can halt tokens: it has a token hash and its family's layers split into
    the submodules the step calls."""
    if model.token_hash is None:
        raise GeepError("this model has no token hash, which token halting (the hashee policy) reads; train one with "
                        "`geep train --objective hashee`")
    backbone = model.backbone
    backbone.family.halting_modules(backbone.layers[0])


def halting_state(model: MultiExitClassifier, state: State, input_ids: Tensor) -> State:
    """``state`` (fresh rows at h_0) with each token's layer from the model's token hash: its tokens then halt."""
    check_halting(model)
    if state.layer != 0:
        raise ValueError("token layers are attached to fresh rows, at h_0")
    token_layers = model.token_hash.token_layers(input_ids, state.attention_mask)  # (B, T)
    return State(state.hidden, state.attention_mask, state.mask, state.row_ids, 0, state.extras, token_layers)


def run_halting_layers(backbone: Backbone, hidden: Tensor, attention_mask: Tensor, token_layers: Tensor,
                       start: int, end: int) -> Tensor:
    """Layers start+1 .. end with token halting: at layer k the tokens whose layer is >= k run it, the others keep
    their state. hidden (B, T, H), attention_mask (B, T), token_layers (B, T) -> hidden (B, T, H)."""
    family, layers = backbone.family, backbone.layers
    for k in range(start + 1, end + 1):
        hidden = halting_layer_step(family, layers[k - 1], hidden, attention_mask, token_layers >= k)
    return hidden


def run_state(backbone: Backbone, state: State, to_layer: int) -> State:
    """A state whose tokens halt (``state.token_layers``), run to ``to_layer``."""
    if not state.layer <= to_layer <= backbone.num_layers:
        raise ValueError(f"cannot run from layer {state.layer} to {to_layer} (L = {backbone.num_layers})")
    hidden = run_halting_layers(backbone, state.hidden, state.attention_mask, state.token_layers, state.layer,
                                to_layer)
    return State(hidden, state.attention_mask, state.mask, state.row_ids, to_layer, state.extras, state.token_layers)


def halting_forward(model: MultiExitClassifier, input_ids: Tensor, attention_mask: Tensor,
                    token_type_ids: Tensor | None = None) -> MultiExitOutput:
    """Every exit's outputs for a batch (B, T) with tokens halting at their hashed layers (HashEE's training and
    evaluation forward; differentiable): exit_logits (|E|, B, K) read from the halted h_k at each exit k."""
    check_halting(model)
    backbone = model.backbone
    state = model.embed(input_ids, attention_mask, token_type_ids)
    token_layers = model.token_hash.token_layers(input_ids, attention_mask)  # (B, T)
    hidden, exits, done = state.hidden, [], 0
    for k in model.exit_layers:
        hidden = run_halting_layers(backbone, hidden, attention_mask, token_layers, done, k)
        done = k
        exits.append(model.heads[str(k)](backbone.output(hidden), attention_mask))
    return MultiExitOutput(torch.stack(exits))  # (|E|, B, K)
