"""Tests of gptbook.tokenizer (chapter 1): the from-scratch tokenizers against tiktoken."""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import numpy as np
import pytest
import regex
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptbook.corpora import data_path, load_moby_dick, load_sotu, read_gpt2_vocab
from gptbook.tokenizer import (END_OF_TEXT, GPT2_PATTERN, UNK, ByteLevelBPE, CharTokenizer,
                               SimpleWordTokenizer, _merge_pair, bpe_segment, build_vocab,
                               bytes_to_unicode, gpt2_encoding, gpt2_pretokenize, learn_bpe_merges,
                               word_split)

EDGE_CASES = [
    "Hello, world! How's everything?",
    "I'll've we'd they're it's DON'T 'quoted' ''' '",
    "3.14159 1,000,000 2024-11-25 0x1F600 ½ ⅔ ٣ 12345678901234567890",
    "naïve café — “smart quotes” and ‘apostrophes’ … Ω≈ç√∫",
    "Grüße aus Zürich. Привет, мир! 你好，世界。 こんにちは 안녕하세요 שלום مرحبا",
    "emoji: 🐳🐋 👍🏽 👨‍👩‍👧 🇭🇷 ❤️ \U0001fae0",
    "   leading and trailing spaces   ",
    "tabs\tand\t\ttabs, newlines\n\n\nand\r\nwindows\u00a0nbsp\u2003em\u3000ideographic\u2028ls",
    "\x00\x01 control \x1b[31m colour \x7f",
    "code: def f(x):\n    return x**2  # squares\n\n\n",
    "a<|endoftext|>b <|endoftext|> <|endoftext|><|endoftext|>",
    "<|endoftext", "|>", "<|foo|>", "", " ", "\n", "  \n  ",
]


@pytest.fixture(scope="module")
def gpt2() -> ByteLevelBPE:
    return ByteLevelBPE.from_gpt2()


@pytest.fixture(scope="module")
def small_bpe() -> ByteLevelBPE:
    return ByteLevelBPE.train(load_moby_dick()[:100_000], 300)


# ---- word and character tokenizers ------------------------------------------------------------

def test_word_split_fixes_the_thesis_typo():
    s = "Hello, world! How's everything?"
    assert re.findall(r"\w+|[\^\w\s]", s) == ["Hello", " ", "world", " ", "How", "s", " ", "everything"]
    assert word_split(s) == ["Hello", ",", "world", "!", "How", "'", "s", "everything", "?"]
    assert word_split("a <|endoftext|> b") == ["a", END_OF_TEXT, "b"]


def test_word_tokenizer_unknown_words_and_end_of_text():
    tok = SimpleWordTokenizer(build_vocab("The dog barks."))
    assert tok.vocab_size == 6 and tok.str_to_id[UNK] == 4 and tok.str_to_id[END_OF_TEXT] == 5
    ids = tok.encode("The cat barks. <|endoftext|> The dog barks!")
    assert ids.count(tok.str_to_id[UNK]) == 2  # "cat" and "!"
    assert tok.decode(ids) == "The <|unk|> barks. <|endoftext|> The dog barks <|unk|>"
    with pytest.raises(ValueError, match="unk"):
        SimpleWordTokenizer({"a": 0})
    with pytest.raises(ValueError, match="ids"):
        SimpleWordTokenizer({"a": 0, UNK: 2})


def test_word_tokenizer_round_trip_on_known_text():
    text = " ".join(load_moby_dick().split()[:2000])
    tok = SimpleWordTokenizer(build_vocab(text))
    assert word_split(tok.decode(tok.encode(text))) == word_split(text)


def test_char_tokenizer():
    text = load_moby_dick()[:50_000]
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text)) + 2
    ids = tok.encode("ab🐳<|endoftext|>")
    assert ids[2:] == [tok.str_to_id[UNK], tok.str_to_id[END_OF_TEXT]]
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer(["a", "a"])


# ---- BPE: the thesis' example and training -----------------------------------------------------

def test_thesis_bpe_example(capsys):
    words = [("hug", 10), ("pug", 5), ("pun", 12), ("bun", 4), ("hugs", 5)]
    merges = learn_bpe_merges(words, 3, verbose=True)
    assert merges == [("u", "g"), ("u", "n"), ("h", "ug")]
    printed = capsys.readouterr().out
    assert '("u", "g") -> "ug"' in printed and '("h", "ug") -> "hug"' in printed
    assert 'Corpus: ("hug", 10), ("p" "ug", 5), ("p" "un", 12), ("b" "un", 4), ("hug" "s", 5)' in printed
    assert learn_bpe_merges(dict(words), 3) == merges
    every = learn_bpe_merges(words, 100)
    assert len(every) == 7  # then every word is a single symbol and training stops
    assert all(bpe_segment(w, every) == [w] for w, _ in words)
    assert bpe_segment("thug", merges) == ["t", "hug"]
    with pytest.raises(ValueError):
        learn_bpe_merges([("hug", 0)], 1)


def _naive_byte_merges(text: str, num_merges: int) -> dict[tuple[int, int], int]:
    """The textbook algorithm: recount every pair after every merge (ties: smallest pair)."""
    counts = Counter(regex.findall(GPT2_PATTERN, text))
    words, freqs = [list(c.encode("utf-8")) for c in counts], list(counts.values())
    merges: dict[tuple[int, int], int] = {}
    for k in range(num_merges):
        pairs: Counter = Counter()
        for word, n in zip(words, freqs):
            for p in zip(word, word[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges[best] = 256 + k
        words = [_merge_pair(word, best, 256 + k) for word in words]
    return merges


@pytest.mark.parametrize("text", [
    load_moby_dick()[20_000:45_000],
    "aaaa aaaaa aaaaaaa abababab ab aab aaab ééé éé 🐳🐳🐳 " * 3,
])
def test_incremental_training_equals_full_recount(text):
    fast = ByteLevelBPE.train(text, 250, special_tokens=())
    assert fast.merges == _naive_byte_merges(text, 250)


def test_training_vocab_size_and_special_tokens():
    moby = load_moby_dick()[30_000:60_000]
    text = END_OF_TEXT.join(moby[k:k + 1000] for k in range(0, len(moby), 1000))
    tok = ByteLevelBPE.train(text, vocab_size=300)
    assert tok.vocab_size == 300 and tok.special_tokens == {END_OF_TEXT: 299}
    assert not any(b"|" in tok.vocab[i] or b"<" in tok.vocab[i] for i in range(256, 299))  # nothing learned from it
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(299) == 29 and tok.decode(ids) == text
    many = ByteLevelBPE.train("ab ab", 1000, special_tokens=())
    assert len(many.merges) == 2  # "ab", then " ab": after that no pair is left
    with pytest.raises(ValueError, match="exactly one"):
        ByteLevelBPE.train(text)
    with pytest.raises(ValueError, match="at least"):
        ByteLevelBPE.train(text, vocab_size=100)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_round_trip_arbitrary_unicode(small_bpe, gpt2, text):
    assert small_bpe.decode(small_bpe.encode_ordinary(text)) == text
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


# ---- GPT-2: equal to tiktoken ------------------------------------------------------------------

def test_thesis_sentence(gpt2):
    assert gpt2.encode("Hello, world! How's everything?") == [15496, 11, 995, 0, 1374, 338, 2279, 30]


def test_equal_to_tiktoken_on_a_varied_corpus(gpt2):
    enc = gpt2_encoding()
    lines = load_moby_dick().splitlines()[5000:8000]
    speeches = [s["text"][:3000] for s in load_sotu()[::20]]
    for text in lines + speeches + EDGE_CASES:
        ours = gpt2.encode(text, allowed_special="all")
        assert ours == enc.encode(text, allowed_special="all"), text
        assert gpt2.decode(ours) == text
    assert gpt2.encode_ordinary(EDGE_CASES[10]) == enc.encode_ordinary(EDGE_CASES[10])
    block = "\n".join(lines)  # whole blocks too, where whitespace runs span lines
    assert gpt2.encode_ordinary(block) == enc.encode_ordinary(block)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
def test_equal_to_tiktoken_on_arbitrary_unicode(gpt2, text):
    assert gpt2.encode_ordinary(text) == gpt2_encoding().encode_ordinary(text)


def test_pretokenize_and_byte_map():
    text = EDGE_CASES[7]
    assert "".join(gpt2_pretokenize(text)) == text
    b2u = bytes_to_unicode()
    assert sorted(b2u) == list(range(256)) and len(set(b2u.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in b2u.values())


def test_gpt2_encoding_equals_tiktoken_loader(tmp_path):
    """gpt2_encoding() has the ranks tiktoken's own data-gym loader computes from the same files."""
    paths = {}
    for name in ["vocab.bpe", "encoder.json"]:
        paths[name] = tmp_path / name
        paths[name].write_bytes(gzip.decompress(data_path(f"gpt2/{name}.gz").read_bytes()))
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(paths["vocab.bpe"]), str(paths["encoder.json"]))
    ref = tiktoken.Encoding(name="gpt2-ref", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={END_OF_TEXT: 50256})
    enc = gpt2_encoding()
    assert enc._mergeable_ranks == ranks
    assert enc.n_vocab == ref.n_vocab == 50257 and enc.eot_token == 50256
    assert json.loads(paths["encoder.json"].read_text()) == read_gpt2_vocab()
    for text in EDGE_CASES:
        assert enc.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")


# ---- errors ------------------------------------------------------------------------------------

def test_special_token_errors(gpt2):
    with pytest.raises(ValueError, match="not allowed"):
        gpt2.encode("a <|endoftext|> b")
    with pytest.raises(ValueError, match="unknown special"):
        gpt2.encode("hi <|foo|>", allowed_special={"<|foo|>"})
    with pytest.raises(TypeError, match="allowed_special"):
        gpt2.encode("hi", allowed_special="<|endoftext|>")
    # an unknown special token is ordinary text, exactly as in tiktoken
    assert gpt2.encode("<|foo|>") == gpt2_encoding().encode("<|foo|>")
    assert gpt2.encode_ordinary("a <|endoftext|>") == gpt2_encoding().encode_ordinary("a <|endoftext|>")


@pytest.mark.parametrize("make", [
    lambda: ByteLevelBPE.from_gpt2(),
    lambda: SimpleWordTokenizer(build_vocab("a b c")),
    lambda: CharTokenizer.from_text("abc"),
])
def test_bad_input_types_and_ids(make):
    tok = make()
    for bad in [b"bytes", None, 3, ["a"]]:
        with pytest.raises(TypeError, match="str"):
            tok.encode(bad)
    for bad in [[1.0], ["1"], [True], [None], "12", 5]:
        with pytest.raises(TypeError):
            tok.decode(bad)
    for bad in [[-1], [tok.vocab_size], [0, 10**9]]:
        with pytest.raises(ValueError, match="out of range"):
            tok.decode(bad)
    assert tok.decode(np.array([0, 1], dtype=np.int64)) == tok.decode([0, 1])  # numpy ints are fine


def test_bad_bpe_construction():
    with pytest.raises(ValueError, match="256"):
        ByteLevelBPE(range(255), {})
    with pytest.raises(ValueError, match="merge"):
        ByteLevelBPE(range(256), {(1, 2): 100})
    with pytest.raises(ValueError, match="reuses"):
        ByteLevelBPE(range(256), {}, {END_OF_TEXT: 5})
