"""Inference cost of LoRA adapters, unmerged and merged, against the plain model (chapter 8).

    python benchmarks/lora_merge.py [--d-model 256] [--layers 4] [--rank 8] [--reps 20] [--threads 2]

Reference: the base model without adapters. Three copies live side by side: the base model, the
model with unmerged adapters (two extra thin matrix products per adapted layer) and the same after
``merge_lora`` (the architecture of the base again). Each repetition runs one forward pass of each,
in a rotating order, and the script prints the median ratio to the base with its range and n.
Merged adapters should cost nothing: a ratio of about 1.
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import both, interleaved, machine_line, median, pin_threads  # noqa: E402

from gptbook.lora import apply_lora, lora_layers, merge_lora  # noqa: E402
from gptbook.model import GPT_CONFIGS, GPTModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    threads = pin_threads(args.threads)
    cfg = GPT_CONFIGS["tiny"].with_(d_model=args.d_model, n_heads=max(1, args.d_model // 64), n_layers=args.layers,
                                    context_length=args.tokens, vocab_size=1024)
    torch.manual_seed(0)
    base = GPTModel(cfg).eval()
    unmerged = apply_lora(copy.deepcopy(base), r=args.rank).eval()
    for _, layer in lora_layers(unmerged):
        torch.nn.init.normal_(layer.lora_B, std=0.01)
    merged = merge_lora(copy.deepcopy(unmerged)).eval()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.tokens))
    with torch.no_grad():
        assert torch.allclose(unmerged(ids), merged(ids), atol=1e-4), "merging changed the outputs"
    models = {"base": base, "unmerged": unmerged, "merged": merged}

    def forward(model):
        def run():
            with torch.no_grad():
                model(ids)
        return run

    times = interleaved({name: forward(m) for name, m in models.items()}, args.reps, warmup=2)
    print(machine_line(threads))
    print(f"d_model={args.d_model} layers={args.layers} r={args.rank} batch={args.batch}x{args.tokens}; "
          f"reference: the base model; ratios of forward times (median, range, n)")
    print(f"base      {median(times['base']) * 1e3:8.2f} ms")
    for name in ("unmerged", "merged"):
        print(f"{name:9s} {median(times[name]) * 1e3:8.2f} ms   ratio to base {both(times, name, 'base')}")


if __name__ == "__main__":
    main()
