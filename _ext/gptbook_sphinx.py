"""Sphinx glue for the gptbook web book.

The notebooks mark library code with nbdev-style directives (``#| export``); they matter to the
exporter (tools/export.py), not to a reader. This extension drops those directive lines from the
rendered code cells, and drops cells marked ``#| hide`` (or holding nothing but directives)
altogether.

It also registers the bibliography style ``gptbook`` (``bibtex_default_style`` in _config.yml):
pybtex's plain entries, sorted by author and year, labelled "Author, Year" ("Radford et al.,
2019"; "a", "b" for one author's two works of a year), the same author-year form in which
``bibtex_reference_style: author_year`` writes citations in the text. Without it the list would
carry alpha labels such as [RWC+19] that appear nowhere in the text.
"""
import re
from collections import Counter
from pathlib import Path

from docutils import nodes
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as _PlainStyle
from pybtex.style.labels import BaseLabelStyle

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
    # the book's own style sheet (code size), served from _ext/static
    config.html_static_path = list(config.html_static_path) + [str(Path(__file__).parent / "static")]


def _surname(person) -> str:
    return " ".join(t.render_as("text") for t in person.rich_prelast_names + person.rich_last_names)


def author_year_label(entry) -> str:
    """"Sušac, 2024", "Allen and Hospedales, 2019", "Radford et al., 2019" (as cited in the text)."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in people]
    if not names:
        who = re.sub(r"[{}]", "", entry.fields.get("title", entry.key)).split(":")[0]
    elif len(names) == 1 or (len(names) == 2 and names[1] == "others"):
        who = names[0] + (" et al." if len(names) == 2 else "")
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(e) for e in sorted_entries]
        twice, seen = Counter(labels), Counter()
        for label in labels:
            if twice[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearStyle(_PlainStyle):
    default_label_style = "gptbook-author-year"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "gptbook-author-year", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "gptbook", AuthorYearStyle)


def setup(app):
    app.connect("config-inited", _load_mathjax_once)
    app.connect("doctree-read", _on_doctree_read)
    app.add_css_file("gptbook.css")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
