"""Sphinx glue for the gptbook web book.

The notebooks mark library code with nbdev-style directives (``#| export``); they matter to the
exporter (tools/export.py), not to a reader. This extension drops those directive lines from the
rendered code cells, and drops cells marked ``#| hide`` (or holding nothing but directives)
altogether.
"""
import re

from docutils import nodes

_DIRECTIVE = re.compile(r"^\s*#\|")


def _strip(doctree):
    for block in list(doctree.findall(nodes.literal_block)):
        text = block.astext()
        if not _DIRECTIVE.match(text):
            continue
        lines = text.splitlines()
        names = []
        while lines and (_DIRECTIVE.match(lines[0]) or not lines[0].strip()):
            names.append(lines.pop(0).strip())
        if any(re.match(r"#\|\s*hide\b", n) for n in names) or not any(line.strip() for line in lines):
            cell = block
            while cell.parent is not None and "cell" not in cell.get("classes", []):
                cell = cell.parent
            (cell if cell.parent is not None else block).parent.remove(cell if cell.parent is not None else block)
            continue
        new = "\n".join(lines)
        block.children = [nodes.Text(new)]
        block.rawsource = new


def _on_doctree_read(app, doctree):
    _strip(doctree)


def _load_mathjax_once(app, config):
    """jupyter-book adds every .js file under _static/ to every page; MathJax must load once, via mathjax_path."""
    config.html_js_files = [f for f in config.html_js_files
                            if not (f if isinstance(f, str) else f[0]).startswith("mathjax/")]


def setup(app):
    app.connect("config-inited", _load_mathjax_once)
    app.connect("doctree-read", _on_doctree_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
