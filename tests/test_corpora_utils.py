"""gptbook.utils and gptbook.corpora: devices, seeds, the shipped data and its error messages."""
import pytest
import torch

from gptbook import corpora
from gptbook.utils import autocast_dtype, count_parameters, get_device, seed_everything


def test_seed_everything_repeats_every_generator():
    import random

    import numpy as np

    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(2))
    seed_everything(5)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_get_device_rejects_absent_device():
    assert get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            get_device("cuda")
    assert autocast_dtype("cpu") == torch.float32


def test_count_parameters_counts_shared_tensors_once():
    lin = torch.nn.Linear(3, 4)
    model = torch.nn.Sequential(lin, lin)
    assert count_parameters(model) == 16
    lin.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 12


def test_shipped_data_loads():
    sotu = corpora.load_sotu()
    assert len(sotu) == 233 and sotu[0]["year"] == 1790 and sotu[0]["name"] == "George Washington"
    assert [s["year"] for s in sotu] == sorted(s["year"] for s in sotu)
    spam = corpora.load_spam()
    assert {m["label"] for m in spam} == {"spam", "ham"} and len(spam) > 5000
    assert len({(m["subject"], m["body"]) for m in spam}) == len(spam)  # exact duplicates removed
    assert "hard-ham-1" in {m["group"] for m in spam}
    brown = corpora.load_brown()
    assert len(brown) == 500 and len({d["genre_code"] for d in brown}) == 15
    assert "/" not in brown[0]["text"].split()[1]  # part-of-speech tags stripped
    assert corpora.load_moby_dick().startswith("CHAPTER 1. Loomings.")
    assert len(corpora.load_austen()) == 6
    assert "In the beginning God created" in corpora.load_kjv()[:500]
    assert corpora.load_cmudict()["hello"][0] == ["HH", "AH0", "L", "OW1"]
    merges = corpora.read_gpt2_merges()
    assert len(merges) == 50000 and merges[0] == ("Ġ", "t")
    assert corpora.read_gpt2_vocab()["<|endoftext|>"] == 50256


def test_missing_data_names_the_preparation_script(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tools/prepare_data.py"):
        corpora.load_sotu()
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpora.data_dir()


REAL_DATA = corpora.data_dir()


def _copy(tmp_path, name: str, blob: bytes | None = None):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes((REAL_DATA / name).read_bytes() if blob is None else blob)


def test_shipped_sums_cover_every_data_file():
    sums = corpora.read_sums(REAL_DATA)
    files = {p.relative_to(REAL_DATA).as_posix() for p in REAL_DATA.rglob("*") if p.is_file()
             and p.suffix != ".md" and not p.name.startswith(".") and p != REAL_DATA / "SHA256SUMS"}
    assert set(sums) == files, "data/SHA256SUMS is stale: run python tools/prepare_data.py --sums-only"
    for name in files:
        assert corpora.file_sha256(REAL_DATA / name) == sums[name], name


def test_data_files_are_checked_against_the_sums(tmp_path, monkeypatch):
    _copy(tmp_path, "kjv.txt.xz")
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SHA256SUMS is missing"):
        corpora.load_kjv()
    corpora.write_data_sums(tmp_path)
    assert "In the beginning God created" in corpora.load_kjv()[:500]
    blob = bytearray((tmp_path / "kjv.txt.xz").read_bytes())
    blob[1000] ^= 0x01  # one flipped bit
    (tmp_path / "kjv.txt.xz").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt or was changed") as err:
        corpora.load_kjv()
    assert "\n" not in str(err.value)
    (tmp_path / "extra.txt").write_text("not listed")
    with pytest.raises(ValueError, match="not listed"):
        corpora.data_path("extra.txt")
    corpora.write_data_sums(tmp_path, ["extra.txt"])  # updating one entry keeps the others
    assert set(corpora.read_sums(tmp_path)) == {"kjv.txt.xz", "extra.txt"}


@pytest.mark.parametrize("name, loader", [("kjv.txt.xz", corpora.load_kjv), ("sotu.jsonl.xz", corpora.load_sotu),
                                          ("gpt2/vocab.bpe.gz", corpora.read_gpt2_merges)])
def test_a_truncated_compressed_file_is_one_clear_error(tmp_path, monkeypatch, name, loader):
    blob = (REAL_DATA / name).read_bytes()
    _copy(tmp_path, name, blob[: len(blob) // 2])
    corpora.write_data_sums(tmp_path)  # the checksum matches: only the decompressor can tell
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="is truncated or damaged") as err:
        loader()
    assert "\n" not in str(err.value) and "prepare_data.py" in str(err.value)
