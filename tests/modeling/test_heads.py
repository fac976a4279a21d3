import pytest
import torch

from geep.modeling.heads import AttentionHead, LinearHead, build_head


@pytest.mark.parametrize("pooling", ["first", "mean"])
@pytest.mark.parametrize("kind", ["attention", "linear"])
def test_heads_ignore_padding(kind, pooling):
    torch.manual_seed(0)
    head = build_head(kind, hidden_size=32, num_labels=3, pooling=pooling).eval()
    hidden = torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    changed = hidden.clone()
    changed[0, 4:] = torch.randn(2, 32) * 10  # what sits under padding must not matter
    a, b = head(hidden, mask), head(changed, mask)
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b)
    trimmed = head(hidden[:1, :4], mask[:1, :4])  # nor does how much padding there is
    torch.testing.assert_close(a[:1], trimmed, atol=1e-6, rtol=1e-5)


def test_attention_head_first_pooling_reads_tokens_beyond_the_first():
    torch.manual_seed(0)
    head = AttentionHead(32, 3, pooling="first").eval()
    hidden = torch.randn(1, 5, 32)
    changed = hidden.clone()
    changed[0, 3] += 5.0  # a real token: the first position attends to it
    assert not torch.allclose(head(hidden, torch.ones(1, 5)), head(changed, torch.ones(1, 5)))


def test_linear_head_first_pooling_is_bert_pooler_plus_classifier():
    torch.manual_seed(0)
    head = LinearHead(32, 4, pooling="first").eval()
    hidden = torch.randn(3, 5, 32)
    expected = head.classifier(torch.tanh(head.dense(hidden[:, 0])))
    torch.testing.assert_close(head(hidden, torch.ones(3, 5)), expected)


def test_unknown_head_is_a_clear_error():
    from geep.errors import GeepError

    with pytest.raises(GeepError, match="unknown head 'mlp'"):
        build_head("mlp", 32, 3, "first")
