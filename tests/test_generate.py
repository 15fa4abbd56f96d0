"""Text generation: greedy, sampling filters, eos, batches, and the KV cache against full recomputation."""
import pytest
import torch

from gptbook.generate import generate, generate_text, sample_next_token, top_k_filter, top_p_filter
from gptbook.model import GPT_CONFIGS, GPTModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=97, context_length=24)).eval()


def reference_greedy(model, idx, n):
    """Greedy decoding the slow, obvious way: the whole (cropped) sequence every step."""
    for _ in range(n):
        logits = model(idx[:, -model.cfg.context_length:])[:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_matches_reference_past_the_context(model, use_cache):
    idx = torch.randint(0, 97, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_greedy(model, idx, 30)  # 37 tokens > context 24
    assert torch.equal(generate(model, idx, 30, use_cache=use_cache), expected)


def test_cache_gives_identical_sampled_tokens(model):
    idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(2))
    kw = dict(temperature=0.8, top_k=20, top_p=0.9)
    a = generate(model, idx, 40, generator=torch.Generator().manual_seed(3), use_cache=True, **kw)
    b = generate(model, idx, 40, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(a, b)
    c = generate(model, idx, 40, generator=torch.Generator().manual_seed(4), **kw)
    assert not torch.equal(a, c)  # another seed, other tokens


def test_batch_rows_equal_single_prompts(model):
    idx = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(5))
    batch = generate(model, idx, 10)
    for row in range(3):
        assert torch.equal(generate(model, idx[row], 10), batch[row])


def test_prompt_longer_than_context_is_cropped(model):
    idx = torch.randint(0, 97, (1, 60), generator=torch.Generator().manual_seed(6))
    out = generate(model, idx, 5)
    assert out.shape == (1, 65) and torch.equal(out[:, :60], idx)
    assert torch.equal(out[:, 60:], generate(model, idx[:, -24:], 5)[:, 24:])


def test_eos_stops_each_row(model):
    idx = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(7))
    free = generate(model, idx, 12)
    eos = int(free[0, 6])
    stop = 4 + int((free[0, 4:] == eos).nonzero()[0])  # where row 0 first emits eos
    out = generate(model, idx, 12, eos_id=eos)
    assert torch.equal(out[0, :stop + 1], free[0, :stop + 1])
    assert (out[0, stop:] == eos).all()
    hits = (free[1, 4:] == eos).nonzero()
    if len(hits):  # row 1 stops at its own first eos and is padded after it
        assert (out[1, 4 + int(hits[0]):] == eos).all()
    else:  # row 1 never stops: it runs to the end
        assert torch.equal(out[1], free[1])
    # generation ends early once every row has stopped
    assert generate(model, idx[:1], 12, eos_id=eos).shape[1] == stop + 1


def test_sampling_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    assert torch.equal(torch.isfinite(top_k_filter(logits, 2)), torch.tensor([[False, True, True, False, False]]))
    probs = torch.softmax(logits, -1)[0]  # .64, .24, .09, ...
    kept = torch.isfinite(top_p_filter(logits, 0.5))[0]
    assert kept.tolist() == [False, True, False, False, False]
    kept = torch.isfinite(top_p_filter(logits, float(probs[1] + 0.01)))[0]
    assert kept.tolist() == [False, True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
    # top-k = 1 and a tiny temperature are both greedy
    g = torch.Generator().manual_seed(0)
    big = torch.randn(4, 50, generator=g)
    assert torch.equal(sample_next_token(big, 1.0, top_k=1, generator=g), big.argmax(-1))
    assert torch.equal(sample_next_token(big, 1e-4, generator=g), big.argmax(-1))


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(20000, 3)
    draws = sample_next_token(logits, 1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.02)


def test_generate_text_and_mode_restored():
    torch.manual_seed(0)
    model = GPTModel(GPT_CONFIGS["tiny"]).train()
    text = generate_text(model, "Hello, world", 8)
    assert text.startswith("Hello, world") and model.training
    assert isinstance(generate_text(model, "", 3), str)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"), (dict(temperature=-float("inf")), "temperature"),
    (dict(temperature="1"), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=float("nan")), "top_p"), (dict(eos_id=97), "eos_id"),
    (dict(eos_id=-1), "eos_id"),
])
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2, **kwargs)
    with pytest.raises(ValueError, match=match):
        generate_text(model, "ABC", 2, enc=SmallTokenizer(), **kwargs)


class SmallTokenizer:
    """Characters as ids (for a model with a small vocabulary); no end-of-text token."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))


@pytest.mark.parametrize("ids", [[1, 97, 2], [1, -1, 2], [300], [-5]])
def test_out_of_range_token_ids_are_refused(model, ids):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\)"):
        generate(model, torch.tensor(ids), 2)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.tensor([ids]))
    with pytest.raises(ValueError, match="token ids"):  # "~" is id 126 > 96
        generate_text(model, "A~", 2, enc=SmallTokenizer())


def test_generation_writes_in_place_without_concatenating(model, monkeypatch):
    idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(8))
    expected = generate(model, idx, 12)

    def no_cat(*args, **kwargs):
        raise AssertionError("torch.cat called while generating")

    monkeypatch.setattr(torch, "cat", no_cat)
    assert torch.equal(generate(model, idx, 12), expected)


def test_bad_inputs(model):
    with pytest.raises(TypeError):
        generate(model, torch.zeros(1, 3), 2)  # float ids
    with pytest.raises(ValueError, match="token ids"):
        generate(model, torch.full((1, 3), 97), 2)
    with pytest.raises(ValueError, match="shape"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), -1)


def test_long_generations_read_transposed_weights_and_give_the_same_tokens(model):
    from gptbook.generate import _decoding_layout

    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    with _decoding_layout(model, 31):  # short: the copy would cost more than it saves
        assert all(p.is_contiguous() for p in model.parameters())
    with _decoding_layout(model, 32):
        linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        for name, p in model.named_parameters():
            laid_out = name.rsplit(".", 1)[0] in linear and name.endswith("weight")
            tied = model.tok_emb.weight is model.out_head.weight
            laid_out |= name == "tok_emb.weight" and tied  # tied: the head's tensor
            assert p.is_contiguous() != laid_out or p.dim() == 1, name
            assert torch.equal(p, before[name][1])  # the same values
        first = model.out_head.weight.data_ptr()
    assert all(p.data_ptr() == before[n][0] for n, p in model.named_parameters())
    with _decoding_layout(model, 32):  # the buffer of the first call, written again
        assert model.out_head.weight.data_ptr() == first
    with pytest.raises(RuntimeError), _decoding_layout(model, 40):
        raise RuntimeError("interrupted")
    assert all(p.data_ptr() == before[n][0] for n, p in model.named_parameters())
    idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = reference_greedy(model, idx, 40)  # 45 tokens > context 24
    for use_cache in (True, False):
        assert torch.equal(generate(model, idx, 40, use_cache=use_cache), expected)
