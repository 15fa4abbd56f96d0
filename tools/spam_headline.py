"""Chapter 6's headline run at full scale, recorded: full fine-tuning of the book's base
model on all 4,120 training e-mails cut to 128 tokens, one run per seed, each scored on
the whole test split. It runs exactly what chapter 6's ``fine_tune("all", None, seed,
length=128)`` runs at ``GPTBOOK_SCALE=full`` (same splits, learning rate, batch size,
epochs, auxiliary loss schedule), without the rest of that hour-long notebook.

Writes ``data/spam_headline/results.json`` (per seed: test accuracy, recalls, groups,
training time, the recipe and the machine) and the first seed's classifier as
``data/spam_headline/classifier.safetensors`` in float16, which chapter 6 and
``tests/test_spam_headline.py`` load and score again on the test e-mails. Usage:

    python tools/spam_headline.py [--seeds 123 124 125] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptbook.base import load_base
from gptbook.classify import (
    Classifier,
    GPTClassifier,
    evaluate,
    set_trainable,
    train_classifier,
)
from gptbook.classify_data import (
    SPAM_LABELS,
    ClassificationDataset,
    classification_loader,
    spam_splits,
)
from gptbook.corpora import file_sha256
from gptbook.pretrain_data import load_tokenizer
from gptbook.utils import seed_everything

# chapter 6's "full" scale for the headline, and its learning rate for "all" on the book's
# base model
RECIPE = dict(max_length=128, batch_size=16, epochs=3, min_steps=60, lr=5e-4,
              lm_every=4, lam=0.0, split_seed=123)  # fmt: skip
OUT = ROOT / "data" / "spam_headline"


def run(seed: int, base, enc, train_ds, test_dl) -> tuple[dict, GPTClassifier]:
    seed_everything(seed)
    clf = GPTClassifier(copy.deepcopy(base), 2)
    set_trainable(clf, "all")
    loader = classification_loader(
        train_ds, RECIPE["batch_size"], shuffle=True, seed=seed
    )
    epochs = max(RECIPE["epochs"], math.ceil(RECIPE["min_steps"] / len(loader)))
    t0 = time.perf_counter()
    hist = train_classifier(clf, loader, None, epochs=epochs, lr=RECIPE["lr"],
                            lam=RECIPE["lam"], lm_every=RECIPE["lm_every"],
                            progress=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    t = evaluate(clf, test_dl)
    keep = ("accuracy", "recall", "precision", "confusion", "group_accuracy", "group_n")
    return {"seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1),
            "final_train_loss": hist["train_loss"][-1] if hist["train_loss"] else None,
            **{k: t[k] for k in keep}}, clf  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[123, 124, 125])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base, enc = load_base(), load_tokenizer("book")
    splits = spam_splits(seed=RECIPE["split_seed"])
    train_ds = ClassificationDataset(splits["train"], enc, RECIPE["max_length"])
    test_ds = ClassificationDataset(splits["test"], enc, RECIPE["max_length"])
    test_dl = classification_loader(test_ds, batch_size=64)
    print(f"{len(train_ds):,} training e-mails, {len(test_ds):,} test e-mails, "
          f"{RECIPE['max_length']} tokens", flush=True)  # fmt: skip
    runs = []
    for seed in a.seeds:
        r, clf = run(seed, base, enc, train_ds, test_dl)
        print(f"seed {seed}: test accuracy {r['accuracy']:.4f} in "
              f"{r['train_seconds']:.0f} s", flush=True)  # fmt: skip
        if not runs:  # the first seed's classifier ships, in float16
            OUT.mkdir(parents=True, exist_ok=True)
            Classifier(clf.half(), enc, SPAM_LABELS, RECIPE["max_length"]).save(
                OUT / "classifier.safetensors"
            )
        runs.append(r)
    record = {
        "what": "chapter 6 headline: full fine-tuning on all training e-mails",
        "command": "python tools/spam_headline.py --seeds "
        + " ".join(map(str, a.seeds)) + f" --threads {a.threads}",
        "recipe": RECIPE,
        "n_train": len(train_ds),
        "n_test": len(test_ds),
        "machine": f"{platform.machine()}, {a.threads} CPU threads, "
        f"torch {torch.__version__}",
        "classifier": "classifier.safetensors (seed "
        f"{a.seeds[0]}, float16)",
        "classifier_sha256": file_sha256(OUT / "classifier.safetensors"),
        "runs": runs,
    }
    (OUT / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    accs = [r["accuracy"] for r in runs]
    print(f"mean test accuracy {sum(accs) / len(accs):.4f} over {len(accs)} seeds")


if __name__ == "__main__":
    main()
