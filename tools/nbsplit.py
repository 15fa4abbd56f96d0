"""Edit a notebook's cells as plain files, then put them back.

    python tools/nbsplit.py out chapters/05_pretraining.ipynb   # -> scratch/nb/05_pretraining/NNN.{py,md}
    python tools/nbsplit.py in chapters/05_pretraining.ipynb    # files -> the notebook

``out`` writes one file per cell (``.py`` for code, ``.md`` for markdown, ``.raw`` for raw cells),
named by position (``000.md``, ``001.py``, ...), and a ``cells.json`` that remembers which file was
which cell. Edit the files with any editor; add a cell by adding a file whose name sorts where the
cell belongs (``012a.py`` comes after ``012.py``), delete one by deleting its file. ``in`` rebuilds
the notebook in file-name order: cells whose source did not change keep their outputs, changed
cells lose them (execute the notebook afterwards). Run ``out`` again to renumber.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXT = {"code": ".py", "markdown": ".md", "raw": ".raw"}
KIND = {v: k for k, v in EXT.items()}


def _folder(nb: Path) -> Path:
    return ROOT / "scratch" / "nb" / nb.stem


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def split_out(nb_path: Path) -> Path:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    folder = _folder(nb_path)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    manifest = {}
    for i, cell in enumerate(nb["cells"]):
        name = f"{i:03d}{EXT[cell['cell_type']]}"
        (folder / name).write_text("".join(cell["source"]), encoding="utf-8")
        manifest[name] = cell.get("id")
    (folder / "cells.json").write_text(json.dumps(manifest, indent=1))
    return folder


def split_in(nb_path: Path) -> list[str]:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    folder = _folder(nb_path)
    manifest = json.loads((folder / "cells.json").read_text())
    by_id = {c.get("id"): c for c in nb["cells"]}
    cells, changed, used = [], [], set()
    files = sorted(p for p in folder.iterdir() if p.suffix in KIND)
    for f in files:
        source = f.read_text(encoding="utf-8")
        old = by_id.get(manifest.get(f.name))
        kind = KIND[f.suffix]
        if old is not None and old["cell_type"] == kind and "".join(old["source"]) == source:
            cells.append(old)
            used.add(old.get("id"))
            continue
        cell = {"cell_type": kind, "metadata": dict(old["metadata"]) if old else {}, "source": _lines(source)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cid = old.get("id") if old is not None and old.get("id") not in used else None
        if cid is None:
            cid = hashlib.sha1(f"{f.name}:{source}".encode()).hexdigest()[:8]
            while cid in by_id or cid in used:
                cid = hashlib.sha1(cid.encode()).hexdigest()[:8]
        cell["id"] = cid
        used.add(cid)
        cells.append(cell)
        changed.append(f.name)
    nb["cells"] = cells
    # remember the new cells' ids, so that the next ``in`` keeps their outputs too
    (folder / "cells.json").write_text(json.dumps({f.name: c["id"] for f, c in zip(files, cells)}, indent=1))
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["out", "in"])
    ap.add_argument("notebooks", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for nb in args.notebooks:
        if args.cmd == "out":
            print(f"{nb} -> {split_out(nb).relative_to(ROOT)}")
        else:
            changed = split_in(nb)
            print(f"{nb}: {len(changed)} cell(s) new or changed{': ' + ', '.join(changed) if changed else ''}")


if __name__ == "__main__":
    main()
