"""Sphinx extension: a complete ``index.html`` at the site root that redirects to the book's first page.

jupyter-book 1.x (through sphinx-external-toc) writes the root ``index.html`` as a bare ``<meta http-equiv="Refresh">``
line. Without a ``<link rel="icon">`` a browser may request ``/favicon.ico`` before the redirect fires, which is a 404
(and, in the headless-browser test, a console error that appears or not depending on timing). This writes a small
valid page instead: the same redirect, the book's favicon, and a link for readers whose browser does not follow it.
It runs before sphinx-external-toc's handler, which leaves an existing ``index.html`` alone.
"""

from __future__ import annotations

import html
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta http-equiv="Refresh" content="0; url={target}">
<link rel="canonical" href="{target}">
{icon}</head>
<body><p>This book starts at <a href="{target}">{target}</a>.</p></body>
</html>
"""


def _write_redirect(app, exception) -> None:
    if exception is not None or "html" not in app.builder.format or app.config.master_doc == "index":
        return
    target = f"{app.config.master_doc}.html"
    favicon = app.config.html_favicon
    if favicon and "://" not in favicon:  # a local file: Sphinx copies it into _static/
        favicon = f"_static/{Path(favicon).name}"
    icon = f'<link rel="icon" href="{html.escape(favicon)}">\n' if favicon else ""
    title = html.escape(app.config.html_title or app.config.project or "book")
    Path(app.outdir, "index.html").write_text(PAGE.format(title=title, target=target, icon=icon), encoding="utf8")


def setup(app):
    app.connect("build-finished", _write_redirect, priority=100)  # before sphinx-external-toc's default 500
    return {"parallel_read_safe": True, "parallel_write_safe": True}
