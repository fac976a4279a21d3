"""The ``ponder`` policy (learned halting, geep/policies/ponder.py): the rule on a hand-worked case, its memory
following its rows, batch invariance at fp32 and int8 against the rule computed here, training with
``--objective ponder`` end to end, and the one-line errors."""

import json
import math
import random

import pytest
import torch

from geep.cli.main import main
from geep.errors import GeepError
from geep.inference import all_exit_logits, run_policy
from geep.inference.spec import resolve_run
from geep.policies import POLICIES, select_memory
from geep.tasks import OutputLayout
from tests.cli.test_train import FAST, cli, write_three_class_csv
from tests.helpers import random_texts, save_tiny_encoder


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_the_rule_by_hand():
    """Row 1 halts with lambda 0.5 then 0.8: not yet halted 0.5, then 0.5 * 0.2 = 0.1. Row 2: 0.9 then 0.5:
    0.1, then 0.05. eps = 0.2: row 1 leaves at the second exit (0.1 <= 0.2), row 2 at the first (0.1)."""
    policy = POLICIES["ponder"].bind(OutputLayout("classification", 2, 1, 3))
    first = torch.tensor([[1.0, 0.0, logit(0.5)], [0.0, 1.0, logit(0.9)]])
    second = torch.tensor([[1.0, 0.0, logit(0.8)], [0.0, 1.0, logit(0.5)]])
    memory = policy.start(2, torch.device("cpu"))
    leave, memory = policy.decide(first, 0.2, memory)
    assert leave.tolist() == [False, True] and memory["remaining"].tolist() == pytest.approx([0.5, 0.1])
    leave, memory = policy.decide(second, 0.2, memory)
    assert leave.tolist() == [True, True] and memory["remaining"].tolist() == pytest.approx([0.1, 0.05])
    # the ends are explicit; the memory still accumulates
    fresh = policy.start(2, torch.device("cpu"))
    assert policy.decide(first, 0.0, fresh)[0].tolist() == [False, False]
    assert policy.decide(first, 1.0, fresh)[0].tolist() == [True, True]
    # the memory follows its rows: row 2 alone goes on with its own product
    kept = select_memory(memory, torch.tensor([1]))
    assert kept["remaining"].tolist() == pytest.approx([0.05])
    spec = policy.knob_spec(2, 3)
    assert (spec.low, spec.high, spec.never, spec.first, spec.default) == (0.0, 1.0, 0.0, 1.0, 0.01)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ponder")
    data = write_three_class_csv(root / "train.csv")
    assert main(["train", "--model", str(save_tiny_encoder(root / "enc")), "--train", str(data), "--objective",
                 "ponder", "--output", str(root / "model"), *FAST]) == 0
    return root / "model", data


def test_training_with_the_ponder_objective_saves_halting_heads(trained, tmp_path, capsys):
    from geep.modeling import MultiExitClassifier

    directory, data = trained
    config = json.loads((directory / "config.json").read_text())["geep"]
    assert config["exit_module"] == "ponder" and config["objective"] == "ponder"
    model = MultiExitClassifier.from_pretrained(directory)
    assert sorted(model.exit_module.heads) == sorted(str(k) for k in model.exit_layers)
    rc, _, err = cli(["predict", "--model", str(directory), "--input", str(data), "--output",
                      str(tmp_path / "p.jsonl"), "--policy", "ponder", "--threshold", "1", "--no-progress"], capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert {r["exit_layer"] for r in rows} == {1}  # eps = 1: every row at the first exit
    rc, _, err = cli(["calibrate", "--model", str(directory), "--dev", str(data), "--policies", "ponder",
                      "--grid-points", "5", "--max-accuracy-drop", "5"], capsys)
    assert rc == 0, err
    assert "ponder" in json.loads((directory / "config.json").read_text())["geep"]["default_knobs"]["fp32"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batch_invariant(trained, precision):
    """A row's exit and label are the same alone and in shuffled batches of 7 and 64, and its exit is the first at
    which prod (1 - sigmoid(s_j)), computed here, is <= eps (rows within 1e-4 of eps at some exit are left out)."""
    from geep.modeling import MultiExitClassifier

    directory, _ = trained
    model = MultiExitClassifier.from_pretrained(directory)
    texts = random_texts(48, seed=2)
    encoded = model.tokenize(texts)
    with torch.no_grad():  # spread the halting heads so that rows halt at different exits: signals of std 2
        signals = all_exit_logits(model, encoded, batch_size=16).logits[..., 3]  # (N, E)
        for i, k in enumerate(model.exit_layers):
            head = model.exit_module.heads[str(k)]
            scale = 2.0 / float(signals[:, i].std())  # s' = scale * (s - mean s)
            head.weight.mul_(scale)
            head.bias.sub_(float(signals[:, i].mean())).mul_(scale)
    out = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits  # (N, E, 3 + 1)
    remaining = torch.cumprod(1.0 - torch.sigmoid(out[:, :-1, 3].double()), dim=1)  # (N, E-1)
    v = sorted(remaining[:, 0].tolist())
    j = max(range(len(v) // 3, 2 * len(v) // 3), key=lambda i: v[i + 1] - v[i])
    eps = (v[j] + v[j + 1]) / 2  # in the widest gap of the middle third at the first exit
    near = ((remaining - eps).abs() < 1e-4).any(1)
    assert int(near.sum()) <= 4
    E = model.exit_layers
    expected = torch.tensor([next((E[j] for j in range(len(E) - 1) if remaining[i, j] <= eps), E[-1])
                             for i in range(len(texts))])
    alone = run_policy(model, encoded, "ponder", eps, batch_size=1, precision=precision)
    ok = ~near
    assert len(set(alone.exit_layer[ok].tolist())) >= 2, "rows should halt at different exits"
    assert torch.equal(alone.exit_layer[ok], expected[ok])
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        run = run_policy(model, encoded, "ponder", eps, batch_size=size, order=order, precision=precision)
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.predictions[ok], alone.predictions[ok])


def test_ponder_on_a_model_without_halting_heads_is_one_line(make_model, tmp_path, capsys):
    with pytest.raises(GeepError, match="the ponder policy reads learned halting heads .* this model has no exit "
                                        "module; train one with `geep train --objective ponder`") as e:
        resolve_run(make_model(), "ponder")
    assert "\n" not in str(e.value)
    with pytest.raises(GeepError, match="this model's exit module is lte"):
        resolve_run(make_model(exit_module="lte"), "ponder")
    with pytest.raises(GeepError, match="the lte policy .* this model's exit module is ponder"):
        resolve_run(make_model(exit_module="ponder"), "lte")


@pytest.mark.parametrize("argv, expected", [
    (["--objective", "ponder", "--exit-module", "lte"], "--objective ponder trains its own halting heads"),
    (["--exit-module", "ponder"], "--exit-module ponder: the halting heads are trained by --objective ponder"),
])
def test_bad_training_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, expected):
    data = write_three_class_csv(tmp_path / "train.csv")
    rc, _, err = cli(["train", "--model", str(save_tiny_encoder(tmp_path / "enc")), "--train", str(data),
                      "--output", str(tmp_path / "out"), *FAST, *argv], capsys)
    assert rc == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "out").exists()
