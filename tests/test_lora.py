"""Tests of gptbook.lora: the LoRA layer against its definition and against peft, the adapter
helpers, and the from-scratch quantizers."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.lora import (DEFAULT_TARGETS, LinearWithLoRA, QuantLinear, apply_lora, dequantize,
                          finetune_memory, load_lora, lora_layers, lora_state_dict, merge_lora, model_bytes,
                          nf4_levels, quantize, quantize_absmax, quantize_model, quantize_nf4, reset_lora,
                          save_lora, saved_activation_bytes, training_state_bytes, unmerge_lora)
from gptbook.model import GPT_CONFIGS, GPTModel

CFG = GPT_CONFIGS["tiny"].with_(vocab_size=97, context_length=32)


def tiny_gpt(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(CFG).eval()


def ids(seed: int = 0, shape=(2, 11)) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def randomize_b(model: nn.Module, std: float = 0.05) -> None:
    """A non-zero B stands for a trained adapter (a zero B would make every comparison trivial)."""
    for _, layer in lora_layers(model):
        nn.init.normal_(layer.lora_B, std=std)


class WithHead(nn.Module):
    """A stand-in for a classifier: a GPT body and a new linear head."""

    def __init__(self):
        super().__init__()
        self.base = tiny_gpt()
        self.head = nn.Linear(CFG.d_model, 3)

    def forward(self, x):
        return self.head(self.base.hidden_states(x)[:, -1])


# --- the layer ---------------------------------------------------------------------------------

def test_fresh_adapter_equals_base_layer_and_model():
    torch.manual_seed(0)
    linear = nn.Linear(20, 30)
    lora = LinearWithLoRA(linear, r=4, alpha=8)
    x = torch.randn(5, 20)
    assert torch.equal(lora(x), linear(x))
    assert torch.count_nonzero(lora.lora_B) == 0 and torch.count_nonzero(lora.lora_A) > 0
    assert lora.lora_A.abs().max() <= 1 / math.sqrt(20)  # Kaiming-uniform, as nn.Linear
    model = tiny_gpt()
    with torch.no_grad():
        before = model(ids())
        after = apply_lora(model, r=4, alpha=8)(ids())
    assert torch.equal(before, after)


def test_forward_is_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    linear = nn.Linear(16, 24)
    lora = LinearWithLoRA(linear, r=3, alpha=5)
    nn.init.normal_(lora.lora_B)
    x = torch.randn(2, 7, 16)
    expected = x @ (linear.weight + (5 / 3) * lora.lora_B @ lora.lora_A).T + linear.bias
    assert torch.allclose(lora(x), expected, atol=1e-5)
    assert torch.linalg.matrix_rank(lora.delta_weight()) == 3


def test_only_a_and_b_receive_gradients():
    torch.manual_seed(0)
    lora = LinearWithLoRA(nn.Linear(8, 6), r=2)
    lora(torch.randn(4, 8)).pow(2).sum().backward()
    assert lora.base.weight.grad is None and lora.base.bias.grad is None
    assert lora.lora_A.grad is not None and lora.lora_B.grad is not None


def test_merge_then_unmerge_restores_outputs_and_weights():
    model = apply_lora(tiny_gpt(), r=4, alpha=8)
    randomize_b(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = ids()
    with torch.no_grad():
        before = model(x)
        merged = merge_lora(model)(x)
        assert all(layer.merged for _, layer in lora_layers(model))
        after = unmerge_lora(model)(x)
    assert (merged - before).abs().max() < 1e-5 and (after - before).abs().max() < 1e-5
    for n, p in model.named_parameters():
        assert torch.allclose(p, weights[n], atol=1e-6), n
    layer = lora_layers(model)[0][1]
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="merged already"):
        layer.merge()


def test_bad_layer_arguments():
    with pytest.raises(TypeError, match="wraps"):
        LinearWithLoRA(nn.Conv1d(3, 3, 1))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="rank"):
            LinearWithLoRA(nn.Linear(4, 4), r=bad)
    with pytest.raises(ValueError, match="alpha"):
        LinearWithLoRA(nn.Linear(4, 4), alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LinearWithLoRA(nn.Linear(4, 4), dropout=1.0)


# --- the model helpers -------------------------------------------------------------------------

def test_apply_lora_freezes_the_rest_and_counts_parameters():
    model = apply_lora(WithHead(), r=2, alpha=4, trainable=("head",))
    d, layers = CFG.d_model, CFG.n_layers
    per_block = 2 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if "lora_" in n} | {"head.weight", "head.bias"}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == layers * per_block + 3 * d + 3
    assert len(lora_layers(model)) == 4 * layers
    only_qkv = apply_lora(tiny_gpt(), r=2, targets="attn.qkv")
    assert [n for n, _ in lora_layers(only_qkv)] == [f"blocks.{i}.attn.qkv" for i in range(layers)]


def test_apply_lora_errors():
    with pytest.raises(ValueError, match="matches 'nope'"):
        apply_lora(tiny_gpt(), targets=("nope",))
    with pytest.raises(ValueError, match="matches 'nohead'"):
        apply_lora(tiny_gpt(), trainable=("nohead",))
    with pytest.raises(TypeError, match="linear layers"):
        apply_lora(tiny_gpt(), targets=("ff",))
    with pytest.raises(ValueError, match="empty"):
        apply_lora(tiny_gpt(), targets=())
    model = apply_lora(tiny_gpt())
    with pytest.raises(ValueError, match="already carries"):
        apply_lora(model)
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(tiny_gpt())


def test_tied_head_can_train_but_not_merge():
    model = apply_lora(tiny_gpt(), targets=("out_head",))
    assert model.out_head.tied
    with pytest.raises(RuntimeError, match="shared"):
        merge_lora(model)
    assert torch.equal(model.out_head.base.weight, model.tok_emb.weight)


def test_reset_lora_gives_back_the_base_model():
    base = tiny_gpt()
    model = apply_lora(copy.deepcopy(base))
    randomize_b(model)
    with torch.no_grad():
        assert not torch.allclose(model(ids()), base(ids()))
        assert torch.equal(reset_lora(model, seed=1)(ids()), base(ids()))


def test_save_and_load_only_the_adapter(tmp_path):
    model = apply_lora(WithHead(), r=4, trainable=("head",))
    randomize_b(model)
    nn.init.normal_(model.head.weight)
    state = lora_state_dict(model)
    assert set(state) == {n for n, _ in model.named_parameters() if "lora_" in n} | {"head.weight", "head.bias"}
    size = save_lora(model, tmp_path / "a.pt")
    n_bytes = sum(t.numel() * t.element_size() for t in state.values())
    assert n_bytes <= size < n_bytes + 64 * 1024  # the tensors plus a little pickle overhead
    other = copy.deepcopy(model)
    reset_lora(other)
    nn.init.zeros_(other.head.weight)
    load_lora(other, tmp_path / "a.pt")
    x = ids()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    with pytest.raises(ValueError, match="shape"):
        load_lora(apply_lora(WithHead(), r=2, trainable=("head",)), state)
    with pytest.raises(KeyError, match="lacks"):
        load_lora(apply_lora(WithHead(), targets=DEFAULT_TARGETS + ("out_head",)), state)
    with pytest.raises(KeyError, match="the model lacks"):
        load_lora(apply_lora(WithHead(), targets="attn.qkv", trainable=("head",)), state)
    with pytest.raises(TypeError):
        load_lora(other, [1, 2])
    merge_lora(other)
    with pytest.raises(RuntimeError, match="unmerge"):
        load_lora(other, state)


def test_adapter_file_knows_its_base_model(tmp_path):
    model = apply_lora(WithHead(), r=4, trainable=("head",))
    randomize_b(model)
    path = tmp_path / "adapter.safetensors"
    save_lora(model, path)
    assert path.read_bytes()[8:9] == b"{"  # safetensors, not a pickle
    same_base = reset_lora(copy.deepcopy(model))
    load_lora(same_base, path)  # the same frozen weights: accepted
    other_base = copy.deepcopy(model)
    with torch.no_grad():
        other_base.base.tok_emb.weight.add_(1e-3)  # another base model, same shapes
    before = {n: p.clone() for n, p in other_base.named_parameters()}
    with pytest.raises(ValueError, match="different base model") as err:
        load_lora(other_base, path)
    assert "\n" not in str(err.value)
    assert all(torch.equal(before[n], p) for n, p in other_base.named_parameters())  # untouched
    with pytest.warns(UserWarning, match="different base model"):
        load_lora(other_base, path, check_base=False)
    assert torch.equal(other_base.head.weight, model.head.weight)  # loaded after the warning
    wrong_alpha = apply_lora(WithHead(), r=4, alpha=3, trainable=("head",))
    with pytest.raises(ValueError, match="alpha"):
        load_lora(wrong_alpha, path)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="unmerge"):
        save_lora(model, tmp_path / "merged.safetensors")


@pytest.mark.parametrize("content", [b"", b"hello, not an adapter", b"\x80\x04K\x01."])
def test_foreign_adapter_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "adapter.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a LoRA adapter") as err:
        load_lora(apply_lora(WithHead(), r=4, trainable=("head",)), path)
    assert "\n" not in str(err.value)


# --- the proof against peft --------------------------------------------------------------------

@pytest.mark.parametrize("targets, r, alpha", [(DEFAULT_TARGETS, 4, 8), (("attn.qkv", "attn.out_proj"), 1, 3),
                                               (("ff.fc", "ff.proj"), 16, 16)])
def test_outputs_and_gradients_equal_peft(targets, r, alpha):
    peft = pytest.importorskip("peft")
    base = tiny_gpt(seed=r)
    ours = apply_lora(copy.deepcopy(base), r=r, alpha=alpha, targets=targets)
    theirs = peft.get_peft_model(copy.deepcopy(base),
                                 peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets)))
    assert len(lora_layers(ours)) == sum(1 for n, m in theirs.named_modules() if n.endswith("lora_A.default"))
    randomize_b(ours)
    pairs = []
    for name, layer in lora_layers(ours):
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert peft_layer.scaling["default"] == layer.scaling
        assert peft_layer.lora_A["default"].weight.shape == layer.lora_A.shape
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
        pairs.append((layer, peft_layer))
    x = ids(r)
    out_ours, out_theirs = ours(x), theirs(x)
    assert (out_ours - out_theirs).abs().max() < 1e-5
    # the same gradients: training one is training the other
    out_ours.pow(2).mean().backward()
    out_theirs.pow(2).mean().backward()
    for layer, peft_layer in pairs:
        assert torch.allclose(layer.lora_A.grad, peft_layer.lora_A["default"].weight.grad, atol=1e-6)
        assert torch.allclose(layer.lora_B.grad, peft_layer.lora_B["default"].weight.grad, atol=1e-6)
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert n_ours == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    with torch.no_grad():
        merged_ours = merge_lora(ours)(x)
        merged_theirs = theirs.merge_and_unload()(x)
    assert (merged_ours - merged_theirs).abs().max() < 1e-5


# --- quantization ------------------------------------------------------------------------------

#: bitsandbytes' NF4 code book (bitsandbytes/functional.py), the reference for our construction
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
           0.7229568362236023, 1.0]


def test_nf4_levels_equal_bitsandbytes():
    assert torch.allclose(nf4_levels(), torch.tensor(BNB_NF4), atol=1e-6)


@pytest.mark.parametrize("bits, block", [(8, 64), (4, 64), (8, 32), (4, 16)])
@pytest.mark.parametrize("shape", [(37, 50), (64,), (3, 5, 7)])
def test_absmax_error_is_at_most_half_a_step(bits, block, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(bits + block)) * 0.05
    q = quantize_absmax(w, bits, block)
    back = dequantize(q)
    assert back.shape == w.shape and back.dtype == torch.float32
    top = 2 ** (bits - 1) - 1
    flat = F.pad(w.reshape(-1), (0, (-w.numel()) % block)).view(-1, block)
    step = flat.abs().amax(1) / top  # one quantization step per block
    err = F.pad((back - w).abs().reshape(-1), (0, (-w.numel()) % block)).view(-1, block)
    assert (err <= step[:, None] / 2 * (1 + 1e-5) + 1e-9).all()
    assert torch.allclose(flat.abs().amax(1), F.pad(back.abs().reshape(-1), (0, (-w.numel()) % block)).view(-1, block).amax(1))
    packed = (bits == 4) + 1  # two 4-bit codes per byte
    assert q.codes.dtype == torch.uint8 and q.codes.numel() == flat.numel() // packed
    assert q.nbytes == flat.numel() // packed + 4 * flat.shape[0]


def test_nf4_picks_the_nearest_level():
    w = torch.randn(40, 64, generator=torch.Generator().manual_seed(0))
    back = dequantize(quantize_nf4(w, 64))
    blocks, back_blocks = w.view(-1, 64), back.view(-1, 64)
    absmax = blocks.abs().amax(1, keepdim=True)
    candidates = nf4_levels()[None, None, :] * absmax[..., None]  # every level, scaled per block
    best = (blocks[..., None] - candidates).abs().min(-1).values
    assert torch.allclose((blocks - back_blocks).abs(), best, atol=1e-6)


@pytest.mark.parametrize("kind", ["int8", "int4", "nf4"])
def test_quantize_is_idempotent_and_handles_zeros(kind):
    w = torch.randn(10, 30, generator=torch.Generator().manual_seed(1))
    once = dequantize(quantize(w, kind, 8))
    assert torch.allclose(dequantize(quantize(once, kind, 8)), once, atol=1e-6)
    assert torch.equal(dequantize(quantize(torch.zeros(4, 8), kind, 8)), torch.zeros(4, 8))


def test_quantize_errors():
    with pytest.raises(TypeError, match="floating-point"):
        quantize(torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="kind"):
        quantize(torch.ones(4), "int2")
    with pytest.raises(ValueError, match="block_size"):
        quantize(torch.ones(4), "nf4", 7)
    with pytest.raises(ValueError, match="bits"):
        quantize_absmax(torch.ones(4), bits=3)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_quant_linear_forward_backward_and_qlora(kind):
    torch.manual_seed(0)
    linear = nn.Linear(48, 20)
    ql = QuantLinear(linear, kind, 16)
    w = dequantize(quantize(linear.weight, kind, 16))
    x = torch.randn(3, 5, 48, requires_grad=True)
    ql(x).pow(2).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    F.linear(x, w, linear.bias).pow(2).sum().backward()
    assert torch.allclose(ql(x), F.linear(x, w, linear.bias), atol=1e-6)
    assert torch.allclose(grad, x.grad, atol=1e-5)
    assert list(ql.parameters()) == [ql.bias] and not ql.bias.requires_grad
    qlora = LinearWithLoRA(ql, r=4)
    assert torch.equal(qlora(x), ql(x))
    with pytest.raises(TypeError, match="quantized"):
        qlora.merge()


def test_quantize_model_then_lora():
    model = quantize_model(tiny_gpt(), "nf4")
    assert all(isinstance(model.get_submodule(f"blocks.{i}.{t}"), QuantLinear)
               for i in range(CFG.n_layers) for t in DEFAULT_TARGETS)
    with pytest.raises(ValueError, match="shared"):
        quantize_model(tiny_gpt(), targets=("out_head",))
    apply_lora(model, r=2)
    out = model(ids())
    out.mean().backward()
    assert all(layer.lora_A.grad is not None for _, layer in lora_layers(model))
    assert model_bytes(model) < model_bytes(tiny_gpt())


# --- memory accounting -------------------------------------------------------------------------

def test_memory_accounting():
    assert finetune_memory(7e9)["total"] == pytest.approx(84e9)  # the lecture slides' LLaMA-2 7B sum
    lin = nn.Linear(10, 4)
    x = torch.randn(3, 10)
    assert saved_activation_bytes(lin, lambda: lin(x).sum()) == x.numel() * 4  # the input, for W's gradient
    lin.requires_grad_(False)
    xg = torch.randn(3, 10, requires_grad=True)
    assert saved_activation_bytes(lin, lambda: lin(xg).sum()) == 0  # a frozen layer saves only its weight
    model = apply_lora(WithHead(), r=2, trainable=("head",))
    state = training_state_bytes(model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert state == {"weights": model_bytes(model), "grads": 4 * n_train, "adam": 8 * n_train,
                     "total": model_bytes(model) + 12 * n_train}
