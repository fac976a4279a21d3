"""Choosing a backend for a precision: checks, the prepared copy and its cache."""

import pytest
import torch

from geep.errors import GeepError
from geep.runtime import PRECISIONS, check_precision, make_backend, parse_precisions, prepared_model
from geep.runtime.int8 import Int8Linear


def test_precisions_and_devices():
    assert PRECISIONS == ("fp32", "int8", "fp16", "bf16")
    assert check_precision("int8", "cpu") == "int8"
    with pytest.raises(GeepError, match=r"unknown precision 'int4'; choose one of: fp32, int8, fp16, bf16"):
        check_precision("int4")
    with pytest.raises(GeepError, match="fp16 runs on cuda, not cpu; on cpu use one of: fp32, int8, bf16"):
        check_precision("fp16", "cpu")
    with pytest.raises(GeepError, match="int8 runs on cpu, not cuda; on cuda use one of: fp32, fp16, bf16"):
        check_precision("int8", "cuda")
    assert parse_precisions("fp32, int8,fp32") == ["fp32", "int8"]
    with pytest.raises(GeepError, match="unknown precision"):
        parse_precisions("fp32,fp8")


def test_int8_copy_quantises_every_encoder_linear_and_leaves_the_model_alone(make_model):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = prepared_model(model, "int8")
    assert int8 is not model
    linears = [m for layer in int8.backbone.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    quantised = [m for layer in int8.backbone.layers for m in layer.modules() if isinstance(m, Int8Linear)]
    assert not linears and len(quantised) == 6 * model.num_layers  # Q, K, V, attention out, FFN in, FFN out
    assert int8.heads is model.heads  # the heads stay fp32 and are shared
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(isinstance(m, torch.nn.Linear) for layer in model.backbone.layers for m in layer.modules()
               if "Linear" in type(m).__name__)


def test_the_prepared_copy_is_made_once_and_again_when_the_weights_change(make_model):
    model = make_model()
    first = prepared_model(model, "int8")
    assert prepared_model(model, "int8") is first
    assert make_backend(model, "int8").model is first
    with torch.no_grad():
        model.backbone.layers[0].intermediate.dense.weight.mul_(2.0)  # in place: the copy is stale
    assert prepared_model(model, "int8") is not first
    assert make_backend(model, "fp32").model is model


def test_bf16_on_the_cpu_reads_fp32_logits(make_model):
    model = make_model()
    backend = make_backend(model, "bf16")
    assert next(backend.model.backbone.parameters()).dtype == torch.bfloat16
    state = backend.run_layers(backend.embed([0, 1], [[2, 7, 9], [2, 5]]), 1)
    assert backend.read_head(state).dtype == torch.float32


def test_int8_rows_do_not_depend_on_the_padding_of_their_batch():
    """A row alone and padded among longer rows: the same exit logits at int8 to fp32's own noise. Attention sums
    over the padded length; its inputs are handed over in float64 so int8 rounding never sees the difference."""
    from transformers import BertModel

    from geep.inference import all_exit_logits
    from geep.modeling import GeepConfig, MultiExitClassifier
    from tests.helpers import tiny_bert_config

    torch.manual_seed(3)
    # Wide enough for some values to sit at a rounding boundary (with fp32 attention the logits differ by 1e-5).
    encoder = BertModel(tiny_bert_config(4, hidden_size=256, intermediate_size=512, num_attention_heads=4))
    model = MultiExitClassifier(encoder, GeepConfig(num_layers=4, label_names=["a", "b"])).eval()
    g = torch.Generator().manual_seed(0)
    rows = [[2] + torch.randint(5, 99, (int(n),), generator=g).tolist() for n in torch.randint(3, 60, (40,), generator=g)]
    encoded = {"input_ids": rows}
    attention = [m for m in prepared_model(model, "int8").modules() if isinstance(m, Int8Linear)
                 and m.out_dtype == torch.float64]
    assert len(attention) == 3 * 4  # query, key, value of each layer
    together = all_exit_logits(model, encoded, batch_size=40, precision="int8").logits
    alone = all_exit_logits(model, encoded, batch_size=1, precision="int8").logits
    assert float((together - alone).abs().max()) < 1e-6
