"""Tests for gptbook.data: the token file, the sliding-window dataset and the data loader."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from gptbook.data import (END_OF_TEXT_ID, TOKEN_HEADER_BYTES, NextTokenDataset, create_dataloader,
                          encode_to_file, load_tokens, read_token_header, write_tokens)
from gptbook.tokenizer import gpt2_encoding


def windows_by_hand(tokens, max_length, stride):
    """Every (inputs, targets) pair the dataset must produce, computed with plain Python lists."""
    out, start = [], 0
    while start + max_length + 1 <= len(tokens):
        out.append((tokens[start:start + max_length], tokens[start + 1:start + max_length + 1]))
        start += stride
    return out


TOKENS = [7, 3, 9, 0, 12, 5, 5, 8, 1, 4, 11, 2, 6]  # 13 hand-made ids


@pytest.mark.parametrize("as_type", ["list", "numpy_uint16", "tensor"])
@pytest.mark.parametrize("max_length,stride", [(4, 4), (4, 1), (4, 2), (3, 5), (12, 1), (1, 1)])
def test_windows_and_shift_exact(as_type, max_length, stride):
    tokens = {"list": TOKENS, "numpy_uint16": np.array(TOKENS, dtype=np.uint16),
              "tensor": torch.tensor(TOKENS)}[as_type]
    ds = NextTokenDataset(tokens, max_length=max_length, stride=stride)
    expected = windows_by_hand(TOKENS, max_length, stride)
    assert len(ds) == len(expected)
    for i, (x, y) in enumerate(expected):
        inputs, targets = ds[i]
        assert inputs.dtype == torch.long and targets.dtype == torch.long
        assert inputs.tolist() == x and targets.tolist() == y
        assert torch.equal(inputs[1:], targets[:-1])  # targets are the inputs shifted by one


def test_first_windows_spelled_out():
    ds = NextTokenDataset(TOKENS, max_length=4, stride=4)
    assert ds[0][0].tolist() == [7, 3, 9, 0] and ds[0][1].tolist() == [3, 9, 0, 12]
    assert ds[1][0].tolist() == [12, 5, 5, 8] and ds[1][1].tolist() == [5, 5, 8, 1]
    assert ds[2][0].tolist() == [1, 4, 11, 2] and ds[2][1].tolist() == [4, 11, 2, 6]
    assert len(ds) == 3
    assert ds[-1][0].tolist() == ds[2][0].tolist()
    with pytest.raises(IndexError):
        ds[3]


@pytest.mark.parametrize("n,max_length,stride", [(1000, 16, 16), (1000, 16, 1), (1000, 16, 7),
                                                 (17, 16, 16), (33, 16, 16), (32, 16, 16), (100, 10, 3)])
def test_window_count_and_overlap(n, max_length, stride):
    ds = NextTokenDataset(np.arange(n) % 50000, max_length=max_length, stride=stride)
    assert len(ds) == (n - max_length - 1) // stride + 1
    # The last window fits, one more would not.
    last_start = (len(ds) - 1) * stride
    assert last_start + max_length + 1 <= n < last_start + stride + max_length + 1
    if len(ds) > 1:  # consecutive windows share max_length - stride tokens (none when stride >= max_length)
        a, b = ds[0][0], ds[1][0]
        overlap = max(max_length - stride, 0)
        if overlap:
            assert torch.equal(a[stride:], b[:overlap])
        else:  # no shared position: b starts at or after the end of a
            assert b[0].item() == (stride % 50000)


def test_default_stride_is_max_length():
    ds = NextTokenDataset(list(range(50)), max_length=8)
    assert ds.stride == 8 and len(ds) == (50 - 9) // 8 + 1


def test_too_short_raises_clear_error():
    NextTokenDataset(list(range(5)), max_length=4)  # exactly one window fits
    with pytest.raises(ValueError, match="max_length=4 needs 5"):
        NextTokenDataset(list(range(4)), max_length=4)
    with pytest.raises(ValueError, match="window"):
        create_dataloader("Call me Ishmael.", max_length=256)


@pytest.mark.parametrize("bad", [dict(max_length=0), dict(max_length=4, stride=0), dict(max_length=2.5)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        NextTokenDataset(list(range(100)), **bad)


def test_bad_tokens():
    with pytest.raises(ValueError, match="1-D"):
        NextTokenDataset(np.zeros((4, 4), dtype=np.int64), max_length=2)
    with pytest.raises(TypeError, match="integers"):
        NextTokenDataset(np.linspace(0, 1, 20), max_length=2)
    with pytest.raises(TypeError, match="not text"):
        NextTokenDataset("some text", max_length=2)


def test_dataloader_batches_shapes_and_drop_last():
    tokens = np.arange(1000) % 500
    loader = create_dataloader(tokens, batch_size=4, max_length=10, shuffle=False)
    batches = list(loader)
    n_windows = (1000 - 11) // 10 + 1  # 99
    assert len(batches) == n_windows // 4 == len(loader)
    for x, y in batches:
        assert x.shape == y.shape == (4, 10) and x.dtype == torch.long
    # Unshuffled: the first batch holds windows 0..3 in order.
    assert batches[0][0][1].tolist() == list(range(10, 20))
    keep = list(create_dataloader(tokens, batch_size=4, max_length=10, shuffle=False, drop_last=False))
    assert len(keep) == -(-n_windows // 4) and keep[-1][0].shape == (n_windows % 4, 10)


def test_drop_last_with_too_few_windows_raises():
    with pytest.raises(ValueError, match="drop_last"):
        create_dataloader(list(range(30)), batch_size=8, max_length=4)
    assert len(create_dataloader(list(range(30)), batch_size=8, max_length=4, drop_last=False)) == 1


def epoch(loader):
    return torch.cat([x for x, _ in loader])


def test_dataloader_reproducible_with_seed():
    tokens = np.arange(5000) % 1000
    a = create_dataloader(tokens, batch_size=8, max_length=16, seed=1)
    b = create_dataloader(tokens, batch_size=8, max_length=16, seed=1)
    c = create_dataloader(tokens, batch_size=8, max_length=16, seed=2)
    ea, eb, ec = epoch(a), epoch(b), epoch(c)
    assert torch.equal(ea, eb)
    assert not torch.equal(ea, ec)
    # Shuffled, yet every window appears once per epoch (minus the dropped remainder).
    unshuffled = epoch(create_dataloader(tokens, batch_size=1, max_length=16, shuffle=False))
    rows = {tuple(r) for r in unshuffled.tolist()}
    assert {tuple(r) for r in ea.tolist()} <= rows and len(ea) == len(unshuffled) // 8 * 8
    # A second epoch from the same loader is a new order, and is itself reproducible.
    assert not torch.equal(epoch(a), ea)
    d, e = (create_dataloader(tokens, batch_size=8, max_length=16, seed=5) for _ in range(2))
    assert torch.equal(torch.cat([epoch(d), epoch(d)]), torch.cat([epoch(e), epoch(e)]))


def test_dataloader_from_text_matches_tiktoken():
    enc = gpt2_encoding()
    text = "It was the best of times, it was the worst of times. " * 20 + "<|endoftext|>The end."
    ids = enc.encode(text, allowed_special={"<|endoftext|>"})
    assert END_OF_TEXT_ID in ids
    loader = create_dataloader(text, batch_size=1, max_length=8, shuffle=False, drop_last=False)
    first_x, first_y = next(iter(loader))
    assert first_x[0].tolist() == ids[:8] and first_y[0].tolist() == ids[1:9]
    assert len(loader) == (len(ids) - 9) // 8 + 1


def test_memmap_round_trip(tmp_path):
    enc = gpt2_encoding()
    docs = ["Call me Ishmael.", "", "Some years ago<|endoftext|>never mind how long", "precisely"]
    mm = encode_to_file(docs, tmp_path / "sub" / "tokens.bin")
    expected = []
    for d in (d for d in docs if d):
        if expected:
            expected.append(END_OF_TEXT_ID)
        expected += enc.encode_ordinary(d)  # a written <|endoftext|> stays plain text
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint16
    assert mm.tolist() == expected
    assert (tmp_path / "sub" / "tokens.bin").stat().st_size == TOKEN_HEADER_BYTES + 2 * len(expected)
    header = read_token_header(tmp_path / "sub" / "tokens.bin")
    assert header["dtype"] == "uint16" and header["count"] == len(expected) and header["vocab_size"] == 50257
    assert header["tokenizer"] == "gpt2" and header["documents"] == 3
    assert header["bytes"] == sum(len(d.encode()) for d in docs)
    again = load_tokens(tmp_path / "sub" / "tokens.bin")
    assert np.array_equal(again, mm)
    with pytest.raises(ValueError):
        again[0] = 1  # read-only
    nosep = encode_to_file(docs, tmp_path / "nosep.bin", separator=False)
    assert nosep.tolist() == [t for d in docs if d for t in enc.encode_ordinary(d)]
    assert len(nosep) == len(expected) - 2  # two separators between three non-empty documents
    # The dataset over the memory map gives the same windows as over the list.
    ds_mm, ds_list = NextTokenDataset(mm, 5, 2), NextTokenDataset(expected, 5, 2)
    assert len(ds_mm) == len(ds_list)
    for i in range(len(ds_mm)):
        assert all(torch.equal(a, b) for a, b in zip(ds_mm[i], ds_list[i]))
    # ... and a path works as input to create_dataloader.
    loader = create_dataloader(tmp_path / "nosep.bin", batch_size=1, max_length=4, shuffle=False)
    assert next(iter(loader))[0][0].tolist() == nosep[:4].tolist()


def test_pickled_memmap_dataset_stays_a_memmap(tmp_path):
    mm = encode_to_file(["a b c d e f g h i j k l m n o p"], tmp_path / "t.bin")
    ds = NextTokenDataset(mm, max_length=4, stride=1)
    blob = pickle.dumps(ds)
    assert len(blob) < 1000 + mm.nbytes  # sent as a file name, not as data (small here either way)
    copy = pickle.loads(blob)
    assert isinstance(copy.tokens, np.memmap)
    assert all(torch.equal(copy[i][0], ds[i][0]) for i in range(len(ds)))


def test_dataloader_with_workers_equals_without(tmp_path):
    mm = encode_to_file(["word " * 400], tmp_path / "w.bin")
    one = epoch(create_dataloader(mm, batch_size=4, max_length=8, seed=9))
    two = epoch(create_dataloader(mm, batch_size=4, max_length=8, seed=9, num_workers=2))
    assert torch.equal(one, two)


class BigVocab:
    """A stand-in tokenizer whose ids do not fit in 16 bits."""

    def encode(self, text):
        return [70000 + len(w) for w in text.split()]


def test_encode_to_file_errors(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        encode_to_file(["a bb ccc"], tmp_path / "big.bin", enc=BigVocab())
    with pytest.raises(TypeError, match="not a single string"):
        encode_to_file("just one string", tmp_path / "s.bin")
    with pytest.raises(ValueError, match="no tokens"):
        encode_to_file(["", ""], tmp_path / "empty.bin")
    assert not (tmp_path / "empty.bin").exists()
    with pytest.raises(FileNotFoundError):
        load_tokens(tmp_path / "missing.bin")
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="not a gptbook token file"):
        load_tokens(tmp_path / "odd.bin")
    assert not list(tmp_path.glob(".*tmp*"))  # failed writes leave no temporary file


def test_encode_to_file_with_other_tokenizer(tmp_path):
    class Chars:
        def encode(self, text):
            return [ord(c) for c in text]

    mm = encode_to_file(["ab", "c"], tmp_path / "c.bin", enc=Chars())
    assert mm.tolist() == [97, 98, END_OF_TEXT_ID, 99]


def test_token_file_header_is_checked(tmp_path):
    good = encode_to_file(["Call me Ishmael.", "Some years ago"], tmp_path / "good.tok")
    blob = (tmp_path / "good.tok").read_bytes()
    (tmp_path / "notes.txt").write_text("Call me Ishmael. " * 100)  # a text file passed as token ids
    (tmp_path / "raw.u16").write_bytes(np.arange(100, dtype=np.uint16).tobytes())  # the old headerless format
    (tmp_path / "cut.tok").write_bytes(blob[:-2])  # the last token lost
    (tmp_path / "long.tok").write_bytes(blob + b"\x00\x00")
    (tmp_path / "header.tok").write_bytes(blob[:8] + b"{broken" + blob[15:])
    ids = np.frombuffer(blob[TOKEN_HEADER_BYTES:], dtype=np.uint16).copy()
    ids[0] = 60000  # above GPT-2's 50,257 ids: a damaged file
    (tmp_path / "big.tok").write_bytes(blob[:TOKEN_HEADER_BYTES] + ids.tobytes())
    cases = {"notes.txt": "not a gptbook token file", "raw.u16": "not a gptbook token file",
             "cut.tok": "truncated or damaged", "long.tok": "truncated or damaged",
             "header.tok": "damaged token-file header", "big.tok": "holds token id 60000"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            load_tokens(tmp_path / name)
    with pytest.raises(ValueError, match="vocabulary of 50,257 tokens, more than the 4,096"):
        load_tokens(tmp_path / "good.tok", vocab_size=4096)
    assert load_tokens(tmp_path / "good.tok", vocab_size=50304).tolist() == good.tolist()


def test_write_tokens_and_large_vocabularies(tmp_path):
    small = write_tokens([5, 7, 9], tmp_path / "s.tok", vocab_size=10, tokenizer="mine")
    assert small.dtype == np.uint16 and small.tolist() == [5, 7, 9]
    assert read_token_header(tmp_path / "s.tok")["tokenizer"] == "mine"
    big = write_tokens(np.array([0, 99_999]), tmp_path / "b.tok", vocab_size=100_000)
    assert big.dtype == np.uint32 and big.tolist() == [0, 99_999]
    with pytest.raises(ValueError, match="not in 0..9"):
        write_tokens([10], tmp_path / "x.tok", vocab_size=10)

    class Wide:  # a tokenizer with more than 65,536 ids
        n_vocab, eot_token = 70_001, 70_000

        def encode(self, text):
            return [69_999 - len(w) for w in text.split()]

    wide = encode_to_file(["a bb", "ccc"], tmp_path / "w.tok", enc=Wide())
    assert wide.dtype == np.uint32 and wide.tolist() == [69_998, 69_997, 70_000, 69_996]


def test_create_dataloader_takes_a_str_path(tmp_path, monkeypatch):
    encode_to_file(["word " * 200], tmp_path / "w.tok")
    monkeypatch.chdir(tmp_path)
    by_str = next(iter(create_dataloader("w.tok", batch_size=2, max_length=8, shuffle=False)))[0]
    by_path = next(iter(create_dataloader(tmp_path / "w.tok", batch_size=2, max_length=8, shuffle=False)))[0]
    assert torch.equal(by_str, by_path)
    with pytest.raises(FileNotFoundError, match="missing.tok does not exist"):
        create_dataloader("missing.tok", batch_size=1, max_length=2)
    with pytest.raises(ValueError, match="not a gptbook token file"):
        (tmp_path / "notes.txt").write_text("a text, not token ids")
        create_dataloader(str(tmp_path / "notes.txt"), batch_size=1, max_length=2)
    text = "It was the best of times. " * 10  # a text is still a text
    assert len(create_dataloader(text, batch_size=1, max_length=4)) > 0


def test_dataloader_text_with_the_books_tokenizer():
    from gptbook.pretrain_data import load_tokenizer

    enc = load_tokenizer("book")
    text = "My fellow citizens,<|endoftext|>the state of the Union is strong. " * 5
    x, y = next(iter(create_dataloader(text, batch_size=1, max_length=8, shuffle=False, enc=enc)))
    ids = enc.encode(text, allowed_special={"<|endoftext|>"})
    assert x[0].tolist() == ids[:8] and enc.eot_token in ids
