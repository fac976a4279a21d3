"""geep.train: the loop learns, keeps its best checkpoint, honours --freeze-backbone, runs every objective."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, BertModel, BertTokenizer

from tests.helpers import save_tiny_encoder, synthetic
from geep.errors import GeepError
from geep.modeling.model import MultiExitClassifier
from geep.modeling.losses.sdn import sdn_loss, sdn_schedule
from geep.modeling.objectives import (DEFAULT_RECIPE, OBJECTIVES, Objective, Stage, every_exit_loss, get_objective,
                                     teacher_loss)
from geep.training.loop import EncodedData, TrainingArguments, evaluate, stage_plan, train

@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-enc"))


@pytest.fixture(scope="module")
def fine_tuned_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-ft"), fine_tuned=True)


def make(directory: Path, **kwargs) -> MultiExitClassifier:
    torch.manual_seed(0)
    kwargs.setdefault("max_length", 16)
    return MultiExitClassifier.from_encoder(directory, ["bad", "good"], **kwargs)


def data(model: MultiExitClassifier, n: int, seed: int) -> EncodedData:
    texts, labels = synthetic(n, seed)
    return EncodedData.from_texts(model, texts, None, [model.label_names.index(y) for y in labels])


def fast_args(**kwargs) -> TrainingArguments:
    kwargs.setdefault("show_progress_bar", False)
    kwargs.setdefault("batch_size", 16)
    return TrainingArguments(**kwargs)


def test_learns_a_separable_task(encoder_dir):
    model = make(encoder_dir, pooling="mean", head="linear")
    train_data, dev_data = data(model, 192, seed=1), data(model, 64, seed=2)
    result = train(model, train_data, dev_data, fast_args(epochs=6, lr=2e-3, head_lr=3e-3, warmup_ratio=0.0))
    acc = result.dev_accuracy
    assert acc[str(model.num_layers)] >= 0.9, acc  # the teacher
    assert sum(a >= 0.9 for a in acc.values()) >= len(acc) - 1, acc  # and (nearly) every exit
    assert model.config.dev_accuracy == acc
    assert not model.training and model.device.type == "cpu"


def test_kept_checkpoint_reproduces_its_recorded_accuracy(encoder_dir):
    model = make(encoder_dir, pooling="mean")
    dev_data = data(model, 48, seed=2)
    result = train(model, data(model, 64, seed=1), dev_data, fast_args(epochs=3, lr=1e-3))
    best = result.best_epochs["geep"]
    assert result.dev_accuracy == result.history[best - 1].dev_accuracy
    assert evaluate(model, dev_data) == pytest.approx(result.dev_accuracy)
    assert result.history[best - 1].score == max(r.score for r in result.history)


def test_same_seed_same_weights(encoder_dir):
    states = []
    for _ in range(2):
        model = make(encoder_dir)
        train(model, data(model, 32, seed=1), data(model, 16, seed=2), fast_args(epochs=1, seed=7))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_objective_runs_all_its_stages(encoder_dir, objective):
    model = make(encoder_dir, objective=objective, exit_module=get_objective(objective).exit_module)
    if objective == "hashee":  # its tokens halt at their hashed layers: the model needs a hash first
        from geep.modeling.token_hash import random_hash

        model.set_token_hash(random_hash(99, 4, model.tokenizer.all_special_ids))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = fast_args(epochs=1, distil_epochs=1, batch_size=8)
    result = train(model, data(model, 24, seed=1), data(model, 8, seed=2), args)
    # every stage in order, each for its epochs: the default geep recipe (teacher) trains as many passes as fastbert
    stages = {"geep": ["geep", "geep"], "fastbert": ["fine-tune", "distil"], "deebert": ["fine-tune", "exits"],
              "pabee": ["pabee"], "berxit": ["alternating"], "fine-tune": ["fine-tune"],
              "cascade-da": ["fine-tune", "difficulty-aware"], "sdn": ["sdn"], "ensemble": ["ensemble"], "ponder": ["ponder"],
              "hashee": ["hashee"]}
    assert [r.stage for r in result.history] == stages[objective]
    assert set(result.dev_accuracy) == {str(k) for k in model.exit_layers}
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in model.state_dict().items()
               if not torch.equal(v, before[k])}
    assert "heads.4" in changed  # the teacher learned
    # and a student, but under plain fine-tuning and HashEE (no internal classifiers)
    assert ("heads.1" in changed) == (objective not in ("fine-tune", "hashee"))
    if objective == "ponder":
        assert "exit_module.heads" in changed  # the halting heads learned


def test_the_ponder_objective_needs_its_halting_heads(encoder_dir):
    model = make(encoder_dir, objective="ponder")
    with pytest.raises(GeepError, match="the ponder objective trains the model's ponder exit module, and this model "
                                        "has none"):
        train(model, data(model, 8, seed=1), data(model, 4, seed=2), fast_args(epochs=1, batch_size=8))


def test_the_loop_asks_a_scheduled_loss_for_each_step_s_progress_over_the_stage(encoder_dir, monkeypatch):
    """SDN's weights follow training: 24 rows, batch 8, 2 epochs are 6 steps, asked at progress 1/6, ..., 6/6."""
    seen = []

    def recording(progress):
        seen.append(progress)
        return sdn_schedule(progress)

    stage = Stage("sdn", sdn_loss, trains=("backbone", "teacher", "students"), schedule=recording)
    monkeypatch.setitem(OBJECTIVES, "sdn", Objective("sdn", (stage,), "sdn, recording its progress"))
    model = make(encoder_dir, objective="sdn")
    train(model, data(model, 24, seed=1), data(model, 8, seed=2), fast_args(epochs=2, batch_size=8))
    assert seen == pytest.approx([i / 6 for i in range(1, 7)])


def test_berxit_alternates_over_the_stage_not_restarting_each_epoch(encoder_dir, monkeypatch):
    """24 rows in batches of 8 are 3 steps an epoch: over 2 epochs the stage's steps 1..6 take the teacher's loss on
    1, 3, 5 and every exit's on 2, 4, 6 (restarting each epoch would give the teacher's 4 of 6)."""
    used = []

    def teacher(*args, **kwargs):
        used.append("teacher")
        return teacher_loss(*args, **kwargs)

    def every(*args, **kwargs):
        used.append("every")
        return every_exit_loss(*args, **kwargs)

    stage = Stage("alternating", teacher, trains=("backbone", "teacher", "students"), alternate=every)
    monkeypatch.setitem(OBJECTIVES, "berxit", Objective("berxit", (stage,), "berxit, recording its losses"))
    model = make(encoder_dir, objective="berxit")
    train(model, data(model, 24, seed=1), data(model, 8, seed=2), fast_args(epochs=2, batch_size=8))
    assert used == ["teacher", "every"] * 3


def test_an_objective_is_refused_on_a_task_it_does_not_apply_to(encoder_dir):
    model = make(encoder_dir, objective="ensemble", task="multi-label")
    with pytest.raises(GeepError, match="--objective ensemble applies to classification only, not multi-label"):
        train(model, data(model, 8, seed=1), data(model, 4, seed=2), fast_args(epochs=1))


def test_a_recipe_matching_passes_trains_epochs_plus_distil_epochs(encoder_dir):
    model = make(encoder_dir, recipe="passes")
    args = fast_args(epochs=1, distil_epochs=2, batch_size=8)
    assert stage_plan(model, get_objective("geep", "passes").stages[0], args) == (
        ("backbone", "teacher", "students"), 3)
    result = train(model, data(model, 16, seed=1), data(model, 8, seed=2), args)
    assert [(r.stage, r.epoch) for r in result.history] == [("geep", 1), ("geep", 2), ("geep", 3)]
    cpu = [r.cpu_seconds for r in result.history]
    assert 0 < cpu[0] < cpu[1] < cpu[2] <= result.train_cpu_seconds  # cumulative CPU time at each epoch's end


def test_the_default_recipe_is_recorded_in_the_config(encoder_dir):
    model = make(encoder_dir)
    assert model.config.recipe is None
    train(model, data(model, 16, seed=1), data(model, 8, seed=2), fast_args(epochs=1, batch_size=8))
    assert model.config.recipe == DEFAULT_RECIPE
    fast = make(encoder_dir, objective="fastbert")
    train(fast, data(fast, 16, seed=1), data(fast, 8, seed=2), fast_args(epochs=1, distil_epochs=0, batch_size=8))
    assert fast.config.recipe is None


def test_second_stage_leaves_backbone_and_teacher_alone(encoder_dir):
    """fastbert's distillation stage trains only the students: compare against a fine-tune-only run."""
    a, b = make(encoder_dir, objective="fastbert"), make(encoder_dir, objective="fastbert")
    train_data, dev_data = data(a, 24, seed=1), data(a, 8, seed=2)
    train(a, train_data, dev_data, fast_args(epochs=1, distil_epochs=0, batch_size=8))
    train(b, train_data, dev_data, fast_args(epochs=1, distil_epochs=1, batch_size=8))
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if k.startswith("backbone.") or k.startswith("heads.4."):
            assert torch.equal(sa[k], sb[k]), k
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("heads.1."))


def test_freeze_backbone_changes_no_backbone_weight(encoder_dir):
    model = make(encoder_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, data(model, 32, seed=1), data(model, 8, seed=2), fast_args(epochs=1, freeze_backbone=True))
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("backbone."))
    for k in ("1", "4"):  # a fresh teacher still learns; so do the students
        assert any(not torch.equal(after[n], before[n]) for n in after if n.startswith(f"heads.{k}."))
    assert all(p.requires_grad for p in model.parameters())  # left trainable for the caller


def test_freeze_backbone_on_a_fine_tuned_model_trains_only_the_exits(fine_tuned_dir):
    model = make(fine_tuned_dir, objective="fastbert")
    args = fast_args(epochs=1, distil_epochs=1, freeze_backbone=True)
    plans = [stage_plan(model, s, args) for s in OBJECTIVES["fastbert"].stages]
    assert plans == [((), 1), (("students",), 1)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, data(model, 32, seed=1), data(model, 8, seed=2), args)
    assert result.skipped_stages == ["fine-tune"]
    after = model.state_dict()
    for k in after:
        if k.startswith("backbone.") or k.startswith("heads.4."):
            assert torch.equal(after[k], before[k]), k
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("heads.1."))


def test_nothing_to_train_is_a_clear_error(fine_tuned_dir):
    from geep.errors import GeepError

    model = make(fine_tuned_dir, objective="deebert")
    with pytest.raises(GeepError, match="nothing to train"):
        train(model, data(model, 8, seed=1), data(model, 4, seed=2),
              fast_args(distil_epochs=0, freeze_backbone=True))


def test_bad_arguments_are_geep_errors():
    from geep.errors import GeepError

    for bad in (dict(epochs=-1), dict(batch_size=0), dict(warmup_ratio=1.5), dict(device="tpu")):
        with pytest.raises(GeepError):
            TrainingArguments(**bad)


def test_hashee_trains_through_the_halting_step_and_needs_a_hash(encoder_dir, monkeypatch):
    """The hashee stage's forward is the token-halting one (halted tokens copied forward), in training and in dev
    evaluation; a model without a hash is refused in one line before any step."""
    import geep.training.loop as loop
    from geep.modeling.token_hash import random_hash

    model = make(encoder_dir, objective="hashee", exit_layers=[4])
    with pytest.raises(GeepError) as e:
        train(model, data(model, 8, seed=1), data(model, 4, seed=2), fast_args(epochs=1, batch_size=8))
    assert "\n" not in str(e.value) and "token hash" in str(e.value)
    model.set_token_hash(random_hash(99, 4, model.tokenizer.all_special_ids))
    calls = []
    real = loop.halting_forward

    def recording(m, *args):
        calls.append(m.training)
        return real(m, *args)

    monkeypatch.setattr(loop, "halting_forward", recording)
    train(model, data(model, 16, seed=1), data(model, 4, seed=2), fast_args(epochs=1, batch_size=8))
    assert calls == [True, True, False]  # two training steps, then the dev evaluation
