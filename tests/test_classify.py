"""Tests of gptbook.classify: splits, padding, the GPT-1 head and loss, freezing, the Classifier."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from gptbook import classify as C
from gptbook import classify_data as D
from gptbook import probe as P
from gptbook.corpora import load_spam
from gptbook.model import GPTConfig, GPTModel

SMALL = GPTConfig(vocab_size=300, context_length=24, d_model=32, n_heads=4, n_layers=2, dropout=0.0)


class CharEnc:
    """A toy tokenizer for a 300-token model: one id per byte."""

    def encode(self, text):
        return list(text.encode("utf-8"))


def small_clf(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return C.GPTClassifier(GPTModel(SMALL), num_classes).eval()


@pytest.fixture(scope="module")
def spam():
    return D.spam_splits(seed=123)


def test_spam_split_is_stratified_seeded_and_leak_free(spam):
    mails = load_spam()
    ids = {name: [r["id"] for r in spam[name]] for name in ("train", "val", "test")}
    sets = {k: set(v) for k, v in ids.items()}
    assert sum(len(s) for s in sets.values()) == len(mails)  # every e-mail exactly once
    assert set.union(*sets.values()) == {m["id"] for m in mails}
    body = {m["id"]: " ".join(m["body"].split()).lower() for m in mails}
    seen = {}
    for name, s in sets.items():  # no body in two splits
        for i in s:
            if body[i]:
                assert seen.setdefault(body[i], name) == name
    share = sum(m["label"] == "spam" for m in mails) / len(mails)
    for name in sets:
        records = spam[name]
        assert abs(sum(r["label"] for r in records) / len(records) - share) < 0.01
        assert all(set(r) >= {"id", "text", "label", "group"} for r in records)
    assert 0.18 < len(sets["test"]) / len(mails) < 0.22 and 0.08 < len(sets["val"]) / len(mails) < 0.12
    assert spam["label_names"] == ["ham", "spam"]
    again, other = D.spam_splits(seed=123), D.spam_splits(seed=7)
    assert [r["id"] for r in again["test"]] == ids["test"]
    assert [r["id"] for r in other["test"]] != ids["test"]


def test_balanced_variant_only_changes_train(spam):
    bal = D.spam_splits(seed=123, balance=True)
    counts = Counter(r["label"] for r in bal["train"])
    assert counts[0] == counts[1] == sum(r["label"] for r in spam["train"])
    assert {r["id"] for r in bal["train"]} <= {r["id"] for r in spam["train"]}
    assert [r["id"] for r in bal["test"]] == [r["id"] for r in spam["test"]]


def test_brown_split_by_document():
    b = D.brown_splits(seed=1, passage_words=50, max_passages_per_doc=3)
    assert len(b["label_names"]) == 15
    docs = {name: {r["id"].rsplit("/", 1)[0] for r in b[name]} for name in ("train", "val", "test")}
    assert not (docs["train"] & docs["test"]) and not (docs["train"] & docs["val"]) and not (docs["val"] & docs["test"])
    for name in ("train", "val", "test"):
        assert {r["label"] for r in b[name]} == set(range(15))  # every genre in every split
        assert all(len(r["text"].split()) == 50 for r in b[name])
        assert max(Counter(r["id"].rsplit("/", 1)[0] for r in b[name]).values()) <= 3


def test_bad_fractions():
    with pytest.raises(ValueError, match="val_frac"):
        D.spam_splits(val_frac=-0.1)
    with pytest.raises(ValueError, match="nothing to train"):
        D.stratified_split([{"id": 1, "label": 0}], val_frac=0.5, test_frac=0.5)


def test_dataset_truncates_and_rejects_empty_text():
    ds = D.ClassificationDataset([{"text": "abcdefgh", "label": 1}, {"text": "xy", "label": 0}], CharEnc(), max_length=5)
    assert ds[0][0].tolist() == list(b"abcde") and ds.n_truncated == 1
    ids, lengths, labels = D.collate_classification([ds[0], ds[1]], pad_id=7)
    assert ids.tolist() == [list(b"abcde"), list(b"xy") + [7, 7, 7]]
    assert lengths.tolist() == [5, 2] and labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="empty"):
        D.ClassificationDataset([{"text": "ok", "label": 0}, {"text": "  \n", "label": 1}], CharEnc())
    with pytest.raises(TypeError, match="must be a str"):
        D.ClassificationDataset([{"text": None, "label": 0}], CharEnc())


def test_last_token_representation_ignores_padding():
    clf = small_clf()
    short, long_ = torch.tensor([5, 17, 42, 9]), torch.arange(10, 30)
    alone = clf(short[None], torch.tensor([4]))
    for pad_id in (0, 299):
        ids, lengths, _ = D.collate_classification([(long_, 0), (short, 1)], pad_id=pad_id)
        batched = clf(ids, lengths)
        torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="lengths"):
        clf(ids, torch.tensor([20, 0]))
    with pytest.raises(ValueError, match="pad id"):
        clf(torch.tensor([[1, 2, 50256]]), torch.tensor([2]))


def test_composite_loss_equals_hand_computation():
    clf = small_clf(num_classes=3)
    torch.manual_seed(1)
    ids = torch.randint(0, 300, (3, 9))
    lengths, labels, lam = torch.tensor([9, 4, 1]), torch.tensor([2, 0, 1]), 0.37
    class_logits, lm_logits = clf(ids, lengths, return_lm=True)
    l2 = F.cross_entropy(class_logits, labels)
    rows, targets = [], []  # every (prediction, next real token) pair, by hand
    for b in range(3):
        for t in range(int(lengths[b]) - 1):
            rows.append(lm_logits[b, t])
            targets.append(ids[b, t + 1])
    l1 = F.cross_entropy(torch.stack(rows), torch.stack(targets))
    out = C.composite_loss(clf, ids, lengths, labels, lam)
    torch.testing.assert_close(out["cls"], l2)
    torch.testing.assert_close(out["lm"], l1)
    torch.testing.assert_close(out["loss"], l2 + lam * l1)
    sub = [(b, t) for b in range(3) for t in range(0, int(lengths[b]) - 1, 3)]  # lm_every=3
    l1_sub = F.cross_entropy(torch.stack([lm_logits[b, t] for b, t in sub]), torch.stack([ids[b, t + 1] for b, t in sub]))
    torch.testing.assert_close(C.composite_loss(clf, ids, lengths, labels, lam, lm_every=3)["lm"], l1_sub)
    assert float(C.composite_loss(clf, ids, lengths, labels, 0.0)["lm"]) == 0.0


def test_set_trainable_freezes_the_right_parameters():
    clf = small_clf()
    names = [n for n, _ in clf.named_parameters()]
    expect = {
        "head": {n for n in names if n.startswith("head.")},
        "last_block": {n for n in names if n.startswith(("head.", "base.blocks.1.", "base.final_norm."))},
        "all": set(names),
    }
    for which, wanted in expect.items():
        n = C.set_trainable(clf, which)
        assert {k for k, p in clf.named_parameters() if p.requires_grad} == wanted
        assert n == sum(p.numel() for k, p in clf.named_parameters() if k in wanted)
    with pytest.raises(ValueError, match="which must be one of"):
        C.set_trainable(clf, "everything")


def test_training_moves_only_trainable_parameters_and_records_history():
    clf = small_clf()
    C.set_trainable(clf, "last_block")
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    recs = [{"text": t, "label": int(t.startswith("b")), "id": i, "group": t[0]}
            for i, t in enumerate(["aaa", "bbbb", "abab", "bcb", "aac", "bbb"] * 3)]
    train = D.classification_loader(recs, batch_size=4, shuffle=True, enc=CharEnc(), max_length=8, pad_id=0)
    val = D.classification_loader(recs, batch_size=8, enc=CharEnc(), max_length=8, pad_id=0)
    hist = C.train_classifier(clf, train, val, epochs=2, lr=1e-2, lam=0.5, progress=False)
    assert len(hist["val_acc"]) == 2 and len(hist["train_loss"]) == 2 and hist["epoch"] == [1.0, 2.0]
    after = clf.state_dict()
    for k in before:
        moved = not torch.equal(before[k], after[k])
        assert moved == k.startswith(("head.", "base.blocks.1.", "base.final_norm.")), k
    ev = C.evaluate(clf, val)
    assert set(ev["group_accuracy"]) == {"a", "b"} and sum(ev["group_n"].values()) == len(recs)
    conf = torch.tensor(ev["confusion"])
    assert int(conf.sum()) == len(recs) and abs(ev["accuracy"] - int(conf.trace()) / len(recs)) < 1e-12


def test_metrics_against_hand_counts():
    labels, preds = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([0, 1, 0, 1, 0, 2])
    m = C._metrics(labels, preds, 3)
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert m["recall"] == pytest.approx([2 / 3, 1 / 2, 1.0])


def test_classifier_errors_truncation_and_batching():
    model = C.Classifier(small_clf(), CharEnc(), max_length=10)
    with pytest.raises(ValueError, match="text 1 is empty"):
        model.predict(["fine", ""])
    with pytest.raises(TypeError, match="text 0 must be a str"):
        model.predict([3])
    with pytest.raises(ValueError, match="max_length"):
        C.Classifier(small_clf(), CharEnc(), max_length=SMALL.context_length + 1)
    with pytest.raises(ValueError, match="label names"):
        C.Classifier(small_clf(), CharEnc(), label_names=("a", "b", "c"))
    long_text = "x" * 5000  # far beyond the context: truncated to its first 10 tokens
    torch.testing.assert_close(model.predict_proba(long_text), model.predict_proba("x" * 10))
    texts = ["hello", "a much longer text than that", "hi", "spam spam spam", "ok"]
    torch.testing.assert_close(model.predict_proba(texts, batch_size=2),
                               torch.stack([model.predict_proba(t) for t in texts]), atol=1e-5, rtol=1e-5)
    assert model.predict("hello") in ("ham", "spam") and len(model.predict(texts)) == 5


def test_save_load_round_trip(tmp_path):
    model = C.Classifier(small_clf(num_classes=3, seed=4), CharEnc(), label_names=("x", "y", "z"), max_length=12)
    texts = ["one", "two words", "three words here", "four"]
    path = tmp_path / "clf.safetensors"
    model.save(path)
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, no pickle
    again = C.Classifier.load(path, enc=CharEnc())
    assert again.label_names == ["x", "y", "z"] and again.max_length == 12
    assert torch.equal(again.predict_proba(texts), model.predict_proba(texts))
    assert again.predict(texts) == model.predict(texts)
    with pytest.raises(ValueError, match="pass that tokenizer as enc"):
        C.Classifier.load(path)  # a toy tokenizer: the file cannot name it


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))  # creates a file when unpickled


@pytest.mark.parametrize("kind", ["empty", "text", "random", "pickle", "torch", "damaged", "nan",
                                  "other-format"])
def test_loaders_refuse_foreign_or_damaged_files_in_one_line(tmp_path, kind):
    import pickle
    path, marker = tmp_path / "clf.bin", tmp_path / "pwned"
    good = tmp_path / "good.safetensors"
    clf = small_clf()
    C.Classifier(clf, CharEnc(), max_length=8).save(good)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("just some notes\n" * 10)
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"format": "gptbook-classifier-2", "x": _Evil(str(marker))}))
    elif kind == "torch":
        torch.save({"format": "gptbook-classifier-2", "x": _Evil(str(marker))}, path)
    elif kind == "damaged":
        data = bytearray(good.read_bytes())
        data[-7] ^= 0x10  # one flipped bit in the weights
        path.write_bytes(data)
    elif kind == "nan":
        tensors = {k: v.clone() for k, v in clf.state_dict().items()}
        tensors["head.weight"][0, 0] = float("nan")
        C.write_tensor_file(tensors, path, "gptbook-classifier-2", {})
    else:
        C.write_tensor_file({"w": torch.zeros(2)}, path, "gptbook-soft-prompt-2", {})
    with pytest.raises(ValueError) as err:
        C.Classifier.load(path, enc=CharEnc())
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()  # nothing in the file was executed
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.Classifier.load(tmp_path / "missing.safetensors", enc=CharEnc())


def test_tokenizer_recorded_and_checked(tmp_path):
    from gptbook.tokenizer import gpt2_encoding
    cfg = SMALL.with_(vocab_size=50257)
    torch.manual_seed(0)
    clf = C.GPTClassifier(GPTModel(cfg), 2).eval()
    enc = gpt2_encoding()
    model = C.Classifier(clf, enc, max_length=16)
    assert model.pad_id == enc.eot_token == 50256
    model.save(tmp_path / "c.safetensors")
    again = C.Classifier.load(tmp_path / "c.safetensors")  # finds GPT-2's tokenizer by name
    assert torch.equal(again.predict_proba(["hello there"]), model.predict_proba(["hello there"]))

    class Other:
        name = "something-else"

        def encode(self, text):
            return [1, 2]

    with pytest.raises(ValueError, match="tokenizer 'gpt2'"):
        C.Classifier.load(tmp_path / "c.safetensors", enc=Other())


def test_single_class_and_missing_tokenizer_are_clear_errors():
    recs = [{"text": "a", "label": 1}, {"text": "b", "label": 1}]
    with pytest.raises(ValueError, match="at least two classes"):
        D.ClassificationDataset(recs, CharEnc())
    assert len(D.ClassificationDataset(recs, CharEnc(), single_class_ok=True)) == 2
    with pytest.raises(ValueError, match="empty"):
        D.ClassificationDataset([], CharEnc())
    with pytest.raises(TypeError, match="tokenizer"):
        D.ClassificationDataset(recs + [{"text": "c", "label": 0}], None)
    with pytest.raises(ValueError, match="single class"):
        P.train_probe(torch.randn(4, 3), torch.ones(4, dtype=torch.long))


def test_pad_id_is_the_tokenizers_end_of_text():
    from gptbook.tokenizer import gpt2_encoding
    recs = [{"text": "hello world, a longer one", "label": 0}, {"text": "hi", "label": 1}]
    loader = D.classification_loader(recs, batch_size=2, enc=gpt2_encoding())
    ids, lengths, _ = next(iter(loader))
    assert ids[1, int(lengths[1]):].eq(50256).all()
    assert D.pad_id_of(CharEnc()) == 0


def test_select_shares_tokens():
    recs = [{"text": t, "label": i % 2, "group": str(i)} for i, t in enumerate(["abcdef", "ab", "abc", "a"])]
    ds = D.ClassificationDataset(recs, CharEnc(), max_length=3)
    sub = ds.select([3, 0])
    assert sub.labels == [1, 0] and sub.groups == ["3", "0"] and sub.n_truncated == 1
    assert sub[1][0] is ds[0][0]


def test_features_ignore_padding_and_probe_learns():
    clf = small_clf()
    recs = [{"text": "x" * n, "label": n % 2} for n in range(3, 13)]
    ds = D.ClassificationDataset(recs, CharEnc(), max_length=20)
    feats = P.extract_features(clf.base, D.classification_loader(ds, batch_size=4))
    for i, (ids, _) in enumerate(ds):
        with torch.no_grad():
            h = clf.base.hidden_states(ids[None])[0]
        torch.testing.assert_close(feats["mean"][i], h.mean(0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats["last"][i], h[-1], atol=1e-5, rtol=1e-5)
    assert feats["labels"].tolist() == [r["label"] for r in recs]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) * torch.tensor([100.0, 1, 1, 1, 1]) + 7
    y = (x[:, 1] > 7).long()  # separable along a small-scale feature: standardising matters
    probe = P.train_probe(x, y, epochs=50, seed=1)
    assert P.probe_accuracy(probe, x, y) > 0.95
    again = P.train_probe(x, y, epochs=50, seed=1)
    assert torch.equal(probe.linear.weight, again.linear.weight)  # seeded


def test_linear_schedule_warms_up_and_decays():
    clf = small_clf()
    C.set_trainable(clf, "head")
    recs = [{"text": t, "label": i % 2} for i, t in enumerate(["aa", "bb", "ab", "ba"] * 10)]
    loader = D.classification_loader(recs, batch_size=2, enc=CharEnc())
    seen = []
    orig = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        C.train_classifier(clf, loader, epochs=1, lr=1e-2, schedule="linear", progress=False)
    finally:
        torch.optim.AdamW.step = orig
    assert len(seen) == 20 and seen[0] == pytest.approx(1e-2) and seen[-1] < 1.5e-3
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    with pytest.raises(ValueError, match="schedule"):
        C.train_classifier(clf, loader, schedule="cosine")


def test_head_lr_gives_the_new_head_its_own_step():
    clf = small_clf()
    C.set_trainable(clf, "all")
    recs = [{"text": t, "label": i % 2} for i, t in enumerate(["aa", "bb", "ab", "ba"] * 4)]
    loader = D.classification_loader(recs, batch_size=4, enc=CharEnc())
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    C.train_classifier(clf, loader, epochs=1, lr=0.0, head_lr=1e-2, progress=False)
    moved = {k for k, v in clf.state_dict().items() if not torch.equal(before[k], v)}
    assert moved == {"head.weight", "head.bias"}
