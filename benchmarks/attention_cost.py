"""The quadratic cost of attention: written-out vs fused (scaled_dot_product_attention), time and memory.

Usage: python benchmarks/attention_cost.py [--lengths 256,512,1024,2048,4096] [--heads 12] [--head-dim 64]

For each sequence length it times a forward and a forward+backward pass of causal attention written out
(explicit T x T scores, as gptbook.attention.MultiHeadAttention computes them) and of
F.scaled_dot_product_attention (as FusedMultiHeadAttention calls it), prints the memory autograd keeps for
the backward pass (and the peak GPU memory on CUDA), and the ratios naive / fused.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from gptbook.attention import causal_mask


def naive_attention(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(causal_mask(q.shape[-2], device=q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def fused_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def saved_bytes(fn, *args) -> int:
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


def timed(fn, device, repeats) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512,1024,2048,4096")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, batch {args.batch}, {args.heads} heads x {args.head_dim} dims, float32")
    print(f"{'T':>6} {'fwd naive':>10} {'fwd fused':>10} {'ratio':>6} {'f+b naive':>10} {'f+b fused':>10} {'ratio':>6}"
          f" {'saved naive':>12} {'saved fused':>12} {'ratio':>6}")
    for t in (int(x) for x in args.lengths.split(",")):
        torch.manual_seed(0)
        q, k, v = (torch.randn(args.batch, args.heads, t, args.head_dim, device=device, requires_grad=True)
                   for _ in range(3))
        if not torch.allclose(naive_attention(q, k, v), fused_attention(q, k, v), atol=1e-4):
            raise SystemExit(f"T={t}: the two attentions disagree")
        row = []
        for fn in (naive_attention, fused_attention):
            with torch.no_grad():
                row.append(timed(lambda: fn(q, k, v), device, args.repeats))
        for fn in (naive_attention, fused_attention):
            row.append(timed(lambda: fn(q, k, v).sum().backward(), device, args.repeats))
        mem = [saved_bytes(fn, q, k, v) for fn in (naive_attention, fused_attention)]
        print(f"{t:6d} {row[0] * 1e3:8.1f}ms {row[1] * 1e3:8.1f}ms {row[0] / row[1]:5.1f}x "
              f"{row[2] * 1e3:8.1f}ms {row[3] * 1e3:8.1f}ms {row[2] / row[3]:5.1f}x "
              f"{mem[0] / 2**20:9.1f}MiB {mem[1] / 2**20:9.1f}MiB {mem[0] / mem[1]:5.1f}x")


if __name__ == "__main__":
    main()
