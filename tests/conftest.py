"""Tiny random models and tokenizers built in the tests: no network, seconds each."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Iterable

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from geep.config import GeepConfig
from geep.model import MultiExitClassifier

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["good", "bad", "great", "awful", "fine", "movie", "film", "plot", "the", "a", "is", "was", "very",
         "not", "and", "but", "marker", "sport", "match", "team", "vote", "party", "market", "stock"]
WORDS += [f"w{i}" for i in range(99 - len(SPECIALS) - len(WORDS))]  # vocab of 99, as HF's tiny tests use


def tiny_bert_config(num_layers: int = 4, **overrides) -> BertConfig:
    kwargs = dict(vocab_size=99, hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
                  intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1)
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def write_vocab(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + WORDS) + "\n")
    return vocab


def tiny_tokenizer(directory: Path) -> BertTokenizer:
    return BertTokenizer(vocab=str(write_vocab(directory)), do_lower_case=True)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny matrices: threads only contend (on a shared 2-core machine, up to 25x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A saved tiny random BertModel + tokenizer directory (4 layers, hidden 32)."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


@pytest.fixture
def make_model(tmp_path):
    """Builds a tiny MultiExitClassifier in eval mode: make_model(head=..., pooling=..., exit_layers=...)."""

    def make(num_layers: int = 4, num_labels: int = 3, seed: int = 0, **config_kwargs) -> MultiExitClassifier:
        torch.manual_seed(seed)
        encoder = BertModel(tiny_bert_config(num_layers))
        config = GeepConfig(num_layers=num_layers, label_names=[f"c{i}" for i in range(num_labels)],
                            **config_kwargs)
        model = MultiExitClassifier(encoder, config, tiny_tokenizer(tmp_path / f"tok{seed}"))
        return model.eval()

    return make


def random_batch(batch_size: int = 5, seq_len: int = 9, vocab_size: int = 99, seed: int = 0) -> dict:
    """Random token ids with right padding of varying lengths (row 0 is never padded)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    lengths = torch.randint(2, seq_len + 1, (batch_size,), generator=g)
    lengths[0] = seq_len
    mask = (torch.arange(seq_len)[None] < lengths[:, None]).long()
    ids[:, 0] = 2  # [CLS]
    ids = ids * mask  # [PAD] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def random_texts(n: int, seed: int = 0, min_words: int = 1, max_words: int = 30) -> list[str]:
    """n texts of random vocabulary words, of varied lengths (0 words allowed with min_words=0)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
