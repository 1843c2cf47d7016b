"""Sphinx extension: drop repeated <script> entries from each page.

sphinx-thebe (pulled in by jupyter-book 1.x) registers its inline configuration script a second time (once with
filename ``None``, once with ``''``), so every page declares ``const THEBE_JS_URL`` twice and the browser reports a
JavaScript error. Keeping the first copy of each script (same file or same inline body) fixes it.
"""


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", None) or str(script) if "body" not in attributes else "",
            tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        if _key(script) not in seen:
            seen.add(_key(script))
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=1000)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
