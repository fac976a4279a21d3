"""Chinese text end to end (GEEP's paper evaluates Chinese sets): a tiny Chinese WordPiece vocabulary built here,
a tiny random encoder on it; `geep train`, `geep build-table` (its keys are characters: BertTokenizer splits CJK
text into single characters) and `geep predict`, and every row's label and exit layer are the same alone or in
any batch."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from transformers import BertModel, BertTokenizer

from geep.cli.main import main
from geep.inference import all_exit_logits, run_policy
from geep.modeling.model import MultiExitClassifier
from geep.policies import entropy
from tests.helpers import SPECIALS, make_decisive, tiny_bert_config

POSITIVE, NEGATIVE = ["好", "精彩", "喜欢", "感人"], ["坏", "无聊", "讨厌", "难看"]
FILLER = list("这部电影的剧情演员故事我们看了是一个很非常真也都")
CHARS = sorted(set("".join(POSITIVE + NEGATIVE + FILLER)))


def chinese_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(id, text, label): filler characters around one sentiment word, no spaces, as Chinese is written."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 20))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((f"zh{i}", "".join(words), label))
    return rows


@pytest.fixture(scope="module")
def chinese_model(tmp_path_factory):
    """A tiny random BERT with a Chinese character vocabulary, trained by `geep train` on Chinese rows."""
    tmp = tmp_path_factory.mktemp("zh")
    encoder = tmp / "encoder"
    encoder.mkdir()
    (encoder / "vocab.txt").write_text("\n".join(SPECIALS + CHARS) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    BertModel(tiny_bert_config(vocab_size=len(SPECIALS) + len(CHARS))).save_pretrained(encoder)
    BertTokenizer(vocab=str(encoder / "vocab.txt")).save_pretrained(encoder)
    rows = chinese_rows(120, seed=0)
    train = tmp / "train.jsonl"
    train.write_text("".join(json.dumps({"id": i, "text": t, "label": y}, ensure_ascii=False) + "\n"
                             for i, t, y in rows), encoding="utf-8")
    out = tmp / "model"
    assert main(["train", "--model", str(encoder), "--train", str(train), "--output", str(out), "--epochs", "1",
                 "--batch-size", "16", "--table-fraction", "0.3", "--head", "linear", "--no-progress"]) == 0
    # A tiny model's exits are near uniform: spread them, then rebuild the table (from the Chinese rows `train`
    # held out) at a mid-range S, so that rows exit at different layers.
    model = MultiExitClassifier.from_pretrained(out)
    texts = [t for _, t, _ in rows]
    make_decisive(model, texts)
    logits = all_exit_logits(model, texts).logits  # (N, E, C)
    S = float((entropy(logits[:, 0]) / math.log(2)).median())
    model.save_pretrained(out)
    assert main(["build-table", "--model", str(out), "--build-threshold", f"{S:.6f}", "--ngram", "2"]) == 0
    return out, rows


def test_characters_are_the_tokens(chinese_model):
    out, _ = chinese_model
    model = MultiExitClassifier.from_pretrained(out)
    ids = model.tokenize(["这部电影很好"])["input_ids"][0]
    assert model.tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "这", "部", "电", "影", "很", "好", "[SEP]"]


def test_train_build_table_predict_end_to_end(chinese_model, tmp_path, capsys):
    out, rows = chinese_model
    table_rows = [json.loads(line) for line in (out / "table_data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(table_rows) == 36 and all(any("\u4e00" <= c <= "\u9fff" for c in r["text"]) for r in table_rows)
    model = MultiExitClassifier.from_pretrained(out)
    table = model.exit_table
    assert table.num_rows == 36 and len(table.exit_counts.nonzero()) >= 2  # more than one exit layer measured
    keys = model.tokenizer.convert_ids_to_tokens(table.unigram_df.nonzero().squeeze(1).tolist())
    assert keys and all(len(k) == 1 and "\u4e00" <= k <= "\u9fff" for k in keys), keys  # single characters
    assert set(keys) <= set(CHARS) and "[UNK]" not in keys
    data = tmp_path / "zh.csv"
    data.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t, _ in chinese_rows(30, seed=1)), encoding="utf-8")
    predictions = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(out), "--input", str(data), "--output", str(predictions), "--policy",
                 "geep-verify", "--threshold", "0.5", "--no-progress"]) == 0
    got = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in got] == [f"zh{i}" for i in range(30)]
    assert {r["prediction"] for r in got} <= {"neg", "pos"} and all(1 <= r["exit_layer"] <= 4 for r in got)


@pytest.mark.parametrize("policy, knob", [("geep-verify", 0.5), ("geep", 0.5), ("fastbert", None)])
def test_batch_invariance(chinese_model, policy, knob):
    """A row's label and exit layer are the same alone and in shuffled batches of 7 and 64."""
    out, rows = chinese_model
    model = MultiExitClassifier.from_pretrained(out)
    texts = [t for _, t, _ in chinese_rows(60, seed=2)]
    encoded = model.tokenize(texts)
    S = model.config.exit_table["build_threshold"]
    knob = S if knob is None else knob
    logits = all_exit_logits(model, encoded).logits[:, :-1]  # (N, E-1, C): the exits a row can leave at
    # Rows whose fastbert decision at S could flip by float noise (padding changes the sums' order) are not judged.
    near = ((entropy(logits.reshape(-1, 2)).view(logits.shape[:2]) / math.log(2) - S).abs() < 1e-3).any(1)
    assert int(near.sum()) <= 3
    alone = run_policy(model, encoded, policy, knob, batch_size=1)
    assert len(set(alone.exit_layer.tolist())) >= 2, "rows should exit at different layers"
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        run = run_policy(model, encoded, policy, knob, batch_size=size, order=order)
        ok = ~near
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.probabilities[ok].argmax(-1), alone.probabilities[ok].argmax(-1))
        # make_decisive scales the heads up a lot, and the float noise of padding with them (1.2e-4 was seen).
        torch.testing.assert_close(run.probabilities[ok], alone.probabilities[ok], atol=1e-3, rtol=0)

