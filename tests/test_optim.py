"""Our Adam and AdamW against torch.optim, and the weight-decay parameter groups."""
import pytest
import torch
import torch.nn as nn

from gptbook.model import GPT_CONFIGS, GPTModel
from gptbook.optim import Adam, AdamW, param_groups


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.GELU(), nn.Linear(7, 3))


def _run(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 5, generator=gen), torch.randn(16, 3, generator=gen)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kw", [dict(), dict(betas=(0.8, 0.99), eps=1e-6), dict(weight_decay=0.05)])
def test_adam_matches_torch(kw):
    ours = _run(m := _model(), Adam(m.parameters(), lr=0.01, **kw))
    ref = _run(r := _model(), torch.optim.Adam(r.parameters(), lr=0.01, **kw))
    moved = [not torch.equal(a, b) for a, b in zip(ours, [p.detach() for p in _model().parameters()])]
    assert all(moved)  # the test would be empty if nothing changed
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adamw_matches_torch_and_differs_from_l2():
    ours = _run(m := _model(), AdamW(m.parameters(), lr=0.01, weight_decay=0.1))
    ref = _run(r := _model(), torch.optim.AdamW(r.parameters(), lr=0.01, weight_decay=0.1))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    l2 = _run(q := _model(), Adam(q.parameters(), lr=0.01, weight_decay=0.1))
    assert max((a - b).abs().max().item() for a, b in zip(ours, l2)) > 1e-4


def test_adam_with_param_groups_matches_torch():
    # float64: Adam turns even a rounding-level gradient into a full step, so float32 copies can drift
    torch.manual_seed(0)
    m = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=97, d_model=16, n_layers=1)).double()
    torch.manual_seed(0)
    r = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=97, d_model=16, n_layers=1)).double()
    a = AdamW(param_groups(m, 0.1), lr=3e-3, betas=(0.9, 0.95))
    b = torch.optim.AdamW(param_groups(r, 0.1), lr=3e-3, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        idx = torch.randint(0, 97, (2, 12), generator=gen)
        for model, opt in ((m, a), (r, b)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()).backward()
            opt.step()
    for p, q in zip(m.parameters(), r.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)


def test_param_groups_split():
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=101))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids_decay = {id(p) for p in decay["params"]}
    ids_none = {id(p) for p in no_decay["params"]}
    assert not ids_decay & ids_none
    assert ids_decay | ids_none == {id(p) for p in model.parameters()}  # each tensor once, none left out
    assert all(p.dim() == 2 for p in decay["params"])
    assert id(model.tok_emb.weight) in ids_none and id(model.out_head.weight) in ids_none  # tied
    assert id(model.pos_emb.weight) in ids_none
    assert id(model.blocks[0].attn.qkv.weight) in ids_decay and id(model.blocks[0].ff.fc.weight) in ids_decay
    assert all(p.dim() == 1 for p in no_decay["params"] if id(p) not in
               {id(model.tok_emb.weight), id(model.pos_emb.weight)})


def test_frozen_parameters_are_left_out():
    model = _model()
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert id(model[0].weight) not in {id(p) for g in groups for p in g["params"]}


@pytest.mark.parametrize("kw", [dict(lr=0.0), dict(betas=(1.0, 0.9)), dict(eps=0.0), dict(weight_decay=-1.0)])
def test_bad_hyperparameters(kw):
    with pytest.raises(ValueError):
        Adam(_model().parameters(), **kw)
