"""The quadratic cost of attention: written out vs fused (PyTorch's scaled_dot_product_attention).

Usage: python benchmarks/attention_cost.py [--lengths 256,512,1024,2048,4096] [--heads 12] [--head-dim 64]

Reference: ``torch.nn.functional.scaled_dot_product_attention`` (what FusedMultiHeadAttention
calls). For each sequence length it times a forward and a forward+backward pass of causal
attention written out (explicit T x T scores, as gptbook.attention.MultiHeadAttention computes them)
and of SDPA, the two variants alternating inside each repetition (order rotated), and prints the
median ratio written-out / fused with its range and n; then the memory autograd keeps for the
backward pass (exact, not timed) and its ratio.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import both, interleaved, machine_line, median, pin_threads  # noqa: E402

from gptbook.attention import causal_mask  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512,1024,2048,4096")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = pin_threads(args.threads)
    print(machine_line(threads))
    print(f"device {device}, batch {args.batch}, {args.heads} heads x {args.head_dim} dims, float32; "
          f"reference: F.scaled_dot_product_attention; ratios written-out / fused (median, range, n)")
    for t in (int(x) for x in args.lengths.split(",")):
        torch.manual_seed(0)
        q, k, v = (torch.randn(args.batch, args.heads, t, args.head_dim, device=device, requires_grad=True)
                   for _ in range(3))
        if not torch.allclose(naive_attention(q, k, v), fused_attention(q, k, v), atol=1e-4):
            raise SystemExit(f"T={t}: the two attentions disagree")

        def forward(fn):
            def run():
                with torch.no_grad():
                    fn(q, k, v)
            return run

        def fwd_bwd(fn):
            return lambda: fn(q, k, v).sum().backward()

        fwd = interleaved({"naive": forward(naive_attention), "fused": forward(fused_attention)},
                          args.reps, device=device)
        fb = interleaved({"naive": fwd_bwd(naive_attention), "fused": fwd_bwd(fused_attention)}, args.reps, device=device)
        mem = [saved_bytes(fn, q, k, v) for fn in (naive_attention, fused_attention)]
        print(f"T={t:5d}  forward {median(fwd['naive']) * 1e3:8.1f} / {median(fwd['fused']) * 1e3:7.1f} ms: "
              f"{both(fwd, 'naive', 'fused')}")
        print(f"         fwd+bwd {median(fb['naive']) * 1e3:8.1f} / {median(fb['fused']) * 1e3:7.1f} ms: "
              f"{both(fb, 'naive', 'fused')}")
        print(f"         saved for backward {mem[0] / 2**20:9.1f} / {mem[1] / 2**20:7.1f} MiB: {mem[0] / mem[1]:.1f}x")


if __name__ == "__main__":
    main()
