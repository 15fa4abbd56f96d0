"""Chapter 10: LLaMA's parts proven equal to torch and transformers, the loader, and the counts."""
import json
import math
import urllib.error

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.attention import KVCache
from gptbook.generate import generate
from gptbook.llama import (LLAMA_CONFIGS, GroupedQueryAttention, RMSNorm, SwiGLU, apply_rope,
                           apply_rope_complex, fused_grouped_attention, grouped_attention,
                           kv_cache_bytes, llama_config, llama_parameters, repeat_kv,
                           rope_cos_sin, rope_frequencies, rotate_half, silu, swiglu_hidden,
                           training_memory)
from gptbook.llama_weights import (download_llama, llama_config_from_hf, llama_state_dict,
                                   load_llama, load_llama_weights, read_llama_tensors)
from gptbook.model import GPTConfig, GPTModel, write_safetensors
from gptbook.utils import count_parameters

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.models.llama.modeling_llama import (LlamaMLP, LlamaRMSNorm,  # noqa: E402
                                                      LlamaRotaryEmbedding, apply_rotary_pos_emb)


def hf_llama(d=64, heads=4, kv=2, layers=2, ff=176, vocab=300, tied=False, base=10000.0,
             eps=1e-6, ctx=128, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, num_attention_heads=heads,
                      num_key_value_heads=kv, num_hidden_layers=layers, intermediate_size=ff,
                      tie_word_embeddings=tied, rope_theta=base, rms_norm_eps=eps,
                      max_position_embeddings=ctx)
    return LlamaForCausalLM(cfg).eval()


def ours_from(hf, **overrides):
    model = GPTModel(llama_config_from_hf(hf.config.to_dict(), **overrides)).eval()
    return load_llama_weights(model, hf.state_dict())


# ------------------------------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("dim, eps", [(1, 1e-5), (7, 1e-6), (256, 1e-5)])
def test_rmsnorm_equals_torch_and_hf(dim, eps):
    torch.manual_seed(dim)
    ours, ref, hf = RMSNorm(dim, eps), nn.RMSNorm(dim, eps=eps), LlamaRMSNorm(dim, eps=eps)
    with torch.no_grad():
        ours.weight.normal_()
    ref.load_state_dict(ours.state_dict())
    hf.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, dim) * 4 + 2
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert torch.allclose(ours(x), hf(x), atol=1e-6)
    x.requires_grad_(True)
    (g1,) = torch.autograd.grad(ours(x).sin().sum(), x)
    (g2,) = torch.autograd.grad(ref(x).sin().sum(), x)
    assert torch.allclose(g1, g2, atol=1e-5)


def test_rmsnorm_low_precision_is_computed_in_float32():
    norm, x = RMSNorm(64).to(torch.bfloat16), torch.randn(2, 64).to(torch.bfloat16) * 100
    out = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (x.float() / x.float().pow(2).mean(-1, keepdim=True).add(1e-5).sqrt())
                       .to(torch.bfloat16))


def test_layernorm_is_rmsnorm_of_the_centred_vector():
    x = torch.randn(10, 32)
    assert torch.allclose(nn.LayerNorm(32, elementwise_affine=False)(x),
                          RMSNorm(32)(x - x.mean(-1, keepdim=True)), atol=1e-5)
    assert torch.allclose(RMSNorm(32)(7 * x), RMSNorm(32)(x), atol=1e-5)


# -------------------------------------------------------------------------------------------- SwiGLU
def test_silu_and_swiglu_widths():
    x = torch.linspace(-20, 20, 4001)
    assert torch.allclose(silu(x), F.silu(x), atol=1e-6)
    assert swiglu_hidden(4096) == 11008 and swiglu_hidden(5120) == 13824
    assert swiglu_hidden(8192, multiple_of=4096, multiplier=1.3) == 28672
    assert swiglu_hidden(96, multiple_of=64) == 256 and swiglu_hidden(64, multiple_of=64) == 192


@pytest.mark.parametrize("act", [None, silu])
def test_swiglu_equals_llama_mlp(act):
    torch.manual_seed(0)
    hf = LlamaMLP(LlamaConfig(hidden_size=48, intermediate_size=136, num_attention_heads=4))
    ours = SwiGLU(48, 136, act=act)
    ours.load_state_dict({"gate.weight": hf.gate_proj.weight, "up.weight": hf.up_proj.weight,
                          "proj.weight": hf.down_proj.weight})
    x = torch.randn(2, 9, 48)
    assert torch.allclose(ours(x), hf(x), atol=1e-6)
    assert all(m.bias is None for m in (ours.gate, ours.up, ours.proj))


# ---------------------------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("hd, base", [(16, 10000.0), (64, 500000.0), (128, 10000.0)])
def test_rope_forms_equal_each_other_and_hf(hd, base):
    torch.manual_seed(hd)
    T = 40
    q, k = torch.randn(2, 3, T, hd), torch.randn(2, 3, T, hd)
    pos = torch.arange(T)
    cos, sin = rope_cos_sin(pos, rope_frequencies(hd, base))
    rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=hd * 3, num_attention_heads=3,
                                              rope_theta=base, max_position_embeddings=T))
    hf_cos, hf_sin = rotary(q, pos[None])
    assert torch.equal(hf_cos[0], cos) and torch.equal(hf_sin[0], sin)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert torch.equal(apply_rope(q, cos, sin), hf_q) and torch.equal(apply_rope(k, cos, sin), hf_k)
    assert torch.allclose(apply_rope_complex(q, pos, base), hf_q, atol=1e-5)
    perm = torch.stack([torch.arange(hd // 2), torch.arange(hd // 2) + hd // 2], 1).flatten()
    assert torch.allclose(apply_rope_complex(q[..., perm], pos, base, interleaved=True),
                          hf_q[..., perm], atol=1e-5)


def test_rope_basics():
    x = torch.randn(5, 8)
    assert torch.equal(rotate_half(rotate_half(x)), -x)  # two quarter turns
    cos, sin = rope_cos_sin(torch.arange(5), rope_frequencies(8))
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(apply_rope(x[:1], cos[:1], sin[:1]), x[:1])  # position 0: no rotation
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)


def test_rope_score_depends_only_on_offset():
    torch.manual_seed(3)
    hd, T = 32, 64
    q, k = torch.randn(hd, dtype=torch.float64), torch.randn(hd, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.arange(T), rope_frequencies(hd), torch.float64)
    S = apply_rope(q.expand(T, hd), cos, sin) @ apply_rope(k.expand(T, hd), cos, sin).T
    for s in (1, 5, 33):
        assert torch.allclose(S[s:, s:], S[:-s, :-s], atol=1e-4)
    assert not torch.allclose(S[0], S[1], atol=1e-2)  # but it does depend on the offset


# ----------------------------------------------------------------------------------------------- GQA
@pytest.mark.parametrize("kv", [8, 4, 2, 1])
def test_grouped_attention_equals_sdpa(kv):
    torch.manual_seed(kv)
    q, k, v = torch.randn(2, 8, 11, 16), torch.randn(2, kv, 11, 16), torch.randn(2, kv, 11, 16)
    ref = F.scaled_dot_product_attention(q, repeat_kv(k, 8 // kv), repeat_kv(v, 8 // kv),
                                         is_causal=True)
    assert torch.allclose(grouped_attention(q, k, v), ref, atol=1e-5)
    assert torch.allclose(fused_grouped_attention(q, k, v), ref, atol=1e-5)
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                          ref, atol=1e-5)
    for f in (grouped_attention, fused_grouped_attention):  # the last queries, with a cache
        assert torch.allclose(f(q[:, :, -4:], k, v), ref[:, :, -4:], atol=1e-5)


def test_repeat_kv_order():
    k = torch.arange(3.0).view(1, 3, 1, 1)
    assert repeat_kv(k, 2).flatten().tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("impl", ["fused", "naive"])
@pytest.mark.parametrize("rope_base", [10000.0, None])
def test_attention_module_with_cache_equals_without(impl, rope_base):
    torch.manual_seed(0)
    attn = GroupedQueryAttention(48, 6, 3, rope_base=rope_base, impl=impl).eval()
    x = torch.randn(2, 9, 48)
    cache = KVCache(1)
    parts = [attn(x[:, a:b], cache, 0) for a, b in ((0, 4), (4, 5), (5, 9))]
    assert torch.allclose(torch.cat(parts, 1), attn(x), atol=1e-5)
    assert attn.k_proj.out_features == 24 and attn.out_proj.bias is None


def test_attention_module_errors():
    with pytest.raises(ValueError, match="divide"):
        GroupedQueryAttention(48, 6, 4)
    with pytest.raises(ValueError, match="impl"):
        GroupedQueryAttention(48, 6, impl="flash")


# ----------------------------------------------------------------------------------- the whole model
@pytest.mark.parametrize("d, heads, kv, layers, ff, tied, base, eps, impl", [
    (64, 4, 4, 2, 176, False, 10000.0, 1e-6, "fused"),
    (64, 8, 2, 3, 160, True, 500000.0, 1e-5, "fused"),
    (96, 6, 1, 2, 256, False, 10000.0, 1e-6, "naive"),
    (48, 4, 2, 2, 128, True, 100000.0, 1e-5, "naive"),
    (32, 2, 1, 1, 64, False, 10000.0, 1e-6, "fused"),
])
def test_logits_equal_transformers(d, heads, kv, layers, ff, tied, base, eps, impl):
    hf = hf_llama(d, heads, kv, layers, ff, tied=tied, base=base, eps=eps, seed=d + kv)
    ours = ours_from(hf, attn_impl=impl)
    assert count_parameters(ours) == hf.num_parameters() == llama_parameters(ours.cfg)
    assert ours.pos_emb is None and ours.cfg.tie_weights == tied
    idx = torch.randint(0, 300, (3, 50))
    with torch.no_grad():
        assert torch.allclose(ours(idx), hf(idx).logits, atol=1e-4)


@pytest.mark.parametrize("kv, tied", [(4, False), (2, True), (1, False)])
def test_greedy_generation_equals_transformers(kv, tied):
    hf = hf_llama(kv=kv, tied=tied, seed=kv).double()
    ours = ours_from(hf).double()
    prompt = torch.randint(0, 300, (2, 6))
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=25, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 25), theirs)
    assert torch.equal(generate(ours, prompt, 25, use_cache=False), theirs)


def test_fused_and_naive_models_agree_and_share_state_dicts():
    cfg = llama_config(vocab_size=100, context_length=32, d_model=32, n_heads=4, n_kv_heads=2,
                       n_layers=2)
    torch.manual_seed(0)
    fused = GPTModel(cfg).eval()
    naive = GPTModel(cfg.with_(attn_impl="naive")).eval()
    naive.load_state_dict(fused.state_dict())
    idx = torch.randint(0, 100, (2, 20))
    assert torch.allclose(fused(idx), naive(idx), atol=1e-5)
    assert cfg.ff_hidden is None and fused.blocks[0].ff.up.out_features == 128  # 85 -> 128


def test_published_parameter_counts():
    published = {"llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320,
                 "llama2-70b": 68_976_648_192, "smollm2-135m": 134_515_008}
    for name, n in published.items():
        assert llama_parameters(LLAMA_CONFIGS[name]) == n, name
    with torch.device("meta"):
        assert count_parameters(GPTModel(LLAMA_CONFIGS["llama2-7b"])) == published["llama2-7b"]


def test_kv_cache_bytes_matches_a_real_cache():
    assert kv_cache_bytes(LLAMA_CONFIGS["llama2-7b"], 4096) == 2 * 2**30
    assert kv_cache_bytes(LLAMA_CONFIGS["llama2-70b"], 4096) == 1.25 * 2**30
    cfg = llama_config(vocab_size=50, context_length=32, d_model=32, n_heads=4, n_kv_heads=2,
                       n_layers=3)
    model = GPTModel(cfg).eval()
    cache, sizes = model.new_cache(), {}
    update = cache.update

    def recording(layer, k, v):
        k, v = update(layer, k, v)
        sizes[layer] = k.nbytes + v.nbytes
        return k, v

    cache.update = recording
    with torch.no_grad():
        model(torch.randint(0, 50, (2, 11)), cache=cache)
    assert sum(sizes.values()) == kv_cache_bytes(cfg, 11, batch=2, bytes_per_value=4)


def test_training_memory_matches_measurement():
    from gptbook.lora import saved_activation_bytes
    from gptbook.loss import lm_loss

    cfg = llama_config(vocab_size=256, context_length=48, d_model=48, n_heads=4, n_kv_heads=2,
                       n_layers=2)
    torch.manual_seed(0)
    model = GPTModel(cfg)
    x = torch.randint(0, 256, (3, 49))
    saved = saved_activation_bytes(model, lambda: lm_loss(model(x[:, :-1]), x[:, 1:]).backward())
    opt = torch.optim.AdamW(model.parameters())
    opt.step()
    counted = training_memory(cfg, 3, 48, weight_bytes=4, grad_bytes=4, adam_bytes=8, act_bytes=4)
    assert counted["weights"] == sum(p.nbytes for p in model.parameters())
    assert counted["grads"] == sum(p.grad.nbytes for p in model.parameters())
    assert counted["adam"] == sum(s["exp_avg"].nbytes + s["exp_avg_sq"].nbytes
                                  for s in opt.state.values())
    assert abs(saved / counted["activations"] - 1) < 0.06
    slides = training_memory(LLAMA_CONFIGS["llama2-7b"], n_params=7e9)
    assert (slides["weights"], slides["grads"], slides["adam"]) == (14e9, 14e9, 56e9)
    assert slides["total"] == sum(slides[k] for k in ("weights", "grads", "adam", "activations"))


# ---------------------------------------------------------------------------------------- the loader
def test_load_llama_from_save_pretrained(tmp_path):
    hf = hf_llama(kv=2, tied=False, seed=5)
    hf.save_pretrained(tmp_path)
    model = load_llama(tmp_path)
    assert not model.training and model.cfg.n_kv_heads == 2 and model.cfg.norm_eps == 1e-6
    idx = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        assert torch.allclose(model(idx), hf(idx).logits, atol=1e-5)
    assert load_llama(tmp_path / "model.safetensors").cfg == model.cfg  # a file in the folder
    half = load_llama(tmp_path, dtype=torch.bfloat16)
    assert half.tok_emb.weight.dtype == torch.bfloat16


def test_load_llama_tied_and_sharded(tmp_path):
    hf = hf_llama(kv=1, tied=True, seed=6)
    hf.save_pretrained(tmp_path)
    tensors = read_llama_tensors(tmp_path)
    assert "lm_head.weight" not in tensors  # a tied checkpoint stores the embedding once
    (tmp_path / "model.safetensors").unlink()  # re-save as two shards with an index
    names = sorted(tensors)
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for file, keys in halves.items():
        write_safetensors({k: tensors[k] for k in keys}, tmp_path / file)
    index = {"weight_map": {k: f for f, keys in halves.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = load_llama(tmp_path)
    assert model.cfg.tie_weights and model.out_head.weight is model.tok_emb.weight
    idx = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert torch.allclose(model(idx), hf(idx).logits, atol=1e-5)


def test_loader_refuses_foreign_files(tmp_path):
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="'gpt2' model, not 'llama'"):
        load_llama(tmp_path / "gpt2")
    hf_llama().save_pretrained(tmp_path / "llama")
    (tmp_path / "gpt2" / "config.json").write_text((tmp_path / "llama" / "config.json").read_text())
    with pytest.raises(ValueError, match="not a Llama checkpoint: unexpected tensor"):
        load_llama(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_llama(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "model.safetensors").write_bytes(b"plain text, not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):  # a huge "header length"
        load_llama(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_llama(tmp_path / "gpt2")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llama(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_llama(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tmp_path / "llama" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_llama(tmp_path / "empty")


def test_loader_refuses_mismatched_shapes_and_heads():
    hf = hf_llama(kv=2, tied=False)
    model = GPTModel(llama_config_from_hf(hf.config.to_dict()).with_(n_kv_heads=4))
    with pytest.raises(ValueError, match="does not fit the model: blocks.0.attn.k_proj.weight"):
        load_llama_weights(model, hf.state_dict())
    tied = GPTModel(llama_config_from_hf(hf.config.to_dict()).with_(tie_weights=True))
    with pytest.raises(ValueError, match="differs from its embedding"):
        load_llama_weights(tied, hf.state_dict())
    untied_model = GPTModel(llama_config_from_hf(hf.config.to_dict()))
    no_head = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    with pytest.raises(ValueError, match="no lm_head"):
        load_llama_weights(untied_model, no_head)


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "gelu"}, "activation"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "scaled"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_parameters": None}, "scaled"),
    ({"head_dim": 32}, "head_dim"),
])
def test_config_from_hf_refuses_what_it_cannot_compute(change, message):
    d = hf_llama().config.to_dict()
    d.update(change)
    with pytest.raises(ValueError, match=message):
        llama_config_from_hf(d)


def test_config_from_hf_old_style_fields():
    d = {"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "num_attention_heads": 2,
         "num_hidden_layers": 1, "intermediate_size": 32, "rope_theta": 5e5, "rope_scaling": None,
         "rms_norm_eps": 1e-5, "max_position_embeddings": 64}
    cfg = llama_config_from_hf(d)
    assert (cfg.rope_base, cfg.n_kv_heads, cfg.tie_weights, cfg.norm_eps) == (5e5, None, False, 1e-5)
    assert cfg.norm == "rmsnorm" and cfg.ff == "swiglu" and cfg.attn == "gqa" and cfg.pos == "rope"


def test_state_dict_renaming():
    names = llama_state_dict({"model.layers.3.mlp.down_proj.weight": 1, "lm_head.weight": 2,
                              "model.layers.0.self_attn.rotary_emb.inv_freq": 3,
                              "model.embed_tokens.weight": 4, "model.norm.weight": 5})
    assert names == {"blocks.3.ff.proj.weight": 1, "out_head.weight": 2, "tok_emb.weight": 4,
                     "final_norm.weight": 5}


def test_download_llama_from_a_local_mirror(tmp_path):
    """download_llama against a file:// 'hub': plain and sharded repositories, nothing re-fetched."""
    hf = hf_llama(seed=9)
    repo = tmp_path / "hub" / "someone" / "tiny-llama" / "resolve" / "main"
    hf.save_pretrained(repo)
    (repo / "tokenizer.json").write_text("{}")
    base = (tmp_path / "hub").as_uri()
    folder = download_llama("someone/tiny-llama", tmp_path / "cache", base_url=base, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                        "tokenizer.json"]
    model = load_llama(folder)
    idx = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.allclose(model(idx), hf(idx).logits, atol=1e-5)
    # sharded: only an index and its shards on the "hub"
    tensors = read_llama_tensors(repo)
    (repo / "model.safetensors").unlink()
    write_safetensors(tensors, repo / "shard-1.safetensors")
    (repo / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: "shard-1.safetensors" for k in tensors}}))
    folder2 = download_llama("someone/tiny-llama", tmp_path / "cache2", base_url=base,
                             files=("config.json",), progress=False)
    assert (folder2 / "shard-1.safetensors").exists() and not (folder2 / "model.safetensors").exists()
    assert torch.allclose(load_llama(folder2)(idx), model(idx), atol=1e-6)
    with pytest.raises(urllib.error.URLError):
        download_llama("someone/missing", tmp_path / "cache3", base_url=base, progress=False)


def test_unknown_part_and_config_errors():
    with pytest.raises(ValueError, match="unknown norm"):
        GPTModel(GPTConfig(vocab_size=10, context_length=8, d_model=8, n_heads=2, n_layers=1,
                           norm="batchnorm"))
    with pytest.raises(ValueError, match="gqa"):
        GPTModel(GPTConfig(vocab_size=10, context_length=8, d_model=8, n_heads=2, n_layers=1,
                           pos="rope"))
    odd = llama_config(vocab_size=10, context_length=8, d_model=6, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="even"):
        GPTModel(odd)


def test_rope_model_generates_past_its_window_like_recomputing():
    cfg = llama_config(vocab_size=40, context_length=12, d_model=16, n_heads=2, n_layers=1)
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    prompt = torch.randint(0, 40, (1, 5))
    assert torch.equal(generate(model, prompt, 20), generate(model, prompt, 20, use_cache=False))
    assert not math.isnan(model(prompt).sum().item())


@pytest.mark.skipif(not __import__("gptbook.base").base.is_online(),
                    reason="the Hugging Face hub cannot be reached (or GPTBOOK_ONLINE=0)")
def test_smollm2_from_the_hub_equals_transformers():
    """Online only (e.g. on Colab): the real SmolLM2-135M through our loader, against transformers."""
    folder = download_llama("HuggingFaceTB/SmolLM2-135M", progress=False)
    ours = load_llama(folder)
    assert count_parameters(ours) == llama_parameters(LLAMA_CONFIGS["smollm2-135m"])
    hf = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    idx = torch.randint(0, 49152, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() < 1e-3
        assert torch.equal(generate(ours, idx, 8),
                           hf.generate(idx, max_new_tokens=8, do_sample=False,
                                       eos_token_id=None, pad_token_id=0))
