"""Every encoder family geep steps, on tiny random models built from transformers' own config classes
(``tests/families.py``): stepping layer by layer equals the model's own forward, a fine-tuned classifier under
``full`` gives the model's own probabilities, a layer-by-layer policy is batch invariant at fp32 and int8, a saved
model round-trips, and a model stepping would not reproduce is refused in one line."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from geep.errors import GeepError
from geep.inference import all_exit_logits, predict, run_policy
from geep.modeling.backbone import PARITY_TOLERANCE, Backbone
from geep.modeling.families import FAMILIES
from geep.modeling.model import MultiExitClassifier
from geep.policies import entropy
from tests import families
from tests.helpers import make_decisive, random_batch, random_texts

N_ROWS = 70


def hf_inputs(model: MultiExitClassifier, texts: list[str]) -> dict:
    """The texts as the model's tokenizer pads them, in the argument names the HF model's forward takes."""
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    return model.backbone.family.forward_kwargs(batch["input_ids"], batch["attention_mask"],
                                                batch.get("token_type_ids"))


@pytest.mark.parametrize("case", families.CASES)
def test_stepping_reproduces_the_hf_forward_at_every_layer(case):
    """h_L stepped layer by layer equals the HF model's last_hidden_state over real tokens; where transformers
    records each layer's output (``output_hidden_states``), every h_k equals it too."""
    hf = families.build(case)
    batch = random_batch(batch_size=6, seq_len=12, seed=3)  # rows of 2..12 tokens, right padded
    kwargs = FAMILIES[next(n for n, f in FAMILIES.items() if hf.config.model_type in f.model_types)].forward_kwargs(
        **batch)
    with torch.no_grad():
        out = hf(**kwargs, output_hidden_states=True)
        backbone = Backbone(hf)
        state = backbone.embed(**batch)
        states = [state.hidden]
        for k in range(1, backbone.num_layers + 1):
            state = backbone.run_layers(state, k)
            states.append(state.hidden)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(backbone.output(states[-1])[real], out.last_hidden_state[real], atol=1e-5, rtol=0)
    recorded = out.hidden_states
    if recorded is not None and len(recorded) == len(states):
        for k, (ours, theirs) in enumerate(zip(states, recorded)):
            if k == len(states) - 1:  # a pre-norm model records h_L normed, as last_hidden_state
                ours = backbone.output(ours)
            torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0, msg=f"h_{k}")


def _without_position_input(case: str, backbone: Backbone):
    """The adapter's layer call with its position input removed (a zero bias, no relative embeddings, the full mask
    on local layers): what an adapter that forgot it would compute."""
    family = backbone.family
    if case == "mpnet":
        return lambda k, h, inputs: family.layer(backbone.encoder, k, h, (inputs[0], torch.zeros_like(inputs[1])))
    if case.startswith("deberta"):
        return lambda k, h, inputs: family.layer(backbone.encoder, k, h, {**inputs, "rel_embeddings": inputs[
            "rel_embeddings"] * 0})
    if case == "modernbert":
        def full_everywhere(k, h, inputs):
            masks, rotary = inputs
            return family.layer(backbone.encoder, k, h, ({t: masks["full_attention"] for t in masks}, rotary))
        return full_everywhere
    return None


@pytest.mark.parametrize("case", ["mpnet", "deberta", "deberta-v2", "deberta-v3", "modernbert"])
def test_each_position_input_matters(case):
    """Without its position bias, relative embeddings or sliding-window mask, a tiny model's h_L moves by far more
    than the parity tolerance: the parity tests above would catch an adapter that dropped it."""
    backbone = Backbone(families.build(case))
    batch = random_batch(batch_size=3, seq_len=3 * families.WINDOW + 4, seed=1)
    forgetful = _without_position_input(case, backbone)
    with torch.no_grad():
        state = backbone.embed(**batch)
        right = backbone.run_layers(state, backbone.num_layers).hidden
        wrong = state.hidden
        for k in range(1, backbone.num_layers + 1):
            wrong = forgetful(k, wrong, state.mask)
    real = batch["attention_mask"].bool()
    assert float((right[real] - wrong[real]).abs().max()) > 100 * PARITY_TOLERANCE


@pytest.mark.parametrize("case", families.CASES)
def test_fine_tuned_classifier_under_full_gives_the_hf_probabilities(case, tmp_path):
    """A fine-tuned *ForSequenceClassification wrapped by geep keeps its own head as the teacher: ``full`` gives
    the HF model's softmax probabilities (over texts of every length, padded in batches)."""
    directory = families.save(tmp_path / "ft", case, fine_tuned=True)
    model = MultiExitClassifier.from_encoder(directory, head="attention", pooling="mean").eval()
    assert model.label_names == list(families.LABELS)
    texts = random_texts(24, seed=5, max_words=20)
    out = predict(model, texts, policy="full", batch_size=8)
    hf = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = hf(**hf_inputs(model, texts)).logits.softmax(-1)
    torch.testing.assert_close(out.probabilities, expected, atol=1e-5, rtol=0)
    assert out.exit_layer.tolist() == [model.num_layers] * len(texts)


def _decisive_model(case: str, tmp_path) -> tuple[MultiExitClassifier, list[str], dict]:
    """A new multi-exit model of ``case`` whose exits are spread enough that rows leave at different layers."""
    directory = families.save(tmp_path / "enc", case)
    torch.manual_seed(0)
    model = MultiExitClassifier.from_encoder(directory, list(families.LABELS), head="attention", pooling="mean",
                                             max_length=40).eval()
    texts = random_texts(N_ROWS, seed=0, max_words=30)
    return make_decisive(model, texts), texts, model.tokenize(texts)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("case", families.CASES)
def test_layer_by_layer_policy_is_batch_invariant(case, precision, tmp_path):
    """fastbert (rows leave between layers, the batch shrinks and is trimmed; pooled: survivors of several batches
    are gathered into one): each row's label, exit layer and probabilities are the same alone, in shuffled batches
    of 64 and pooled from batches of 7, at fp32 and at int8."""
    model, _, encoded = _decisive_model(case, tmp_path)
    logits = all_exit_logits(model, encoded, batch_size=16, precision=precision).logits  # (N, L, C)
    score = entropy(logits[:, 0]) / math.log(len(families.LABELS))
    knob = float(score.median())
    near = ((entropy(logits[:, :-1].reshape(-1, logits.shape[-1])).view(N_ROWS, -1) / math.log(3) - knob).abs()
            < 1e-5).any(1)  # rows a last-bit difference could flip
    assert int(near.sum()) <= 2
    alone = run_policy(model, encoded, "fastbert", knob, batch_size=1, precision=precision)
    assert len(set(alone.exit_layer.tolist())) >= 2, "the knob should make rows exit at different layers"
    order = list(range(N_ROWS))
    random.Random(1).shuffle(order)
    batched = run_policy(model, encoded, "fastbert", knob, batch_size=64, order=order, precision=precision)
    pooled = run_policy(model, encoded, "fastbert", knob, batch_size=7, order=order, schedule="pooled",
                        precision=precision)
    ok = ~near
    for run in (batched, pooled):
        assert torch.equal(run.exit_layer[ok], alone.exit_layer[ok])
        assert torch.equal(run.probabilities[ok].argmax(-1), alone.probabilities[ok].argmax(-1))
        torch.testing.assert_close(run.probabilities[ok], alone.probabilities[ok], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["mpnet", "deberta-v2", "modernbert", "albert"])
def test_rows_pooled_from_two_batches_keep_their_own_extras(case):
    """Rows gathered from two batches of different lengths (each row's extras padded or trimmed with it, the layers'
    inputs rebuilt) run on to h_L exactly as each row alone does."""
    backbone = Backbone(families.build(case))
    a, b = random_batch(batch_size=4, seq_len=12, seed=1), random_batch(batch_size=3, seq_len=7, seed=2)
    picks = [(a, 2), (b, 1), (a, 1), (b, 2)]  # (batch, row) in the pooled order
    with torch.no_grad():
        sa, sb = (backbone.run_layers(backbone.embed(**x), 2) for x in (a, b))
        pooled = backbone.gather_rows([(sa, torch.tensor([1, 2])), (sb, torch.tensor([1, 2]))],
                                      torch.tensor([1, 2, 0, 3]))
        for name, t in pooled.extras.items():
            assert all(t.shape[d] == pooled.seq_len for d in backbone.family.extra_dims[name]), name
        out = backbone.run_layers(pooled, backbone.num_layers)
        for r, (batch, i) in enumerate(picks):
            n = int(batch["attention_mask"][i].sum())
            row = {key: v[i:i + 1, :n] for key, v in batch.items()}
            alone = backbone.run_layers(backbone.embed(**row), backbone.num_layers)
            torch.testing.assert_close(out.hidden[r, :n], alone.hidden[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", families.CASES)
def test_save_load_round_trip(case, tmp_path):
    """A fine-tuned model of every family saved by geep loads back (its parity checked again) and predicts the
    same exits and probabilities under every-layer fastbert."""
    directory = families.save(tmp_path / "ft", case, fine_tuned=True)
    model = MultiExitClassifier.from_encoder(directory, head="linear", pooling="first").eval()
    model.save_pretrained(tmp_path / "geep")
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "geep")
    assert loaded.config == model.config and type(loaded.backbone.family) is type(model.backbone.family)
    texts = random_texts(12, seed=2)
    a = predict(model, texts, policy="fastbert", knob=0.9)
    b = predict(loaded, texts, policy="fastbert", knob=0.9)
    assert torch.equal(a.exit_layer, b.exit_layer) and torch.equal(a.probabilities, b.probabilities)


def test_an_adapter_that_drops_a_position_input_is_refused(monkeypatch):
    """The parity check at load: an MPNet adapter that forgot the position bias is refused in one line naming the
    family and the supported ones, before any model is built around it."""
    family = FAMILIES["mpnet"]
    monkeypatch.setattr(type(family), "layer", lambda self, encoder, k, h, inputs: encoder.encoder.layer[k - 1](
        h, inputs[0])[0])
    encoder = families.build("mpnet")
    with pytest.raises(GeepError) as e:
        Backbone(encoder).check_parity()
    message = str(e.value)
    assert "\n" not in message and "MPNet adapter on a mpnet model does not reproduce its own forward" in message
    assert "DeBERTa-v2/v3" in message and "ModernBERT" in message


def test_a_layer_whose_signature_moved_is_refused(monkeypatch):
    """A layer call that raises (a transformers release that changed a layer's arguments) is one line too."""
    monkeypatch.setattr(type(FAMILIES["distilbert"]), "layer", lambda self, encoder, k, h, inputs: encoder.transformer
                        .layer[k - 1](h, inputs, None, None))  # arguments it does not take
    with pytest.raises(GeepError, match=r"^geep cannot step this model: the DistilBERT adapter .* failed \(TypeError"):
        Backbone(families.build("distilbert")).check_parity()


def test_a_model_type_no_adapter_names_runs_only_if_stepping_reproduces_it():
    """A model type without an adapter is stepped as BERT-shaped: data2vec-text (RoBERTa's layers) reproduces its
    own forward and runs; RoBERTa-PreLayerNorm (a final LayerNorm after its layers) does not, and is refused."""
    from transformers import Data2VecTextConfig, RobertaPreLayerNormConfig

    roberta = families.CONFIGS["roberta"][1]
    same = Backbone(AutoModel.from_config(Data2VecTextConfig(**roberta)).eval())
    assert same.check_parity() <= PARITY_TOLERANCE
    different = Backbone(AutoModel.from_config(RobertaPreLayerNormConfig(**roberta)).eval())
    with pytest.raises(GeepError, match=r"^geep refuses this model: stepped layer by layer, the BERT, RoBERTa, "
                                        r"XLM-RoBERTa, CamemBERT adapter on a roberta-prelayernorm model does not "
                                        r"reproduce its own forward \(largest difference"):
        different.check_parity()


@pytest.mark.parametrize("case", ["gpt2", "t5", "bert-decoder"])
def test_decoders_are_refused_before_loading(case):
    from transformers import BertConfig, GPT2Config, T5Config

    config = {"gpt2": lambda: GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=99),
              "t5": lambda: T5Config(num_layers=2, d_model=32, num_heads=2, vocab_size=99, d_ff=37, d_kv=16),
              "bert-decoder": lambda: BertConfig(**{**families.CONFIGS["bert"][1], "is_decoder": True})}[case]()
    with pytest.raises(GeepError, match="decoder|encoder-decoder") as e:
        Backbone(AutoModel.from_config(config))
    assert "geep steps encoders: BERT" in str(e.value)


# geep (its diverse terms run Layer_L on h_1..h_{L-2} stacked, each row with its extras) on every family; every
# objective on the pre-norm family and on the one with a convolution after layer 1 (objectives read only the exits'
# logits, which nothing above the backbone makes per family).
OBJECTIVE_CASES = [(case, "geep") for case in families.CASES] + [
    (case, objective) for case in ("modernbert", "deberta-v2") for objective in ("fastbert", "deebert", "pabee")]


@pytest.mark.parametrize("case, objective", OBJECTIVE_CASES)
def test_every_objective_trains_every_family(case, objective, tmp_path):
    """One short run of an objective on a new multi-exit model of a family: the dev accuracies are finite, the
    backbone learns (its family's position parameters included, where it has some), and the trained model still
    steps as its own forward runs."""
    from geep.training import EncodedData, TrainingArguments, train

    directory = families.save(tmp_path / "enc", case)
    torch.manual_seed(0)
    model = MultiExitClassifier.from_encoder(directory, list(families.LABELS), head="linear", objective=objective,
                                             max_length=16)
    before = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    texts = random_texts(32, seed=3)
    labels = [i % 3 for i in range(32)]
    data = EncodedData.from_texts(model, texts, None, labels)
    result = train(model, data, data, TrainingArguments(epochs=1, distil_epochs=1, batch_size=16, lr=1e-3,
                                                        show_progress_bar=False))
    assert all(math.isfinite(v) for v in result.dev_accuracy.values())
    moved = {name for name, p in model.backbone.named_parameters() if not torch.equal(p, before[name])}
    assert moved, "the backbone should learn"
    for name in ("relative_attention_bias", "rel_embeddings"):
        if any(name in n for n in before):
            assert any(name in n for n in moved), name
    model.backbone.check_parity()  # the trained model still steps as its own forward runs
