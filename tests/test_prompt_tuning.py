"""Prompt tuning (chapter 9): soft prompts, positions, verbalizer classification, mixed-task batches,
and equality with Hugging Face peft's prompt tuning."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from gptbook.model import GPTConfig, GPTModel
from gptbook.prompt_tuning import (MultiTaskPromptClassifier, PromptClassifier, PromptTunedModel, SoftPrompt,
                                   append_suffix, fit_to_context, label_token_ids, load_prompt,
                                   pick_label_words, prepend_prompt, prompted_last_hidden, save_prompt)
from gptbook.tokenizer import gpt2_encoding

ROOT = Path(__file__).resolve().parents[1]
CFG = GPTConfig(vocab_size=300, context_length=32, d_model=32, n_heads=4, n_layers=2, dropout=0.0)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def prompt(n=4, seed=1, base=None):
    g = torch.Generator().manual_seed(seed)
    return SoftPrompt(n, CFG.d_model, init="random", std=0.3, generator=g)


def padded(rows, pad=0):
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids, lengths


# ---------------------------------------------------------------- the soft prompt

def test_vocab_init_copies_embeddings_and_cycles_ids(base):
    p = SoftPrompt(5, CFG.d_model, init="vocab", init_ids=[7, 3], embedding=base.tok_emb)
    assert p.init_ids == (7, 3, 7, 3, 7)
    assert torch.equal(p.weight.data, base.tok_emb.weight.data[[7, 3, 7, 3, 7]])
    assert p.weight.requires_grad and p.weight.data_ptr() != base.tok_emb.weight.data_ptr()
    cut = SoftPrompt(2, CFG.d_model, init="vocab", init_ids=[1, 2, 3], embedding=base.tok_emb.weight)
    assert cut.init_ids == (1, 2)
    sampled = SoftPrompt(6, CFG.d_model, embedding=base.tok_emb, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled.weight.data, base.tok_emb.weight.data[list(sampled.init_ids)])
    assert sampled(3).shape == (3, 6, CFG.d_model)


def test_random_init_is_seeded_and_matches_the_embedding_scale(base):
    a = SoftPrompt(50, CFG.d_model, init="random", embedding=base.tok_emb, generator=torch.Generator().manual_seed(3))
    b = SoftPrompt(50, CFG.d_model, init="random", embedding=base.tok_emb, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.weight, b.weight)
    ratio = float(a.weight.detach().std() / base.tok_emb.weight.detach().std())
    assert 0.85 < ratio < 1.15


@pytest.mark.parametrize("kwargs, error", [
    (dict(n_tokens=0, d_model=8), ValueError), (dict(n_tokens=2, d_model=8, init="zeros"), ValueError),
    (dict(n_tokens=2, d_model=8, init="vocab"), ValueError),
    (dict(n_tokens=2, d_model=8, init="vocab", embedding=torch.zeros(10, 8), init_ids=[10]), ValueError),
    (dict(n_tokens=2, d_model=8, init="vocab", embedding=torch.zeros(10, 8), init_ids=[]), ValueError),
    (dict(n_tokens=2, d_model=8, init="vocab", embedding=torch.zeros(10, 4)), ValueError),
    (dict(n_tokens=2, d_model=8, init="random", init_ids=[1]), ValueError),
    (dict(n_tokens=2, d_model=8, init="vocab", embedding=[[0.0] * 8]), TypeError),
])
def test_soft_prompt_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        SoftPrompt(**kwargs)


# ---------------------------------------------------------------- positions and the context

def test_fit_to_context_first_and_last():
    ids, lengths = padded([[1, 2, 3, 4, 5, 6], [7, 8, 9]])
    first, lf = fit_to_context(ids, lengths, 4, keep="first")
    assert first.tolist() == [[1, 2, 3, 4], [7, 8, 9, 0]] and lf.tolist() == [4, 3]
    last, ll = fit_to_context(ids, lengths, 4, keep="last")
    assert last[0].tolist() == [3, 4, 5, 6] and last[1, :3].tolist() == [7, 8, 9] and ll.tolist() == [4, 3]
    same, ls = fit_to_context(ids, lengths, 10)
    assert torch.equal(same, ids) and torch.equal(ls, lengths)
    with pytest.raises(ValueError, match="keep"):
        fit_to_context(ids, lengths, 4, keep="middle")
    with pytest.raises(ValueError, match="lengths"):
        fit_to_context(ids, torch.tensor([7, 1]), 4)


def test_prompt_takes_the_first_positions(base):
    """The prompted model equals the base model fed [prompt vectors; token embeddings] by hand."""
    p = prompt()
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    m = PromptTunedModel(base, p)
    x = torch.cat([p.weight.expand(2, -1, -1), base.tok_emb(ids)], 1) + base.pos_emb(torch.arange(13))
    for block in base.blocks:
        x = block(x)
    expected = base.out_head(base.final_norm(x))[:, 4:]
    assert torch.allclose(m(ids), expected, atol=1e-5)
    assert m.max_input_tokens == CFG.context_length - 4


def test_long_inputs_are_cut_to_fit_the_context(base):
    p = prompt(n=6)
    m = PromptTunedModel(base, p)
    ids = torch.randint(0, CFG.vocab_size, (2, 40))  # longer than the whole context (32)
    with pytest.raises(ValueError, match="context length"):
        base(ids)
    out = m(ids)
    assert out.shape == (2, 26, CFG.vocab_size)
    assert torch.allclose(out, m(ids[:, :26]), atol=1e-6)
    tail = PromptTunedModel(base, p, keep="last")
    assert torch.allclose(tail(ids), tail(ids[:, -26:]), atol=1e-6)
    with pytest.raises(ValueError, match="no room"):
        PromptTunedModel(base, SoftPrompt(32, CFG.d_model, init="random"))
    with pytest.raises(ValueError, match="d_model"):
        PromptTunedModel(base, SoftPrompt(2, 16, init="random"))


def test_base_is_frozen_and_only_the_prompt_gets_gradients():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    clf = PromptClassifier(model, prompt(), [5, 9])
    assert not any(p.requires_grad for p in model.parameters())
    ids, lengths = padded([[1, 2, 3], [4, 5]])
    clf(ids, lengths).sum().backward()
    trainable = [n for n, p in clf.named_parameters() if p.requires_grad]
    assert trainable == ["prompt.weight"] and clf.prompt.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- verbalizer classification

def test_classifier_reads_the_last_real_token_behind_the_prompt(base):
    p = prompt()
    clf = PromptClassifier(base, p, [11, 22, 33])
    ids, lengths = padded([[5, 6, 7, 8, 9], [10, 11]], pad=299)
    logits = clf(ids, lengths)
    full = PromptTunedModel(base, p)(ids)  # LM logits at every text position
    expected = torch.stack([full[0, 4, [11, 22, 33]], full[1, 1, [11, 22, 33]]])
    assert torch.allclose(logits, expected, atol=1e-5)
    other_pad = ids.clone()
    other_pad[1, 2:] = 3  # padding values must not matter
    assert torch.allclose(clf(other_pad, lengths), logits, atol=1e-6)
    alone = clf(ids[1:, :2], lengths[1:])
    assert torch.allclose(alone, logits[1:], atol=1e-5)


def test_label_token_ids():
    enc = gpt2_encoding()
    ids = label_token_ids(enc, [" ham", " spam"])
    assert ids == [enc.encode(" ham")[0], enc.encode(" spam")[0]]
    with pytest.raises(ValueError, match="not one"):
        label_token_ids(enc, [" ham", " unsubscribeable"])
    with pytest.raises(ValueError, match="distinct"):
        label_token_ids(enc, [" spam", " spam"])


def test_verbalizer_words_are_single_tokens_of_the_books_bpe():
    from gptbook.pretrain_data import load_tokenizer
    book, gpt2 = load_tokenizer("book"), gpt2_encoding()
    assert len(book.encode_ordinary(" ham")) == 2  # why the candidates matter
    candidates = [(" ham", " mail", " good"), (" spam", " junk")]
    assert pick_label_words(gpt2, candidates) == [" ham", " spam"]
    words = pick_label_words(book, candidates)
    assert words == [" mail", " spam"]
    ids = label_token_ids(book, words)
    assert all(0 <= i < book.n_vocab for i in ids) and [book.decode([i]) for i in ids] == words
    assert pick_label_words(book, [(" spam",), (" spam", " mail")]) == [" spam", " mail"]  # not taken twice
    with pytest.raises(ValueError, match="class 1"):
        pick_label_words(book, [(" mail",), (" unsubscribeable", " hobby")])


def test_save_and_load_prompt(base, tmp_path):
    clf = PromptClassifier(base, prompt(), [4, 8])
    path = tmp_path / "task.safetensors"
    n = save_prompt(clf, path, ["a", "b"])
    assert n == 4 * CFG.d_model and path.read_bytes()[8:9] == b"{"  # safetensors, not a pickle
    again = load_prompt(path, base)
    ids, lengths = padded([[1, 2, 3], [4]])
    assert torch.equal(again(ids, lengths), clf(ids, lengths))
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a soft prompt"):
        load_prompt(tmp_path / "other.pt", base)
    torch.manual_seed(5)
    other_base = GPTModel(CFG).eval()
    with pytest.raises(ValueError, match="different base model") as err:
        load_prompt(path, other_base)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="different base model"):
        load_prompt(path, other_base, check_base=False)
    damaged = bytearray(path.read_bytes())
    damaged[-3] ^= 0x40
    (tmp_path / "damaged.safetensors").write_bytes(damaged)
    with pytest.raises(ValueError, match="damaged"):
        load_prompt(tmp_path / "damaged.safetensors", base)


def test_suffix_is_written_after_each_texts_last_token(base):
    clf = PromptClassifier(base, prompt(), [4, 8], suffix_ids=[7, 9, 11])
    plain = PromptClassifier(base, clf.prompt, [4, 8])
    rows = [[1, 2, 3], [4]]
    ids, lengths = padded(rows, pad=5)
    batched = clf(ids, lengths)
    for i, r in enumerate(rows):  # the same as the text with the suffix typed after it
        torch.testing.assert_close(batched[i], plain(torch.tensor([r + [7, 9, 11]]))[0], atol=1e-5, rtol=1e-5)
    out, new = append_suffix(ids, lengths, torch.tensor([[7, 9, 11], [6, 0, 0]]), torch.tensor([3, 1]))
    assert out[0, :6].tolist() == [1, 2, 3, 7, 9, 11] and out[1, :2].tolist() == [4, 6]
    assert new.tolist() == [6, 2]
    assert clf.max_input_tokens == CFG.context_length - 4 - 3
    long_ids = torch.arange(1, 41)[None]  # longer than the context: cut so that the suffix fits
    torch.testing.assert_close(clf(long_ids)[0], plain(torch.tensor([list(range(1, 26)) + [7, 9, 11]]))[0],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="suffix_ids"):
        PromptClassifier(base, prompt(), [4, 8], suffix_ids=[CFG.vocab_size])


def test_mixed_tasks_with_different_suffixes(base):
    a = PromptClassifier(base, prompt(seed=1), [4, 8], suffix_ids=[7, 9])
    b = PromptClassifier(base, prompt(seed=2), [3, 5, 6], suffix_ids=[11])
    multi = MultiTaskPromptClassifier({"a": a, "b": b})
    ids, lengths = padded([[1, 2, 3], [4, 5], [6]])
    with torch.no_grad():
        out = multi(ids, lengths, ["a", "b", "a"])
        for row, (task, clf) in enumerate([("a", a), ("b", b), ("a", a)]):
            alone = clf(ids[row:row + 1], lengths[row:row + 1])[0]
            torch.testing.assert_close(out[row, :clf.num_classes], alone, atol=1e-5, rtol=1e-5)
    assert torch.isinf(out[0, 2]) and torch.isinf(out[2, 2])


# ---------------------------------------------------------------- mixed-task inference

def test_mixed_task_batch_equals_each_task_alone(base):
    spam = PromptClassifier(base, prompt(seed=1), [10, 20])
    genre = PromptClassifier(base, prompt(seed=2), [30, 40, 50, 60])
    multi = MultiTaskPromptClassifier({"spam": spam, "genre": genre})
    torch.manual_seed(5)
    rows = [torch.randint(0, CFG.vocab_size, (int(k),)).tolist() for k in torch.randint(1, 20, (8,))]
    tasks = ["spam", "genre", "genre", "spam", "genre", "spam", "spam", "genre"]
    ids, lengths = padded(rows)
    mixed = multi(ids, lengths, tasks)
    assert mixed.shape == (8, 4)
    for name, clf in (("spam", spam), ("genre", genre)):
        rows_k = [i for i, t in enumerate(tasks) if t == name]
        alone = clf(*padded([rows[i] for i in rows_k]))
        k = clf.num_classes
        assert torch.allclose(mixed[rows_k, :k], alone, atol=1e-5)
        assert torch.isinf(mixed[rows_k, k:]).all()
        assert torch.equal(mixed[rows_k].argmax(-1), alone.argmax(-1))
    assert torch.equal(multi(ids, lengths, torch.tensor([multi.task_names.index(t) for t in tasks])), mixed)


def test_mixed_task_rejects_bad_tasks(base):
    a = PromptClassifier(base, prompt(n=4), [1, 2])
    with pytest.raises(ValueError, match="same length"):
        MultiTaskPromptClassifier({"a": a, "b": PromptClassifier(base, prompt(n=5), [1, 2])})
    other = GPTModel(CFG)
    with pytest.raises(ValueError, match="different base"):
        MultiTaskPromptClassifier({"a": a, "b": PromptClassifier(other, prompt(), [1, 2])})
    multi = MultiTaskPromptClassifier({"a": a})
    ids, lengths = padded([[1, 2], [3]])
    with pytest.raises(ValueError, match="unknown task"):
        multi(ids, lengths, ["a", "zzz"])
    with pytest.raises(ValueError, match="one task per row"):
        multi(ids, lengths, ["a"])


def test_prepend_prompt_shapes(base):
    ids = torch.zeros(3, 5, dtype=torch.long)
    assert prepend_prompt(base, ids, torch.zeros(2, CFG.d_model)).shape == (3, 7, CFG.d_model)
    assert prepend_prompt(base, ids, torch.zeros(3, 2, CFG.d_model)).shape == (3, 7, CFG.d_model)
    with pytest.raises(ValueError, match="prompts must have shape"):
        prepend_prompt(base, ids, torch.zeros(2, 2, CFG.d_model))
    h = prompted_last_hidden(base, ids, None, torch.zeros(2, CFG.d_model))
    assert h.shape == (3, CFG.d_model)


# ---------------------------------------------------------------- the reference: peft

def test_forward_equals_peft_prompt_tuning():
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from gptbook.model import gpt2_config_from_hf, load_gpt2_weights

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(vocab_size=CFG.vocab_size, n_positions=CFG.context_length, n_embd=CFG.d_model,
                                     n_layer=CFG.n_layers, n_head=CFG.n_heads, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf_cfg.to_dict(), dropout=0.0)), hf.state_dict()).eval()
    n = 6
    p = SoftPrompt(n, CFG.d_model, init="random", std=0.5, generator=torch.Generator().manual_seed(1))
    pm = peft.get_peft_model(hf, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)).eval()
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(p.weight)
    ids = torch.randint(0, CFG.vocab_size, (3, 14))
    with torch.no_grad():
        ref = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        mine = PromptTunedModel(ours, p)(ids)
    assert ref.shape == (3, n + 14, CFG.vocab_size)
    assert (ref[:, n:] - mine).abs().max() < 1e-4
    # the verbalizer classifier reads the same numbers at the last token
    label_ids = [3, 17, 42]
    assert torch.allclose(PromptClassifier(ours, p, label_ids)(ids), ref[:, -1, label_ids], atol=1e-4)
    # and only the prompt trains in both
    assert sum(q.numel() for q in pm.parameters() if q.requires_grad) == p.weight.numel()


def test_vocab_init_equals_peft_text_init(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from peft import PromptTuningConfig
    from peft.tuners.prompt_tuning.model import PromptEmbedding

    vocab = json.loads(gzip.open(ROOT / "data/gpt2/encoder.json.gz").read())
    lines = gzip.open(ROOT / "data/gpt2/vocab.bpe.gz").read().decode("utf-8").splitlines()[1:]
    tok = transformers.GPT2Tokenizer(vocab=vocab, merges=[tuple(line.split()) for line in lines if line])
    tok.save_pretrained(tmp_path)  # peft loads the tokenizer by name or folder
    text = "Classify this e-mail as spam or ham:"
    emb = torch.nn.Embedding(50257, 8)
    for n in (4, 23):  # fewer vectors than text tokens (cut), and more (repeated)
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, token_dim=8, num_transformer_submodules=1,
                                 prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
                                 tokenizer_name_or_path=str(tmp_path))
        ref = PromptEmbedding(cfg, emb).embedding.weight
        ours = SoftPrompt(n, 8, init="vocab", init_ids=gpt2_encoding().encode(text), embedding=emb)
        assert torch.equal(ours.weight, ref)
