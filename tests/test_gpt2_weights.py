"""Loading GPT-2 weights in Hugging Face layout: logits equal transformers' for random models.

Nothing is downloaded: each test builds a small ``transformers.GPT2LMHeadModel`` with random weights and
saves it with ``save_pretrained`` in a temporary directory.
"""
import json

import pytest
import torch

from gptbook.generate import generate
from gptbook.model import GPTModel, gpt2_config_from_hf, gpt2_state_dict, load_gpt2_weights, read_safetensors

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def random_gpt2(seed, **config):
    """A transformers GPT-2 with every parameter random (biases and LayerNorms too)."""
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


CONFIGS = [
    dict(n_layer=1, n_head=1, n_embd=16, n_positions=8, vocab_size=40),
    dict(n_layer=2, n_head=4, n_embd=32, n_positions=24, vocab_size=100),
    dict(n_layer=3, n_head=2, n_embd=48, n_positions=16, vocab_size=257),
    dict(n_layer=2, n_head=6, n_embd=96, n_positions=40, vocab_size=500),
    dict(n_layer=2, n_head=4, n_embd=32, n_positions=16, vocab_size=64, tie_word_embeddings=False),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("attn_impl", ["fused", "naive"])
def test_logits_equal_transformers(tmp_path, config, attn_impl):
    hf = random_gpt2(len(tmp_path.name) + config["n_embd"], **config)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = GPTModel.from_pretrained_gpt2(tmp_path, attn_impl=attn_impl)
    assert not ours.training and ours.cfg.n_layers == config["n_layer"] and ours.cfg.n_heads == config["n_head"]
    assert ours.cfg.tie_weights == config.get("tie_word_embeddings", True)
    idx = torch.randint(0, config["vocab_size"], (3, config["n_positions"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff < 1e-4


def test_greedy_generation_equals_transformers(tmp_path):
    config = CONFIGS[1]
    hf = random_gpt2(7, **config)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = GPTModel.from_pretrained_gpt2(tmp_path)
    prompt = torch.randint(0, 100, (2, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=10, do_sample=False, attention_mask=torch.ones_like(prompt),
                               pad_token_id=0, eos_token_id=None)
    assert torch.equal(generate(ours, prompt, 10), expected)


def test_reader_equals_safetensors_library(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(10, dtype=torch.int64), "c": torch.randn(2, 2).half(),
               "d": torch.randn(5).to(torch.bfloat16), "empty": torch.zeros(0, 3), "flag": torch.tensor([True, False])}
    safetensors_torch.save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "pt"})
    ours = read_safetensors(tmp_path / "t.safetensors")
    reference = safetensors_torch.load_file(tmp_path / "t.safetensors")
    assert ours.keys() == reference.keys()
    for k in reference:
        assert ours[k].dtype == reference[k].dtype and torch.equal(ours[k], reference[k]), k
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00nope!")
    with pytest.raises(ValueError, match="safetensors"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_original_checkpoint_names_and_bare_file(tmp_path):
    """Hub files of the original checkpoints have no 'transformer.' prefix and carry attn.bias buffers."""
    config = CONFIGS[1]
    hf = random_gpt2(3, **config)
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(config["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 24, 24))
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    ours = GPTModel.from_pretrained_gpt2(tmp_path / "model.safetensors", n_heads=4)  # no config.json here
    idx = torch.randint(0, 100, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max() < 1e-4


def test_mismatched_config_and_missing_files(tmp_path):
    hf = random_gpt2(4, **CONFIGS[1])
    hf.save_pretrained(tmp_path, safe_serialization=True)
    cfg = gpt2_config_from_hf(json.loads((tmp_path / "config.json").read_text()))
    with pytest.raises(ValueError, match="blocks"):
        load_gpt2_weights(GPTModel(cfg.with_(n_layers=3)), tmp_path)
    with pytest.raises(ValueError, match="configuration"):
        load_gpt2_weights(GPTModel(cfg.with_(d_model=64)), tmp_path)
    with pytest.raises(FileNotFoundError):
        load_gpt2_weights(GPTModel(cfg), tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        GPTModel.from_pretrained_gpt2(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="activation"):
        gpt2_config_from_hf({"activation_function": "relu"})
    with pytest.raises(ValueError, match="unexpected"):
        gpt2_state_dict({"h.0.attn.q_proj.weight": torch.zeros(1)})


def test_download_helper_without_network(tmp_path, monkeypatch):
    """download_gpt2 asks the hub for config.json and model.safetensors, once; urlopen is faked here."""
    import io

    import gptbook.model as model_module

    asked = []

    class FakeResponse(io.BytesIO):
        headers = {"Content-Length": "4"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url):
        asked.append(url)
        return FakeResponse(b"data")

    monkeypatch.setattr(model_module.urllib.request, "urlopen", fake_urlopen)
    folder = model_module.download_gpt2("gpt2", cache_dir=tmp_path, progress=False)
    assert folder == tmp_path and (tmp_path / "model.safetensors").read_bytes() == b"data"
    assert asked == ["https://huggingface.co/openai-community/gpt2/resolve/main/config.json",
                     "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors"]
    model_module.download_gpt2("gpt2-small", cache_dir=tmp_path, progress=False)
    assert len(asked) == 2  # cached: nothing asked again
    with pytest.raises(ValueError, match="unknown GPT-2 size"):
        model_module.download_gpt2("gpt3", cache_dir=tmp_path)
