"""The book's notebooks are fit to publish: listed in the table of contents, executed, error-free,
openable on Colab, and small. Also: the Colab setup cell installs only on Colab, and the device and
dtype choice suits a T4 (float16), an Ampere-or-newer GPU (bfloat16) and the CPU (float32).

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
