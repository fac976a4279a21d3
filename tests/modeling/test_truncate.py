"""Static baselines: an encoder cut to its first k layers by its family's adapter (``geep train --num-layers``)."""

from __future__ import annotations

import pytest
import torch

from geep import MultiExitClassifier
from geep.errors import GeepError
from geep.modeling.backbone import parity_batch
from tests import families


@pytest.mark.parametrize("case", families.CASES)
@pytest.mark.parametrize("k", [1, 3])
def test_a_cut_model_is_the_first_k_layers_of_the_encoder(tmp_path, case, k):
    """h_k of the cut model = h_k of the whole encoder (every family; ALBERT's shared groups kept as its first k
    layers run them), it has k layers and one exit at k, and it saves and loads as any model."""
    path = families.save(tmp_path / case, case)
    whole = MultiExitClassifier.from_encoder(path, label_names=["a", "b"], pooling="first")
    cut = MultiExitClassifier.from_encoder(path, label_names=["a", "b"], pooling="first", num_layers=k)
    assert (cut.num_layers, cut.exit_layers, cut.config.truncated_from) == (k, [k], 4)
    batch = parity_batch(whole.backbone.encoder)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = whole.backbone.output(whole.run_layers(whole.embed(**batch), k).hidden)
        got = cut.backbone.output(cut.run_layers(cut.embed(**batch), k).hidden)
    assert float((expected[real] - got[real]).abs().max()) <= 1e-6
    cut.save_pretrained(tmp_path / "saved")
    again = MultiExitClassifier.from_pretrained(tmp_path / "saved")
    assert (again.num_layers, again.exit_layers, again.config.truncated_from) == (k, [k], 4)


def test_albert_groups_that_cannot_be_split_at_k_are_one_line(tmp_path):
    """6 layers over 4 groups run groups 0,0,1,2,2,3: cut at 4 they are 0,0,1,2 (3 groups over 4 layers); at 5,
    0,0,1,2,2, which no number of groups over 5 layers gives."""
    path = families.save(tmp_path / "albert", "albert", num_hidden_layers=6, num_hidden_groups=4)
    cut = MultiExitClassifier.from_encoder(path, label_names=["a", "b"], pooling="first", num_layers=4)
    assert cut.backbone.config.num_hidden_groups == 3
    with pytest.raises(GeepError, match="no number of groups"):
        MultiExitClassifier.from_encoder(path, label_names=["a", "b"], pooling="first", num_layers=5)


@pytest.mark.parametrize("k", [0, 5, -1])
def test_a_layer_count_outside_the_encoder_is_one_line(tmp_path, k):
    path = families.save(tmp_path / "bert", "bert")
    with pytest.raises(GeepError, match=r"--num-layers must be in 1\.\.4"):
        MultiExitClassifier.from_encoder(path, label_names=["a", "b"], num_layers=k)


def test_the_cut_models_flops_are_k_layers_and_one_head(tmp_path):
    """A full run of the 2-layer cut of a 4-layer BERT on rows of 5 and 9 tokens (batch of 2, padded to 9): two
    layers of 2T(4H^2 + 2HI) + 4T^2H and one linear head 2H^2 + 2HC per row, H = 32, I = 37, C = 2."""
    from geep.inference import run_policy

    path = families.save(tmp_path / "bert", "bert")
    cut = MultiExitClassifier.from_encoder(path, label_names=["a", "b"], head="linear", pooling="first",
                                           num_layers=2)
    encoded = {"input_ids": [[2] + [7] * 3 + [3], [2] + [8] * 7 + [3]]}
    run = run_policy(cut, encoded, "full", batch_size=2)
    H, I, C, T = 32, 37, 2, 9
    layer = 2 * T * (4 * H * H + 2 * H * I) + 4 * T * T * H
    assert run.flops.total == 2 * (2 * layer) + 2 * (2 * H * H + 2 * H * C)
    assert run.exit_layer.tolist() == [2, 2]
