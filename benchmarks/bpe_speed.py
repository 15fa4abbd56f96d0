"""How fast is the from-scratch byte-level BPE of chapter 1 next to tiktoken (Rust)?

    python benchmarks/bpe_speed.py [--merges 5000] [--repeat 3]

On *Moby Dick* (1.2 MB) it times, on one thread, each best of ``--repeat`` runs:

* training: ``ByteLevelBPE.train`` learning ``--merges`` merges. tiktoken's fast core cannot train,
  so the reference is tiktoken's own pure-Python trainer (``tiktoken._educational.bpe_train``), which
  recounts every pair after each merge: too slow for the whole book, so both are timed on 100
  merges over a 20 kB prefix;
* encoding with GPT-2's 50,000 merges: ``ByteLevelBPE.from_gpt2().encode_ordinary`` with a cold
  cache (a fresh tokenizer) and a warm one, against ``gpt2_encoding().encode_ordinary`` (tiktoken),
  checking that the ids are identical;

and prints each time and the ratio ours / tiktoken.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from gptbook.corpora import load_moby_dick  # noqa: E402
from gptbook.tokenizer import GPT2_PATTERN, ByteLevelBPE, gpt2_encoding  # noqa: E402


def best_of(repeat: int, fn):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merges", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = load_moby_dick()
    print(f"text: Moby Dick, {len(text.encode('utf-8')):,} bytes; best of {args.repeat} runs each")

    t_train, bpe = best_of(args.repeat, lambda: ByteLevelBPE.train(text, args.merges))
    print(f"train  {args.merges:,} merges, from scratch (incremental counts): {t_train:8.2f} s")
    try:
        from tiktoken._educational import bpe_train  # pure Python; recounts every pair per merge
    except ImportError as err:  # an internal module of tiktoken: it may go away
        print(f"(no reference trainer: {err})")
    else:
        prefix, small = text[:20_000], 100
        t_ref, _ = best_of(1, lambda: bpe_train(prefix, 256 + small, GPT2_PATTERN, visualise=None))
        t_ours, _ = best_of(1, lambda: ByteLevelBPE.train(prefix, small, special_tokens=()))
        print(f"train  {small} merges on 20 kB: from scratch {t_ours:.3f} s, tiktoken._educational.bpe_train "
              f"{t_ref:.3f} s  -> ours is {t_ref / t_ours:.0f}x faster")

    enc = gpt2_encoding()
    t_tik, ref = best_of(args.repeat, lambda: enc.encode_ordinary(text))
    t_load, gpt2 = best_of(1, ByteLevelBPE.from_gpt2)
    t_cold, ids_cold = best_of(args.repeat, lambda: ByteLevelBPE.from_gpt2().encode_ordinary(text))
    t_cold -= t_load  # the fresh tokenizer's loading is not encoding time
    t_warm, ids_warm = best_of(args.repeat, lambda: gpt2.encode_ordinary(text))
    assert ids_cold == ids_warm == ref, "the from-scratch BPE disagrees with tiktoken"
    print(f"load   GPT-2 merges into ByteLevelBPE: {t_load:.2f} s")
    print(f"encode {len(ref):,} tokens: tiktoken {t_tik:.3f} s")
    print(f"encode from scratch, cold cache: {t_cold:.3f} s  -> {t_cold / t_tik:.1f}x tiktoken's time")
    print(f"encode from scratch, warm cache: {t_warm:.3f} s  -> {t_warm / t_tik:.1f}x tiktoken's time")
    print(f"from-scratch tokens/s (cold): {len(ref) / t_cold:,.0f}; tiktoken: {len(ref) / t_tik:,.0f}")


if __name__ == "__main__":
    main()
