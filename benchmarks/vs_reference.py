"""gptbook's GPT against the references: a training step vs Hugging Face GPT-2 (and nanoGPT), generation vs HF.

    python benchmarks/vs_reference.py                                  # everything, 2 threads
    python benchmarks/vs_reference.py --sections train --shapes small --reps 8
    python benchmarks/vs_reference.py --nanogpt ~/src/nanoGPT          # also nanoGPT's model.py
    python benchmarks/vs_reference.py --load 0,1                       # quiet, then with a competing job

References (built here, offline, from a configuration; nothing is downloaded):

* **Hugging Face** ``transformers.GPT2LMHeadModel`` (its default SDPA attention), with the same
  random weights as ours (loaded through ``gptbook.model.load_gpt2_weights``): the script checks
  that the two losses agree before timing, so both compute the same function;
* **nanoGPT** (Karpathy's ``model.py``), only when ``--nanogpt`` points at a local checkout; its
  ``GPT`` is built with bias, dropout 0 and the unpadded 50,257-token vocabulary, with our weights.
  (nanoGPT's MLP uses the exact erf GELU, GPT-2's the tanh one, so its loss differs in the 4th digit.)

Sections:

* ``train``: one full training step (forward, cross-entropy over the vocabulary, backward, AdamW)
  at two shapes: GPT-2 small (124M) on 2 x 256 tokens and a small model (6 layers, d_model 384,
  6 heads) on 8 x 256 tokens; eager and ``torch.compile``d. "gptbook" is the model's logits and
  ``F.cross_entropy``, as the references compute them; "gptbook-train" is the step
  ``gptbook-train`` takes on a CPU in float32: the fused linear cross-entropy of chapter 5, which
  never holds all the logits, on the model's hidden states (compiled in the compiled mode, as
  ``gptbook-train --compile`` does). The goals are judged on "gptbook-train". The AdamW kernel
  (``--adamw``): by default each variant gets the one its own training code picks on this
  device -- gptbook's ``Trainer`` the fused kernel, Hugging Face's ``Trainer`` too
  (``adamw_torch_fused``, its default from torch 2.8), nanoGPT's ``configure_optimizers`` the
  fused kernel on CUDA only, so on a CPU the per-tensor ("foreach") one; ``--adamw foreach`` or
  ``fused`` gives every variant the same kernel.
* ``generate``: greedy decoding of ``--new`` tokens after a 32-token prompt, ``gptbook.generate``
  against ``GPT2LMHeadModel.generate`` (its dynamic cache), at both sizes; checks that the tokens are
  identical and prints the weight bytes read per second against the machine's measured read
  bandwidth (a ``sum`` over 1 GiB on the same threads).
* ``cache``: ``gptbook.generate`` with and without the KV cache at 124M, 200 new tokens after a
  50-token prompt.

gptbook's float32 matrix products run through oneDNN on an x86 CPU (``gptbook.kernels``, the package's
default; MKL, which ``F.linear`` calls, takes a slower path on AMD processors); ``--onednn off`` gives
gptbook ``F.linear``, as the references use.

(``--shapes tiny --cache-shape tiny`` runs everything on a toy model in seconds: a smoke test.)

Variants are interleaved inside each repetition (order rotated); each line gives the median ratio,
its range and n, of wall-clock times and of this process's CPU times. On a quiet machine the two
agree; on an oversubscribed one (more runnable programs than cores) wall-clock times mostly measure
how long the process waited for a core, and with ``--threads 1`` the CPU time is the cleaner
measure of the work each variant does. ``--metric`` says which of the two the goals are judged
on. Ratios of *times*: below 1 means gptbook is faster; "speed" ratios are the inverse. At the end
a table lists the goals of issue 12 and whether this run met them. No test asserts any timing.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import CompetingLoad, interleaved, machine_line, median, pin_threads, ratios, summary  # noqa: E402

from gptbook import kernels  # noqa: E402
from gptbook.generate import generate  # noqa: E402
from gptbook.model import GPTConfig, GPTModel, load_gpt2_weights  # noqa: E402
from gptbook.loss import fused_linear_cross_entropy  # noqa: E402

SHAPES = {  # name: (model configuration, batch, tokens per sequence)
    "gpt2": (GPTConfig(dropout=0.0), 2, 256),
    "small": (GPTConfig(context_length=1024, d_model=384, n_heads=6, n_layers=6, dropout=0.0), 8, 256),
    "tiny": (GPTConfig(vocab_size=512, context_length=320, d_model=64, n_heads=4, n_layers=2, dropout=0.0), 2, 32),
}
GOALS: list[tuple[str, float, str, float]] = []  # (what, measured, comparison, goal)
RESULTS: list[dict] = []  # every measurement, for --json
ISSUE_SHAPES = ("gpt2", "small")  # the shapes issue 12 sets goals for; others are smoke tests


def goal(what: str, value: float, op: str, target: float, shape: str) -> None:
    if shape in ISSUE_SHAPES:
        GOALS.append((what, value, op, target))


def hf_model(cfg: GPTConfig, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    conf = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.d_model,
                      n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0)
    model = GPT2LMHeadModel(conf)
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    return model


def our_model(cfg: GPTConfig, hf) -> GPTModel:
    model = GPTModel(cfg)
    return load_gpt2_weights(model, {k: v.detach().clone() for k, v in hf.state_dict().items()})


def nanogpt_model(path: str, cfg: GPTConfig, hf):
    file = Path(path).expanduser() / "model.py"
    if not file.is_file():
        raise SystemExit(f"--nanogpt: no model.py in {file.parent}")
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conf = module.GPTConfig(block_size=cfg.context_length, vocab_size=cfg.vocab_size, n_layer=cfg.n_layers,
                            n_head=cfg.n_heads, n_embd=cfg.d_model, dropout=0.0, bias=True)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        model = module.GPT(conf)
    state = model.state_dict()
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():
            if name in state:
                state[name].copy_(tensor.t() if name.endswith(transposed) else tensor)
    return model


def nanogpt_id(path: str | None) -> str | None:
    """Which nanoGPT was measured: the sha256 of its model.py (a checkout need not be a git clone)."""
    if not path:
        return None
    import hashlib

    return "model.py sha256 " + hashlib.sha256((Path(path).expanduser() / "model.py").read_bytes()).hexdigest()[:16]


def fused_adamw(kind: str, choice: str, device: torch.device) -> bool:
    """Whether variant ``kind`` steps with the fused AdamW kernel (see ``--adamw``)."""
    if choice != "own":
        return choice == "fused"
    return kind != "nanoGPT" or device.type == "cuda"  # nanoGPT: fused on CUDA only


def step_fn(kind: str, model, x, y, opt, hidden=None):
    """One training step; returns a function that runs it (and the loss, for the equality check).

    ``hidden``: for "gptbook-train", the function that gives the hidden states (compiled or not)."""
    def loss_of():
        if kind == "nanoGPT":
            return model(x, y)[1]
        if kind == "gptbook-train":  # the loss gptbook-train computes on a CPU in float32
            return fused_linear_cross_entropy(hidden(x), model.out_head.weight, y)
        logits = model(input_ids=x).logits if kind == "HF" else model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        opt.step()
        return loss

    return step, loss_of


def bench_train(args, shape: str, load: int) -> None:
    cfg, batch, t = SHAPES[shape]
    hf = hf_model(cfg).train()
    models = {"gptbook": our_model(cfg, hf).train(), "HF": hf}
    if args.nanogpt:
        models["nanoGPT"] = nanogpt_model(args.nanogpt, cfg, hf).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (batch, t), generator=g)
    y = torch.randint(0, cfg.vocab_size, (batch, t), generator=g)
    for mode in args.modes.split(","):
        fns, losses = {}, {}
        variants = {"gptbook": models["gptbook"], "gptbook-train": models["gptbook"],
                    **{k: v for k, v in models.items() if k != "gptbook"}}
        adamw = {}
        for name, model in variants.items():
            runner = torch.compile(model) if mode == "compiled" else model
            hidden = None
            if name == "gptbook-train":  # as Trainer does: the body compiled, the fused loss not
                hidden = torch.compile(model.hidden_states) if mode == "compiled" else model.hidden_states
            fused = fused_adamw(name, args.adamw, x.device)
            adamw[name] = "fused" if fused else "foreach"
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused, foreach=None if fused else True)
            fns[name], loss_of = step_fn(name, runner, x, y, opt, hidden)
            with torch.no_grad():
                losses[name] = float(loss_of())
        gap = abs(losses["gptbook"] - losses["HF"])
        if gap > 1e-3:
            raise SystemExit(f"{shape}: gptbook's loss {losses['gptbook']:.5f} != HF's {losses['HF']:.5f}")
        with CompetingLoad(load):
            times = interleaved(fns, args.reps, warmup=2 if mode == "compiled" else 1, progress=args.verbose)
        label = f"train {shape:5s} {mode:8s} load {load}"
        note = "  ".join(f"{n} {median(v) * 1e3:7.0f} ms" for n, v in times.items())
        print(f"{label}: {note}   (losses equal: |gptbook - HF| = {gap:.1e})")
        print("    AdamW kernels: " + ", ".join(f"{n} {k}" for n, k in adamw.items()))
        entry = dict(section="train", shape=shape, mode=mode, load=load, seconds=dict(times), cpu_seconds=times.cpu,
                     losses=losses, adamw=adamw, ratios={}, cpu_ratios={}, metric=args.metric)
        for ours in ("gptbook", "gptbook-train"):
            for ref, target in (("HF", 0.9), ("nanoGPT", 1.0)):
                if ours in times and ref in times:
                    r = ratios(times, ours, ref)
                    cpu = ratios(times.cpu, ours, ref)
                    print(f"    {ours:13s} / {ref:7s} time: {summary(r)};  CPU time: {summary(cpu)}")
                    entry["ratios"][f"{ours}/{ref}"] = r
                    entry["cpu_ratios"][f"{ours}/{ref}"] = cpu
                    if ours == "gptbook-train":  # the goals are the package's own training step
                        goal(f"{label}: {args.metric} time {ours} / {ref} (AdamW {adamw[ours]} / "
                             f"{adamw[ref]})", median(cpu if args.metric == "cpu" else r), "<=", target, shape)
        RESULTS.append(entry)


def read_bandwidth(threads: int) -> float:
    """GB/s of a sum over 1 GiB of float32 (best of 5), on the pinned threads.

    Each run takes the shorter of its wall-clock time and its CPU time per thread, so that time
    spent waiting for a core on a busy machine does not count as memory time."""
    big = torch.ones(2**28)
    best = float("inf")
    for _ in range(5):
        start, cpu = time.perf_counter(), time.process_time()
        big.sum()
        best = min(best, time.perf_counter() - start, (time.process_time() - cpu) / threads)
    return big.numel() * 4 / best / 1e9


def weight_bytes(model: GPTModel) -> int:
    """Bytes of weights one decoding step reads: every block, the final norm and the (tied) head."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if name in ("tok_emb.weight", "pos_emb.weight") or id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel() * p.element_size()
    return total + model.out_head.weight.numel() * model.out_head.weight.element_size() * (
        model.out_head.weight is model.tok_emb.weight)


def bench_generate(args, shape: str, load: int, bandwidth: float) -> None:
    cfg, _, _ = SHAPES[shape]
    hf = hf_model(cfg).eval()
    ours = our_model(cfg, hf).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 32), generator=torch.Generator().manual_seed(2))
    out = {}

    def run_ours():
        out["gptbook"] = generate(ours, prompt, args.new)

    def run_hf():
        with torch.no_grad():
            out["HF"] = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                                    min_new_tokens=args.new, do_sample=False)

    with CompetingLoad(load):
        times = interleaved({"gptbook": run_ours, "HF": run_hf}, args.gen_reps, warmup=1, progress=args.verbose)
    same = torch.equal(out["gptbook"], out["HF"])
    r = ratios(times, "HF", "gptbook")  # speed gptbook / HF = time HF / time gptbook
    cpu = ratios(times.cpu, "HF", "gptbook")
    per_token = busy_seconds(times, "gptbook", args) / args.new
    gbs = weight_bytes(ours) / per_token / 1e9
    label = f"generate {shape:5s} load {load}"
    print(f"{label}: {args.new} new tokens, gptbook {args.new / median(times['gptbook']):6.1f} tokens/s, "
          f"HF {args.new / median(times['HF']):6.1f} tokens/s (wall clock), identical tokens: {same}")
    print(f"    speed gptbook / HF: {summary(r)};  by CPU time: {summary(cpu)}")
    print(f"    gptbook reads {weight_bytes(ours) / 1e6:.0f} MB of weights per token: {gbs:.1f} GB/s "
          f"({args.metric} time) = {gbs / bandwidth:.0%} of the measured {bandwidth:.1f} GB/s")
    goal(f"{label}: speed gptbook / HF by {args.metric} time (tokens identical: {same})",
         median(cpu if args.metric == "cpu" else r) if same else 0.0, ">=", 1.0 if shape == "gpt2" else 1.5, shape)
    RESULTS.append(dict(section="generate", shape=shape, load=load, new_tokens=args.new, seconds=dict(times),
                        cpu_seconds=times.cpu, identical=same, speed_ratios=r, cpu_speed_ratios=cpu,
                        weight_bytes=weight_bytes(ours), gb_per_s=gbs, bandwidth_gb_per_s=bandwidth,
                        metric=args.metric))


def busy_seconds(times, name: str, args) -> float:
    """Median seconds of ``name``: wall clock, or CPU time per thread with ``--metric cpu``."""
    if args.metric == "cpu":
        return median(times.cpu[name]) / args.threads
    return median(times[name])


def bench_cache(args, load: int) -> None:
    cfg, _, _ = SHAPES[args.cache_shape]
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 50), generator=torch.Generator().manual_seed(3))
    out = {}
    fns = {"cache": lambda: out.__setitem__("cache", generate(model, prompt, args.cache_new)),
           "no cache": lambda: out.__setitem__("none", generate(model, prompt, args.cache_new, use_cache=False))}
    with CompetingLoad(load):
        times = interleaved(fns, args.cache_reps, warmup=0, progress=args.verbose)
    same = torch.equal(out["cache"], out["none"])
    r = ratios(times, "no cache", "cache")
    cpu = ratios(times.cpu, "no cache", "cache")
    label = f"KV cache {args.cache_shape} load {load}"
    print(f"{label}: {args.cache_new} new tokens, {median(times['cache']):.1f} s with, "
          f"{median(times['no cache']):.1f} s without; speed-up {summary(r)}, by CPU time {summary(cpu)}, "
          f"identical tokens: {same}")
    goal(f"{label}: speed-up with / without the cache by {args.metric} time, {args.cache_new} new",
         median(cpu if args.metric == "cpu" else r) if same else 0.0, ">=", 6.0, args.cache_shape)
    RESULTS.append(dict(section="cache", shape=args.cache_shape, load=load, new_tokens=args.cache_new,
                        seconds=dict(times), cpu_seconds=times.cpu, identical=same, speedups=r, cpu_speedups=cpu,
                        metric=args.metric))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="train,generate,cache")
    p.add_argument("--shapes", default="gpt2,small", help="of: " + ", ".join(SHAPES))
    p.add_argument("--modes", default="eager,compiled", help="training: eager and/or compiled")
    p.add_argument("--nanogpt", default=None, help="path to a local nanoGPT checkout (its model.py)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5, help="timed training repetitions")
    p.add_argument("--adamw", choices=("own", "foreach", "fused"), default="own",
                   help="AdamW kernel of the training step: each variant's own training code's choice "
                        "(default), or the same for all")
    p.add_argument("--onednn", choices=("on", "off"), default="on",
                   help="gptbook's float32 CPU matrix products through oneDNN (gptbook.kernels, the package's "
                        "default on x86) or through F.linear, as the references run theirs")
    p.add_argument("--new", type=int, default=128, help="new tokens for the generation comparison")
    p.add_argument("--gen-reps", type=int, default=5)
    p.add_argument("--cache-new", type=int, default=200)
    p.add_argument("--cache-reps", type=int, default=3)
    p.add_argument("--cache-shape", default="gpt2", help="the model of the cache section")
    p.add_argument("--load", default="0", help="comma-separated numbers of competing busy processes")
    p.add_argument("--verbose", action="store_true", help="report each repetition on stderr")
    p.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    p.add_argument("--metric", choices=("wall", "cpu"), default="wall",
                   help="what the goals are judged on: wall-clock time (default), or this process's CPU "
                        "time, which leaves out the time spent waiting for a core on an oversubscribed "
                        "machine (meaningful with --threads 1); both are always printed")
    args = p.parse_args(argv)
    threads = pin_threads(args.threads)
    loads = [int(n) for n in args.load.split(",")]
    sections, shapes = args.sections.split(","), args.shapes.split(",")
    machine = machine_line(threads)
    print(machine)
    kernels.ONEDNN = kernels.ONEDNN and args.onednn == "on"
    print(f"gptbook's matrix products: {'oneDNN' if kernels.ONEDNN else 'F.linear'} (--onednn {args.onednn}); "
          "the references': F.linear")
    bandwidth = read_bandwidth(threads) if "generate" in sections else 0.0
    if bandwidth:
        print(f"measured read bandwidth: {bandwidth:.1f} GB/s (sum over 1 GiB of float32, best of 5)")
    def save(verdicts=None):
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(dict(
                machine=machine, argv=sys.argv[1:], bandwidth_gb_per_s=bandwidth, nanogpt=nanogpt_id(args.nanogpt),
                onednn=kernels.ONEDNN,
                results=RESULTS, goals=verdicts), indent=1))

    for load in loads:
        for shape in shapes:
            if "train" in sections:
                bench_train(args, shape, load)
                save()
            if "generate" in sections:
                bench_generate(args, shape, load, bandwidth)
                save()
        if "cache" in sections:
            bench_cache(args, load)
            save()
    print("\ngoals of issue 12 (median over the repetitions of this run):")
    met_all, verdicts = True, []
    for what, value, op, target in GOALS:
        met = value <= target if op == "<=" else value >= target
        met_all &= met
        verdicts.append(dict(what=what, value=value, op=op, goal=target, met=met))
        print(f"  {'MET    ' if met else 'NOT MET'} {what}: {value:.2f} (goal {op} {target})")
    save(verdicts)
    return 0 if met_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
