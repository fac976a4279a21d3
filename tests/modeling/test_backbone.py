import torch
from transformers import BertModel

from tests.helpers import random_batch, tiny_bert_config
from geep.modeling.backbone import Backbone, drop_rows


def test_last_layer_equals_plain_hf_model():
    torch.manual_seed(0)
    for attn in ("sdpa", "eager"):
        hf = BertModel(tiny_bert_config(attn_implementation=attn)).eval()
        batch = random_batch()
        with torch.no_grad():
            expected = hf(**batch).last_hidden_state
            backbone = Backbone(hf)
            state = backbone.run_layers(backbone.embed(**batch), backbone.num_layers)
        mask = batch["attention_mask"].bool()
        assert state.layer == 4
        assert torch.equal(state.hidden[mask], expected[mask]), attn


def test_run_layers_in_steps_equals_one_run():
    backbone = Backbone(BertModel(tiny_bert_config()).eval())
    batch = random_batch()
    with torch.no_grad():
        s0 = backbone.embed(**batch)
        once = backbone.run_layers(s0, 4)
        steps = backbone.run_layers(backbone.run_layers(s0, 1), 4)
    assert torch.equal(once.hidden, steps.hidden)


def test_dropping_rows_keeps_survivors_outputs():
    """Rows leaving mid-way (with the mask sliced and padding trimmed) leave the others' h_L unchanged."""
    backbone = Backbone(BertModel(tiny_bert_config()).eval())
    batch = random_batch(batch_size=6, seq_len=11, seed=3)
    with torch.no_grad():
        full = backbone.run_layers(backbone.embed(**batch), 4)
        state = backbone.run_layers(backbone.embed(**batch), 2)
        leaving = torch.tensor([True, False, True, False, False, True])  # row 0 (the longest) leaves
        state = backbone.run_layers(drop_rows(backbone, state, leaving), 4)
    assert state.row_ids.tolist() == [1, 3, 4]
    assert state.seq_len < full.seq_len  # padding only the longest row needed was trimmed
    for r, i in enumerate(state.row_ids.tolist()):
        n = int(batch["attention_mask"][i].sum())
        torch.testing.assert_close(state.hidden[r, :n], full.hidden[i, :n], atol=1e-5, rtol=1e-5)
        assert state.attention_mask[r].sum() == n


def test_rejects_encoder_without_layers():
    import pytest

    from geep.errors import GeepError

    with pytest.raises(GeepError, match="not a Hugging Face model; geep steps these encoder families: BERT"):
        Backbone(torch.nn.Linear(2, 2))
