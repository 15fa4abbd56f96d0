"""Training throughput of gptbook's GPT: the naive path against the fast path, in the same run.

    python benchmarks/train_throughput.py                                   # tiny model, best device
    python benchmarks/train_throughput.py --model gpt2-small --device cuda  # the H100 target: MFU >= 45%

The naive path is the book's model as chapter 3 first wrote it: explicit attention
(``attn_impl="naive"``), float32, no ``torch.compile``, plain AdamW and loss. The fast path switches
on everything chapter 5 measures: fused QKV + ``scaled_dot_product_attention``, bf16 autocast (fp16
with a gradient scaler on GPUs without bf16), TF32, fused AdamW, a vocabulary padded to a multiple
of 64, ``torch.compile`` on CUDA, and the fused linear cross-entropy on CPU. Both run full training
steps (forward, backward, clipping, optimizer) on random tokens. Prints tokens/s, MFU where the
GPU's peak is known, and the speed ratio fast / naive.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from gptbook.train import TrainConfig, Trainer, flops_per_token, peak_flops


def measure(cfg: TrainConfig, tokens: np.ndarray, steps: int, warmup: int) -> tuple[float, Trainer]:
    trainer = Trainer(cfg, tokens, tokens[: len(tokens) // 10])
    for _ in range(warmup):
        trainer.train_step()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    return trainer.tokens_per_step * steps / (time.perf_counter() - t0), trainer


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="a name in gptbook.model.GPT_CONFIGS")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: 8 on CPU, 16 on GPU)")
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 20 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 on CPU, 5 on GPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("train_throughput: error: --device cuda was asked for but no CUDA GPU is available")
    steps = args.steps or (20 if on_gpu else 3)
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
    results = {}
    for name, cfg in (("naive", naive), ("fast", fast)):
        speed, trainer = measure(cfg, tokens, steps, warmup)
        flops = flops_per_token(trainer.model_config)
        peak = peak_flops(trainer.device, trainer.dtype, tf32=cfg.tf32)
        mfu = speed * flops / peak if peak else None
        results[name] = dict(tokens_per_s=speed, mfu=mfu, dtype=str(trainer.dtype).replace("torch.", ""))
        where = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else \
            f"CPU, {torch.get_num_threads()} thread(s)"
        print(f"{name:>5}: {speed:>12,.0f} tokens/s  {results[name]['dtype']:>8}  "
              f"MFU {'n/a (peak unknown)' if mfu is None else f'{mfu:.1%}'}  [{where}, {args.model}, "
              f"{trainer.tokens_per_step:,} tokens/step, {flops / 1e9:.2f} GFLOP/token]")
        del trainer
        if on_gpu:
            torch.cuda.empty_cache()
    ratio = results["fast"]["tokens_per_s"] / results["naive"]["tokens_per_s"]
    print(f"fast / naive: x{ratio:.2f}")
    results["ratio"] = ratio
    return results


if __name__ == "__main__":
    main()
