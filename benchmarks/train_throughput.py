"""Training throughput of gptbook's GPT: the naive path against the fast path, in the same run.

    python benchmarks/train_throughput.py                                   # tiny model, best device
    python benchmarks/train_throughput.py --model gpt2-small --device cuda  # the H100 target: MFU >= 45%

The naive path is the book's model as chapter 3 first wrote it: explicit attention
(``attn_impl="naive"``), float32, no ``torch.compile``, plain AdamW and loss. The fast path switches
on everything chapter 5 measures: fused QKV + ``scaled_dot_product_attention``, bf16 autocast (fp16
with a gradient scaler on GPUs without bf16), TF32, fused AdamW, a vocabulary padded to a multiple
of 64, ``torch.compile`` on CUDA, and the fused linear cross-entropy on CPU. Both run full training
steps (forward, backward, clipping, optimizer) on random tokens.

Reference: the naive path. Both trainers live side by side and their steps alternate inside each
repetition (order rotated), so a slow spell of a shared machine hits both alike. Prints tokens/s
(median), MFU where the GPU's peak is known, and the speed ratio fast / naive as the median of the
per-repetition ratios with its range and n. ``--json`` saves the figures (e.g. into
``benchmarks/results/``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import interleaved, machine_line, median, pin_threads, ratios, summary  # noqa: E402

from gptbook.flops import flops_per_token, peak_flops  # noqa: E402
from gptbook.train import Trainer  # noqa: E402
from gptbook.train_config import TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="a name in gptbook.model.GPT_CONFIGS")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: 8 on CPU, 16 on GPU)")
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None,
                   help="timed repetitions, one step of each path in each (default: 5 on CPU, 20 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repetitions first (default: 1 on CPU, 5 on GPU)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    p.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    args = p.parse_args(argv)
    threads = pin_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("train_throughput: error: --device cuda was asked for but no CUDA GPU is available")
    steps = args.steps or (20 if on_gpu else 5)
    warmup = args.warmup or (5 if on_gpu else 1)
    base = dict(model=args.model, batch_size=args.batch_size or (16 if on_gpu else 8), grad_accum=1,
                context_length=args.context_length, dropout=0.0, device=device, max_steps=10_000,
                eval_interval=0, seed=0)
    naive = TrainConfig(**base, attn_impl="naive", dtype="float32", tf32=False, compile=False,
                        fused_adamw="off", fused_loss="off", pad_vocab=False)
    fast = TrainConfig(**base, attn_impl="fused", dtype="auto", tf32=True, compile=on_gpu and not args.no_compile,
                       fused_adamw="on", fused_loss="auto", pad_vocab=True)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, size=2_000_000, dtype=np.int64).astype(np.uint16)
    trainers = {name: Trainer(cfg, tokens, tokens[: len(tokens) // 10])
                for name, cfg in (("naive", naive), ("fast", fast))}

    def step_of(trainer):  # TF32 is a global switch: set it for the path that runs next
        tf32 = trainer.device.type == "cuda" and trainer.cfg.tf32

        def run():
            if trainer.device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            trainer.train_step()
        return run

    times = interleaved({name: step_of(t) for name, t in trainers.items()}, steps, warmup=warmup,
                        device=device)
    print(machine_line(threads) if not on_gpu else f"torch {torch.__version__}")
    results = {"model": args.model, "device": device, "repetitions": steps}
    for name, trainer in trainers.items():
        speed = trainer.tokens_per_step / median(times[name])
        flops = flops_per_token(trainer.model_config)
        peak = peak_flops(trainer.device, trainer.dtype, tf32=trainer.cfg.tf32)
        mfu = speed * flops / peak if peak else None
        results[name] = dict(tokens_per_s=speed, mfu=mfu, dtype=str(trainer.dtype).replace("torch.", ""),
                             step_s=times[name])
        where = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else \
            f"CPU, {torch.get_num_threads()} thread(s)"
        print(f"{name:>5}: {speed:>12,.0f} tokens/s  {results[name]['dtype']:>8}  "
              f"MFU {'n/a (peak unknown)' if mfu is None else f'{mfu:.1%}'}  [{where}, {args.model}, "
              f"{trainer.tokens_per_step:,} tokens/step, {flops / 1e9:.2f} GFLOP/token]")
        if name == "fast" and trainer.device.type == "cuda":
            results["gpu"] = torch.cuda.get_device_name(trainer.device)
    speedups = ratios(times, "naive", "fast")
    print(f"speed fast / naive (reference: the naive path): {summary(speedups)}; by CPU time "
          f"{summary(ratios(times.cpu, 'naive', 'fast'))}")
    results["ratio"] = median(speedups)
    results["ratio_range"] = [min(speedups), max(speedups)]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
