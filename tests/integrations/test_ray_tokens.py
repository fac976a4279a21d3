"""`geep predict --ray` of a token classifier: every sentence labelled once, as single-process prediction labels it
(tags, per-word exits, entity spans; windows of long sentences merged)."""

from __future__ import annotations

import json
import random

import pytest

ray = pytest.importorskip("ray")

from geep.data.token_data import TokenData, make_windows  # noqa: E402
from geep.inference import predict  # noqa: E402
from geep.inference.rows import sentence_answers  # noqa: E402
from geep.integrations import ray_data  # noqa: E402
from tests.helpers import WORDS  # noqa: E402
from tests.policies.test_token_policies import token_model  # noqa: E402


def test_ray_labels_sentences_as_single_process_predict(tmp_path):
    model = token_model(tmp_path / "tok")
    model.config.text_column, model.config.label_column = "tokens", "tags"  # as geep train records them
    model.save_pretrained(tmp_path / "model")
    rng = random.Random(0)
    sentences = [[rng.choice(WORDS) for _ in range(rng.randint(1, 40))] for _ in range(20)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"s{i}", "tokens": w}) + "\n" for i, w in enumerate(sentences)))
    ray_data.start_local_ray(2)
    try:
        manifest = ray_data.run_job(src, tmp_path / "out", tmp_path / "model", policy="sentee", knob=0.9,
                                    concurrency=1, map_batch_size=8, output_format="jsonl")
    finally:
        ray.shutdown()
    rows, _ = ray_data.read_output(tmp_path / "out")
    assert manifest["rows_in"] == manifest["rows_out"] == len(sentences)
    windows = make_windows(model.tokenizer, TokenData(sentences, None, "t"), model.max_length)
    out = predict(model, windows.texts, policy="sentee", knob=0.9)
    expected = sentence_answers(model.task, windows, sentences, out.label_ids, out.exit_layer)
    for row in rows.to_dict("records"):
        want = expected[int(row["id"][1:])]
        assert list(row["tokens"]) == want["tokens"] and list(row["tags"]) == want["tags"]
        assert list(row["exit_layers"]) == want["exit_layers"] and row["exit_layer"] == want["exit_layer"]
        assert json.loads(row["entities"]) == want["entities"]
