"""Every policy at int8: batch invariance, agreement with fp32, the knobs calibrated per precision, 0.1.0 models."""

import math
import random
from pathlib import Path

import pytest
import torch

from geep.errors import GeepError
from geep.evaluation import build_table, calibrate
from geep.inference import Predictor, all_exit_logits, predict, run_policy
from geep.modeling import MultiExitClassifier
from geep.policies import POLICIES, entropy
from tests import helpers
from tests.helpers import make_decisive
from tests.inference.test_predictor import CLASSIFICATION, knobs_for, model_threshold, near_threshold

N_ROWS = 70
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.fixture
def int8_setup(make_model):
    texts = helpers.random_texts(N_ROWS, seed=0)
    model = make_decisive(make_model(), texts)
    encoded = model.tokenize(texts)
    recorded = all_exit_logits(model, encoded, batch_size=16, precision="int8")
    labels = torch.randint(0, 3, (N_ROWS,), generator=torch.Generator().manual_seed(1))
    S = float((entropy(recorded.logits[:, 1]) / math.log(3)).median())
    build_table(model, helpers.random_texts(N_ROWS, seed=9), build_threshold=S)
    return model, texts, encoded, recorded, labels


@pytest.mark.parametrize("attention", ["own-length", "length-grouped"])
@pytest.mark.parametrize("policy", CLASSIFICATION)
def test_every_policy_at_int8_is_batch_invariant(int8_setup, policy, attention, monkeypatch):
    """At int8, a row's label, exit layer and probabilities are the same alone, in shuffled batches of 7 and 64,
    and through predict (per-token activation scales and each row's attention over its own length: a row's
    batch-mates and padding do not move it); also where the encoder's attention cannot be switched and the backend
    runs each length of a step apart."""
    model, texts, encoded, recorded, labels = int8_setup
    if attention == "length-grouped":
        from geep.runtime import precision

        monkeypatch.setattr(precision, "supports_own_length_attention", lambda encoder: False)
        with torch.no_grad():
            model.backbone.layers[0].output.dense.bias.add_(0.0)  # a new version of a weight: a new int8 copy
    knob = knobs_for(model, recorded.logits)[policy]
    model_threshold[0] = model.config.exit_table["build_threshold"]
    alone = run_policy(model, encoded, policy, knob, batch_size=1, labels=labels, precision="int8")
    if policy != "full":
        assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    near = near_threshold(policy, knob, recorded.logits)
    assert int(near.sum()) <= 3
    runs = []
    for size, seed in ((7, 0), (64, 1)):
        order = list(range(N_ROWS))
        random.Random(seed).shuffle(order)
        runs.append(run_policy(model, encoded, policy, knob, batch_size=size, order=order, labels=labels,
                               precision="int8"))
    runs.append(predict(model, texts, policy=policy, knob=knob, batch_size=32, labels=labels, precision="int8"))
    if attention == "length-grouped":
        from geep.runtime.torch_backend import LengthGroupedBackend

        assert type(precision.make_backend(model, "int8")) is LengthGroupedBackend
    ok = ~near
    for run in runs:
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        torch.testing.assert_close(run.probabilities[ok], alone.probabilities[ok], atol=1e-5, rtol=0)


def test_int8_and_fp32_agree_on_the_labels_of_a_trained_model(tiny_encoder_dir):
    """Under ``full``, int8 and fp32 give the same label for at least 97% of rows of a trained tiny model."""
    from geep.training import EncodedData, TrainingArguments, train

    torch.manual_seed(0)
    model = MultiExitClassifier.from_encoder(tiny_encoder_dir, ["bad", "good"], pooling="mean", head="linear",
                                             max_length=16)

    def data(n, seed):
        texts, labels = helpers.synthetic(n, seed)
        return texts, EncodedData.from_texts(model, texts, None, [model.label_names.index(y) for y in labels])

    train(model, data(192, 1)[1], data(64, 2)[1], TrainingArguments(
        epochs=6, lr=2e-3, head_lr=3e-3, warmup_ratio=0.0, batch_size=16, show_progress_bar=False))
    texts, test = data(300, 4)
    fp32 = predict(model, texts, batch_size=32)
    int8 = predict(model, texts, batch_size=32, precision="int8")
    assert float((fp32.label_ids == test.labels).float().mean()) > 0.9, "the tiny model should have learnt the task"
    assert float((int8.label_ids == fp32.label_ids).float().mean()) >= 0.97
    assert float((int8.probabilities - fp32.probabilities).abs().max()) < 0.1


def test_calibrating_at_int8_stores_its_own_knobs_and_predict_reads_them(make_model, tmp_path):
    texts = helpers.random_texts(60, seed=2)
    model = make_decisive(make_model(), texts)
    labels = all_exit_logits(model, texts).logits[:, -1].argmax(-1)  # full's answers: every knob is scored
    calibrate(model, texts, labels, policies=["fastbert"], max_accuracy_drop=50.0)
    fp32_knob = dict(model.config.default_knobs["fp32"]["fastbert"])
    model.config.store_knob("fp32", "fastbert", {"threshold": 0.0})  # a knob calibration never picks at 50 points
    calibrate(model, texts, labels, policies=["fastbert"], max_accuracy_drop=50.0, precision="int8")
    assert set(model.config.default_knobs) == {"fp32", "int8"}
    assert model.config.default_knobs["fp32"]["fastbert"] == {"threshold": 0.0}  # fp32's stays
    int8_knob = model.config.default_knobs["int8"]["fastbert"]["threshold"]
    assert int8_knob > 0 and abs(int8_knob - fp32_knob["threshold"]) < 0.2
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    assert Predictor(loaded, "fastbert", precision="int8").knob == pytest.approx(int8_knob)
    assert Predictor(loaded, "fastbert").knob == 0.0
    at_int8 = predict(loaded, texts, policy="fastbert", precision="int8")
    explicit = predict(loaded, texts, policy="fastbert", knob=int8_knob, precision="int8")
    assert torch.equal(at_int8.exit_layer, explicit.exit_layer)
    assert float(at_int8.exit_layer.float().mean()) < loaded.num_layers  # the int8 knob exits rows early


def test_a_precision_without_knobs_takes_the_fp32_ones(make_model):
    model = make_model()
    model.config.store_knob("fp32", "fastbert", {"threshold": 0.3})
    assert Predictor(model, "fastbert", precision="int8").knob == pytest.approx(0.3)


@pytest.mark.parametrize("name", ["attention-mean-all-exits", "linear-first-exits-2-3"])
def test_a_0_1_0_model_directory_predicts_at_int8(name):
    """A directory written by geep 0.1.0 loads and runs every policy at int8 with its stored (fp32) knobs."""
    import json

    model = MultiExitClassifier.from_pretrained(GOLDEN / name)
    texts = json.loads((GOLDEN / name / "texts.json").read_text())["texts"]
    fp32 = predict(model, texts, policy="full")
    int8 = predict(model, texts, policy="full", precision="int8")
    assert float((int8.label_ids == fp32.label_ids).float().mean()) >= 0.9
    for policy in ("fastbert", "pabee", "geep-verify"):
        out = predict(model, texts, policy=policy, precision="int8")
        assert len(out) == len(texts)


def test_bad_precision_is_a_geep_error(make_model):
    model = make_model()
    with pytest.raises(GeepError, match="unknown precision 'int4'"):
        predict(model, ["a"], precision="int4")
    with pytest.raises(GeepError, match="fp16 runs on cuda, not cpu"):
        Predictor(model, precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("policy", ["full", "fastbert", "pabee", "geep", "geep-verify"])
def test_cuda_half_runs_every_policy_close_to_fp32(int8_setup, precision, policy):
    model, texts, _, recorded, labels = int8_setup
    knob = knobs_for(model, recorded.logits)[policy]
    cpu = predict(model, texts, policy=policy, knob=knob, batch_size=7, labels=labels)
    gpu = predict(model, texts, policy=policy, knob=knob, batch_size=7, labels=labels, device="cuda",
                  precision=precision)
    model.to("cpu")
    assert float((gpu.label_ids == cpu.label_ids).float().mean()) >= 0.9
    assert float((gpu.exit_layer == cpu.exit_layer).float().mean()) >= 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_on_cuda_is_a_geep_error(make_model):
    model = make_model().to("cuda")
    with pytest.raises(GeepError, match="int8 runs on cpu, not cuda"):
        predict(model, ["a"], precision="int8")
    model.to("cpu")
