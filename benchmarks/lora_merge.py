"""Inference cost of LoRA adapters, unmerged and merged, against the plain model (chapter 8).

    python benchmarks/lora_merge.py [--d-model 256] [--layers 4] [--rank 8] [--repeats 20]

Prints the median forward time of the base model, of the model with unmerged adapters (two extra
thin matrix products per adapted layer) and after ``merge_lora`` (the same architecture as the
base), and the ratios to the base. Merged adapters should cost nothing: a ratio of about 1.
"""
import argparse
import statistics
import time

import torch

from gptbook.lora import apply_lora, lora_layers, merge_lora
from gptbook.model import GPT_CONFIGS, GPTModel


def median_ms(model, ids, repeats):
    times = []
    with torch.no_grad():
        model(ids)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    cfg = GPT_CONFIGS["tiny"].with_(d_model=args.d_model, n_heads=max(1, args.d_model // 64), n_layers=args.layers,
                                    context_length=args.tokens, vocab_size=1024)
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.tokens))
    base_ms = median_ms(model, ids, args.repeats)
    apply_lora(model, r=args.rank)
    for _, layer in lora_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.01)
    unmerged_ms = median_ms(model, ids, args.repeats)
    merge_lora(model)
    merged_ms = median_ms(model, ids, args.repeats)
    print(f"d_model={args.d_model} layers={args.layers} r={args.rank} batch={args.batch}x{args.tokens}, "
          f"{torch.get_num_threads()} threads")
    print(f"base      {base_ms:8.2f} ms")
    print(f"unmerged  {unmerged_ms:8.2f} ms   ratio to base {unmerged_ms / base_ms:.2f}")
    print(f"merged    {merged_ms:8.2f} ms   ratio to base {merged_ms / base_ms:.2f}")


if __name__ == "__main__":
    main()
