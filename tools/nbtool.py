"""Small tools for the book's notebooks.

    python tools/nbtool.py new 03_attention "Attention" attention   # a new chapter from the template
    python tools/nbtool.py stamp                                     # Colab badge + setup cell URLs from _config.yml
    python tools/nbtool.py run chapters/03_attention.ipynb [...]     # execute in place, outputs committed
    python tools/nbtool.py hide chapters/03_attention.ipynb [...]    # tag setup + figure cells hide-input

Every notebook opens with a title cell carrying the "Open in Colab" badge, then one setup cell that
installs gptbook on Colab only (elsewhere it is already installed), picks the device and seeds
everything. The repository's address is read from ``_config.yml`` (``repository.url``), the one
place it is set; ``stamp`` rewrites the badge and setup cell of every notebook (and the Homepage
of ``pyproject.toml``) to match it.

``run`` executes with tqdm's bars off (``TQDM_DISABLE=1``, unless ``--progress``) and merges each
cell's printed text into one output (carriage returns applied), so a long loop leaves a few logged
lines, not hundreds of progress boxes. Code that draws a bar must let the environment switch it off:
pass ``disable=True`` only to turn a bar off, never ``disable=False`` (an explicit argument beats
``TQDM_DISABLE``). Afterwards it lists what ``tools/nbstyle.py check`` finds in the notebook.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARK = "# Setup:"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def repo_url(root: Path = ROOT) -> str:
    m = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+url:\s*(\S+)", (root / "_config.yml").read_text(), flags=re.M)
    if not m:
        raise SystemExit("_config.yml has no repository.url")
    return m.group(1).rstrip("/")


def colab_link(url: str, nb_name: str) -> str:
    owner_repo = url.split("github.com/", 1)[1]
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/chapters/{nb_name}"


def badge(url: str, nb_name: str) -> str:
    return f"[![Open In Colab]({BADGE_IMG})]({colab_link(url, nb_name)})"


def setup_source(url: str, seed: int = 123) -> str:
    return f'''{SETUP_MARK} on Colab, install gptbook from its repository (elsewhere it is
# installed already); then pick the device and seed every generator.
import subprocess, sys
if "google.colab" in sys.modules:
    import os
    repo, here = "{url}", "/content/gptbook"
    if not os.path.isdir(here):
        subprocess.run(["git", "clone", "-q", "--depth", "1", repo, here], check=True)
    pip = [sys.executable, "-m", "pip", "install", "-q", "-e", here]
    subprocess.run(pip, check=True)
    sys.path.insert(0, here)

from gptbook.utils import get_device, seed_everything

device = get_device()  # cuda, mps or cpu
seed_everything({seed})
print(f"device: {{device}}")'''


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def code_cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": _lines(source)}


def md_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": _lines(source)}


def new(name: str, title: str, module: str | None) -> Path:
    path = CHAPTERS / f"{name}.ipynb"
    if path.exists():
        raise SystemExit(f"{path} exists")
    url = repo_url()
    setup = code_cell(setup_source(url))
    setup["metadata"]["tags"] = ["hide-input"]
    cells = [md_cell(f"# {title}\n\n{badge(url, path.name)}\n\nIntroduction."), setup]
    if module:
        cells.append(code_cell(f"#| default_exp {module}"))
    nb = {"cells": cells, "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    _assign_ids(nb)
    write(path, nb)
    return path


def _assign_ids(nb: dict) -> None:
    import hashlib

    seen = set()
    for i, cell in enumerate(nb["cells"]):
        cid = cell.get("id")
        if not cid or cid in seen:
            cid = hashlib.sha1(f"{i}:{''.join(cell['source'])}".encode()).hexdigest()[:8]
            while cid in seen:
                cid = hashlib.sha1(cid.encode()).hexdigest()[:8]
            cell["id"] = cid
        seen.add(cid)


def write(path: Path, nb: dict) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def stamp(paths: list[Path]) -> list[Path]:
    """Make every notebook's badge and setup cell point at the configured repository."""
    url = repo_url()
    changed = []
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        before = json.dumps(nb, sort_keys=True)
        first = "".join(nb["cells"][0]["source"]) if nb["cells"] else ""
        if nb["cells"] and nb["cells"][0]["cell_type"] == "markdown":
            if "colab.research.google.com/github/" in first:
                first = re.sub(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)", badge(url, path.name), first)
            else:
                head, _, rest = first.partition("\n")
                first = f"{head}\n\n{badge(url, path.name)}\n{rest}"
            nb["cells"][0]["source"] = _lines(first)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and "".join(cell["source"]).startswith(SETUP_MARK):
                seed = re.search(r"seed_everything\((\d+)\)", "".join(cell["source"]))
                cell["source"] = _lines(setup_source(url, int(seed.group(1)) if seed else 123))
                meta = cell.setdefault("metadata", {})
                meta["tags"] = sorted(set(meta.get("tags", [])) | {"hide-input"})  # a toggle in the book
                break
        nb["metadata"].setdefault("kernelspec", KERNELSPEC)
        nb["metadata"].setdefault("language_info", {"name": "python"})  # the book's code lexer
        if json.dumps(nb, sort_keys=True) != before:
            write(path, nb)
            changed.append(path)
    pyproject = ROOT / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text(encoding="utf-8")
        new = re.sub(r'^(Homepage\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{url}"', text, flags=re.M)
        if new != text:
            pyproject.write_text(new, encoding="utf-8")
            changed.append(pyproject)
    return changed


def run(paths: list[Path], timeout: int = 1800, progress: bool = False) -> None:
    """Execute notebooks in place (working directory: chapters/), keeping their outputs.

    The kernel inherits this process's environment: tqdm bars are off (``TQDM_DISABLE=1``) unless
    ``progress``; figures use the inline backend even when the shell sets ``MPLBACKEND=Agg``. Each
    cell's stdout (and stderr) becomes one output."""
    import nbformat
    from nbclient import NotebookClient

    if not progress:
        os.environ["TQDM_DISABLE"] = "1"
    # figures must reach the outputs: MPLBACKEND=Agg (right for scripts and tests) would make the
    # kernel draw them nowhere, so the kernel gets the inline backend whatever the shell says
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nbstyle

    for path in paths:
        t0 = time.time()
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        finally:
            for cell in nb.cells:
                cell.metadata.pop("execution", None)
            nb.metadata["kernelspec"] = KERNELSPEC
            nb.metadata["language_info"] = {"name": "python"}
            nbformat.write(nb, path)
        print(f"{path}: executed in {time.time() - t0:.0f} s")
        for line in nbstyle.report(path):
            print(f"  check: {line}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("new", help="create chapters/NAME.ipynb from the template")
    p.add_argument("name"); p.add_argument("title"); p.add_argument("module", nargs="?")
    sub.add_parser("stamp", help="write the repository URL from _config.yml into every notebook")
    p = sub.add_parser("run", help="execute notebooks in place")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    p.add_argument("--progress", action="store_true", help="keep tqdm's progress bars")
    p = sub.add_parser("hide", help="tag the setup cell and figure cells hide-input")
    p.add_argument("paths", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "new":
        print(new(args.name, args.title, args.module))
    elif args.cmd == "stamp":
        for path in stamp(sorted(CHAPTERS.glob("*.ipynb"))):
            print(f"stamped {path}")
    elif args.cmd == "hide":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import nbstyle

        for path in args.paths:
            for i, why in nbstyle.hide_notebook(path):
                print(f"{path}: cell {i} ({why}) tagged hide-input")
    else:
        run(args.paths, args.timeout, args.progress)


if __name__ == "__main__":
    main()
