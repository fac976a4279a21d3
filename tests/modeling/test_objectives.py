import pytest
import torch
import torch.nn.functional as F

from tests.helpers import random_batch
from geep.errors import GeepError
from geep.tasks.classification import Classification
from geep.modeling.objectives import DEFAULT_RECIPE, OBJECTIVES, RECIPES, distillation_kl, diverse_weights, \
    geep_loss, get_objective, per_exit_cross_entropy, weighted_geep_loss


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
    assert set(OBJECTIVES) == {"geep", "fastbert", "deebert", "pabee", "berxit", "fine-tune", "cascade-da", "sdn",
                               "ensemble", "ponder", "hashee"}
    with pytest.raises(GeepError, match="unknown objective 'foo'"):
        get_objective("foo")


# ------------------------------------------------------------------------------------------ geep recipes
def slow_recipe_reference(model, batch, labels, teacher_share, kl_weight, temperature):
    """weighted_geep_loss written out term by term: re-run the prefix for every k; KL at temperature t by hand."""
    L, teacher = model.num_layers, model.teacher
    n = L - 1  # CE terms, k = 1..L-1; the last is the teacher's own path
    w_teacher = 1.0 if teacher_share is None else teacher_share * n
    w_other = 1.0 if teacher_share is None else (1 - teacher_share) * n / (n - 1)
    loss = 0.0
    for k in range(1, L):
        state = model.run_layers(model.embed(**batch), k)
        h = model.backbone.layer(L, state.hidden, state.mask)
        loss = loss + (w_teacher if k == L - 1 else w_other) * F.cross_entropy(teacher(h, batch["attention_mask"]),
                                                                               labels)
    full = model(**batch)
    p_t = (full.exit_logits[-1] / temperature).softmax(-1)
    kl = 0.0
    for i in range(len(model.exit_layers) - 1):
        q = (full.exit_logits[i] / temperature).softmax(-1)
        kl = kl + (p_t * (p_t.log() - q.log())).sum(-1).mean()
    return loss + kl_weight * temperature**2 * kl


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "paper"])
def test_each_recipe_loss_equals_its_slow_reference(make_model, name):
    model = make_model(num_layers=5, pooling="mean")  # 3 diverse terms + the teacher's path
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 2, 1, 2])
    recipe = RECIPES[name]
    out = model(**batch, diverse=True)
    loss = get_objective("geep", name).stages[0].loss(out.exit_logits, out.diverse_logits, labels,
                                                       model.exit_layers)
    expected = slow_recipe_reference(model, batch, labels, recipe.teacher_share, recipe.kl_weight,
                                     recipe.temperature)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_paper_recipe_is_the_papers_loss_itself(make_model):
    """The paper's recipe runs geep_loss unchanged; the weighted loss at the paper's weights agrees with it."""
    assert get_objective("geep", "paper").stages[0].loss is geep_loss
    assert get_objective("geep", "paper").stages[0].epochs == "epochs"
    model = make_model(pooling="mean")
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 2, 1, 2])
    out = model(**batch, diverse=True)
    args = (out.exit_logits, out.diverse_logits, labels, model.exit_layers)
    assert torch.equal(weighted_geep_loss(*args), geep_loss(*args))


def test_teacher_share_moves_weight_but_keeps_the_ce_total():
    w = diverse_weights(5, 0.5)
    torch.testing.assert_close(w, torch.tensor([0.625, 0.625, 0.625, 0.625, 2.5]))
    assert torch.equal(diverse_weights(5, None), torch.ones(5))
    assert torch.equal(diverse_weights(1, 0.5), torch.ones(1))  # L = 2: only the teacher's path
    with pytest.raises(ValueError, match="teacher share"):
        diverse_weights(5, 1.0)


def test_temperature_scales_kl_by_t_squared():
    torch.manual_seed(0)
    students, teacher = torch.randn(3, 8, 4), torch.randn(8, 4)
    at_2 = distillation_kl(students, teacher, temperature=2.0)
    soft = distillation_kl(students / 2, teacher / 2)
    torch.testing.assert_close(at_2, 4 * soft)
    assert torch.equal(distillation_kl(students, teacher, 1.0), distillation_kl(students, teacher))
    with pytest.raises(ValueError, match="temperature"):
        distillation_kl(students, teacher, 0.0)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_reaches_all_three_groups_and_kl_never_the_teacher(make_model, name):
    model = make_model()
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 1, 2, 0])
    stage = get_objective("geep", name).stages[0]
    assert stage.needs_diverse and stage.trains == ("backbone", "teacher", "students")
    assert grads_by_group(model, stage, batch, labels) == {"backbone": True, "teacher": True, "students": True}
    # The distillation part at the recipe's temperature: no gradient reaches the teacher.
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    distillation_kl(out.exit_logits[:-1], out.exit_logits[-1], RECIPES[name].temperature).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.teacher.parameters())


def test_teacher_share_puts_more_gradient_on_the_teachers_path(make_model):
    """The teacher head's gradient from the CE terms leans toward its own path as the share grows: with the KL
    off, the teacher head's gradient at share s is s*(L-1) x (own path) + the rest, checked against the parts."""
    model = make_model(pooling="mean")
    batch, labels = random_batch(batch_size=4), torch.tensor([0, 1, 2, 0])

    def teacher_grad(loss_fn):
        model.zero_grad(set_to_none=True)
        out = model(**batch, diverse=True)
        loss_fn(out).backward()
        return torch.cat([p.grad.flatten() for p in model.teacher.parameters()])

    own = teacher_grad(lambda o: F.cross_entropy(o.exit_logits[-1], labels))
    others = teacher_grad(lambda o: per_exit_cross_entropy(o.diverse_logits, labels).sum())
    weighted = teacher_grad(lambda o: weighted_geep_loss(o.exit_logits, o.diverse_logits, labels,
                                                         model.exit_layers, teacher_share=0.5, kl_weight=0.0))
    torch.testing.assert_close(weighted, 1.5 * own + 0.75 * others, atol=1e-5, rtol=1e-4)  # L-1 = 3 terms


def test_recipes_are_for_geep_only_and_named():
    with pytest.raises(GeepError, match="unknown recipe 'magic'"):
        get_objective("geep", "magic")
    with pytest.raises(GeepError, match="geep objective only"):
        get_objective("fastbert", "teacher")
    assert get_objective("geep").recipe.name == DEFAULT_RECIPE
    for name, recipe in RECIPES.items():
        assert recipe.to_dict()["name"] == name and recipe.epochs in ("epochs", "passes")


def test_cascadebert_difficulty_ranking_loss_by_hand():
    """Easy rows at confidence 0.9 and 0.5, hard ones at 0.55 and 0.95, margin 0.3: pairs (0.9, 0.55): 0.3 - 0.35 <
    0, so 0; (0.9, 0.95): 0.35; (0.5, 0.55): 0.35; (0.5, 0.95): 0.75; mean 1.45 / 4. No hard row: 0 (with a
    gradient)."""
    from geep.modeling.objectives import difficulty_ranking_loss

    c = torch.tensor([0.9, 0.55, 0.5, 0.95], requires_grad=True)
    d = torch.tensor([0, 1, 0, 1])
    loss = difficulty_ranking_loss(c, d, margin=0.3)
    assert float(loss.detach()) == pytest.approx(1.45 / 4)
    loss.backward()
    assert c.grad.tolist() == pytest.approx([-0.25, 0.25, -0.5, 0.5])  # each active pair pushes easy up, hard down
    zero = difficulty_ranking_loss(c, torch.zeros(4, dtype=torch.long))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_the_difficulty_aware_loss_is_every_exits_ce_plus_the_weighted_ranking_term():
    from geep.modeling.objectives import difficulty_aware_loss, difficulty_ranking_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g)  # 3 exits, 4 rows, 5 classes
    labels, d = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 0, 1])
    expected = sum(F.cross_entropy(logits[k], labels) for k in range(3)) + 0.5 * difficulty_ranking_loss(
        logits[-1].softmax(-1).max(-1).values, d, 0.3)
    got = difficulty_aware_loss(logits, None, labels, [1, 2, 3], difficulty=d)
    torch.testing.assert_close(got, expected)
    assert [s.name for s in get_objective("cascade-da").stages] == ["fine-tune", "difficulty-aware"]
    assert get_objective("cascade-da").stages[1].needs_difficulty


def test_hashee_is_the_tasks_loss_at_the_last_exit_with_tokens_halting():
    stage = get_objective("hashee").stages[0]
    assert stage.halts_tokens and stage.trains == ("backbone", "teacher")
    logits, labels = torch.randn(1, 4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(stage.loss(logits, None, labels, [4], task=Classification(("a", "b", "c"))),
                               F.cross_entropy(logits[0], labels))
