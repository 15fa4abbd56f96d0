"""Generation with and without the key-value cache: same tokens, and how much faster the cache is.

Usage: python benchmarks/kv_cache.py [--new 200] [--prompt 50] [--sizes small,medium,gpt2-small] [--threads 2]

Reference: the same model generating with ``use_cache=False`` (the whole sequence recomputed at
every step). For each model size it generates ``--new`` greedy tokens after a random
``--prompt``-token prompt both ways, alternating the two inside each repetition, checks that the
tokens are identical, and prints the median speed-up (no-cache time / cache time) with its range
and n. With ``--per-position`` it also prints the time of single steps at a few positions, the
numbers behind chapter 4's plot. Random weights: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import both, interleaved, machine_line, median, pin_threads  # noqa: E402

from gptbook.generate import generate  # noqa: E402
from gptbook.model import GPT_CONFIGS, GPTConfig, GPTModel  # noqa: E402

SIZES = {
    "small": GPTConfig(context_length=256, d_model=128, n_heads=4, n_layers=4, dropout=0.0),  # the notebook's
    "medium": GPTConfig(context_length=512, d_model=384, n_heads=6, n_layers=6, dropout=0.0),
    "gpt2-small": GPT_CONFIGS["gpt2-small"].with_(dropout=0.0),
}


@torch.no_grad()
def step_seconds(model: GPTModel, ids: torch.Tensor, position: int, use_cache: bool, reps: int = 3) -> float:
    """Median seconds of the step that predicts the token after ``position`` tokens."""
    times = []
    for _ in range(reps):
        if use_cache:
            cache = model.new_cache()
            model(ids[:, :position - 1], cache=cache)
            start = time.perf_counter()
            model.out_head(model.hidden_states(ids[:, position - 1:position], cache=cache)[:, -1])
        else:
            start = time.perf_counter()
            model.out_head(model.hidden_states(ids[:, :position])[:, -1])
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=200, help="tokens to generate")
    parser.add_argument("--prompt", type=int, default=50, help="prompt length")
    parser.add_argument("--sizes", default="small,medium", help=f"comma-separated, from {sorted(SIZES)}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-position", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    print(machine_line(threads))
    print(f"device {args.device}, {args.prompt}-token prompt, {args.new} new tokens, greedy; reference: the "
          f"same model without the cache")
    for size in args.sizes.split(","):
        cfg = SIZES[size]
        if args.prompt + args.new > cfg.context_length:
            raise SystemExit(f"{size}: prompt + new tokens exceed the context length {cfg.context_length}")
        torch.manual_seed(0)
        model = GPTModel(cfg).to(args.device).eval()
        prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt), device=args.device)
        outputs = {}

        def run(use_cache):
            return lambda: outputs.__setitem__(use_cache, generate(model, prompt, args.new, use_cache=use_cache))

        times = interleaved({"cache": run(True), "no cache": run(False)}, args.reps, warmup=1, device=args.device)
        same = torch.equal(outputs[True], outputs[False])
        print(f"{size:11s} ({cfg.n_layers} layers, d={cfg.d_model}): no cache {median(times['no cache']):7.2f} s, "
              f"cache {median(times['cache']):6.2f} s; speed-up {both(times, 'no cache', 'cache')}, "
              f"identical tokens: {same}")
        if not same:
            raise SystemExit("the cache changed the generated tokens")
        if args.per_position:
            ids = outputs[True]
            for pos in sorted({args.prompt + 1, (args.prompt + args.new) // 2, args.prompt + args.new - 1}):
                with_c, without = step_seconds(model, ids, pos, True), step_seconds(model, ids, pos, False)
                print(f"    step at position {pos:4d}: {with_c * 1e3:7.2f} ms with the cache, "
                      f"{without * 1e3:7.2f} ms without")


if __name__ == "__main__":
    main()
