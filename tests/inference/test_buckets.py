import math
import random
from collections import Counter

import torch

from geep.inference import all_exit_logits
from geep.policies import VerifyKnob, entropy, get_policy
from geep.runtime import FlopsCount, FlopsSpec, ReplayBackend, TorchBackend
from tests import helpers


def normalised_entropy(logits):
    return entropy(logits) / math.log(logits.shape[-1])


def random_texts(n: int, seed: int = 0) -> list[str]:
    return helpers.random_texts(n, seed, min_words=0, max_words=20)


def count_calls(model):
    """Rows seen by each layer module and each head, summed over calls (forward hooks)."""
    layer_rows, head_rows, hooks = Counter(), Counter(), []
    for k, layer in enumerate(model.backbone.layers, start=1):
        hooks.append(layer.register_forward_hook(lambda m, a, o, k=k: layer_rows.update({k: a[0].shape[0]})))
    for k, head in model.heads.items():
        hooks.append(head.register_forward_hook(lambda m, a, o, k=int(k): head_rows.update({k: a[0].shape[0]})))
    return layer_rows, head_rows, hooks


def alone(model, text, layer):
    """Probabilities of one row run by itself to ``layer``."""
    enc = model.tokenize([text])
    ids = torch.tensor(enc["input_ids"])
    state = model.run_layers(model.embed(ids, torch.ones_like(ids), torch.tensor(enc["token_type_ids"])), layer)
    return model.exit_logits(state).softmax(-1)[0]


def run_buckets(model, encoded, predicted, *, batch_size, verify_threshold=None, counter=None, backend=None):
    """GEEP's sorted buckets with given predicted layers (N,): ``geep``, or with a continuation threshold
    ``geep-verify``. Probabilities (N, C) and exit layers (N,) on the CPU."""
    verify = verify_threshold is not None
    policy = get_policy("geep-verify" if verify else "geep")
    knob = VerifyKnob(0.5, verify_threshold) if verify else 0.5
    with torch.inference_mode():
        probs, exits = helpers.run_offline(backend or TorchBackend(model), policy, knob, encoded, batch_size=batch_size,
                                predicted=predicted.tolist(), flops=counter)
    return probs.cpu(), exits.cpu()


@torch.inference_mode()
def test_geep_runs_each_row_to_its_predicted_layer_and_calls_only_that_head(make_model):
    model = make_model(exit_layers=[1, 2, 4])
    texts = random_texts(40)
    encoded = model.tokenize(texts)
    predicted = torch.tensor([random.Random(i).choice([1, 2, 4]) for i in range(40)])
    layer_rows, head_rows, hooks = count_calls(model)
    probs, exits = run_buckets(model, encoded, predicted, batch_size=7)
    for h in hooks:
        h.remove()
    assert torch.equal(exits, predicted)
    per_layer = Counter(predicted.tolist())
    assert dict(head_rows) == dict(per_layer)  # one head per row, at its predicted layer, nowhere else
    assert layer_rows[1] == 40 and layer_rows[3] == per_layer[4]  # every row runs exactly to its layer
    for i in (0, 5, 17, 39):
        torch.testing.assert_close(probs[i], alone(model, texts[i], int(predicted[i])), atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_geep_verify_continues_uncertain_rows_without_recomputing_a_layer(make_model):
    model = make_model(exit_layers=[1, 2, 3, 4], num_labels=2)
    texts = random_texts(50, seed=1)
    encoded = model.tokenize(texts)
    predicted = torch.tensor([random.Random(i).choice([1, 2]) for i in range(50)])
    # A threshold in the middle of the realised entropies, so some rows continue and some stop.
    ent = torch.stack([normalised_entropy(alone(model, t, 1).log()[None])[0] for t in texts])
    threshold = float(ent.median())
    layer_rows, head_rows, hooks = count_calls(model)
    probs, exits = run_buckets(model, encoded, predicted, batch_size=8, verify_threshold=threshold)
    for h in hooks:
        h.remove()
    assert (exits >= predicted).all() and (exits > predicted).any() and (exits == predicted).any()
    for k in range(1, 5):  # each row passes each layer once, up to its exit, never again
        assert layer_rows[k] == int((exits >= k).sum())
        # heads run at every layer from the predicted one to the exit
        assert head_rows[k] == int(((predicted <= k) & (exits >= k)).sum())
    for i in range(50):  # the exit is where the fastbert rule at S first holds, from the predicted layer on
        k = int(exits[i])
        p = alone(model, texts[i], k)
        torch.testing.assert_close(probs[i], p, atol=1e-5, rtol=1e-5)
        if k < 4:
            assert normalised_entropy(p.log()[None])[0] <= threshold + 1e-5
        for j in range(int(predicted[i]), k):
            assert normalised_entropy(alone(model, texts[i], j).log()[None])[0] > threshold - 1e-5


@torch.inference_mode()
def test_bucket_results_do_not_depend_on_batch_size(make_model):
    model = make_model(exit_layers=[1, 2, 3, 4])
    texts = random_texts(70, seed=2)
    encoded = model.tokenize(texts)
    predicted = torch.tensor([random.Random(i).choice([1, 2, 3, 4]) for i in range(70)])
    ent = torch.stack([normalised_entropy(alone(model, t, 2).log()[None])[0] for t in texts])
    threshold = float(ent.median())
    ref_p, ref_e = run_buckets(model, encoded, predicted, batch_size=1, verify_threshold=threshold)
    for bs in (7, 64):
        p, e = run_buckets(model, encoded, predicted, batch_size=bs, verify_threshold=threshold)
        near = ((ent - threshold).abs() < 1e-5)
        assert torch.equal(e[~near], ref_e[~near])
        torch.testing.assert_close(p[~near], ref_p[~near], atol=1e-5, rtol=1e-5)


def test_buckets_on_the_replay_backend_equal_what_ran(make_model):
    """The same scheduler on recorded logits gives every row the same exit and counts the same FLOPs."""
    model = make_model(exit_layers=[1, 2, 3, 4], head="attention", pooling="mean")
    texts = random_texts(45, seed=4)
    encoded = model.tokenize(texts)
    predicted = torch.tensor([random.Random(i).choice([1, 2, 3]) for i in range(45)])
    spec = FlopsSpec.from_model(model)
    recorded = ReplayBackend(all_exit_logits(model, encoded).logits, model.exit_layers, model.num_layers)
    for verify in (None, 0.9):
        counted, replayed = FlopsCount(spec), FlopsCount(spec)
        probs, exits = run_buckets(model, encoded, predicted, batch_size=6, verify_threshold=verify, counter=counted)
        r_probs, r_exits = run_buckets(model, encoded, predicted, batch_size=6, verify_threshold=verify,
                                       counter=replayed, backend=recorded)
        assert torch.equal(r_exits, exits) and (verify is None or bool((exits > predicted).any()))
        torch.testing.assert_close(r_probs, probs, atol=1e-5, rtol=0)
        assert replayed.layer_calls == counted.layer_calls and replayed.head_calls == counted.head_calls
        assert replayed.total == counted.total > 0


@torch.inference_mode()
def test_geep_verify_at_tau_0_gives_fastbert_s_exits_at_t(make_model):
    """At tau = 0 every row starts at the first exit and continues under the fastbert rule at t: exactly
    fastbert's exits and answers at t, at any batch size (so geep-verify's frontier contains FastBERT's); at batch
    size 1 both count the same FLOPs too."""
    from geep.evaluation import build_table
    from geep.inference import run_policy

    model = make_model(exit_layers=[1, 2, 3, 4])
    helpers.make_decisive(model, random_texts(40, seed=6))
    build_table(model, random_texts(30, seed=8), build_threshold=0.5)
    encoded = model.tokenize(random_texts(45, seed=7))
    ent = torch.stack([normalised_entropy(l) for l in all_exit_logits(model, encoded).logits.unbind(1)])
    thresholds = [0.0, float(ent.quantile(0.25)), float(ent.median()), float(ent.quantile(0.75)), 1.0]
    spread = set()
    for t in thresholds:
        near = ((ent - t).abs() < 1e-5).any(0)  # a decision exactly at t may flip by float noise
        for batch_size in (1, 4, 16, 64):
            fast = run_policy(model, encoded, "fastbert", t, batch_size=batch_size)
            verify = run_policy(model, encoded, "geep-verify", VerifyKnob(0.0, t), batch_size=batch_size)
            assert torch.equal(verify.exit_layer[~near], fast.exit_layer[~near]), (t, batch_size)
            torch.testing.assert_close(verify.probabilities[~near], fast.probabilities[~near], atol=1e-5,
                                       rtol=1e-5)
            if batch_size == 1:
                assert verify.flops.total == fast.flops.total
            spread.add(tuple(fast.exit_layer.tolist()))
    assert len(spread) >= 3  # the thresholds really moved the exits
