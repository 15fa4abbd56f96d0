"""Shared timing rules of the scripts in ``benchmarks/``: interleaved variants, ratios, pinned threads.

Every script times its variants *inside* each repetition, one after the other, in an order that
rotates from repetition to repetition, so that a slow spell of the machine (another job, a thermal
throttle, the operating system) hits every variant alike. It reports, for each variant against its
reference, the median of the per-repetition ratios and their range (min-max) with n. Absolute times
are printed too, but on a shared machine only the ratios mean something.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def pin_threads(n: int | None) -> int:
    """Fix torch's intra-op threads (``n``, or leave the default) and use one inter-op thread."""
    import torch

    if n:
        torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started: harmless
        pass
    return torch.get_num_threads()


def _sync(device) -> None:
    import torch

    if device is not None and str(device).startswith("cuda"):
        torch.cuda.synchronize()


class Timings(dict):
    """name -> wall-clock seconds per call, one per repetition; ``.cpu`` holds this process's CPU
    seconds (all its threads) for the same calls. CPU time leaves out the time the variant waited
    for a core while other programs ran, so it is steadier on a shared machine; wall time is what a
    user waits, and includes that."""

    def __init__(self, names):
        super().__init__({name: [] for name in names})
        self.cpu = {name: [] for name in names}


def interleaved(variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                device=None, inner: int = 1, progress: bool = False) -> Timings:
    """Seconds per call of each variant in each of ``reps`` repetitions, the order rotated each time.

    Each repetition runs every variant ``inner`` times back to back and records the mean; the first
    ``warmup`` repetitions are run and thrown away.
    """
    names = list(variants)
    times = Timings(names)
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                variants[name]()
            _sync(device)
            if rep >= warmup:
                times[name].append((time.perf_counter() - start) / inner)
                times.cpu[name].append((time.process_time() - cpu) / inner)
        if progress:
            print(f"  repetition {rep + 1}/{warmup + reps}" + (" (warm-up)" if rep < warmup else ""),
                  file=sys.stderr, flush=True)
    return times


def ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """Per-repetition ratios numerator / denominator (of times: < 1 means the numerator is faster)."""
    return [a / b for a, b in zip(times[numerator], times[denominator])]


def both(times: "Timings", numerator: str, denominator: str) -> str:
    """The ratio numerator / denominator by wall clock and by CPU time, each as `summary`."""
    wall = summary(ratios(times, numerator, denominator))
    return f"{wall}; by CPU time {summary(ratios(times.cpu, numerator, denominator))}"


def summary(values: list[float], unit: str = "x") -> str:
    """'median (min-max, n=N)' of a list of ratios or times."""
    med = statistics.median(values)
    return f"{med:.2f}{unit} (range {min(values):.2f}-{max(values):.2f}, n={len(values)})"


def median(values: list[float]) -> float:
    return statistics.median(values)


class CompetingLoad:
    """A context manager that runs ``n`` busy processes (matrix products on one thread each).

    They stand for the other jobs of a shared laptop or a Colab CPU: ``--load 1`` measures the
    variants while one other program wants a core.
    """

    CODE = ("import torch, time\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\n"
            "while True:\n    a = torch.tanh(a @ a)\n")

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", self.CODE],
                                               env={**os.environ, "OMP_NUM_THREADS": "1"}))
        time.sleep(0.5 if self.n else 0.0)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        return False


def machine_line(threads: int, load: int = 0) -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    busy = f", {load} competing process(es)" if load else ""
    return (f"torch {torch.__version__}, {cpu}, {os.cpu_count()} cores, {threads} torch thread(s){busy}; "
            f"load average {os.getloadavg()[0]:.1f}")
