"""The inference code against records made by geep 0.1.0 (``tests/golden/make_golden.py``, before the
inference-core refactor): for two saved 0.1.0 model directories, every policy over a grid of knobs at batch sizes
1 and 16 gives each row the same label and exit layer and counts the same FLOPs, and the calibration sweep scores
every knob with the same accuracy, mean exit layer and FLOPs. The directories also load and predict with their
stored default knobs as 0.1.0 did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geep.evaluation import sweep
from geep.inference import run_policy
from geep.modeling import MultiExitClassifier
from geep.policies import get_policy

GOLDEN = Path(__file__).resolve().parent / "golden"
RECORDS = json.loads((GOLDEN / "records.json").read_text())
MODELS = list(RECORDS["models"])


def load(name: str):
    model = MultiExitClassifier.from_pretrained(GOLDEN / name)
    rows = json.loads((GOLDEN / name / "texts.json").read_text())
    return model, rows["texts"], torch.tensor(rows["labels"])


@pytest.fixture(scope="module", params=MODELS)
def golden(request):
    name = request.param
    model, texts, labels = load(name)
    return name, model, model.tokenize(texts), labels, RECORDS["models"][name]


def test_stored_default_knobs_load(golden):
    """A 0.1.0 directory's one number per policy reads as that policy's fp32 knob, under its name."""
    _, model, _, _, record = golden
    assert set(model.config.default_knobs) == {"fp32"}
    stored = model.config.default_knobs["fp32"]
    assert {policy: get_policy(policy).knob_from_values(values) for policy, values in stored.items()} == \
        record["default_knobs"]


def test_every_policy_gives_every_row_its_recorded_label_exit_and_flops(golden):
    _, model, encoded, labels, record = golden
    mismatched = []
    for r in record["runs"]:
        run = run_policy(model, encoded, r["policy"], r["knob"], batch_size=r["batch_size"],
                         labels=labels if get_policy(r["policy"]).needs_labels else None)
        got = (run.probabilities.argmax(-1).tolist(), run.exit_layer.tolist(), run.flops.total)
        if got != (r["labels"], r["exit_layers"], r["flops"]):
            mismatched.append((r["policy"], r["knob"], r["batch_size"]))
    assert not mismatched, f"{len(mismatched)} of {len(record['runs'])} runs differ: {mismatched[:5]}"


def test_sweep_scores_every_knob_as_recorded(golden):
    _, model, encoded, labels, record = golden
    policies = sorted({r["policy"] for r in record["sweeps"]})
    for batch_size in RECORDS["batch_sizes"]:
        # geep 0.1.0 swept geep-verify's tau alone, continuing at the table's S: the same taus, t = S
        taus = {"geep-verify": get_policy("geep").grid(model.config.num_labels, len(model.exit_layers), 7)}
        result = sweep(model, encoded, labels, policies=policies, batch_size=batch_size, grid_points=7, knobs=taus)
        full = record["full"][str(batch_size)]
        assert (result.full.accuracy, result.full_flops) == (full["accuracy"], full["flops"])
        expected = [r for r in record["sweeps"] if r["batch_size"] == batch_size]
        got = [(name, p.knob, p.accuracy, p.mean_exit_layer, round(result.full_flops / p.flops_speedup),
                {str(k): v for k, v in p.exit_histogram.items()})
               for name in policies for p in result.points[name]]
        want = [(r["policy"], r["knob"], r["accuracy"], r["mean_exit_layer"], r["flops"], r["exit_histogram"])
                for r in sorted(expected, key=lambda r: policies.index(r["policy"]))]
        assert got == want
