"""Attention: every variant equals the others and torch.nn.MultiheadAttention; the KV cache is exact."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.attention import (CausalAttention, FusedMultiHeadAttention, KVCache, MultiHeadAttention,
                               MultiHeadAttentionWrapper, causal_mask)


def copy_wrapper_into_compact(wrapper, mha):
    with torch.no_grad():
        for name in ("W_q", "W_k", "W_v"):
            for kind in ("weight", "bias"):
                getattr(getattr(mha, name), kind).copy_(torch.cat([getattr(getattr(h, name), kind) for h in wrapper.heads]))
        mha.out_proj.load_state_dict(wrapper.out_proj.state_dict())


def torch_reference(fused):
    ref = nn.MultiheadAttention(fused.d_model, fused.n_heads, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(fused.qkv.weight)
        ref.in_proj_bias.copy_(fused.qkv.bias)
        ref.out_proj.load_state_dict(fused.out_proj.state_dict())
    return ref.eval()


@pytest.mark.parametrize("d_model, n_heads, t", [(12, 3, 7), (32, 4, 16), (16, 1, 5), (48, 8, 1)])
def test_all_variants_equal_torch_multihead_attention(d_model, n_heads, t):
    torch.manual_seed(d_model + t)
    wrapper = MultiHeadAttentionWrapper(d_model, d_model, 32, 0.0, n_heads, qkv_bias=True)
    mha = MultiHeadAttention(d_model, d_model, 32, 0.0, n_heads, qkv_bias=True)
    copy_wrapper_into_compact(wrapper, mha)
    fused = FusedMultiHeadAttention(d_model, n_heads, 0.0, qkv_bias=True)
    fused.load_state_dict(mha.state_dict())  # W_q/W_k/W_v -> qkv through the load hook
    x = torch.randn(3, t, d_model)
    expected, _ = torch_reference(fused)(x, x, x, attn_mask=causal_mask(t), need_weights=False)
    for module in (wrapper, mha, fused):
        assert torch.allclose(module(x), expected, atol=1e-5), type(module).__name__


def test_single_head_matches_formula_and_sdpa():
    torch.manual_seed(0)
    ca = CausalAttention(5, 4, context_length=10, dropout=0.0, qkv_bias=True)
    x = torch.randn(2, 6, 5)
    q, k, v = ca.W_q(x), ca.W_k(x), ca.W_v(x)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ca(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="context length"):
        ca(torch.randn(1, 11, 5))


def test_state_dicts_load_both_ways():
    torch.manual_seed(1)
    fused = FusedMultiHeadAttention(16, 4, qkv_bias=True)
    naive = MultiHeadAttention(16, 16, 20, 0.0, 4, qkv_bias=True)
    naive.load_state_dict(fused.state_dict())
    assert torch.equal(naive.W_k.weight, fused.qkv.weight[16:32])
    assert torch.equal(naive.W_v.bias, fused.qkv.bias[32:])
    again = FusedMultiHeadAttention(16, 4, qkv_bias=True)
    again.load_state_dict(naive.state_dict())
    assert torch.equal(again.qkv.weight, fused.qkv.weight)
    assert "mask" not in naive.state_dict()  # the buffer is not a weight


@pytest.mark.parametrize("cls", ["naive", "fused"])
def test_kv_cache_equals_full_pass(cls):
    torch.manual_seed(2)
    module = (MultiHeadAttention(24, 24, 32, 0.0, 3, qkv_bias=True) if cls == "naive"
              else FusedMultiHeadAttention(24, 3, qkv_bias=True))
    x = torch.randn(2, 11, 24)
    cache = KVCache(1)
    parts = [module(x[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, 11)]]
    assert torch.allclose(torch.cat(parts, 1), module(x), atol=1e-5)
    assert cache.length == 11 and cache.layers[0][0].shape == (2, 3, 11, 8)


def test_naive_cache_refuses_overflow():
    module = MultiHeadAttention(8, 8, 4, 0.0, 2)
    cache = KVCache(1)
    module(torch.randn(1, 3, 8), cache)
    with pytest.raises(ValueError, match="context length"):
        module(torch.randn(1, 2, 8), cache)
    assert cache.length == 3  # unchanged by the refused call


def test_causal_mask_with_offset():
    m = causal_mask(2, 5)
    assert m.tolist() == [[False, False, False, False, True], [False] * 5]
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).triu(1))


def test_dropout_only_in_training():
    torch.manual_seed(3)
    x = torch.randn(2, 8, 16)
    for module in (MultiHeadAttention(16, 16, 8, 0.5, 4), FusedMultiHeadAttention(16, 4, dropout=0.5)):
        module.eval()
        a = module(x)
        assert torch.equal(a, module(x))
        module.train()
        assert not torch.allclose(module(x), a)


def test_gradients_agree():
    torch.manual_seed(4)
    fused = FusedMultiHeadAttention(16, 2, qkv_bias=True)
    naive = MultiHeadAttention(16, 16, 8, 0.0, 2, qkv_bias=True)
    naive.load_state_dict(fused.state_dict())
    x = torch.randn(2, 8, 16)
    fused(x).pow(2).sum().backward()
    naive(x).pow(2).sum().backward()
    grad_qkv = torch.cat([naive.W_q.weight.grad, naive.W_k.weight.grad, naive.W_v.weight.grad])
    assert torch.allclose(grad_qkv, fused.qkv.weight.grad, atol=1e-4)
    assert torch.allclose(naive.out_proj.weight.grad, fused.out_proj.weight.grad, atol=1e-4)


def test_bad_head_count():
    with pytest.raises(ValueError, match="divisible"):
        FusedMultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 10, 4, 0.0, 3)


def test_kv_cache_is_preallocated_and_returns_views():
    cache = KVCache(2, max_length=10)
    assert cache.length == 0 and cache.layers == [None, None]  # nothing allocated before a write
    k, v = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    k_all, v_all = cache.update(0, k, v)
    buffer = cache.keys[0]
    assert buffer.shape == (2, 3, 10, 5) and cache.layer_length(0) == 4 and cache.layer_length(1) == 0
    assert torch.equal(k_all, k) and torch.equal(v_all, v) and k_all.data_ptr() == buffer.data_ptr()
    k1, v1 = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
    k_all, v_all = cache.update(0, k1, v1)
    assert cache.keys[0] is buffer  # written in place, not reallocated or concatenated
    assert torch.equal(k_all, torch.cat([k, k1], 2)) and torch.equal(v_all, torch.cat([v, v1], 2))
    with pytest.raises(ValueError, match="holds 10 positions"):
        cache.update(0, torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5))
    assert cache.layer_length(0) == 5  # the refused update changed nothing
    with pytest.raises(ValueError, match="batch, heads, head_dim"):
        cache.update(0, torch.randn(1, 3, 1, 5), torch.randn(1, 3, 1, 5))
    with pytest.raises(ValueError, match="differ"):
        cache.update(1, torch.randn(2, 3, 1, 5), torch.randn(2, 3, 2, 5))
    cache.reset()
    assert cache.length == 0 and cache.keys[0] is buffer
    with pytest.raises(ValueError, match="max_length"):
        KVCache(1, max_length=0)


def test_kv_cache_takes_its_shape_from_the_first_update():
    cache = KVCache(1, max_length=8)  # e.g. grouped-query attention: fewer key/value heads
    k = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    cache.update(0, k, k)
    assert cache.keys[0].shape == (1, 2, 8, 4) and cache.values[0].dtype == torch.float64


def test_kv_cache_without_max_length_grows_and_keeps_its_contents():
    cache = KVCache(1)
    chunks = [torch.randn(1, 2, n, 3) for n in (5, 14, 1, 40)]
    for c in chunks:
        k_all, v_all = cache.update(0, c, -c)
    full = torch.cat(chunks, 2)
    assert torch.equal(k_all, full) and torch.equal(v_all, -full) and cache.length == 60
    assert cache.keys[0].shape[2] >= 60


def test_single_token_cached_step_builds_no_mask(monkeypatch):
    import gptbook.attention as attention

    torch.manual_seed(5)
    module = FusedMultiHeadAttention(16, 4, qkv_bias=True).eval()
    x = torch.randn(1, 6, 16)
    cache = KVCache(1, max_length=6)
    module(x[:, :4], cache)

    def no_mask(*args, **kwargs):
        raise AssertionError("a single-token step must not build a mask")

    monkeypatch.setattr(attention, "causal_mask", no_mask)
    steps = [module(x[:, 4:5], cache), module(x[:, 5:6], cache)]
    assert torch.allclose(torch.cat(steps, 1), module(x)[:, 4:], atol=1e-5)
