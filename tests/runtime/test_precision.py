"""Choosing a backend for a precision: checks, the prepared copy and its cache."""

import pytest
import torch

from geep.errors import GeepError
from geep.runtime import PRECISIONS, check_precision, make_backend, parse_precisions, prepared_model
from geep.runtime.exact_attention import NAME as OWN_LENGTH
from geep.runtime.int8 import Int8Linear
from geep.runtime.torch_backend import LengthGroupedBackend, TorchBackend


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


def _wide_model():
    """Wide enough for some values to sit at a rounding boundary: with padded attention a row's int8 logits move by
    1e-5 between alone and a batch of 40 (measured), so the checks below can fail."""
    from transformers import BertModel

    from geep.modeling import GeepConfig, MultiExitClassifier
    from tests.helpers import tiny_bert_config

    torch.manual_seed(3)
    encoder = BertModel(tiny_bert_config(4, hidden_size=256, intermediate_size=512, num_attention_heads=4))
    model = MultiExitClassifier(encoder, GeepConfig(num_layers=4, label_names=["a", "b"])).eval()
    g = torch.Generator().manual_seed(0)
    rows = [[2] + torch.randint(5, 99, (int(n),), generator=g).tolist() for n in torch.randint(3, 60, (40,), generator=g)]
    return model, rows


def _exit_logits(backend, rows, batch_size):
    """Every exit's logits (N, |E|, C) of ``rows`` run through ``backend`` in batches of ``batch_size``, in order."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            state, logits = backend.embed(list(range(len(batch))), batch), []
            for k in backend.exit_layers:
                state = backend.run_layers(state, k)
                logits.append(backend.read_head(state))
            out.append(torch.stack(logits, 1))
    return torch.cat(out)


def test_int8_rows_do_not_depend_on_the_padding_of_their_batch():
    """A row alone and padded among longer rows: the same exit logits at int8 to fp32's own noise (the exit heads
    pool in fp32). Each row's attention runs over its own length, switched through the config; the model itself
    keeps its attention."""
    from geep.inference import all_exit_logits

    model, rows = _wide_model()
    encoded = {"input_ids": rows}
    prepared = prepared_model(model, "int8")
    assert prepared.backbone.config._attn_implementation == OWN_LENGTH
    assert model.backbone.config._attn_implementation == "sdpa"
    assert type(make_backend(model, "int8")) is TorchBackend
    together = all_exit_logits(model, encoded, batch_size=40, precision="int8").logits
    alone = all_exit_logits(model, encoded, batch_size=1, precision="int8").logits
    assert float((together - alone).abs().max()) < 1e-6


def test_an_encoder_whose_attention_cannot_be_switched_runs_each_length_apart(monkeypatch):
    """Where the encoder computes its own attention (MPNet, DeBERTa), int8 runs the rows of a step one length at a
    time: the same logits alone and in a batch of 40, and the same as own-length attention on the same rows."""
    from geep.runtime import precision

    model, rows = _wide_model()
    reference = _exit_logits(make_backend(model, "int8"), rows, 40)  # own-length attention
    monkeypatch.setattr(precision, "supports_own_length_attention", lambda encoder: False)
    with torch.no_grad():
        model.backbone.layers[0].output.dense.bias.add_(0.0)  # a new version of a weight: a new prepared copy
    backend = make_backend(model, "int8")
    assert type(backend) is LengthGroupedBackend
    assert backend.model.backbone.config._attn_implementation == "sdpa"  # padded attention, as the family's own
    together = _exit_logits(backend, rows, 40)
    alone = _exit_logits(backend, rows, 1)
    assert float((together - alone).abs().max()) < 1e-6
    assert float((together - reference).abs().max()) < 1e-6
