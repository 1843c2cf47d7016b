"""Sphinx extension: every image gets alt text that says what it shows, instead of its file path.

Notebook figures reach the page as bare images (docutils then uses the image's URI as ``alt``). For an image without
alt text this writes one from, in order: the figure's caption; the titles the cell's code sets on the plot
(``suptitle("...")``, ``set_title("...")``, ``title("...")``, ``.set(title="...")``); and always the section it sits in
and its number on the page, e.g. ``Figure 2 of "OTI dynamics", section "Convergence": Retrieval mAP vs. steps``.
"""

from __future__ import annotations

import re

from docutils import nodes

TITLE_CALL = re.compile(r"""(?:suptitle|set_title|title)\(\s*[furbFURB]*(['"])(.{3,}?)\1"""  # ax.set_title("...")
                        r"""|\.set\([^()]*?\btitle\s*=\s*[fr]?(['"])(.{3,}?)\3""")  # ax.set(title="...")


def _section_title(node: nodes.Node) -> str:
    while node is not None:
        if isinstance(node, nodes.section) and node.children and isinstance(node[0], nodes.title):
            return node[0].astext()
        node = node.parent
    return ""


def _cell_titles(node: nodes.Node) -> list[str]:
    """Plot titles set by the code of the notebook cell holding ``node`` (myst-nb cell containers)."""
    while node is not None and not (isinstance(node, nodes.container) and "cell" in node.get("classes", [])):
        node = node.parent
    if node is None:
        return []
    titles = []
    for block in node.findall(nodes.literal_block):
        for match in TITLE_CALL.finditer(block.astext()):
            text = " ".join((match.group(2) or match.group(4) or "").replace("\\n", " ").split())
            if "{" not in text and text not in titles:  # an f-string's template is no description
                titles.append(text)
    return titles[:3]


def add_alt_text(app, doctree: nodes.document, docname: str) -> None:
    """Fill the ``alt`` of every image on the page that has none."""
    page_title = next((t.astext() for t in doctree.findall(nodes.title)), docname)
    for number, image in enumerate(doctree.findall(nodes.image), 1):
        if image.get("alt"):
            continue
        if isinstance(image.parent, nodes.figure):
            caption = next((c.astext() for c in image.parent.findall(nodes.caption)), "")
            if caption:
                image["alt"] = caption
                continue
        section = _section_title(image)
        where = f'Figure {number} of "{page_title}"' + (f', section "{section}"' if section != page_title else "")
        titles = _cell_titles(image)
        image["alt"] = where + (": " + "; ".join(titles) if titles else "")


def setup(app):
    app.connect("doctree-resolved", add_alt_text)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
