"""Draw data/base/loss_curve.png from the base model's logs and record its checksum.

    python tools/plot_base.py

Draws what chapter 5 shows (``gptbook.base.plot_base_curves``: the training and validation curves
in bits per byte against the unigram baseline) and adds the figure to ``data/base/SHA256SUMS`` and
``data/SHA256SUMS``.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gptbook.base import base_dir, base_metrics, plot_base_curves  # noqa: E402
from gptbook.corpora import data_dir, file_sha256, read_sums, write_data_sums  # noqa: E402


def main() -> None:
    folder, m = base_dir(), base_metrics()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    plot_base_curves(ax, folder)
    ax.set(title=f"gptbook base model: {m['parameters']:,} parameters, {m['tokens_seen']:,} tokens")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = folder / "loss_curve.png"
    fig.savefig(out, metadata={"Software": None})  # no timestamp or version: reproducible bytes
    sums = {**read_sums(folder), out.name: file_sha256(out)}
    (folder / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sums.items()))
    write_data_sums(data_dir(), [f"base/{out.name}", "base/SHA256SUMS"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
