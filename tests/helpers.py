"""Shared test helpers: tiny random models and tokenizers built in the tests (no network), random texts."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Iterable

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

from geep.inference import all_exit_logits

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


def make_decisive(model, texts):
    """Rescales every exit's classifier so its logits over ``texts`` are centred with std 2: a random tiny model's
    exits are near uniform, and this spreads entropies and predictions so rows really exit at different layers."""
    logits = all_exit_logits(model, texts, batch_size=16).logits
    with torch.no_grad():
        for i, k in enumerate(model.exit_layers):
            mean = logits[:, i].mean(0)  # (C,)
            scale = 2.0 / (logits[:, i] - mean).std()
            head = model.heads[str(k)]
            head.classifier.weight.mul_(scale)
            head.classifier.bias.sub_(mean).mul_(scale)
    return model


FILLER = ["the", "movie", "film", "plot", "a", "is", "was", "very", "and"]


def save_tiny_encoder(directory: Path, fine_tuned: bool = False, labels: tuple[str, ...] = ("bad", "good")) -> Path:
    """A tiny random BertModel (or BertForSequenceClassification) + tokenizer directory."""
    torch.manual_seed(0)
    if fine_tuned:
        config = tiny_bert_config(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                  label2id={name: i for i, name in enumerate(labels)})
        BertForSequenceClassification(config).save_pretrained(directory)
    else:
        BertModel(tiny_bert_config()).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def synthetic(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Texts of filler words plus one 'good' or 'bad' token; the label is that token."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.choice(["bad", "good"])
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), label)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def replay_exits(policy, exit_logits: torch.Tensor, knob, labels: torch.Tensor | None = None,
                 batch_size: int | None = None) -> torch.Tensor:
    """Each row's exit index into E (N,) when ``policy`` at ``knob`` decides on recorded logits (N, E, C), every
    layer an exit: the one scheduler and executor run on the replay backend (rows of one token each)."""
    from geep.runtime.replay import ReplayBackend

    N, E, _ = exit_logits.shape
    backend = ReplayBackend(exit_logits, list(range(1, E + 1)), E)
    encoded = {"input_ids": [[0]] * N}
    _, layers = run_offline(backend, policy, knob, encoded, batch_size=batch_size or max(N, 1), labels=labels)
    return layers - 1


def run_offline(backend, policy, knob, encoded, *, batch_size: int, schedule: str | None = None, order=None,
                predicted=None, labels=None, flops=None, on_head=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``geep.inference.offline.run_rows`` on ``backend`` under a RunSpec made here from ``policy`` (a name or a
    Policy) and an already resolved ``knob``: (probabilities (N, C), exit layers (N,))."""
    from geep.inference.offline import run_rows
    from geep.inference.rows import Prepared
    from geep.inference.spec import RunSpec
    from geep.policies import get_policy

    policy = get_policy(policy)
    spec = RunSpec(policy, knob, "fp32", schedule or policy.schedule, backend.device, batch_size)
    answered = run_rows(backend, spec, Prepared(encoded, None if predicted is None else list(predicted)),
                        order=order, labels=labels, flops=flops, on_head=on_head)
    return answered.probabilities, answered.exit_layer


def sentence_transformers_files(directory: Path, modes: dict[str, bool], max_seq_length: int | None = None,
                                module_dir: str = "1_Pooling") -> None:
    """modules.json + a pooling config, as a sentence-transformers export writes them."""
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": module_dir, "type": "sentence_transformers.models.Pooling"}]))
    (directory / module_dir).mkdir()
    (directory / module_dir / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, **{f"pooling_mode_{k}": v for k, v in modes.items()}}))
    if max_seq_length is not None:
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))


def kill_group(pgid: int) -> None:
    """SIGKILL to every process left in process group ``pgid`` (none left: nothing happens)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """The rest of a killed process's output (bounded: a process outside its group may hold the pipes open)."""
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "", ""


def run_in_group(argv: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``argv`` in a process group of its own (a new session), its output captured as text, for at most
    ``timeout`` seconds. Whatever ends the wait -- the command's exit, the timeout, pytest-timeout, Ctrl-C -- the whole
    group is killed after it, so nothing the command started (make's children, their children) outlives the test.
    On the timeout: subprocess.TimeoutExpired, carrying the output read so far."""
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = _drain(proc)
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
    except BaseException:
        kill_group(proc.pid)
        _drain(proc)
        raise
    finally:
        kill_group(proc.pid)  # what is left of the group after its leader returned
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def tiny_member(directory: Path, num_layers: int, exit_layers: list[int], seed: int, texts: list[str],
                labels: tuple[str, ...] = ("c0", "c1", "c2"), head: str = "attention", **config):
    """A decisive tiny geep model (``make_decisive`` over ``texts``) saved in ``directory`` with the tests'
    tokenizer: a cascade member. Returns the model."""
    from geep.modeling.config import GeepConfig
    from geep.modeling.model import MultiExitClassifier

    torch.manual_seed(seed)
    config.setdefault("max_length", 24)
    model = MultiExitClassifier(BertModel(tiny_bert_config(num_layers)),
                                GeepConfig(num_layers=num_layers, label_names=list(labels), exit_layers=exit_layers,
                                           head=head, **config),
                                tiny_tokenizer(directory.parent / f"{directory.name}-tok")).eval()
    make_decisive(model, texts)
    model.save_pretrained(directory)
    return model


def widest_gap(scores: torch.Tensor) -> float:
    """A threshold in the middle of the widest gap of the middle third of ``scores``: no score lies within float
    noise of it, and about as many fall on each side."""
    s = sorted(scores.flatten().tolist())
    i = max(range(len(s) // 3, 2 * len(s) // 3), key=lambda j: s[j + 1] - s[j])
    assert s[i + 1] - s[i] > 1e-4, "no clear gap between the scores"
    return (s[i] + s[i + 1]) / 2
