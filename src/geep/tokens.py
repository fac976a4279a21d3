"""Token ids as the tokenizer gives them (unpadded lists per row) and padding them into tensors.

``Encoded`` is what ``MultiExitClassifier.tokenize`` returns: ``{"input_ids": [[...], ...]}`` and, for tokenizers
that make them, ``"token_type_ids"`` of the same shape. Rows are right padded with the tokenizer's pad id; the
attention mask is 1 for real tokens. Training, the exit table and the inference backends all pad through here.
:func:`unicode_problem` says whether a string is text a tokenizer can take (the API, data files and the server
check texts with it). A token task's words are tokenised here too (:func:`tokenize_words`; ``geep.data.token_data``
cuts sentences into windows with it), so the model needs no data reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from geep.errors import GeepError

Encoded = Mapping[str, Sequence[Sequence[int]]]


def token_lengths(encoded: Encoded) -> list[int]:
    """Each row's number of tokens."""
    return [len(x) for x in encoded["input_ids"]]


def pad_token_ids(input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]] | None, pad_id: int,
                  device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """input_ids, attention_mask (and token_type_ids) (B, T) for rows of token ids, right padded to the longest."""
    B = len(input_ids)
    T = max((len(x) for x in input_ids), default=0)
    out = {
        "input_ids": torch.full((B, T), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((B, T), dtype=torch.long),
    }
    if token_type_ids is not None:
        out["token_type_ids"] = torch.zeros((B, T), dtype=torch.long)
    for r, ids in enumerate(input_ids):
        n = len(ids)
        out["input_ids"][r, :n] = torch.tensor(ids, dtype=torch.long)
        out["attention_mask"][r, :n] = 1
        if token_type_ids is not None:
            out["token_type_ids"][r, :n] = torch.tensor(token_type_ids[r], dtype=torch.long)
    return {k: v.to(device) for k, v in out.items()}


def pad_batch(encoded: Encoded, rows: Sequence[int], pad_id: int, device: torch.device | str = "cpu"
              ) -> dict[str, Tensor]:
    """:func:`pad_token_ids` of the rows ``rows`` of ``encoded``."""
    types = encoded.get("token_type_ids")
    return pad_token_ids([encoded["input_ids"][i] for i in rows],
                         None if types is None else [types[i] for i in rows], pad_id, device)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, e.g. from a JSON ``"\\ud800"`` escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate {text[e.start]!r} at character {e.start}"
    return None


def check_tokenizer(tokenizer: Any) -> None:
    """GeepError unless ``tokenizer`` is fast (it gives word ids) and wraps a row in exactly one special token each
    side ([CLS] ... [SEP], <s> ... </s>): the token heads read every position but the first and the last real one."""
    if not getattr(tokenizer, "is_fast", False):
        raise GeepError("token classification needs a fast tokenizer (one that gives word ids)")
    encoding = tokenizer([["a"]], is_split_into_words=True)
    word_ids = encoding.word_ids(0)
    if len(word_ids) < 3 or word_ids[0] is not None or word_ids[-1] is not None or \
            any(w is None for w in word_ids[1:-1]):
        raise GeepError("token classification needs a tokenizer that adds one special token before a row and one "
                        f"after it; this one gives word ids {word_ids}")


def tokenize_words(tokenizer: Any, sentences: Sequence[Sequence[str]], max_length: int) -> Any:
    """The one tokenisation of word lists (rows of a token task): ``is_split_into_words``, truncated to
    ``max_length``. ``MultiExitClassifier.tokenize`` calls it for a token task's texts split on spaces."""
    return tokenizer([list(s) for s in sentences], is_split_into_words=True, truncation=True,
                     max_length=max_length)


def sentence_words(text: str) -> list[str]:
    """The words of a token row's text (what :func:`make_windows` joined), or of a raw text: split on whitespace."""
    return text.split()
