"""How fast is the from-scratch byte-level BPE of chapter 1 next to tiktoken (Rust)?

    python benchmarks/bpe_speed.py [--merges 5000] [--reps 3]

References: tiktoken's GPT-2 encoder (``gpt2_encoding``) for encoding, and tiktoken's own
pure-Python trainer (``tiktoken._educational.bpe_train``) for training. On *Moby Dick* (1.2 MB),
on one thread (``OMP_NUM_THREADS`` and ``RAYON_NUM_THREADS`` pinned to 1), it prints:

* training: ``ByteLevelBPE.train`` learning ``--merges`` merges (no reference can do the whole book
  in reasonable time: the educational trainer recounts every pair after each merge), then both
  trainers on 100 merges over a 20 kB prefix, alternating inside each repetition;
* encoding with GPT-2's 50,000 merges: ``ByteLevelBPE.from_gpt2().encode_ordinary`` with a cold
  cache (a fresh tokenizer; its loading time, measured in the same repetition, is subtracted) and
  a warm one, against tiktoken, checking that the ids are identical.

Variants alternate inside each repetition (order rotated); ratios are median (range, n) of
ours / tiktoken's time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import both, interleaved, machine_line, median, pin_threads  # noqa: E402

from gptbook.corpora import load_moby_dick  # noqa: E402
from gptbook.tokenizer import GPT2_PATTERN, ByteLevelBPE, gpt2_encoding  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merges", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(machine_line(pin_threads(1)))
    text = load_moby_dick()
    print(f"text: Moby Dick, {len(text.encode('utf-8')):,} bytes; {args.reps} repetitions, interleaved")

    start = time.perf_counter()
    ByteLevelBPE.train(text, args.merges)
    print(f"train  {args.merges:,} merges, from scratch (incremental counts): "
          f"{time.perf_counter() - start:8.2f} s (one run; no reference trains the whole book)")
    try:
        from tiktoken._educational import bpe_train  # pure Python; recounts every pair per merge
    except ImportError as err:  # an internal module of tiktoken: it may go away
        print(f"(no reference trainer: {err})")
    else:
        prefix, small = text[:20_000], 100
        times = interleaved({"ours": lambda: ByteLevelBPE.train(prefix, small, special_tokens=()),
                             "tiktoken": lambda: bpe_train(prefix, 256 + small, GPT2_PATTERN, visualise=None)},
                            args.reps, warmup=0)
        print(f"train  {small} merges on 20 kB: from scratch {median(times['ours']):.3f} s, "
              f"tiktoken._educational.bpe_train {median(times['tiktoken']):.3f} s -> reference / ours "
              f"{both(times, 'tiktoken', 'ours')}")

    enc = gpt2_encoding()
    gpt2 = ByteLevelBPE.from_gpt2()
    ids = {}
    variants = {"tiktoken": lambda: ids.__setitem__("tiktoken", enc.encode_ordinary(text)),
                "load": ByteLevelBPE.from_gpt2,
                "cold": lambda: ids.__setitem__("cold", ByteLevelBPE.from_gpt2().encode_ordinary(text)),
                "warm": lambda: ids.__setitem__("warm", gpt2.encode_ordinary(text))}
    times = interleaved(variants, args.reps, warmup=1)
    assert ids["cold"] == ids["warm"] == ids["tiktoken"], "the from-scratch BPE disagrees with tiktoken"
    times["cold"] = [c - lo for c, lo in zip(times["cold"], times["load"])]  # encoding only
    times.cpu["cold"] = [c - lo for c, lo in zip(times.cpu["cold"], times.cpu["load"])]
    n = len(ids["tiktoken"])
    print(f"load   GPT-2 merges into ByteLevelBPE: {median(times['load']):.2f} s")
    print(f"encode {n:,} tokens: tiktoken {median(times['tiktoken']):.3f} s (identical ids)")
    for kind in ("cold", "warm"):
        print(f"encode from scratch, {kind} cache: {median(times[kind]):.3f} s -> ours / tiktoken time "
              f"{both(times, kind, 'tiktoken')}")
    print(f"from-scratch tokens/s (cold): {n / median(times['cold']):,.0f}; "
          f"tiktoken: {n / median(times['tiktoken']):,.0f}")


if __name__ == "__main__":
    main()
