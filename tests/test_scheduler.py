import math
import random
from collections import Counter

import torch

import conftest
from geep.policies import entropy
from geep.scheduler import bucket_order, run_buckets


def normalised_entropy(logits):
    return entropy(logits) / math.log(logits.shape[-1])


def random_texts(n: int, seed: int = 0) -> list[str]:
    return conftest.random_texts(n, seed, min_words=0, max_words=20)


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


def test_bucket_order_sorts_by_layer_then_length():
    assert bucket_order([3, 1, 3, 1], [5, 9, 2, 1]) == [3, 1, 2, 0]


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


@torch.inference_mode()
def test_replayed_bucket_flops_equal_what_ran(make_model):
    from geep.flops import FlopsCount, FlopsSpec
    from geep.scheduler import replay_bucket_flops

    model = make_model(exit_layers=[1, 2, 3, 4], head="attention", pooling="mean")
    texts = random_texts(45, seed=4)
    encoded = model.tokenize(texts)
    lengths = [len(x) for x in encoded["input_ids"]]
    predicted = torch.tensor([random.Random(i).choice([1, 2, 3]) for i in range(45)])
    spec = FlopsSpec.from_model(model)
    for verify in (None, 0.9):
        counted = FlopsCount(spec)
        _, exits = run_buckets(model, encoded, predicted, batch_size=6, verify_threshold=verify, counter=counted)
        replay = replay_bucket_flops(spec, lengths, predicted.tolist(), exits.tolist(), batch_size=6)
        assert replay.layer_calls == counted.layer_calls and replay.head_calls == counted.head_calls
        assert replay.total == counted.total > 0
