"""The acceptance gate of the book's shipped base model (``data/base``), checked cheaply.

The chapters show the full gate over several seeds (chapter 6: the frozen-feature probe, head-only
training, the learning curve, the headline run; chapters 8 and 9: LoRA, QLoRA, prompt tuning).
Here the part that needs no fine-tuning runs on every test run, against the shipped files: the
files match their checksums, and a linear probe on the frozen model's mean-pooled features
classifies spam well, clearly better than the same probe on a randomly initialised model.
"""
from __future__ import annotations

import hashlib
import time

import pytest
import torch

from gptbook import base as B
from gptbook.classify_data import (
    ClassificationDataset,
    classification_loader,
    spam_splits,
    stratified_subset,
)
from gptbook.probe import extract_features, probe_accuracy, train_probe
from gptbook.model import GPTModel
from gptbook.pretrain_data import load_tokenizer

N_TRAIN, N_TEST, MAX_LEN = 600, 400, 64  # a fixed subset: seconds on one core


def _sums() -> dict[str, str]:
    lines = (B.base_dir() / "SHA256SUMS").read_text().splitlines()
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in lines if line)}


def test_shipped_files_match_their_checksums():
    sums = _sums()
    assert {"model.safetensors", "tokenizer.json", "recipe.json", "metrics.json"} <= set(sums)
    for name, digest in sums.items():
        data = (B.base_dir() / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"data/base/{name} does not match SHA256SUMS"
    model = B.load_base()  # verifies the checksums itself, and the format
    assert sum(p.numel() for p in model.parameters()) == B.base_metrics()["parameters"]


def test_recorded_pretraining_beats_the_unigram_model():
    m = B.base_metrics()
    assert m["val_bpb"] < m["unigram_val_bpb"] - 0.5, m  # it learned far more than token counts


@pytest.fixture(scope="module")
def probe_data():
    enc = load_tokenizer("book")
    splits = spam_splits()  # the default seed: the split the base model was pre-trained beside
    train = ClassificationDataset(stratified_subset(splits["train"], N_TRAIN, seed=123), enc, MAX_LEN)
    test = ClassificationDataset(stratified_subset(splits["test"], N_TEST, seed=123), enc, MAX_LEN)
    return train, test


def _probe(model, train, test, seed=0) -> float:
    tr, te = (extract_features(model, classification_loader(ds, 100)) for ds in (train, test))
    return probe_accuracy(train_probe(tr["mean"], tr["labels"], seed=seed), te["mean"], te["labels"])


def test_frozen_features_gate(probe_data):
    t0 = time.perf_counter()
    train, test = probe_data
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_model = GPTModel(B.load_base().cfg).eval()
    pretrained = _probe(B.load_base(), train, test)
    random = _probe(random_model, train, test)
    majority = 1 - sum(test.labels) / len(test)
    print(f"probe: pre-trained {pretrained:.3f}, random {random:.3f}, majority {majority:.3f}, "
          f"{time.perf_counter() - t0:.1f} s")
    assert pretrained >= 0.90, (pretrained, random)
    assert pretrained >= random + 0.05, (pretrained, random)
