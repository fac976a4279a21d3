"""FLOPs of what actually ran: the one count calibrate, bench and predict all use.

A multiply-add counts 2 FLOPs. Only matrix products are counted (what ``torch.utils.flop_counter`` counts);
biases, layer norms, softmax, tanh, GELU, pooling sums and the embeddings' and exit table's lookups count 0
(their time is measured by the benchmark, not estimated here).

Per row, with T the padded length the row ran at, H the hidden size, I the intermediate size:

- an encoder layer: ``2T(4H^2 + 2HI) + 4T^2 H`` -- the Q, K, V and output projections (8TH^2), the two
  feed-forward matrices (4THI), and the attention scores QK^T and their product with V (2T^2H each). Each encoder
  family's adapter describes its layers by size (``geep.modeling.families.LayerShape``), and the general formula
  is, per row, ``2T(r p + o) + 2 r q P(T) + 2 r t T (2s) a`` plus, per call, ``2 r j (2s) h a``: p the per-token
  products of the layer's modules, run r times (ALBERT's inner group); o those run once outside them (a projection
  of the embeddings to the hidden size, DeBERTa-v2's convolution, both at layer 1, which only ever runs right after
  the embeddings on the same rows); q the products per attended (query, key) pair (2A, plus DeBERTa's talking heads);
  P(T) the pairs: T^2, or, in a local-attention layer of half-window w (ModernBERT's sliding layers), the pairs
  with |i - j| <= w: ``T(2w + 1) - w(w + 1)`` (what the attention needs; on the CPU, SDPA also computes the masked
  scores, which ``FlopCounterMode`` counts); DeBERTa's t relative terms (c2p, p2c) each multiply every token with
  2s relative embeddings of width a, and j projections map those rows once per call (h -> a);
- an ``attention`` exit head of width w over C classes (see ``geep.heads.AttentionHead``), with Tq = 1 for
  ``first`` pooling (only the first query is computed) and Tq = T for ``mean`` pooling:
  ``2THw`` (projection) ``+ 2Tq w^2 + 4T w^2`` (query; key and value) ``+ 4 Tq T w`` (scores, weighted values)
  ``+ 2Tq w^2`` (attention output) ``+ 2w^2 + 2wC`` (dense, classifier);
- a ``linear`` exit head (``geep.heads.LinearHead``): ``2H^2 + 2HC`` (dense, classifier), independent of T
  (its pooling is a pick or a masked mean, elementwise); a ``classifier`` head (a fine-tuned model's own, run by its
  family's modules) reads one pooled vector per row: 2 x the in x out of each of its Linears;
- a token task's heads (``geep.heads.TokenHead``) classify every position of the padded row: ``linear`` ``2THC``,
  ``attention`` ``2THw + 6Tw^2 + 4T^2 w + 4Tw^2 + 2TwC`` (:func:`token_head_flops`), C its tags;
- C is the task's outputs (classes, labels, or 1 for a score); a model with an exit module (``LearnedExit``: one
  Linear H -> 1 on the pooled h_k) adds ``2H`` per head call.

With token halting (HashEE, ``geep.runtime.token_halting``), layer k of a row with n valid tokens of which a are
still active costs ``2(a (p - v) + n v) + 2 q a n``: the query, attention-output and feed-forward products for the
active tokens only, the keys and values (v, ``LayerShape.kv_products``) for every valid token (halted ones are still
read), and a x n attended pairs; a row with no active token costs nothing. So each token is counted for its own
layers. At a = n it is the layer's formula at T = n.

A :class:`FlopsCount` records every call the executor made -- ``(layer, rows, T)`` for layers and
``(exit, rows, T)`` for heads -- and turns the record into FLOPs with the formulas above, so the count is
exact integer arithmetic and tests can compare the record itself with what forward hooks saw. The executor
counts each step the scheduler plans, so a run on recorded logits (``geep.runtime.replay``) counts exactly what
the same run on the model counts; nothing else computes FLOPs from row lengths. A cascade's spec is its members'
in sequence (:meth:`FlopsSpec.concatenate`): member m's layer k is the cascade's layer o_m + k, each head counted at
its own member's width, so the count holds every member that ran (embedding a row afresh in the next member is a
lookup, 0; ALBERT's projection of the embeddings is its member's layer 1's ``once_products``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from geep.modeling.cascade import Cascade
from geep.modeling.families import LayerShape
from geep.modeling.model import MultiExitClassifier


def layer_flops(T: int, hidden: int, intermediate: int) -> int:
    """FLOPs of one encoder layer on one row of padded length T."""
    H, I = hidden, intermediate
    return 2 * T * (4 * H * H + 2 * H * I) + 4 * T * T * H


def attended_pairs(T: int, window: int | None) -> int:
    """(query, key) pairs a row of padded length T attends: all T^2, or those with |i - j| <= window."""
    if window is None or window >= T - 1:
        return T * T
    return T * (2 * window + 1) - window * (window + 1)  # every query sees 2w + 1 keys, less those past either end


def relative_span(shape: LayerShape, T: int) -> int:
    """s: DeBERTa's attention span at padded length T (2s relative embeddings are read)."""
    return min(T, shape.relative_span) if shape.span_follows_length else shape.relative_span


def shape_flops(shape: LayerShape, T: int) -> int:
    """FLOPs of one layer of this shape on one row of padded length T (the per-row part)."""
    r = shape.repeats
    flops = 2 * T * (r * shape.token_products + shape.once_products)
    flops += 2 * r * shape.pair_products * attended_pairs(T, shape.window)
    flops += 2 * r * shape.relative_terms * T * 2 * relative_span(shape, T) * shape.relative_width
    return flops


def shape_call_flops(shape: LayerShape, T: int) -> int:
    """FLOPs one call of a layer of this shape costs whatever its rows: DeBERTa's projections of the relative
    embeddings."""
    return (2 * shape.repeats * shape.relative_projections * 2 * relative_span(shape, T) * shape.relative_hidden
            * shape.relative_width)


def attention_head_flops(T: int, hidden: int, width: int, num_labels: int, pooling: str) -> int:
    """FLOPs of one ``attention`` exit head call on one row of padded length T."""
    H, w, C = hidden, width, num_labels
    Tq = 1 if pooling == "first" else T
    return (2 * T * H * w  # proj
            + 2 * Tq * w * w + 4 * T * w * w  # query; key, value
            + 4 * Tq * T * w  # q k^T and att v, summed over the heads
            + 2 * Tq * w * w  # attn_out
            + 2 * w * w + 2 * w * C)  # dense, classifier


def linear_head_flops(hidden: int, num_labels: int) -> int:
    """FLOPs of one ``linear`` exit head call on one row (any length: pooling is elementwise)."""
    return 2 * hidden * hidden + 2 * hidden * num_labels


def token_head_flops(kind: str, T: int, hidden: int, width: int, num_tags: int) -> int:
    """FLOPs of one token exit head call (``geep.heads.TokenHead``) on one row of padded length T: its classifier
    runs at every position. ``linear``: ``2 T H C``; ``attention``: FastBERT's mini-classifier with every position a
    query, and its dense and classifier at every position."""
    H, w, C = hidden, width, num_tags
    if kind == "linear":
        return 2 * T * H * C
    return (2 * T * H * w  # proj
            + 6 * T * w * w  # query, key, value
            + 4 * T * T * w  # q k^T and att v, summed over the heads
            + 2 * T * w * w  # attn_out
            + 2 * T * w * w + 2 * T * w * C)  # dense, classifier at every position


@dataclass(frozen=True)
class FlopsSpec:
    """The sizes the formulas need: hidden H, intermediate I, classes C, each exit's head, and each layer's shape
    (``shapes[k - 1]``; none: every layer is BERT-shaped of sizes H and I)."""

    hidden: int
    intermediate: int
    num_labels: int  # the task's outputs per head (C, or 1 for a score)
    heads: dict[int, tuple[str, str, int]]  # exit k -> (kind, pooling, width)
    shapes: tuple[LayerShape, ...] = ()
    head_products: dict[int, int] = field(default_factory=dict)  # exit k -> multiply-adds per row of a classifier
    head_hidden: dict[int, int] = field(default_factory=dict)  # exit k -> the width its head reads (default hidden)
    signals: int = 0  # the exit module's outputs per head call (a Linear H -> 1 each)
    trust_points: int = 0  # the trust-score points each row is compared with per head call (3H each)
    token_tags: int = 0  # a token task's C: its heads classify every position (``token_head_flops``)

    @classmethod
    def from_model(cls, model: MultiExitClassifier | Cascade) -> "FlopsSpec":
        """The sizes of ``model``; a cascade's are its members' in sequence (:meth:`concatenate`)."""
        if isinstance(model, Cascade):
            return cls.concatenate([cls.from_model(m) for m in model.members], model.offsets)
        hf = model.backbone.config
        heads = {k: (*model.config.head_spec(k), model.config.head_width) for k in model.exit_layers}
        products = {k: sum(m.in_features * m.out_features for m in model.heads[str(k)].modules()
                           if isinstance(m, nn.Linear))
                    for k, (kind, _, _) in heads.items() if kind == "classifier"}
        token = model.config.task == "token-classification"
        return cls(hf.hidden_size, getattr(hf, "intermediate_size", 0), model.config.num_outputs, heads,
                   tuple(model.backbone.layer_shapes()), products, signals=model.config.num_signals,
                   trust_points=0 if getattr(model, "trust_sets", None) is None else model.trust_sets.num_points,
                   token_tags=model.config.num_labels if token else 0)

    @classmethod
    def concatenate(cls, specs: "list[FlopsSpec]", offsets: list[int]) -> "FlopsSpec":
        """One spec for models run in sequence (a cascade): model m's layer k and exit k are layer and exit
        ``offsets[m] + k``; each exit's head keeps its own model's width. Every spec must list its layers' shapes."""
        shapes, heads, products, widths = [], {}, {}, {}
        for spec, offset in zip(specs, offsets):
            if len(shapes) != offset or not spec.shapes:
                raise ValueError("concatenated FLOPs specs need every layer's shape, in order")
            shapes += list(spec.shapes)
            heads.update({offset + k: head for k, head in spec.heads.items()})
            products.update({offset + k: n for k, n in spec.head_products.items()})
            widths.update({offset + k: spec.head_hidden.get(k, spec.hidden) for k in spec.heads})
        first = specs[0]
        return cls(first.hidden, first.intermediate, first.num_labels, heads, tuple(shapes), products, widths,
                   signals=first.signals, token_tags=first.token_tags)

    def layer(self, T: int, k: int | None = None) -> int:
        """FLOPs of layer k (default: the last) on one row at padded length T."""
        if not self.shapes:
            return layer_flops(T, self.hidden, self.intermediate)
        return shape_flops(self.shapes[-1 if k is None else k - 1], T)

    def halting_layer(self, k: int, active: int, valid: int) -> int:
        """FLOPs of layer k on one row with ``valid`` tokens of which ``active`` run it (token halting)."""
        shape = self.shapes[k - 1] if self.shapes else None
        if shape is None or shape.kv_products <= 0 or shape.repeats != 1 or shape.window is not None \
                or shape.relative_terms or shape.once_products:
            raise ValueError(f"no token-halting FLOPs formula for layer {k} of this model")
        if active == 0:
            return 0
        p, v, q = shape.token_products, shape.kv_products, shape.pair_products
        return 2 * (active * (p - v) + valid * v) + 2 * q * active * valid

    def layer_call(self, T: int, k: int) -> int:
        """FLOPs one call of layer k at padded length T costs besides its rows' (0 but for DeBERTa)."""
        return shape_call_flops(self.shapes[k - 1], T) if self.shapes else 0

    def head(self, k: int, T: int) -> int:
        """FLOPs of exit k's head on one row at padded length T."""
        kind, pooling, width = self.heads[k]
        hidden = self.head_hidden.get(k, self.hidden)
        module = 2 * hidden * self.signals  # the exit module's Linear H -> S on the pooled h_k
        module += 3 * hidden * self.trust_points  # each trust-score point: a difference, a square and a sum per dim
        if self.token_tags and kind in ("attention", "linear"):
            return token_head_flops(kind, T, hidden, width, self.token_tags)
        if kind == "attention":
            return attention_head_flops(T, hidden, width, self.num_labels, pooling) + module
        if kind == "linear":
            return linear_head_flops(hidden, self.num_labels) + module
        if kind == "classifier":
            return 2 * self.head_products[k] + module
        raise ValueError(f"no FLOPs formula for head kind {kind!r}")


@dataclass
class FlopsCount:
    """What ran, call by call: ``layer_calls[(k, rows, T)]`` and ``head_calls[(k, rows, T)]`` count the calls of
    layer k (or exit k's head) on ``rows`` rows padded to T. ``total`` etc. apply the formulas."""

    spec: FlopsSpec
    layer_calls: Counter = field(default_factory=Counter)
    head_calls: Counter = field(default_factory=Counter)
    token_calls: Counter = field(default_factory=Counter)  # (k, active, valid) -> rows: token-halting layers

    def add_token_layers(self, after: int, to_layer: int, token_layers: Tensor) -> None:
        """Layers after+1 .. to_layer under token halting: token_layers (B, T) is each token's last layer (0 at
        padding); at layer k a row's active tokens are those with a layer >= k, its valid ones those > 0."""
        if to_layer <= after or token_layers.shape[0] == 0:
            return
        valid = (token_layers > 0).sum(1)  # (B,)
        ks = torch.arange(after + 1, to_layer + 1, device=token_layers.device)  # (S,)
        active = (token_layers[None] >= ks[:, None, None]).sum(2)  # (S, B)
        for k, row_active in zip(ks.tolist(), active.tolist()):
            for a, n in zip(row_active, valid.tolist()):
                if a:
                    self.token_calls[(k, a, n)] += 1

    def add_layer(self, k: int, rows: int, T: int) -> None:
        if rows:
            self.layer_calls[(k, rows, T)] += 1

    def add_layers(self, after: int, to_layer: int, rows: int, T: int) -> None:
        """Layers after+1 .. to_layer, each on ``rows`` rows at T."""
        for k in range(after + 1, to_layer + 1):
            self.add_layer(k, rows, T)

    def add_head(self, k: int, rows: int, T: int) -> None:
        if rows:
            self.head_calls[(k, rows, T)] += 1

    @property
    def layers(self) -> int:
        """FLOPs of the encoder layers."""
        return sum(n * (rows * self.spec.layer(T, k) + self.spec.layer_call(T, k))
                   for (k, rows, T), n in self.layer_calls.items()) + \
            sum(rows * self.spec.halting_layer(k, a, n) for (k, a, n), rows in self.token_calls.items())

    @property
    def heads(self) -> int:
        """FLOPs of the exit heads."""
        return sum(n * rows * self.spec.head(k, T) for (k, rows, T), n in self.head_calls.items())

    @property
    def total(self) -> int:
        return self.layers + self.heads
