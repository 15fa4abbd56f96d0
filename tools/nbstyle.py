"""Keep the book's notebooks readable: code that fits the page, tidy outputs, hidden set-up and plots.

    python tools/nbstyle.py check [NB ...]            # what tests/test_book_health.py would reject
    python tools/nbstyle.py format NB [...]           # ruff-format the code cells to 88 columns
    python tools/nbstyle.py hide NB [...] [--dry-run] # tag the setup cell and plot cells hide-input

The rules (each one is a test in ``tests/test_book_health.py``, which imports them from here):

* code lines are at most ``MAX_LINE`` (88) columns wide, so no code cell scrolls sideways;
* a code cell has at most ``MAX_OUTPUTS`` outputs (``tools/nbtool.py run`` merges each cell's
  printed text into one box and disables tqdm bars: long loops log a few summary lines instead);
* no committed output holds a local path (``/home/...``, ``site-packages``, a venv) or a tqdm
  warning or widget;
* the setup cell, and every cell that draws a figure, is tagged ``hide-input`` (the page shows
  the figure and a "Show code cell source" toggle), and a cell that draws has its figure in its
  outputs (``MPLBACKEND=Agg`` in the kernel would lose it);
* every cell with a top-level ``assert`` prints something: a one-line ✓ saying what it proved;
* figures in the text are ``{figure}`` directives with a caption, not bare ``![...](...)``;
* every chapter ends with a ``## Summary`` and a ``## Exercises`` section of 3-5 numbered
  exercises, links glossary terms with ``{term}``, and a chapter that cites the thesis has a
  "Notes on the thesis" box.

``format`` runs ``ruff format --line-length 88`` on each code cell on its own: it skips the setup
cell (``tools/nbtool.py stamp`` writes it) and cells with IPython syntax (``%pip``, ``!ls``), keeps
the ``#|`` directive lines, and keeps the outputs (formatting does not change what a cell does).
Then it re-wraps the docstring paragraphs and full-line comments that are still too wide. Lines
neither can shorten (long strings, trailing comments) are listed; shorten them by hand.
Run ``python tools/export.py`` afterwards when exported cells changed.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
SETUP_MARK = "# Setup:"
MAX_LINE = 88
MAX_OUTPUTS = 5
MIN_EXERCISES, MAX_EXERCISES = 3, 5
MIN_TERMS = 3
HIDDEN_INPUT_TAGS = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: Paths that say where the notebook was run (a home folder, a venv, site-packages, a temp folder).
LOCAL_PATH = re.compile(r"(?<![\w.])(/work/|/home/|/root/|/Users/|/tmp/|/var/folders/|/opt/conda"
                        r"|[A-Za-z]:\\\\?Users\\\\?)|site-packages|dist-packages|\.venv[/\\]")
TQDM_NOISE = re.compile(r"TqdmWarning|TqdmExperimentalWarning|IProgress not found")
DIRECTIVE = re.compile(r"^\s*#\|")


# ------------------------------------------------------------------------------------------ reading
def load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags(cell: dict) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def is_setup(cell: dict) -> bool:
    return cell["cell_type"] == "code" and source(cell).startswith(SETUP_MARK)


def is_exported(cell: dict) -> bool:
    return bool(re.search(r"^\s*#\|\s*export", source(cell), flags=re.M))


def code_cells(nb: dict):
    """(index in the notebook, cell) for every code cell."""
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


def output_text(out: dict) -> str:
    """Everything readable in one output: printed text, text/* data, an error's traceback."""
    parts = []
    if "text" in out:
        parts.append(source({"source": out["text"]}))
    for mime, data in out.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            parts.append(data if isinstance(data, str) else "".join(data)
                         if isinstance(data, list) else json.dumps(data))
    parts += out.get("traceback", [])
    return "\n".join(parts)


def width(line: str) -> int:
    """Columns a line takes in a monospace font (East Asian wide characters and emoji take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch)
               else 1 for ch in line)


# ------------------------------------------------------------------------------------------ the rules
def wide_lines(nb: dict, limit: int = MAX_LINE) -> list[tuple[int, int, int, str]]:
    """(cell, line number, width, line) of every code line wider than ``limit`` columns."""
    return [(i, k + 1, width(line), line) for i, c in code_cells(nb)
            for k, line in enumerate(source(c).splitlines()) if width(line) > limit]


def crowded_cells(nb: dict, limit: int = MAX_OUTPUTS) -> list[tuple[int, int]]:
    """(cell, number of outputs) of every code cell with more than ``limit`` outputs."""
    return [(i, len(c.get("outputs", []))) for i, c in code_cells(nb)
            if len(c.get("outputs", [])) > limit]


def local_paths(nb: dict) -> list[tuple[int, str]]:
    """(cell, the text around it) of every output that holds a local path."""
    found = []
    for i, c in code_cells(nb):
        for out in c.get("outputs", []):
            text = output_text(out)
            m = LOCAL_PATH.search(text)
            if m:
                found.append((i, text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ")))
    return found


def progress_noise(nb: dict) -> list[tuple[int, str]]:
    """(cell, what) of every tqdm warning or progress widget in the outputs."""
    found = []
    for i, c in code_cells(nb):
        for out in c.get("outputs", []):
            if WIDGET_MIME in out.get("data", {}):
                found.append((i, "a progress widget (execute with tools/nbtool.py run)"))
            m = TQDM_NOISE.search(output_text(out))
            if m:
                found.append((i, m.group(0)))
    return found


def _has_proof(code: str) -> bool:
    """Whether the code has an ``assert`` outside function and class bodies."""
    code = "\n".join(line for line in code.splitlines() if not DIRECTIVE.match(line))
    try:
        tree = ast.parse(code)
    except SyntaxError:  # IPython syntax: fall back to the text
        return bool(re.search(r"^\s*assert\b", code, flags=re.M))
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return False


def silent_proofs(nb: dict) -> list[int]:
    """Cells that assert something at top level but print nothing."""
    return [i for i, c in code_cells(nb)
            if not is_exported(c) and _has_proof(source(c)) and not c.get("outputs")]


def _draws(cell: dict) -> bool:
    return any(m in out.get("data", {}) for out in cell.get("outputs", []) for m in IMAGE_MIMES)


def unhidden_cells(nb: dict) -> list[tuple[int, str]]:
    """(cell, why) of the setup cell and figure-drawing cells that show their code."""
    found = []
    for i, c in code_cells(nb):
        if tags(c) & HIDDEN_INPUT_TAGS:
            continue
        if is_setup(c):
            found.append((i, "the setup cell"))
        elif _draws(c) and not is_exported(c):
            found.append((i, "draws a figure"))
    return found


_DRAWS_CODE = re.compile(r"\bnew_figure\(|\bplt\.(?:subplots|figure|plot|imshow|bar|hist)\(")


def missing_figures(nb: dict) -> list[int]:
    """Cells whose code draws a figure but whose outputs hold no image (executed with
    ``MPLBACKEND=Agg``, which keeps the kernel from showing figures)."""
    return [i for i, c in code_cells(nb) if not is_exported(c)
            and _DRAWS_CODE.search(source(c)) and c.get("execution_count") and not _draws(c)]


_BARE_IMAGE = re.compile(r"!\[[^\]]*\]\((?!https?://)([^)\s]+)")


def bare_images(nb: dict) -> list[tuple[int, str]]:
    """(cell, file) of local images in markdown that are not captioned ``{figure}`` directives."""
    return [(i, m.group(1)) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
            for m in _BARE_IMAGE.finditer(source(c))]


def markdown(nb: dict) -> str:
    return "\n\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")


def _section(text: str, title: str) -> str | None:
    """The text of the first ``## ...title...`` section, up to the next heading of level 1 or 2."""
    m = re.search(rf"^##\s+(?:\S+\s+)?{title}\b.*$", text, flags=re.M | re.I)
    if not m:
        return None
    end = re.search(r"^#{1,2}\s", text[m.end():], flags=re.M)
    return text[m.end(): m.end() + end.start() if end else len(text)]


def ending_problems(nb: dict) -> list[str]:
    """What is missing from the chapter's end: a Summary, then 3-5 numbered Exercises."""
    text = markdown(nb)
    problems = []
    if _section(text, "Summary") is None:
        problems.append("no '## Summary' section")
    exercises = _section(text, "Exercises")
    if exercises is None:
        problems.append("no '## Exercises' section")
    else:
        n = len(re.findall(r"^\d+\.\s", exercises, flags=re.M))
        if not MIN_EXERCISES <= n <= MAX_EXERCISES:
            problems.append(f"{n} numbered exercises (want {MIN_EXERCISES}-{MAX_EXERCISES})")
        s = re.search(r"^##\s+(?:\S+\s+)?Summary\b", text, flags=re.M | re.I)
        e = re.search(r"^##\s+(?:\S+\s+)?Exercises\b", text, flags=re.M | re.I)
        if s and e and e.start() < s.start():
            problems.append("the Exercises come before the Summary")
    return problems


def glossary_terms(nb: dict) -> list[str]:
    """The glossary terms the chapter links with ``{term}`target``` or ``{term}`text <target>```."""
    found = re.findall(r"\{term\}`([^`]+)`", markdown(nb))
    return [re.sub(r"^.*<(.+)>$", r"\1", t).strip() for t in found]


def cites_thesis(nb: dict) -> bool:
    return "susac2024gpt" in markdown(nb)


def has_thesis_notes(nb: dict) -> bool:
    return bool(re.search(r"\{admonition\}\s*Notes on the thesis", markdown(nb)))


def report(path: Path) -> list[str]:
    """Every problem of one notebook, one line each."""
    nb, name = load(path), Path(path).name
    lines = [f"{name}: cell {i} line {k}: {w} columns: {line.strip()[:60]}"
             for i, k, w, line in wide_lines(nb)]
    lines += [f"{name}: cell {i} has {n} outputs (at most {MAX_OUTPUTS})" for i, n in crowded_cells(nb)]
    lines += [f"{name}: cell {i} output holds a local path: ...{s}..." for i, s in local_paths(nb)]
    lines += [f"{name}: cell {i} output: {s}" for i, s in progress_noise(nb)]
    lines += [f"{name}: cell {i} asserts but prints nothing (add a ✓ line)" for i in silent_proofs(nb)]
    lines += [f"{name}: cell {i} draws a figure but its outputs hold none (run with "
              "tools/nbtool.py run, not MPLBACKEND=Agg)" for i in missing_figures(nb)]
    lines += [f"{name}: cell {i} ({why}) is not tagged hide-input (tools/nbstyle.py hide)"
              for i, why in unhidden_cells(nb)]
    lines += [f"{name}: cell {i} shows {f} without a caption (use a {{figure}} directive)"
              for i, f in bare_images(nb)]
    lines += [f"{name}: {p}" for p in ending_problems(nb)]
    if len(set(glossary_terms(nb))) < MIN_TERMS:
        lines.append(f"{name}: links {len(set(glossary_terms(nb)))} glossary terms with {{term}} "
                     f"(at least {MIN_TERMS})")
    if cites_thesis(nb) and not has_thesis_notes(nb):
        lines.append(f"{name}: cites the thesis but has no 'Notes on the thesis' admonition")
    return lines


# ---------------------------------------------------------------------------------------- formatting
def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401
    except ImportError:
        raise SystemExit("ruff is not installed: pip install ruff") from None
    return [sys.executable, "-m", "ruff"]


def format_code(code: str, line_length: int = MAX_LINE) -> str | None:
    """``code`` formatted by ruff, or None when it is not plain Python (IPython magics)."""
    body = "\n".join(line for line in code.splitlines() if not DIRECTIVE.match(line))
    try:
        ast.parse(body)
    except SyntaxError:
        return None
    done = subprocess.run(_ruff() + ["format", "--isolated", f"--line-length={line_length}",
                                     "--stdin-filename=cell.py", "-"],
                          input=code, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return done.stdout.rstrip("\n")


_PLAIN_PARAGRAPH = re.compile(r"^(?!\s*(?:[*+-] |\d+\. |>>>|\.\. |:\w))")


def _refill(lines: list[str], indent: str, limit: int, first: str = "", last: str = "") -> list[str]:
    """The words of ``lines`` as lines of at most ``limit`` columns, the first starting with
    ``first`` and the last ending with ``last`` (a docstring's quotes)."""
    words = " ".join(line.strip() for line in lines).split()
    out, line = [], indent + first
    for word in words:
        candidate = f"{line} {word}" if line.strip() and line != indent + first else line + word
        if width(candidate) > limit and line.strip() and line != indent + first:
            out.append(line)
            line = indent + word
        else:
            line = candidate
    if width(line + last) > limit:
        out += [line, indent + last]
    else:
        out.append(line + last)
    return out


def wrap_long_text(code: str, limit: int = MAX_LINE) -> str:
    """Re-wrap the docstring paragraphs and full-line comments of ``code`` that are wider than
    ``limit``; everything else (code, lists, examples, narrow paragraphs) stays as it is."""
    lines = code.split("\n")
    try:
        tree = ast.parse("\n".join("" if DIRECTIVE.match(x) else x for x in lines))
    except SyntaxError:
        return code
    spans = []  # (first line, last line) of every docstring, 0-based
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            spans.append((body[0].lineno - 1, body[0].end_lineno - 1))
    replaced: dict[int, tuple[int, list[str]]] = {}
    for start, end in spans:
        block = lines[start:end + 1]
        if all(width(x) <= limit for x in block):
            continue
        m = re.match(r'^(\s*)([rRuU]?("""|\'\'\'))', block[0])
        if not m or not block[-1].rstrip().endswith(m.group(3)):
            continue
        indent, opener, quote = m.group(1), m.group(2), m.group(3)
        body_lines = block[:]
        body_lines[0] = body_lines[0][m.end():]
        body_lines[-1] = body_lines[-1].rstrip()[: -len(quote)]
        items: list[list[str] | None] = []  # paragraphs, and None for each blank line
        for x in body_lines:
            if not x.strip():
                items.append(None)
            elif items and items[-1] is not None:
                items[-1].append(x)
            else:
                items.append([x])
        new: list[str] = []
        for k, para in enumerate(items):
            first, last = (opener if k == 0 else ""), (quote if k == len(items) - 1 else "")
            if para is None:
                new.append(indent + first + last if (first or last) else "")
                continue
            wide = any(width((indent + first if j == 0 else "") + p.rstrip()
                             + (last if j == len(para) - 1 else "")) > limit
                       for j, p in enumerate(para))
            plain = all(_PLAIN_PARAGRAPH.match(p) for p in para)
            if wide and plain:
                new += _refill(para, indent, limit, first, last)
            else:
                kept = [p.rstrip() for p in para]
                if k == 0:
                    kept[0] = indent + first + kept[0].lstrip()
                kept[-1] += last
                new += kept
        replaced[start] = (end, new)
    out, i = [], 0
    while i < len(lines):
        if i in replaced:
            end, new = replaced[i]
            out += new
            i = end + 1
            continue
        x = lines[i]
        m = re.match(r"^(\s*)(#:?)\s(.*)$", x)
        if m and width(x) > limit and not DIRECTIVE.match(x):
            prefix = f"{m.group(1)}{m.group(2)} "
            out += [prefix + y[len(prefix):].lstrip() for y in _refill([m.group(3)], prefix, limit)]
        else:
            out.append(x)
        i += 1
    return "\n".join(out)


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def write(path: Path, nb: dict) -> None:
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def format_notebook(path: Path, line_length: int = MAX_LINE) -> tuple[int, list[int]]:
    """Format every code cell but the setup cell; return (cells changed, cells skipped)."""
    nb = load(path)
    changed, skipped = 0, []
    for i, cell in code_cells(nb):
        if is_setup(cell) or not source(cell).strip():
            continue
        new = format_code(source(cell), line_length)
        if new is not None:
            new = wrap_long_text(new, line_length)
        if new is None:
            skipped.append(i)
        elif new != source(cell):
            cell["source"] = _lines(new)
            changed += 1
    if changed:
        write(path, nb)
    return changed, skipped


def hide_notebook(path: Path, dry_run: bool = False) -> list[tuple[int, str]]:
    """Tag the setup cell and the figure-drawing cells ``hide-input``; return what was tagged."""
    nb = load(path)
    todo = unhidden_cells(nb)
    for i, _ in todo:
        meta = nb["cells"][i].setdefault("metadata", {})
        meta["tags"] = sorted(set(meta.get("tags", [])) | {"hide-input"})
    if todo and not dry_run:
        write(path, nb)
    return todo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", help="list every problem (exit 1 if there is one)")
    p.add_argument("paths", nargs="*", type=Path)
    p = sub.add_parser("format", help="ruff-format the code cells (not the setup cell)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--line-length", type=int, default=MAX_LINE)
    p = sub.add_parser("hide", help="tag the setup cell and figure cells hide-input")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--dry-run", action="store_true", help="only list the cells")
    args = ap.parse_args(argv)
    paths = args.paths or sorted(CHAPTERS.glob("*.ipynb"))
    if args.cmd == "check":
        problems = [line for path in paths for line in report(path)]
        print("\n".join(problems) or "no problems")
        return 1 if problems else 0
    for path in paths:
        if args.cmd == "format":
            n, skipped = format_notebook(path, args.line_length)
            print(f"{path}: {n} cell(s) reformatted"
                  + (f"; cells {skipped} skipped (not plain Python)" if skipped else ""))
            for i, k, w, line in wide_lines(load(path), args.line_length):
                print(f"  still too wide: cell {i} line {k} ({w} columns): {line.strip()[:70]}")
        else:
            for i, why in hide_notebook(path, args.dry_run):
                print(f"{path}: cell {i} ({why}) {'would be' if args.dry_run else ''} tagged hide-input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
