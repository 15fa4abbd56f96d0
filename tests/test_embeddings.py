"""Tests for gptbook.embeddings: token lookup, the sinusoidal encoding (thesis eq. 2.1), GPTEmbedding."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.embeddings import GPTEmbedding, SinusoidalPositionalEncoding, sinusoidal_table


def formula(pos: int, j: int, d_model: int, base: float = 10000.0) -> float:
    """Equation 2.1, one entry at a time."""
    angle = pos / base ** (2 * (j // 2) / d_model)
    return math.sin(angle) if j % 2 == 0 else math.cos(angle)


def test_embedding_is_row_selection_and_one_hot_product():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 7)
    ids = torch.randint(0, 50, (3, 11))
    out = emb(ids)
    assert torch.equal(out, emb.weight[ids])
    onehot = F.one_hot(ids, 50).to(emb.weight.dtype)
    assert torch.allclose(out, onehot @ emb.weight, atol=0, rtol=0)
    # Gradients: the one-hot product and the lookup give the same gradient for the table.
    g = torch.randn_like(out)
    (out * g).sum().backward()
    grad_lookup = emb.weight.grad.clone()
    emb.weight.grad = None
    ((onehot @ emb.weight) * g).sum().backward()
    assert torch.allclose(grad_lookup, emb.weight.grad, atol=1e-6)


@pytest.mark.parametrize("n,d", [(50, 16), (7, 6), (33, 5), (1, 1), (20, 2)])
def test_sinusoidal_table_matches_formula(n, d):
    table = sinusoidal_table(n, d)
    expected = torch.tensor([[formula(p, j, d) for j in range(d)] for p in range(n)])
    assert table.shape == (n, d) and table.dtype == torch.float32
    assert torch.allclose(table, expected, atol=1e-6)


def test_sinusoidal_matches_exp_log_form_and_other_base():
    # The common implementation writes 1 / 10000**(2i/d) as exp(-2i * ln(10000) / d).
    n, d = 200, 64
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * -(math.log(10000.0) / d))
    ref = torch.zeros(n, d, dtype=torch.float64)
    ref[:, 0::2], ref[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    assert torch.allclose(sinusoidal_table(n, d), ref.float(), atol=1e-6)
    t = sinusoidal_table(10, 8, base=100.0)
    assert math.isclose(t[3, 2].item(), formula(3, 2, 8, 100.0), abs_tol=1e-6)
    assert not torch.allclose(t, sinusoidal_table(10, 8))


def test_sinusoidal_properties():
    n, d = 300, 48
    P = sinusoidal_table(n, d).double()
    assert P.abs().max() <= 1.0
    assert torch.allclose(P.pow(2).sum(1), torch.full((n,), d / 2, dtype=P.dtype), atol=1e-5)
    assert torch.equal(P[0, 0::2], torch.zeros(d // 2, dtype=P.dtype))  # sin(0)
    assert torch.equal(P[0, 1::2], torch.ones(d // 2, dtype=P.dtype))   # cos(0)
    # All positions are distinct.
    assert torch.cdist(P, P).add(torch.eye(n, dtype=P.dtype)).min() > 1e-3
    omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    for k in [1, 2, 17, 150]:
        # Relative positions: PE[pos + k] = M_k PE[pos] with a rotation M_k independent of pos.
        c, s = torch.cos(omega * k), torch.sin(omega * k)
        M = torch.block_diag(*[torch.tensor([[ci, si], [-si, ci]]) for ci, si in zip(c, s)])
        assert torch.allclose(P[:-k] @ M.T, P[k:], atol=1e-5)
        assert torch.allclose(M @ M.T, torch.eye(d, dtype=M.dtype), atol=1e-12)
        # ... hence the dot product depends on the offset only.
        dots = (P[:-k] * P[k:]).sum(1)
        assert torch.allclose(dots, torch.full_like(dots, torch.cos(omega * k).sum().item()), atol=1e-4)
    # and is largest at offset zero.
    sims = P[100] @ P.T
    assert sims.argmax().item() == 100


def test_sinusoidal_module():
    pe = SinusoidalPositionalEncoding(64, 32)
    assert list(pe.parameters()) == [] and len(pe.state_dict()) == 0
    pos = torch.tensor([[0, 5], [63, 1]])
    out = pe(pos)
    assert out.shape == (2, 2, 32)
    assert torch.equal(out[1, 0], sinusoidal_table(64, 32)[63])
    with pytest.raises(IndexError):
        pe(torch.tensor([64]))
    for bad in [(0, 8), (8, 0), (8.5, 8)]:
        with pytest.raises(ValueError):
            SinusoidalPositionalEncoding(*bad)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_gpt_embedding_is_token_plus_position(positional):
    torch.manual_seed(1)
    layer = GPTEmbedding(vocab_size=100, context_length=16, d_model=12, positional=positional)
    ids = torch.randint(0, 100, (3, 10))
    out = layer(ids)
    pos_table = layer.pos_emb.weight if positional == "learned" else sinusoidal_table(16, 12)
    assert out.shape == (3, 10, 12)
    assert torch.allclose(out, layer.tok_emb.weight[ids] + pos_table[:10], atol=1e-6)
    # 1-D input, and a shifted start (generation with a cache).
    assert torch.allclose(layer(ids[0]), out[0], atol=0)
    tail = layer(ids[:, 7:], start=7)
    assert torch.allclose(tail, out[:, 7:], atol=1e-6)
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 100 * 12 + (16 * 12 if positional == "learned" else 0)


def test_gpt_embedding_position_matters():
    torch.manual_seed(2)
    layer = GPTEmbedding(50, 8, 4)
    same = torch.tensor([[3, 3, 3]])
    out = layer(same)[0]
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_gpt_embedding_dropout_only_in_training():
    torch.manual_seed(3)
    layer = GPTEmbedding(50, 8, 64, dropout=0.5)
    ids = torch.randint(0, 50, (2, 8))
    layer.eval()
    clean = layer(ids)
    assert torch.equal(clean, layer.tok_emb(ids) + layer.pos_emb.weight[:8])
    layer.train()
    dropped = layer(ids)
    zeros = dropped == 0
    assert 0.3 < zeros.float().mean().item() < 0.7
    assert torch.allclose(dropped[~zeros], 2 * clean[~zeros], atol=1e-6)  # survivors scaled by 1/(1-p)


def test_gpt_embedding_errors():
    layer = GPTEmbedding(50, 8, 4)
    with pytest.raises(ValueError, match="context length 8"):
        layer(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="context length"):
        layer(torch.zeros(1, 4, dtype=torch.long), start=5)
    with pytest.raises(TypeError, match="integer"):
        layer(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="positional"):
        GPTEmbedding(50, 8, 4, positional="rotary")
    with pytest.raises(ValueError, match="dropout"):
        GPTEmbedding(50, 8, 4, dropout=1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTEmbedding(0, 8, 4)
