"""The book's notebooks are fit to publish: listed in the table of contents, executed, error-free,
openable on Colab, and small. Also: the Colab setup cell installs only on Colab, and the device and
dtype choice suits a T4 (float16), an Ampere-or-newer GPU (bfloat16) and the CPU (float32).

And readable (the rules live in tools/nbstyle.py; `python tools/nbstyle.py check` lists every
problem): code that fits the page, a handful of outputs per cell, no local paths or tqdm noise in
outputs, the setup cell and figure code behind toggles, a printed line from every proof cell,
captioned figures, glossary links, a Summary and Exercises at every chapter's end, notes on the
thesis where a chapter cites it, and the repository's address in one place.

These tests read the committed files only (no build, no execution), in well under a second.
"""
from __future__ import annotations

import ast
import base64
import json
import os
import random
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbstyle  # noqa: E402
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))
MAX_NOTEBOOK_BYTES = 2_000_000
MAX_IMAGE_BYTES = 500_000
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARK = "# Setup:"
COLAB_TEST = '"google.colab" in sys.modules'


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def _repo_url() -> str:
    return _config()["repository"]["url"].rstrip("/")


def colab_link(doc: str) -> str:
    """Where Colab opens the notebook of document ``doc`` (e.g. "chapters/00_data"), from _config.yml."""
    repo = _config()["repository"]
    owner_repo = _repo_url().split("github.com/", 1)[1]
    book = (repo.get("path_to_book") or "").strip("/")
    path = f"{book}/{doc}.ipynb" if book else f"{doc}.ipynb"
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{repo.get('branch', 'main')}/{path}"


def toc_documents() -> list[str]:
    """Every document in _toc.yml (root first, then parts/chapters/sections in order), no suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key))
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".md", ".ipynb") else f for f in files]


def _load(nb: Path) -> dict:
    return json.loads(nb.read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def _setup_cell(nb: dict) -> dict:
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and _src(code[0]).startswith(SETUP_MARK), \
        f"the first code cell must be the setup cell starting {SETUP_MARK!r} (python tools/nbtool.py stamp)"
    return code[0]


def _python(source: str) -> str:
    """A cell's source as plain Python (IPython magics such as %pip turned into calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


# ---------------------------------------------------------------------------------- table of contents
def test_toc_lists_every_notebook_once_and_every_entry_exists():
    stems = toc_documents()
    twice = sorted({s for s in stems if stems.count(s) > 1})
    assert not twice, f"_toc.yml lists {twice} more than once"
    missing = [s for s in stems if not any((ROOT / f"{s}{x}").exists() for x in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists {missing}, which do not exist"
    unlisted = [nb.name for nb in NOTEBOOKS if f"chapters/{nb.stem}" not in stems]
    assert not unlisted, f"{unlisted} are not in _toc.yml: add them (one `- file: chapters/NAME` each)"


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks in chapters/"


# --------------------------------------------------------------------------------------- every notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_executed_with_outputs_and_no_errors(nb_path):
    nb = _load(nb_path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and _src(c).strip()]
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, (f"{len(unrun)} of {len(code)} code cells were never executed (e.g. code cell "
                       f"{unrun[0]}): run `make execute NB={nb_path.relative_to(ROOT)}` and commit the outputs")
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), \
        f"execution counts {counts} are not increasing: run the notebook from the top in a fresh kernel"
    assert any(c.get("outputs") for c in code), "the notebook has no outputs at all"
    errors = [(c["execution_count"], o.get("ename"), o.get("evalue"))
              for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"error outputs (execution_count, exception, message): {errors}"
    tracebacks = [c["execution_count"] for c in code for o in c.get("outputs", [])
                  if o.get("output_type") == "stream" and "Traceback (most recent call last)" in "".join(o.get("text", ""))]
    assert not tracebacks, f"cells {tracebacks} print a traceback"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_title_and_colab_badge(nb_path):
    nb = _load(nb_path)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown", "the first cell must be markdown: the title and the Colab badge"
    text = _src(first)
    assert re.match(r"# \S", text), "the first cell must start with the chapter title '# N. Title'"
    badge = f"[![Open In Colab]({BADGE_IMG})]({colab_link(f'chapters/{nb_path.stem}')})"
    assert badge in text, f"the first cell needs the Colab badge {badge} (python tools/nbtool.py stamp)"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_installs_only_on_colab(nb_path):
    tree = ast.parse(_python(_src(_setup_cell(_load(nb_path)))))
    colab = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == COLAB_TEST.replace('"', "'")]
    assert len(colab) == 1, f"the setup cell needs one top-level `if {COLAB_TEST}:` block"
    inside = ast.unparse(colab[0])
    assert "install" in inside and _repo_url() in inside, \
        f"on Colab the setup cell must install gptbook from {_repo_url()}"
    assert not re.search(r"\btorch\b", inside.replace("gptbook", "")), \
        "the setup cell must not install torch on Colab (Colab's own CUDA build is the right one)"
    outside = "\n".join(ast.unparse(n) for n in tree.body if n is not colab[0])
    for word in ("install", "pip", "clone", "system(", "run_line_magic", "subprocess.run", "subprocess.call"):
        assert word not in outside, f"the setup cell runs {word!r} outside the Colab-only block"


class _Recorder:
    """Stands in for subprocess.run and IPython's magics: records what the setup cell would run."""

    def __init__(self):
        self.calls: list[str] = []

    def run(self, args, *a, **k):
        self.calls.append(" ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args))
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    def run_line_magic(self, name, line, *a, **k):
        self.calls.append(f"%{name} {line}")

    def system(self, cmd, *a, **k):
        self.calls.append(str(cmd))


@pytest.mark.parametrize("on_colab", [False, True], ids=["local", "colab"])
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_runs_the_same_everywhere_but_the_install(nb_path, on_colab, monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(subprocess, "run", rec.run)
    monkeypatch.setattr(subprocess, "check_call", rec.run)
    monkeypatch.setattr(os, "system", rec.system)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # the cell sets PYTHONHASHSEED: setenv first, so that monkeypatch restores (or removes) it afterwards
    monkeypatch.setenv("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED", "0"))
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    env = {"get_ipython": lambda: rec, "__name__": "__main__"}
    try:
        exec(compile(_python(_src(_setup_cell(_load(nb_path)))), f"{nb_path.name}:setup", "exec"), env)
    finally:  # the cell seeds every generator: leave the other tests' random state alone
        random.setstate(states[0]); np.random.set_state(states[1]); torch.set_rng_state(states[2])
    assert isinstance(env.get("device"), torch.device), "the setup cell must define `device`"
    if not on_colab:
        assert rec.calls == [], f"outside Colab the setup cell ran {rec.calls}"
    else:
        assert any("install" in c for c in rec.calls), f"on Colab the setup cell installed nothing: {rec.calls}"
        assert any(_repo_url() in c or "/content/" in c for c in rec.calls if "install" in c or "clone" in c)
        assert not any(re.search(r"\btorch\b", c.replace("gptbook", "")) for c in rec.calls), rec.calls


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_small(nb_path):
    size = nb_path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, f"{nb_path.name} is {size / 1e6:.1f} MB (limit {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB)"
    for cell in _load(nb_path)["cells"]:
        for out in cell.get("outputs", []):
            for mime, data in out.get("data", {}).items():
                if not mime.startswith("image/"):
                    continue
                data = "".join(data) if isinstance(data, list) else data
                n = len(data.encode()) if mime == "image/svg+xml" else len(base64.b64decode(data))
                assert n < MAX_IMAGE_BYTES, (f"cell {cell.get('execution_count')}: a {mime} output of "
                                             f"{n / 1e3:.0f} kB (limit {MAX_IMAGE_BYTES / 1e3:.0f} kB); "
                                             "lower the figure's dpi or size")


# ------------------------------------------------------------------------------------ readable pages
def _where(nb_path: Path, found, fmt) -> str:
    lines = [fmt(*f) if isinstance(f, tuple) else fmt(f) for f in found]
    more = f"\n  ... and {len(lines) - 8} more" if len(lines) > 8 else ""
    return f"{nb_path.name}:\n  " + "\n  ".join(lines[:8]) + more


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_page(nb_path):
    wide = nbstyle.wide_lines(_load(nb_path))
    assert not wide, _where(nb_path, wide, lambda i, k, w, line: f"cell {i} line {k}: {w} columns") + (
        f"\ncode lines must fit in {nbstyle.MAX_LINE} columns: "
        f"python tools/nbstyle.py format {nb_path.relative_to(ROOT)}, then shorten the rest by hand")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_have_a_handful_of_outputs(nb_path):
    crowded = nbstyle.crowded_cells(_load(nb_path))
    assert not crowded, _where(nb_path, crowded, lambda i, n: f"cell {i}: {n} outputs") + (
        f"\nat most {nbstyle.MAX_OUTPUTS} outputs per cell: execute with tools/nbtool.py run "
        "(one box per stream, tqdm off) and log a few summary lines instead of a bar per step")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_hold_no_local_paths(nb_path):
    leaks = nbstyle.local_paths(_load(nb_path))
    assert not leaks, _where(nb_path, leaks, lambda i, s: f"cell {i}: ...{s}...") + (
        "\nan output shows where the notebook ran: print names relative to the data or run folder")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_hold_no_progress_noise(nb_path):
    noise = nbstyle.progress_noise(_load(nb_path))
    assert not noise, _where(nb_path, noise, lambda i, s: f"cell {i}: {s}") + (
        "\nexecute with tools/nbtool.py run (TQDM_DISABLE=1, ipywidgets installed by the test extras)")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_proof_cells_print_what_they_proved(nb_path):
    silent = nbstyle.silent_proofs(_load(nb_path))
    assert not silent, _where(nb_path, silent, lambda i: f"cell {i} asserts but prints nothing") + (
        "\nend each proof cell with a one-line ✓ that says what was proven")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_and_figure_code_are_behind_toggles(nb_path):
    shown = nbstyle.unhidden_cells(_load(nb_path))
    assert not shown, _where(nb_path, shown, lambda i, why: f"cell {i}: {why}") + (
        f"\ntag them hide-input: python tools/nbtool.py hide {nb_path.relative_to(ROOT)} "
        "(split a cell that computes something worth reading from the cell that draws)")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_that_draw_show_their_figure(nb_path):
    lost = nbstyle.missing_figures(_load(nb_path))
    assert not lost, _where(nb_path, lost, lambda i: f"cell {i} draws but has no image output") + (
        "\nexecute with tools/nbtool.py run: with MPLBACKEND=Agg the kernel shows no figures")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_have_captions(nb_path):
    bare = nbstyle.bare_images(_load(nb_path))
    assert not bare, _where(nb_path, bare, lambda i, f: f"cell {i}: ![...]({f})") + (
        "\nshow a figure with a caption: ```{figure} ../figures/x.svg``` + :name: + :alt: + caption")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_ends_with_summary_and_exercises(nb_path):
    problems = nbstyle.ending_problems(_load(nb_path))
    assert not problems, f"{nb_path.name}: " + "; ".join(problems) + (
        f"\nend the chapter with '## Summary' and '## Exercises' ({nbstyle.MIN_EXERCISES}-"
        f"{nbstyle.MAX_EXERCISES} numbered exercises; code solutions in cells tagged hide-cell)")


def _glossary_terms() -> set[str]:
    text = (ROOT / "glossary.md").read_text(encoding="utf-8")
    block = re.search(r"```\{glossary\}\n(.*?)\n```", text, flags=re.S)
    assert block, "glossary.md has no ```{glossary} block"
    return {line.strip() for line in block.group(1).splitlines()
            if line.strip() and not line.startswith((" ", ":"))}


def test_glossary_is_a_sphinx_glossary():
    terms = _glossary_terms()
    assert len(terms) >= 20, f"the glossary has {len(terms)} terms"
    assert "glossary" in toc_documents(), "glossary.md is not in _toc.yml"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_links_glossary_terms(nb_path):
    nb, known = _load(nb_path), {t.lower() for t in _glossary_terms()}
    used = set(nbstyle.glossary_terms(nb))
    unknown = sorted(t for t in used if t.lower() not in known)
    assert not unknown, f"{nb_path.name} links {unknown}, which glossary.md does not define"
    assert len(used) >= nbstyle.MIN_TERMS, (
        f"{nb_path.name} links {len(used)} glossary terms; link at least {nbstyle.MIN_TERMS} "
        "where they are first explained, e.g. {term}`tokenizer` or {term}`merges <BPE>`")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_that_cites_the_thesis_has_notes_on_it(nb_path):
    nb = _load(nb_path)
    if not nbstyle.cites_thesis(nb):
        pytest.skip("does not cite the thesis")
    assert nbstyle.has_thesis_notes(nb), (
        f"{nb_path.name} cites the thesis but has no ':::{{admonition}} Notes on the thesis' box "
        "listing the thesis (and slide) errors the chapter corrects")


def _nb(*cells) -> dict:
    return {"cells": [dict(c, metadata=c.get("metadata", {})) for c in cells], "metadata": {}}


def _code(src, outputs=(), tags=()):
    return {"cell_type": "code", "source": src, "outputs": list(outputs),
            "metadata": {"tags": list(tags)} if tags else {}}


def _stream(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_readability_rules_catch_what_they_should():
    """The rules the tests above apply, on small notebooks made to break them (and not to)."""
    png = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}
    nb = _nb(
        {"cell_type": "markdown", "source": "# T\n\n![a](../figures/a.svg) {term}`token`"},
        _code("# Setup: x\ndevice = 1"),
        _code("x = 1\nassert x == 1"),                                     # silent proof
        _code("def f():\n    assert True\n"),                              # not a proof cell
        _code("assert 1", [_stream("✓ one\n")]),                          # a proof that prints
        _code("plot()", [png]),                                            # a figure, not hidden
        _code("plot()", [png], tags=["hide-input"]),
        _code("y = '" + "x" * 90 + "'"),                                   # too wide
        _code("z = '中文'"),
        _code("run()", [_stream(f"{k}\n") for k in range(nbstyle.MAX_OUTPUTS + 1)]),
        _code("w", [_stream("saved /home/ann/run.pt\n"), _stream("site-packages/x.py: TqdmWarning\n")]),
        _code("v", [_stream("data/base/tokenizer.json, 1/tmp/2 = 0.5\n")]),
        dict(_code("fig, ax = new_figure()"), execution_count=3),              # figure lost
    )
    assert [i for i, *_ in nbstyle.wide_lines(nb)] == [7]
    assert nbstyle.width("中文") == 4
    assert nbstyle.silent_proofs(nb) == [2]
    assert nbstyle.unhidden_cells(nb) == [(1, "the setup cell"), (5, "draws a figure")]
    assert nbstyle.crowded_cells(nb) == [(9, nbstyle.MAX_OUTPUTS + 1)]
    assert [i for i, _ in nbstyle.local_paths(nb)] == [10, 10]
    assert [s for _, s in nbstyle.progress_noise(nb)] == ["TqdmWarning"]
    assert nbstyle.bare_images(nb) == [(0, "../figures/a.svg")]
    assert nbstyle.glossary_terms(nb) == ["token"]
    assert nbstyle.missing_figures(nb) == [12]
    end = _nb({"cell_type": "markdown", "source": "## Summary\n\n* a\n\n## Exercises\n\n1. a\n2. b"})
    assert nbstyle.ending_problems(end) == ["2 numbered exercises (want 3-5)"]
    end["cells"][0]["source"] += "\n3. c"
    assert nbstyle.ending_problems(end) == []


def test_formatter_keeps_code_and_wraps_long_text():
    code = ('#| export\ndef f(x):\n    """' + "word " * 25 + '"""\n    # ' + "note " * 25
            + "\n    return {'a':1}\n")
    out = nbstyle.wrap_long_text(code)
    assert out.startswith("#| export\n") and all(nbstyle.width(x) <= nbstyle.MAX_LINE for x in out.split("\n"))
    assert ast.dump(ast.parse(out.replace("#|", "#"))) != "" and "return {'a':1}" in out
    assert " ".join(out.split()).count("word") == 25 and " ".join(out.split()).count("note") == 25
    pytest.importorskip("ruff")
    formatted = nbstyle.format_code(code)
    assert formatted.startswith("#| export\n") and 'return {"a": 1}' in formatted
    assert nbstyle.format_code("%pip install x") is None  # IPython syntax is left alone


def test_repository_address_is_set_in_one_place():
    """Publishing needs one edit (_config.yml) and `make stamp`: no other file spells the address."""
    url = _repo_url()
    stamped = {"_config.yml", "pyproject.toml"}
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    address = re.compile(r"github\.com/[\w.-]+/[\w.-]+")
    problems = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".md", ".ipynb", ".py", ".yml", ".yaml", ".toml", ".txt", ".cfg", ""):
            continue
        if not path.is_file() or name.startswith("data/"):
            continue
        if path.suffix == ".ipynb":
            nb = _load(path)
            # the badge (first cell) and the setup cell are written by `nbtool.py stamp`
            texts = [_src(c) for c in nb["cells"][1:] if not _src(c).startswith(SETUP_MARK)]
            setup = [_src(c) for c in nb["cells"] if _src(c).startswith(SETUP_MARK)]
            if any(url not in s for s in setup):
                problems.append(f"{name}: the setup cell does not install from {url} (make stamp)")
        else:
            texts = [path.read_text(encoding="utf-8", errors="replace")]
        for text in texts:
            for m in address.finditer(text):
                if url.endswith(m.group(0).rstrip(".")) and name in stamped:
                    continue
                if m.group(0).split("/")[2] == url.split("/")[-1] or name in stamped:
                    problems.append(f"{name}: spells the repository's address ({m.group(0)}); "
                                    "point to _config.yml instead")
    home = re.search(r'^Homepage\s*=\s*"([^"]*)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    if home and home.group(1).rstrip("/") != url:
        problems.append(f"pyproject.toml: Homepage {home.group(1)} is not {url} (make stamp)")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- device and dtype choice
@pytest.mark.parametrize("bf16, expected", [(False, torch.float16), (True, torch.bfloat16)],
                         ids=["T4-fp16", "ampere-bf16"])
def test_autocast_dtype_on_cuda(monkeypatch, bf16, expected):
    from gptbook.utils import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert autocast_dtype("cuda") == expected
    assert autocast_dtype(torch.device("cuda", 0)) == expected


def test_autocast_dtype_ignores_emulated_bf16(monkeypatch):
    """A T4 reports bf16 support only through emulation: it must still train in float16."""
    from gptbook.utils import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert autocast_dtype("cuda") == torch.float16


def test_autocast_dtype_off_cuda_is_float32(monkeypatch):
    from gptbook.utils import autocast_dtype

    def no_cuda(*a, **k):
        raise AssertionError("autocast_dtype asked CUDA about a CPU device")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", no_cuda)
    assert autocast_dtype("cpu") == torch.float32
    assert autocast_dtype(torch.device("cpu")) == torch.float32
    assert autocast_dtype("mps") == torch.float32


def test_autocast_dtype_works_with_torch_autocast_on_cpu():
    # the dtype it gives is one torch.autocast accepts on that device (float32 = autocast disabled)
    from gptbook.utils import autocast_dtype

    dtype = autocast_dtype("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == dtype
