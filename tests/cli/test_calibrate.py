"""geep calibrate with a confidence bound, end to end on tiny saved models: the bound stored with each knob and shown
by `geep info`, the "too few rows to promise" path, the target-speedup side, and bad --confidence values.

Expected knobs and bounds are worked out here from live runs of each knob (`run_policy`, not the sweep under test)
and a reference Clopper-Pearson bound solved by bisection on a binomial sum (tests/evaluation/test_bounds.py)."""

import json
import logging

import pytest
import torch

from geep.cli.main import main
from geep.errors import GeepError
from geep.modeling.model import MultiExitClassifier
from tests.evaluation.test_bounds import reference_drop_bound
from tests.helpers import random_texts, write_csv

TEXTS = random_texts(40, seed=3)


@pytest.fixture
def saved(make_model, tmp_path):
    model = make_model(exit_layers=[1, 2, 3, 4], pooling="mean")
    with torch.no_grad():
        for head in model.heads.values():  # spread the tiny model's logits so exits differ
            head.classifier.weight.mul_(30.0)
    model.save_pretrained(tmp_path / "m")
    data = write_csv(tmp_path / "dev.csv", ["text", "label"], [(t, f"c{i % 3}") for i, t in enumerate(TEXTS)])
    return tmp_path / "m", data


@pytest.fixture
def early_exits_wrong(make_model, tmp_path):
    """A model whose exits 1-3 are sure of c0 and whose teacher is sure of c1, on dev rows all labelled c1: every
    row that leaves early is lost, so no knob faster than full keeps a 1-point budget on 40 rows."""
    model = make_model(exit_layers=[1, 2, 3, 4], pooling="mean")
    with torch.no_grad():
        for k, head in model.heads.items():
            head.classifier.weight.zero_()
            head.classifier.bias.copy_(torch.tensor([0.0, 20.0, 0.0] if int(k) == 4 else [20.0, 0.0, 0.0]))
    model.save_pretrained(tmp_path / "m")
    data = write_csv(tmp_path / "dev.csv", ["text", "label"], [(t, "c1") for t in TEXTS])
    return tmp_path / "m", data


def config_of(directory):
    return json.loads((directory / "config.json").read_text())["geep"]


def live(model, policy, knob, labels):
    """(FLOPs speed-up vs full, rows lost, rows gained, mean exit layer) of one knob, from live runs."""
    from geep.inference import run_policy

    encoded = model.tokenize(TEXTS)
    full = run_policy(model, encoded, "full", batch_size=32)
    run = run_policy(model, encoded, policy, knob, batch_size=32)
    full_right = full.probabilities.argmax(-1) == labels
    right = run.probabilities.argmax(-1) == labels
    return (full.flops.total / run.flops.total, int((full_right & ~right).sum()), int((right & ~full_right).sum()),
            float(run.exit_layer.float().mean()))


def test_the_bound_and_confidence_are_stored_with_each_knob_and_shown_by_info(saved, capsys):
    directory, data = saved
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--policies", "fastbert,pabee",
                 "--max-accuracy-drop", "100", "--confidence", "0.8", "--grid-points", "5"]) == 0
    out = capsys.readouterr().out
    assert "at 80% confidence" in out and "| promised |" in out
    config = config_of(directory)
    model = MultiExitClassifier.from_pretrained(directory)
    labels = torch.tensor([i % 3 for i in range(40)])
    from geep.policies import get_policy

    for policy in ("fastbert", "pabee"):
        evidence = config["calibration"]["fp32"][policy]
        assert evidence["confidence"] == 0.8 and evidence["dev_rows"] == 40 and evidence["promised"] is True
        assert evidence["max_accuracy_drop"] == 100.0
        knob = get_policy(policy).knob_from_values(config["default_knobs"]["fp32"][policy])
        _, lost, gained, _ = live(model, policy, knob, labels)
        # two policies share the confidence (Bonferroni): each is bounded at 1 - 0.2 / 2 = 0.9
        assert evidence["policy_confidence"] == pytest.approx(0.9) and evidence["policies"] == 2
        assert evidence["drop_bound"] == pytest.approx(reference_drop_bound(lost, gained, 40, 0.9), abs=1e-6)
        assert evidence["drop"] == pytest.approx(100 * (lost - gained) / 40, abs=1e-9)
    capsys.readouterr()
    assert main(["info", str(directory)]) == 0
    info = capsys.readouterr().out
    bound = config["calibration"]["fp32"]["fastbert"]["drop_bound"]
    assert f"accuracy drop <= {bound:.2f} points at 80% confidence" in info
    assert "on 40 rows; budget 100 points" in info and "default policy: fp32:" in info


def test_too_few_rows_to_promise_is_one_line_and_stores_the_safest_faster_knob(early_exits_wrong, capsys, caplog):
    directory, data = early_exits_wrong
    with caplog.at_level(logging.WARNING):
        assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--max-accuracy-drop", "1",
                     "--grid-points", "5"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "40 dev rows are too few to promise an accuracy drop of at most 1 points at 90% confidence" in warnings[0]
    out = capsys.readouterr().out
    config = config_of(directory)
    assert config["default_policy"] == {"fp32": "full"}  # nothing faster was promised: the default stays full
    assert "default policy at fp32: full (no policy's knob was promised" in out
    model = MultiExitClassifier.from_pretrained(directory)
    from geep.inference import predict
    from geep.policies import get_policy

    labels = torch.ones(40, dtype=torch.long)
    for policy, evidence in config["calibration"]["fp32"].items():
        assert evidence["promised"] is False, policy
        knob = get_policy(policy).knob_from_values(config["default_knobs"]["fp32"][policy])
        speedup, lost, gained, _ = live(model, policy, knob, labels)
        assert speedup > 1 and gained == 0 and lost > 0  # still faster than full; every early row is lost
        assert evidence["drop_bound"] == pytest.approx(reference_drop_bound(lost, 0, 40, 0.9), abs=1e-6)
    assert predict(model, TEXTS).exit_layer.tolist() == [4] * 40  # the default policy (full) runs
    capsys.readouterr()
    assert main(["info", str(directory)]) == 0
    assert "NOT promised" in capsys.readouterr().out


def test_the_fixed_sequence_choice_equals_a_reference_on_live_runs(saved):
    """fastbert's stored knob is the fastest before the first knob, slowest first, whose bound exceeds 3 points."""
    from geep.evaluation import calibrate
    from geep.policies import get_policy

    directory, _ = saved
    model = MultiExitClassifier.from_pretrained(directory)
    labels = [f"c{i % 3}" for i in range(40)]
    chosen = calibrate(model, TEXTS, labels, policies=["fastbert"], max_accuracy_drop=3, grid_points=9)
    ids = torch.tensor([i % 3 for i in range(40)])
    runs = [(knob, *live(model, "fastbert", knob, ids)) for knob in get_policy("fastbert").grid(3, 4, 9)]
    runs.sort(key=lambda r: (r[1], -r[4]))  # slowest first
    best = None
    for knob, speedup, lost, gained, _ in runs:
        bound = reference_drop_bound(lost, gained, 40, 0.9)
        if bound > 3 + 1e-12:
            break
        if speedup > 1 and (best is None or (speedup, -bound) > (best[0], -best[2])):
            best = (speedup, knob, bound)
    if best is not None:
        _, knob, bound = best
        assert chosen["fastbert"].promised is True
    else:
        assert chosen["fastbert"].promised is False
        candidates = [(reference_drop_bound(lo, ga, 40, 0.9), -s, k) for k, s, lo, ga, _ in runs if s > 1]
        bound, _, knob = min(candidates)
    assert chosen["fastbert"].knob == pytest.approx(knob)
    assert chosen["fastbert"].drop_bound == pytest.approx(bound, abs=1e-9)


def test_target_speedup_stores_the_knob_with_the_smallest_bonferroni_bound(saved, capsys):
    from geep.policies import get_policy

    directory, data = saved
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--policies", "fastbert",
                 "--target-speedup", "1.2", "--grid-points", "9"]) == 0
    config = config_of(directory)
    evidence = config["calibration"]["fp32"]["fastbert"]
    assert evidence["target_speedup"] == 1.2 and evidence["promised"] is True and evidence["confidence"] == 0.9
    model = MultiExitClassifier.from_pretrained(directory)
    ids = torch.tensor([i % 3 for i in range(40)])
    runs = [(knob, *live(model, "fastbert", knob, ids)) for knob in get_policy("fastbert").grid(3, 4, 9)]
    fast = [r for r in runs if r[1] >= 1.2]
    each = 1 - 0.1 / len(fast)
    bound, _, knob = min((reference_drop_bound(lo, ga, 40, each), -s, k) for k, s, lo, ga, _ in fast)
    assert config["default_knobs"]["fp32"]["fastbert"]["threshold"] == pytest.approx(knob)
    assert evidence["drop_bound"] == pytest.approx(bound, abs=1e-9)
    assert config["default_policy"] == {"fp32": "fastbert"}


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.5"])
def test_a_confidence_outside_zero_one_is_one_line_and_writes_nothing(saved, monkeypatch, capsys, value):
    directory, data = saved
    before = (directory / "config.json").read_bytes()
    monkeypatch.setattr(MultiExitClassifier, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--max-accuracy-drop", "1",
                 "--confidence", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "confidence must be a number strictly between 0 and 1" in err[0]
    assert (directory / "config.json").read_bytes() == before


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_confidence_is_refused_at_parse_time(saved, capsys, value):
    directory, data = saved
    before = (directory / "config.json").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--model", str(directory), "--dev", str(data), "--max-accuracy-drop", "1",
              f"--confidence={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument --confidence: must be a finite number, got '{value}'" in err[0]
    assert (directory / "config.json").read_bytes() == before


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, float("nan")])
def test_the_api_refuses_a_bad_confidence_before_storing_anything(make_model, bad):
    from geep.evaluation import calibrate

    model = make_model()
    with pytest.raises(GeepError, match="strictly between 0 and 1"):
        calibrate(model, TEXTS, [f"c{i % 3}" for i in range(40)], max_accuracy_drop=1, confidence=bad)
    assert model.config.default_knobs == {} and model.config.calibration == {} and model.config.default_policy == {}
