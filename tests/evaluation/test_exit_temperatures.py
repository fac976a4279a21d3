"""Calibrated confidence (RightTool, after Guo et al.'s temperature scaling): ECE with 15 equal-width bins by hand and
against a plain loop, the ``confidence`` rule under each exit's temperature by hand, the temperatures bound once in
``resolve_run`` per precision, ``calibrate`` fitting them before the knobs (stored, shown by ``geep info``), batch
invariance at fp32 and int8, and a model without temperatures reading the raw softmax as before."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest
import torch

from geep.cli.main import main
from geep.errors import GeepError
from geep.evaluation.calibrate import calibrate
from geep.evaluation.metrics import expected_calibration_error
from geep.inference import all_exit_logits, run_policy
from geep.inference.spec import resolve_run
from geep.modeling.model import MultiExitClassifier
from geep.policies import POLICIES
from geep.tasks import OutputLayout
from tests.helpers import random_texts, write_csv

N = 48
TEXTS = random_texts(N, seed=11)


def test_ece_by_hand():
    """Rows (p, y): (0.9, right), (0.9, wrong), (0.6, right), (0.55, wrong) as max probabilities. Bins of width
    1/15: 0.9 lies in (13/15, 14/15], 0.6 = 9/15 closes (8/15, 9/15] and 0.55 lies in it too. Bin 14: accuracy 1/2,
    confidence 0.9: |0.5 - 0.9| * 2/4 = 0.2; bin 9: accuracy 1/2, confidence 0.575: 0.075 * 2/4 = 0.0375.
    ECE = 0.2375 (0.6 put in the next bin would give 0.4375)."""
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.45, 0.55]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.2375, abs=1e-12)
    # perfectly calibrated in its bin: 4 rows at 0.75 (in (10/15, 11/15]), 3 right
    q = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    assert expected_calibration_error(q, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # a sure row (1.0) lies in the last bin (14/15, 1]
    assert expected_calibration_error(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([1])) == 1.0
    assert expected_calibration_error(p[:0], y[:0]) == 0.0


def reference_ece(p: torch.Tensor, y: torch.Tensor) -> float:
    """The definition in a loop, bin edges as exact fractions m / 15."""
    rows = [(Fraction(float(r.max())), int(r.argmax()) == int(t)) for r, t in zip(p, y)]
    total = Fraction(0)
    for m in range(1, 16):
        lo, hi = Fraction(m - 1, 15), Fraction(m, 15)
        members = [(c, ok) for c, ok in rows if lo < c <= hi]
        if members:
            acc = Fraction(sum(ok for _, ok in members), len(members))
            conf = sum(c for c, _ in members) / len(members)
            total += Fraction(len(members), len(rows)) * abs(acc - conf)
    return float(total)


def test_ece_equals_the_definition_in_a_loop():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(300, 4, generator=g, dtype=torch.float64) * 3, -1)
    y = torch.randint(0, 4, (300,), generator=g)
    assert expected_calibration_error(p, y) == pytest.approx(reference_ece(p, y), abs=1e-12)


def test_the_confidence_rule_under_each_exit_s_temperature_by_hand():
    """Exit 1 has T = 2, exit 2 T = 0.5. Logits (2, 0): raw max probability 1 / (1 + e^-2) = 0.881; at exit 1
    softmax(1, 0) gives 1 / (1 + e^-1) = 0.731; at exit 2 softmax(4, 0) gives 0.982. Logits (0.5, 0): raw 0.622,
    exit 1 0.562, exit 2 0.731. Threshold 0.8."""
    layout = OutputLayout("classification", 2, 0, 3)
    raw = POLICIES["confidence"].bind(layout)
    calibrated = raw.with_temperatures({1: 2.0, 2: 0.5, 3: 1.0})
    z = torch.tensor([[2.0, 0.0], [0.5, 0.0]])
    memory = raw.start(2, torch.device("cpu"))
    assert raw.decide_at(1, z, 0.8, memory)[0].tolist() == [True, False]
    assert calibrated.decide_at(1, z, 0.8, memory)[0].tolist() == [False, False]
    assert calibrated.decide_at(2, z, 0.8, memory)[0].tolist() == [True, False]
    assert calibrated.decide_at(2, z, 0.7, memory)[0].tolist() == [True, True]
    expected = [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-0.25))]
    assert calibrated.confidence_at(1, z).tolist() == pytest.approx(expected, abs=1e-6)
    # the exact ends stay exact
    assert calibrated.decide_at(1, z, 1.0, memory)[0].tolist() == [False, False]
    assert calibrated.decide_at(1, z, 0.0, memory)[0].tolist() == [True, True]
    assert raw.temperatures is None and POLICIES["confidence"].temperatures is None  # the registry's is untouched


def nll(logits: torch.Tensor, labels: torch.Tensor, T: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits.double() / T, labels))


@pytest.fixture
def spread(make_model):
    model = make_model(exit_layers=[1, 2, 3, 4], pooling="mean")
    with torch.no_grad():
        for head in model.heads.values():  # spread the tiny model's logits so exits differ and are over-confident
            head.classifier.weight.mul_(30.0)
    return model


def labels_of(model):
    """Dev labels that agree with the teacher on 3 rows of 4: a model sure of itself and right most of the time."""
    teacher = all_exit_logits(model, model.tokenize(TEXTS), batch_size=16).logits[:, -1].argmax(-1)
    return [model.label_names[int(c) if i % 4 else (int(c) + 1) % 3] for i, c in enumerate(teacher)]


def test_calibrate_fits_each_exit_s_temperature_first_and_chooses_the_knob_on_the_calibrated_signal(spread):
    model = spread
    labels = labels_of(model)
    y = torch.tensor([model.label_names.index(x) for x in labels])
    calibrate(model, TEXTS, labels, max_accuracy_drop=5.0, policies=["confidence", "fastbert"], grid_points=11)
    temperatures = model.config.temperatures["fp32"]
    assert len(temperatures) == 4
    logits = all_exit_logits(model, model.tokenize(TEXTS), batch_size=16).logits  # (N, E, C)
    for i, T in enumerate(temperatures):  # each minimises its own exit's NLL: no better within 1% either side
        assert nll(logits[:, i], y, T) <= min(nll(logits[:, i], y, T * 1.01), nll(logits[:, i], y, T / 1.01)) + 1e-9
    errors = model.config.calibration_error["fp32"]
    assert errors["dev_rows"] == N
    for i, T in enumerate(temperatures):
        assert errors["before"][i] == pytest.approx(reference_ece(torch.softmax(logits[:, i].double(), -1), y))
        assert errors["after"][i] == pytest.approx(reference_ece(torch.softmax(logits[:, i].double() / T, -1), y))
    # the stored confidence knob, run live (which reads the temperatures), has the drop calibration recorded
    knob = model.config.stored_knob("fp32", "confidence")["threshold"]
    full = run_policy(model, model.tokenize(TEXTS), "full", batch_size=32)
    run = run_policy(model, model.tokenize(TEXTS), "confidence", knob, batch_size=32)
    drop = 100.0 * float(((full.predictions == y).float().mean() - (run.predictions == y).float().mean()))
    assert model.config.stored_evidence("fp32", "confidence")["drop"] == pytest.approx(drop)
    spec = resolve_run(model, "confidence")
    assert spec.policy.temperatures == dict(zip(model.exit_layers, temperatures))
    assert resolve_run(model, "fastbert").policy.temperatures is None  # entropy rules read the raw softmax


def test_an_unreachable_target_keeps_the_temperatures_as_they_were(spread):
    model = spread
    model.config.temperatures = {"fp32": [1.5, 1.5, 1.5, 1.5]}
    with pytest.raises(GeepError, match="unreachable"):
        calibrate(model, TEXTS, labels_of(model), target_speedup=100.0, policies=["confidence"], grid_points=5)
    assert model.config.temperatures == {"fp32": [1.5, 1.5, 1.5, 1.5]} and model.config.calibration_error == {}


def test_temperatures_are_bound_per_precision_falling_back_to_fp32(spread):
    model = spread
    assert resolve_run(model, "confidence").policy.temperatures is None  # none stored: the raw softmax
    model.config.temperatures = {"fp32": [2.0, 2.0, 2.0, 1.0]}
    assert resolve_run(model, "confidence", precision="int8").policy.temperatures == {1: 2.0, 2: 2.0, 3: 2.0, 4: 1.0}
    model.config.temperatures["int8"] = [3.0, 3.0, 3.0, 3.0]
    assert resolve_run(model, "confidence", precision="int8").policy.temperatures[1] == 3.0
    assert resolve_run(model, "confidence").policy.temperatures[1] == 2.0


def gap_knob(values: torch.Tensor) -> float:
    v = sorted(values.flatten().tolist())
    lo, hi = len(v) // 3, 2 * len(v) // 3
    i = max(range(lo, hi), key=lambda j: v[j + 1] - v[j])
    return (v[i] + v[i + 1]) / 2


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_calibrated_confidence_is_batch_invariant(spread, precision):
    """A row's exit and label are the same alone and in shuffled batches of 7 and 64 (rows whose calibrated
    confidence at some exit lies within 1e-4 of the knob are left out: float noise may flip them)."""
    model = spread
    temperatures = [3.0, 2.0, 1.5, 1.0]
    model.config.temperatures = {precision: temperatures}
    encoded = model.tokenize(TEXTS)
    out = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits[:, :-1]  # (N, E-1, C)
    conf = torch.softmax(out / torch.tensor(temperatures[:-1])[None, :, None], -1).max(-1).values  # (N, E-1)
    knob = gap_knob(conf[:, 0])
    near = ((conf - knob).abs() < 1e-4).any(1)
    assert int(near.sum()) <= 3
    alone = run_policy(model, encoded, "confidence", knob, batch_size=1, precision=precision)
    assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    expected = torch.tensor([next((k for j, k in enumerate([1, 2, 3]) if conf[i, j] >= knob), 4) for i in range(N)])
    ok = ~near
    assert torch.equal(alone.exit_layer[ok], expected[ok])  # the rule, computed here from the logits
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(N))
        random.Random(seed).shuffle(order)
        run = run_policy(model, encoded, "confidence", knob, batch_size=size, order=order, precision=precision)
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.predictions[ok], alone.predictions[ok])


def test_saved_temperatures_round_trip_and_a_damaged_list_is_one_line(spread, tmp_path):
    model = spread
    model.config.temperatures = {"fp32": [2.0, 2.0, 2.0, 1.0]}
    model.save_pretrained(tmp_path / "m")
    assert MultiExitClassifier.from_pretrained(tmp_path / "m").config.temperatures == {"fp32": [2.0, 2.0, 2.0, 1.0]}
    path = tmp_path / "m" / "config.json"
    raw = json.loads(path.read_text())
    raw["geep"]["temperatures"] = {"fp32": [2.0, 2.0]}
    path.write_text(json.dumps(raw))
    with pytest.raises(GeepError, match="temperatures at fp32 has 2 values for 4 exits") as e:
        MultiExitClassifier.from_pretrained(tmp_path / "m")
    assert "\n" not in str(e.value)
    raw["geep"]["temperatures"] = {"fp32": [2.0, 0.0, 1.0, 1.0]}
    path.write_text(json.dumps(raw))
    with pytest.raises(GeepError, match="temperatures must be"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_the_calibrate_command_prints_and_info_shows_each_exit_s_ece_before_and_after(spread, tmp_path, capsys):
    model = spread
    labels = labels_of(model)
    model.save_pretrained(tmp_path / "m")
    data = write_csv(tmp_path / "dev.csv", ["text", "label"], list(zip(TEXTS, labels)))
    assert main(["calibrate", "--model", str(tmp_path / "m"), "--dev", str(data), "--max-accuracy-drop", "5",
                 "--policies", "confidence", "--grid-points", "5"]) == 0
    out = capsys.readouterr().out
    assert "exit temperatures (fitted on dev first" in out
    config = json.loads((tmp_path / "m" / "config.json").read_text())["geep"]
    assert len(config["temperatures"]["fp32"]) == 4
    assert main(["info", str(tmp_path / "m")]) == 0
    info = capsys.readouterr().out
    errors = config["calibration_error"]["fp32"]
    T = config["temperatures"]["fp32"][0]
    assert f"exit  1: T = {T:.3f}, ECE {100 * errors['before'][0]:.2f}% -> {100 * errors['after'][0]:.2f}%" in info
    assert f"on {N} dev rows, 15 bins" in info


def test_the_bench_reports_each_exit_s_ece_raw_and_calibrated(spread):
    from geep.bench.report import calibration_lines
    from geep.bench.runner import exit_calibration

    model = spread
    model.config.temperatures = {"fp32": [3.0, 2.0, 1.5, 1.0]}
    logits = all_exit_logits(model, model.tokenize(TEXTS), batch_size=16).logits
    y = torch.tensor([i % 3 for i in range(N)])
    ece = exit_calibration(model, logits, y, "int8")  # int8 not calibrated: fp32's temperatures
    for i, T in enumerate([3.0, 2.0, 1.5, 1.0]):
        assert ece["before"][i] == pytest.approx(reference_ece(torch.softmax(logits[:, i].double(), -1), y))
        assert ece["after"][i] == pytest.approx(reference_ece(torch.softmax(logits[:, i].double() / T, -1), y))
    lines = calibration_lines({"models": {"m": {"calibration_error": {"int8": ece}}}}, "int8")
    assert f"| `m` | 2 | 2.000 | {100 * ece['before'][1]:.2f}% | {100 * ece['after'][1]:.2f}% |" in lines
