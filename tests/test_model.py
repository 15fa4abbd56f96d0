"""GPTModel: LayerNorm and GELU against torch, parameter counts, configs, caching, naive = fused."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.model import GELU, GPT_CONFIGS, FeedForward, GPTConfig, GPTModel, LayerNorm
from gptbook.utils import count_parameters


@pytest.mark.parametrize("dim", [1, 7, 768])
def test_layer_norm_equals_torch(dim):
    torch.manual_seed(dim)
    ours, ref = LayerNorm(dim), nn.LayerNorm(dim)
    with torch.no_grad():
        ours.weight.normal_(); ours.bias.normal_()
        ref.weight.copy_(ours.weight); ref.bias.copy_(ours.bias)
    x = torch.randn(4, 5, dim) * 10 + 3
    assert torch.allclose(ours(x), ref(x), atol=1e-4)
    x.requires_grad_(True)
    (g_ours,) = torch.autograd.grad(ours(x).sin().sum(), x)
    (g_ref,) = torch.autograd.grad(ref(x).sin().sum(), x)
    assert torch.allclose(g_ours, g_ref, atol=1e-4)


def test_gelu_equals_torch():
    x = torch.linspace(-8, 8, 1001)
    assert torch.allclose(GELU()(x), F.gelu(x, approximate="tanh"), atol=1e-6)
    assert torch.allclose(GELU("none")(x), F.gelu(x), atol=1e-6)
    with pytest.raises(ValueError):
        GELU("relu")


def test_feed_forward_shape_and_width():
    ff = FeedForward(16)
    assert ff.fc.out_features == 64 and ff(torch.randn(2, 3, 16)).shape == (2, 3, 16)


def test_gpt2_small_parameter_counts():
    with torch.device("meta"):
        tied = GPTModel(GPT_CONFIGS["gpt2-small"])
        untied = GPTModel(GPT_CONFIGS["gpt2-small"].with_(tie_weights=False))
    assert count_parameters(tied.blocks[0]) == 7_087_872 == 7_085_568 + 2_304
    assert count_parameters(tied) == 124_439_808
    assert count_parameters(untied) == 163_037_184


def test_parameter_counts_equal_transformers():
    transformers = pytest.importorskip("transformers")
    for name in ("gpt2-small", "gpt2-medium", "gpt2-xl"):
        cfg = GPT_CONFIGS[name]
        with torch.device("meta"):
            hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
                n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_positions=cfg.context_length))
            ours = GPTModel(cfg)
        assert count_parameters(ours) == count_parameters(hf), name


def test_config_validation_and_with():
    cfg = GPT_CONFIGS["tiny"]
    assert cfg.with_(n_layers=3).n_layers == 3 and cfg.n_layers == 2
    assert GPT_CONFIGS["gpt1"].pre_norm is False and GPTConfig().attn_impl == "fused"
    for bad in (dict(d_model=10, n_heads=3), dict(attn_impl="flash"), dict(dropout=1.5), dict(n_layers=0)):
        with pytest.raises(ValueError):
            cfg.with_(**bad)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_naive_and_fused_models_agree(pre_norm):
    torch.manual_seed(0)
    cfg = GPT_CONFIGS["tiny"].with_(vocab_size=300, pre_norm=pre_norm)
    fused = GPTModel(cfg).eval()
    naive = GPTModel(cfg.with_(attn_impl="naive")).eval()
    naive.load_state_dict(fused.state_dict())
    idx = torch.randint(0, 300, (2, 20))
    assert torch.allclose(naive(idx), fused(idx), atol=1e-4)
    back = GPTModel(cfg).eval()
    back.load_state_dict(naive.state_dict())
    assert torch.allclose(back(idx), fused(idx), atol=1e-6)


@pytest.mark.parametrize("attn_impl", ["fused", "naive"])
def test_cache_forward_equals_full(attn_impl):
    torch.manual_seed(1)
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=300, attn_impl=attn_impl)).eval()
    idx = torch.randint(0, 300, (2, 12))
    cache = model.new_cache()
    steps = torch.cat([model(idx[:, :7], cache=cache), model(idx[:, 7:8], cache=cache),
                       model(idx[:, 8:], cache=cache)], dim=1)
    assert torch.allclose(steps, model(idx), atol=1e-4)


def test_tying_inputs_embeds_hidden_states_and_causality():
    torch.manual_seed(2)
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=300)).eval()
    assert model.out_head.weight is model.tok_emb.weight
    assert GPTModel(GPT_CONFIGS["tiny"].with_(tie_weights=False)).out_head.weight is not None
    idx = torch.randint(0, 300, (2, 9))
    logits = model(idx)
    assert torch.allclose(model(inputs_embeds=model.tok_emb(idx)), logits)
    assert torch.allclose(model.out_head(model.hidden_states(idx)), logits)
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 300
    assert torch.allclose(model(changed)[:, :5], logits[:, :5], atol=1e-6)


def test_clear_errors():
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=300, context_length=8))
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(9, dtype=torch.long))


def test_post_norm_has_no_final_norm_and_trains():
    torch.manual_seed(3)
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=50, pre_norm=False, n_layers=1))
    assert isinstance(model.final_norm, nn.Identity)
    idx = torch.randint(0, 50, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):  # memorise one batch: the loss must fall
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("attn_impl", ["fused", "naive"])
def test_out_of_range_token_ids_are_refused(attn_impl):
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=300, attn_impl=attn_impl))
    for bad in (300, 10_000, -1):
        idx = torch.tensor([[1, 2, bad]])
        with pytest.raises(ValueError, match=r"token ids must lie in \[0, 300\)"):
            model(idx)
        with pytest.raises(ValueError, match="token ids"):
            model.hidden_states(idx)
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))
    assert model(torch.tensor([[0, 299]])).shape == (1, 2, 300)  # the ends of the range are fine


def test_new_cache_has_room_for_the_context():
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=300, context_length=16)).eval()
    cache = model.new_cache()
    model(torch.zeros(2, 3, dtype=torch.long), cache=cache)
    assert cache.keys[0].shape[2] == 16 and cache.length == 3 and len(cache.keys) == 2
    short = model.new_cache(max_length=5)
    model(torch.zeros(1, 5, dtype=torch.long), cache=short)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 1, dtype=torch.long), cache=short)
