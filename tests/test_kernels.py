"""The fast path's matrix products (chapter 4, ``gptbook.kernels``): oneDNN gives ``F.linear``'s values and
gradients, falls back where it should, and changes neither parameters nor state dicts."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook import kernels
from gptbook.model import GPT_CONFIGS, GPTModel

onednn = pytest.mark.skipif(not kernels.ONEDNN, reason="oneDNN products are used on x86 CPUs only")


def _grads(f, x, w, b, grad):
    inputs = [t for t in (x, w, b) if t is not None]
    return f(x, w, b), torch.autograd.grad(f(x, w, b), inputs, grad)


@onednn
@pytest.mark.parametrize("shape,bias,transposed", [((4, 16, 24), True, False), ((64, 24), False, False),
                                                   ((2, 40, 24), True, True)])
def test_linear_gives_f_linear_values_and_gradients(shape, bias, transposed):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(40, 24, generator=g)
    if transposed:  # stored transposed, as generate's decoding layout leaves it
        w = w.T.contiguous().T
    w.requires_grad_(True)
    b = torch.randn(40, generator=g, requires_grad=True) if bias else None
    grad = torch.randn(*shape[:-1], 40, generator=g)
    (y_ref, g_ref), (y, g_got) = _grads(F.linear, x, w, b, grad), _grads(kernels.linear, x, w, b, grad)
    assert y.shape == y_ref.shape and y.grad_fn is not None
    assert "OneDNN" in type(y.grad_fn).__name__  # this product did go through oneDNN
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(g_got, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["few rows", "float64", "autocast", "disabled"])
def test_linear_falls_back_to_f_linear(case, monkeypatch):
    rows, dtype = (kernels.MIN_ROWS - 1, torch.float32) if case == "few rows" else (64, torch.float64)
    if case in ("autocast", "disabled"):
        dtype = torch.float32
    x, w = torch.randn(rows, 8, dtype=dtype), torch.randn(4, 8, dtype=dtype)
    if case == "disabled":
        monkeypatch.setattr(kernels, "ONEDNN", False)
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(kernels.linear(x, w), F.linear(x, w))
    else:
        assert torch.equal(kernels.linear(x, w), F.linear(x, w))


def test_the_environment_switch_turns_onednn_off(monkeypatch):
    monkeypatch.setenv("GPTBOOK_ONEDNN", "0")
    assert kernels._onednn_works() is False


def test_fused_models_use_kernel_layers_with_unchanged_state_dicts():
    torch.manual_seed(0)
    cfg = GPT_CONFIGS["tiny"].with_(vocab_size=97, context_length=32, d_model=32, n_heads=2)
    fused, naive = GPTModel(cfg), GPTModel(cfg.with_(attn_impl="naive"))
    assert all(type(m) is kernels.Linear for m in fused.modules() if isinstance(m, nn.Linear))
    assert not any(isinstance(m, kernels.Linear) for m in naive.modules())
    plain = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    converted = kernels.use_kernels_(copy.deepcopy(plain))
    assert converted.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in plain.state_dict().items())


@onednn
def test_a_training_step_matches_the_plain_products(monkeypatch):
    """Loss and every gradient of a GPT step with oneDNN products equal those with F.linear."""
    torch.manual_seed(0)
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=97, context_length=64))
    idx = torch.randint(0, 97, (4, 64))

    def step():
        model.zero_grad()
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = step()
    monkeypatch.setattr(kernels, "ONEDNN", False)
    loss_ref, grads_ref = step()
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


@onednn
def test_a_large_weight_goes_through_onednn_even_for_one_row():
    x, w = torch.randn(1, 1024), torch.randn(kernels.MIN_WEIGHT // 1024, 1024, requires_grad=True)
    y = kernels.linear(x, w)
    assert "OneDNN" in type(y.grad_fn).__name__
    assert kernels.takes_single_rows(w) and not kernels.takes_single_rows(w[:-1].detach())
    assert not kernels.takes_single_rows(w.detach().half())  # F.linear's: no oneDNN for float16
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-5, atol=1e-4)


@onednn
def test_compiled_products_are_the_custom_operator_and_agree_with_eager():
    """Under torch.compile the oneDNN product is the opaque gptbook::mm_nt: values and gradients as in eager."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 16, generator=g, requires_grad=True)
    w = torch.randn(24, 16, generator=g, requires_grad=True)
    b = torch.randn(24, generator=g, requires_grad=True)

    def loss(x, w, b):
        return kernels.linear(x, w, b).tanh().sum()

    eager = torch.autograd.grad(loss(x, w, b), (x, w, b))
    compiled = torch.compile(loss, fullgraph=True)  # fullgraph: no graph break around the operator
    got = torch.autograd.grad(compiled(x, w, b), (x, w, b))
    for a, r in zip(got, eager):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [kernels.MIN_ROWS - 1, 64])
def test_mm_nt_is_a_times_b_transposed(rows):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(rows, 24, generator=g), torch.randn(40, 24, generator=g)
    torch.testing.assert_close(kernels.mm_nt(a, b), a @ b.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.mm_nt(a.t().contiguous().t(), b.t().contiguous().t()), a @ b.T,
                               rtol=1e-5, atol=1e-5)  # any strides
