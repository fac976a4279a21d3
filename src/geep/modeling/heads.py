"""Exit heads: the small classifiers that read h_k at exit k.

Two kinds, looked up by name in :data:`HEADS`:

- ``attention``: FastBERT's mini-classifier. Linear H->w + tanh, a 2-head self-attention of width w over all
  tokens that respects the padding mask, pooling, Linear w->w + tanh, Linear w->C (w = 128).
- ``linear``: a pooler as in DeeBERT and PABEE (and BERT's own classifier): dense H->H + tanh, dropout,
  Linear H->C. With ``first`` pooling it has exactly the shape of ``BertPooler`` + the classifier of
  ``BertForSequenceClassification``, so a fine-tuned classifier can become the teacher.

Pooling is ``first`` (the first token, as in the papers) or ``mean`` (over non-padded tokens, what
sentence-embedding backbones such as MiniLM were trained for).

A fine-tuned classifier whose head has another shape (ELECTRA's GELU head, DistilBERT's, DeBERTa's ``ContextPooler``,
ModernBERT's) becomes the teacher as a ``classifier`` head: its family's adapter builds it from transformers' own
modules (``geep.modeling.families``), and it reads h_L (B, T, H) and the padding mask (B, T) as these heads do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geep.errors import GeepError


def mean_pool(x: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of x (B, T, D) over the tokens where attention_mask (B, T) is 1 -> (B, D)."""
    weights = attention_mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class AttentionHead(nn.Module):
    """FastBERT's mini-classifier (see the module docstring)."""

    def __init__(self, hidden_size: int, num_labels: int, pooling: str = "first", width: int = 128,
                 num_heads: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.pooling, self.num_heads = pooling, num_heads
        self.proj = nn.Linear(hidden_size, width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attn_out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(width, width)
        self.classifier = nn.Linear(width, num_labels)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """hidden (B, T, H), attention_mask (B, T) -> logits (B, C)."""
        B, T, _ = hidden.shape
        nh = self.num_heads
        x = torch.tanh(self.proj(hidden))  # (B, T, w)
        # With first-token pooling only the first query's output is ever read: attend for it alone.
        queries = x[:, :1] if self.pooling == "first" else x  # (B, Tq, w)
        q = self.query(queries).view(B, queries.shape[1], nh, -1).transpose(1, 2)  # (B, nh, Tq, hs)
        k = self.key(x).view(B, T, nh, -1).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, -1).transpose(1, 2)  # (B, nh, T, hs)
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): padded keys are never attended
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=self.dropout.p if self.training else 0.0)
        att = att.transpose(1, 2).reshape(B, queries.shape[1], -1)  # (B, Tq, w)
        att = self.attn_out(att)
        pooled = att[:, 0] if self.pooling == "first" else mean_pool(att, attention_mask)  # (B, w)
        return self.classifier(torch.tanh(self.dense(self.dropout(pooled))))


class LinearHead(nn.Module):
    """A pooler + linear classifier (DeeBERT, PABEE; BERT's own classifier with first pooling)."""

    def __init__(self, hidden_size: int, num_labels: int, pooling: str = "first", dropout: float = 0.1,
                 **_: object) -> None:
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """hidden (B, T, H), attention_mask (B, T) -> logits (B, C)."""
        pooled = hidden[:, 0] if self.pooling == "first" else mean_pool(hidden, attention_mask)  # (B, H)
        return self.classifier(self.dropout(torch.tanh(self.dense(pooled))))


class TokenHead(nn.Module):
    """A token classifier's exit head: C tag logits at every position (Li et al., ACL 2021, put one per layer).

    ``linear``: dropout + Linear H->C per token, the head of transformers' ``BertForTokenClassification``.
    ``attention``: FastBERT's mini-classifier without its pooling: Linear H->w + tanh, a 2-head self-attention of
    width w over the row's tokens (padding never attended), Linear w->w + tanh, Linear w->C at every position.

    Its output is the fixed-width layout of ``geep.tasks.token_classification``: per position of M (the model's
    max_length) the C logits and a flag that is 1 at the row's real tokens but its first and last (the special
    tokens the tokenizer adds, ``geep.data.token_data.check_tokenizer``), 0 elsewhere and at padding, flattened to
    (B, M (C + 1)). A position's logits depend only on its own row, so a row's outputs are the same in any batch.
    """

    def __init__(self, kind: str, hidden_size: int, num_labels: int, positions: int, width: int = 128,
                 num_heads: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.kind, self.positions, self.num_heads = kind, positions, num_heads
        self.dropout = nn.Dropout(dropout)
        if kind == "attention":
            self.proj = nn.Linear(hidden_size, width)
            self.query = nn.Linear(width, width)
            self.key = nn.Linear(width, width)
            self.value = nn.Linear(width, width)
            self.attn_out = nn.Linear(width, width)
            self.dense = nn.Linear(width, width)
            self.classifier = nn.Linear(width, num_labels)
        else:
            self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """hidden (B, T, H), attention_mask (B, T) -> outputs (B, M (C + 1)), T <= M."""
        B, T, _ = hidden.shape
        if T > self.positions:
            raise ValueError(f"a row of {T} tokens, more than the head's {self.positions} positions")
        if self.kind == "attention":
            nh = self.num_heads
            x = torch.tanh(self.proj(hidden))  # (B, T, w)
            q, k, v = (f(x).view(B, T, nh, -1).transpose(1, 2) for f in (self.query, self.key, self.value))
            keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                 dropout_p=self.dropout.p if self.training else 0.0)
            att = self.attn_out(att.transpose(1, 2).reshape(B, T, -1))  # (B, T, w)
            logits = self.classifier(torch.tanh(self.dense(self.dropout(att))))  # (B, T, C)
        else:
            logits = self.classifier(self.dropout(hidden))  # (B, T, C)
        real = attention_mask.bool()  # (B, T)
        length = real.sum(1)  # (B,)
        position = torch.arange(T, device=hidden.device)[None, :]  # (1, T)
        flag = real & (position > 0) & (position < (length - 1)[:, None])  # (B, T): no special token, no padding
        logits = logits * flag[..., None].to(logits.dtype)  # 0 at padding and specials: nothing reads them
        out = torch.cat([logits, flag[..., None].to(logits.dtype)], -1)  # (B, T, C + 1)
        out = F.pad(out, (0, 0, 0, self.positions - T))  # (B, M, C + 1)
        return out.reshape(B, -1)


HEADS: dict[str, type[nn.Module]] = {"attention": AttentionHead, "linear": LinearHead}


def build_head(kind: str, hidden_size: int, num_labels: int, pooling: str, width: int = 128,
               dropout: float = 0.1, positions: int | None = None) -> nn.Module:
    """A fresh head of the named kind; with ``positions`` (a token task's M), its :class:`TokenHead`."""
    if kind not in HEADS:
        raise GeepError(f"unknown head {kind!r}; choose one of: {', '.join(HEADS)}")
    if positions is not None:
        return TokenHead(kind, hidden_size, num_labels, positions, width=width, dropout=dropout)
    if kind == "attention":
        return AttentionHead(hidden_size, num_labels, pooling=pooling, width=width, dropout=dropout)
    return LinearHead(hidden_size, num_labels, pooling=pooling, dropout=dropout)


class LearnedExit(nn.Module):
    """BERxiT's learning-to-exit module (Xin et al., EACL 2021): ONE module shared by every exit that
    reads h_k (pooled) and predicts how likely exit k is already right, u_k = sigmoid(c^T h_k + b). It returns the
    logit c^T h_k + b; a policy applies the sigmoid (``geep.policies.lte``)."""

    def __init__(self, hidden_size: int, pooling: str = "first") -> None:
        super().__init__()
        self.pooling = pooling
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, hidden: Tensor, attention_mask: Tensor, k: int | None = None) -> Tensor:
        """hidden (B, T, H), attention_mask (B, T) -> logits (B, 1); one module for every exit (``k`` unused)."""
        pooled = hidden[:, 0] if self.pooling == "first" else mean_pool(hidden, attention_mask)  # (B, H)
        return self.linear(pooled)


class HaltingHeads(nn.Module):
    """Learned halting (ACT, Graves 2016; PonderNet, Banino et al. 2021): a halting head per exit k, a Linear on the
    pooled h_k giving the logit s_k of lambda_k = sigmoid(s_k), the probability of halting at exit k given that no
    earlier exit halted (``geep.modeling.losses.ponder``, policy ``geep.policies.ponder``)."""

    def __init__(self, hidden_size: int, exit_layers: list[int], pooling: str = "first") -> None:
        super().__init__()
        self.pooling = pooling
        self.heads = nn.ModuleDict({str(k): nn.Linear(hidden_size, 1) for k in exit_layers})

    def forward(self, hidden: Tensor, attention_mask: Tensor, k: int) -> Tensor:
        """hidden (B, T, H), attention_mask (B, T) at exit ``k`` -> logits (B, 1)."""
        pooled = hidden[:, 0] if self.pooling == "first" else mean_pool(hidden, attention_mask)  # (B, H)
        return self.heads[str(k)](pooled)
