"""Draw data/base/loss_curve.png from the base model's logs and record its checksum.

    python tools/plot_base.py

Reads ``data/base/train_log.csv``, ``eval_log.csv`` and ``metrics.json`` (written by chapter 5's
``export_base``), draws the training and validation curves in bits per byte against the unigram
baseline, and adds the figure to ``data/base/SHA256SUMS`` and ``data/SHA256SUMS``.
"""
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE = Path(__file__).resolve().parent.parent / "data" / "base"


def main() -> None:
    m = json.loads((BASE / "metrics.json").read_text())
    bpt = m["val_bytes_per_token"]
    with open(BASE / "train_log.csv") as f:
        train = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    with open(BASE / "eval_log.csv") as f:
        val = [(int(r["step"]), float(r["val_bpb"])) for r in csv.DictReader(f)]
    steps, losses = zip(*train)
    k = 10  # a 100-step moving average of the training loss
    smooth = [sum(losses[i - k + 1:i + 1]) / k for i in range(k - 1, len(losses))]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    ax.plot(steps[k - 1:], [x / 0.6931471805599453 / bpt for x in smooth], label="training (average)")
    ax.plot(*zip(*val), "o-", ms=3, label="validation (2001-2021 speeches)")
    ax.axhline(m["unigram_val_bpb"], color="gray", ls="--", lw=1, label="unigram")
    ax.set(title=f"gptbook base model: {m['parameters']:,} parameters, {m['tokens_seen']:,} tokens",
           xlabel="step", ylabel="bits per byte", ylim=(1.3, 3.2))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = BASE / "loss_curve.png"
    fig.savefig(out, metadata={"Software": None})  # no timestamp or version: reproducible bytes
    sums = [line for line in (BASE / "SHA256SUMS").read_text().splitlines()
            if line and not line.endswith("  loss_curve.png")]
    sums.append(f"{hashlib.sha256(out.read_bytes()).hexdigest()}  loss_curve.png")
    (BASE / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    subprocess.run([sys.executable, str(BASE.parent.parent / "tools" / "prepare_data.py"), "--sums-only"],
                   check=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
