"""Generation with and without the key-value cache: same tokens, and how much faster the cache is.

Usage: python benchmarks/kv_cache.py [--new 200] [--prompt 50] [--sizes small,medium] [--threads N]

For each model size it generates ``--new`` greedy tokens after a random ``--prompt``-token prompt, once
recomputing the whole sequence at every step (``use_cache=False``) and once with the cache, checks that the
tokens are identical, and prints the times and their ratio. Random weights: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import time

import torch

from gptbook.generate import generate
from gptbook.model import GPT_CONFIGS, GPTConfig, GPTModel

SIZES = {
    "small": GPTConfig(context_length=256, d_model=128, n_heads=4, n_layers=4, dropout=0.0),  # the notebook's
    "medium": GPTConfig(context_length=512, d_model=384, n_heads=6, n_layers=6, dropout=0.0),
    "gpt2-small": GPT_CONFIGS["gpt2-small"].with_(dropout=0.0),
}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=200, help="tokens to generate")
    parser.add_argument("--prompt", type=int, default=50, help="prompt length")
    parser.add_argument("--sizes", default="small,medium", help=f"comma-separated, from {sorted(SIZES)}")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} threads, {args.prompt}-token prompt, {args.new} new tokens")
    for size in args.sizes.split(","):
        cfg = SIZES[size]
        if args.prompt + args.new > cfg.context_length:
            raise SystemExit(f"{size}: prompt + new tokens exceed the context length {cfg.context_length}")
        torch.manual_seed(0)
        model = GPTModel(cfg).to(args.device).eval()
        prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt), device=args.device)
        outputs, seconds = {}, {}
        for use_cache in (False, True):
            generate(model, prompt, 3, use_cache=use_cache)  # warm-up
            def run():
                outputs[use_cache] = generate(model, prompt, args.new, use_cache=use_cache)
                if args.device == "cuda":
                    torch.cuda.synchronize()
            seconds[use_cache] = best_of(run, args.repeats)
        same = torch.equal(outputs[True], outputs[False])
        print(f"{size:11s} ({cfg.n_layers} layers, d={cfg.d_model}): no cache {seconds[False]:7.2f} s, "
              f"cache {seconds[True]:6.2f} s, ratio {seconds[False] / seconds[True]:5.1f}x, identical tokens: {same}")
        if not same:
            raise SystemExit("the cache changed the generated tokens")


if __name__ == "__main__":
    main()
