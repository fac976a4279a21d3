import pytest
import torch
import torch.nn.functional as F

from tests.helpers import random_batch
from geep.errors import GeepError
from geep.modeling.objectives import OBJECTIVES, get_objective


def slow_geep_reference(model, batch, labels):
    """The GEEP loss as the authors compute it: re-run the prefix for every k, then Layer_L and T."""
    L, teacher = model.num_layers, model.teacher
    loss = 0.0
    for k in range(1, L):
        state = model.run_layers(model.embed(**batch), k)
        h = model.backbone.layer(L, state.hidden, state.mask)
        loss = loss + F.cross_entropy(teacher(h, batch["attention_mask"]), labels)
    full = model(**batch)
    p_t = full.exit_logits[-1].softmax(-1)
    for i, k in enumerate(model.exit_layers[:-1]):
        log_q = full.exit_logits[i].log_softmax(-1)
        loss = loss + (p_t * (p_t.log() - log_q)).sum(-1).mean()
    return loss


@pytest.mark.parametrize("head", ["attention", "linear"])
def test_geep_loss_equals_slow_reference(make_model, head):
    model = make_model(head=head, pooling="mean")  # eval: dropout off
    batch = random_batch(batch_size=4)
    labels = torch.tensor([0, 2, 1, 2])
    out = model(**batch, diverse=True)
    assert out.exit_logits.shape == (4, 4, 3) and out.diverse_logits.shape == (2, 4, 3)
    loss = get_objective("geep").stages[0].loss(out.exit_logits, out.diverse_logits, labels, model.exit_layers)
    torch.testing.assert_close(loss, slow_geep_reference(model, batch, labels), atol=1e-5, rtol=1e-5)


def test_diverse_logits_are_teacher_on_layer_L_of_each_prefix(make_model):
    model = make_model()
    batch = random_batch(batch_size=3)
    out = model(**batch, diverse=True)
    for k in (1, 2):
        state = model.run_layers(model.embed(**batch), k)
        h = model.backbone.layer(4, state.hidden, state.mask)
        torch.testing.assert_close(out.diverse_logits[k - 1], model.teacher(h, batch["attention_mask"]),
                                   atol=1e-5, rtol=1e-5)


def grads_by_group(model, stage, batch, labels):
    """Which parameter groups get a non-zero gradient from this stage's loss."""
    model.zero_grad(set_to_none=True)
    out = model(**batch, diverse=stage.needs_diverse)
    stage.loss(out.exit_logits, out.diverse_logits, labels, model.exit_layers).backward()
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            for name, params in model.parameter_groups().items()}


def test_geep_kl_sends_no_gradient_into_the_teacher(make_model):
    model = make_model()
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 1, 2, 0])
    # The KL part alone: only students and backbone learn.
    from geep.modeling.objectives import distillation_kl

    model.zero_grad(set_to_none=True)
    out = model(**batch)
    distillation_kl(out.exit_logits[:-1], out.exit_logits[-1]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameter_groups()["students"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameter_groups()["backbone"])
    # The whole geep loss reaches all three (the teacher through the CE terms).
    got = grads_by_group(model, get_objective("geep").stages[0], batch, labels)
    assert got == {"backbone": True, "teacher": True, "students": True}


@pytest.mark.parametrize("name", ["fastbert", "deebert"])
def test_two_stage_objectives_train_the_declared_groups(make_model, name):
    model = make_model()
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 1, 2, 0])
    stage1, stage2 = get_objective(name).stages
    assert grads_by_group(model, stage1, batch, labels) == {"backbone": True, "teacher": True, "students": False}
    # Stage 2 freezes backbone and teacher: with their requires_grad off, only students get gradient.
    for group in ("backbone", "teacher"):
        for p in model.parameter_groups()[group]:
            p.requires_grad_(False)
    got = grads_by_group(model, stage2, batch, labels)
    assert got == {"backbone": False, "teacher": False, "students": True}
    assert stage2.trains == ("students",) and stage2.epochs == "distil_epochs"


def test_pabee_weights_exits_by_depth(make_model):
    model = make_model(exit_layers=[2, 4])
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 1, 2, 0])
    out = model(**batch)
    loss = get_objective("pabee").stages[0].loss(out.exit_logits, None, labels, model.exit_layers)
    expected = (2 * F.cross_entropy(out.exit_logits[0], labels) + 4 * F.cross_entropy(out.exit_logits[1], labels)) / 6
    torch.testing.assert_close(loss, expected)


def test_registry():
    assert set(OBJECTIVES) == {"geep", "fastbert", "deebert", "pabee"}
    with pytest.raises(GeepError, match="unknown objective 'foo'"):
        get_objective("foo")
