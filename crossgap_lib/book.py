"""Book runner: execute the jupytext notebooks with papermill on a profile, skip unchanged ones, build with
jupyter-book.

Usage::

    python -m crossgap_lib.book build --profile embedded          # what `make book` runs
    python -m crossgap_lib.book build --profile paper             # GPU, real weights and datasets
    python -m crossgap_lib.book run notebooks/fig2_oti_dynamics.py -p R_VALUES '[1, 4]' -o my_run.ipynb

Each profile (``profiles.yml``) gives parameters shared by every notebook plus per-notebook overrides. A notebook is
re-executed only when its key changes: the hash of its text, its parameters and the library's source. Notebooks of one
stage run in parallel; stages run in order (the laboratory first, since the others read its cached results). The
executed notebooks and the book sources are assembled in ``_build/<profile>/src`` and rendered into
``_build/<profile>/_build/html``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = Path(__file__).resolve().parent
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # figures as cell outputs
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "crossgap_lib")  # the library: for literalinclude


class BookError(RuntimeError):
    """A book build step failed; the message names the notebook, cell and cause."""


@dataclass
class Profile:
    """One execution profile of the book (a block of ``profiles.yml``)."""

    name: str
    description: str
    banner: str
    parameters: dict[str, Any]
    notebooks: dict[str, dict[str, Any]]
    stages: list[list[str]]
    env: dict[str, str]

    def parameters_for(self, notebook: str) -> dict[str, Any]:
        """Parameters for one notebook: the shared ones updated by its own block."""
        return {**self.parameters, "PROFILE": self.name, **self.notebooks.get(notebook, {})}


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    """Read ``profiles.yml`` (top level of the repository)."""
    path = path or ROOT / "profiles.yml"
    raw = yaml.safe_load(path.read_text())
    stages = raw["stages"]
    profiles = {}
    for name, block in raw["profiles"].items():
        profiles[name] = Profile(
            name=name,
            description=block.get("description", ""),
            banner=block.get("banner", ""),
            parameters=block.get("parameters", {}) or {},
            notebooks=block.get("notebooks", {}) or {},
            stages=stages,
            env={k: str(v) for k, v in (block.get("env", {}) or {}).items()},
        )
    return profiles


def get_profile(name: str, path: Path | None = None) -> Profile:
    """The named profile, or a ValueError listing the known ones."""
    profiles = load_profiles(path)
    if name not in profiles:
        raise ValueError(f"unknown book profile {name!r}; profiles.yml defines: {', '.join(profiles)}")
    return profiles[name]


def library_fingerprint() -> str:
    """Hash of the library's source and data files: a change here re-executes every notebook."""
    h = hashlib.sha256()
    for path in sorted(LIBRARY.rglob("*")):
        if (
            path.is_file()
            and path.suffix in {".py", ".json", ".csv", ".txt", ".yml"}
            and "__pycache__" not in path.parts
        ):
            h.update(str(path.relative_to(LIBRARY)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def notebook_key(notebook: Path, parameters: dict[str, Any], library_hash: str) -> str:
    """Skip key of one executed notebook: its text + parameters + library source."""
    blob = json.dumps({"text": notebook.read_text(), "parameters": parameters, "library": library_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _declared_parameters(notebook_text_path: Path) -> set[str]:
    import jupytext

    nb = jupytext.read(notebook_text_path)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            names = set()
            for line in cell.source.splitlines():
                head = line.split("#", 1)[0]
                if "=" in head and not head.startswith((" ", "\t")):
                    names.add(head.split("=", 1)[0].strip().split(":")[0].strip())
            return names
    raise BookError(f"{notebook_text_path}: no cell tagged 'parameters' (papermill needs one)")


def _banner_cell(profile: Profile, parameters: dict[str, Any]):
    import nbformat

    shown = {
        k: v for k, v in parameters.items() if k in {"MODEL", "PRETRAINED", "DATASET", "MODELS", "DATASETS", "DEVICE"}
    }
    lines = [f"**Built with the `{profile.name}` profile.** {profile.banner.strip()}"]
    if shown:
        lines.append("Parameters: " + ", ".join(f"`{k}={v}`" for k, v in shown.items()) + ".")
    lines.append("Rerun this page with your own parameters: see [How to rerun](rerun).")
    cell = nbformat.v4.new_markdown_cell("```{admonition} Provenance\n:class: note\n" + "\n\n".join(lines) + "\n```")
    cell.metadata["tags"] = ["crossgap-banner"]
    return cell


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: dict[str, Any],
    env: dict[str, str] | None = None,
    banner=None,
    cwd: Path | None = None,
) -> Path:
    """Execute one jupytext notebook with papermill into ``output`` (.ipynb); BookError names the failing cell."""
    import jupytext
    import nbformat
    import papermill

    declared = _declared_parameters(notebook)
    unknown = sorted(set(parameters) - declared - {"PROFILE"})
    if unknown:
        raise BookError(
            f"{notebook.name}: unknown parameter(s) {unknown}; its parameters cell declares {sorted(declared)}"
        )
    parameters = {k: v for k, v in parameters.items() if k in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    source = output.with_suffix(".source.ipynb")
    nb = jupytext.read(notebook)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    old_env = dict(os.environ)
    os.environ.update(env or {})
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(cwd or ROOT),
            progress_bar=False,
            report_mode=False,
        )
    except papermill.PapermillExecutionError as err:
        raise BookError(
            f"notebook {notebook.name} failed in cell {err.exec_count} ({err.ename}): {err.evalue}\n"
            f"The partly executed notebook is at {output}."
        ) from None
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        source.unlink(missing_ok=True)
    executed = nbformat.read(output, as_version=4)
    # both parameter cells stay, folded: the notebook's defaults, then the values this profile injected over them
    for cell in executed.cells:
        if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
            cell.metadata["tags"] = sorted(set(cell.metadata["tags"]) | {"hide-input"})
    if banner is not None:
        executed.cells.insert(1 if executed.cells and executed.cells[0].cell_type == "markdown" else 0, banner)
    nbformat.write(executed, output)
    return output


def _execute_job(job: dict) -> tuple[str, float]:
    start = time.time()
    execute_notebook(
        Path(job["notebook"]), Path(job["output"]), job["parameters"], env=job["env"], banner=job["banner"]
    )
    Path(job["stamp"]).write_text(job["key"])
    return job["name"], time.time() - start


def execute_profile(
    profile: Profile,
    build_dir: Path,
    jobs: int = 2,
    only: list[str] | None = None,
    force: bool = False,
    log=print,
) -> list[str]:
    """Execute the profile's notebooks into ``build_dir/src/book/_executed``; returns the names executed (not
    skipped)."""
    executed_dir = build_dir / "src" / "book" / "_executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    library_hash = library_fingerprint()
    cache = Path(profile.env.get("CROSSGAP_CACHE", ROOT / ".cache" / "crossgap"))
    base_env = {"CROSSGAP_CACHE": str(cache if cache.is_absolute() else ROOT / cache), "MPLBACKEND": INLINE_BACKEND}
    ran = []
    for stage in profile.stages:
        names = [n for n in stage if only is None or n in only]
        todo = []
        for name in names:
            notebook = ROOT / "notebooks" / f"{name}.py"
            if not notebook.exists():
                raise BookError(f"profiles.yml names notebook {name!r} but {notebook} does not exist")
            parameters = profile.parameters_for(name)
            key = notebook_key(notebook, parameters, library_hash)
            output, stamp = executed_dir / f"{name}.ipynb", executed_dir / f"{name}.key"
            if not force and output.exists() and stamp.exists() and stamp.read_text() == key:
                log(f"[book] {name}: unchanged, skipped")
                continue
            stamp.unlink(missing_ok=True)
            todo.append(
                dict(name=name, notebook=str(notebook), output=str(output), stamp=str(stamp), key=key,
                     parameters=parameters, banner=_banner_cell(profile, parameters))
            )
        if not todo:
            continue
        workers = max(1, min(jobs, len(todo)))
        threads = str(max(1, (os.cpu_count() or 2) // workers))
        for job in todo:
            # progress bars land in the executed notebook (the pages drop stderr): one refresh per 5 s, not per 0.1 s
            job["env"] = {**base_env, "TQDM_MININTERVAL": "5", **profile.env, "OMP_NUM_THREADS": threads,
                          "CROSSGAP_THREADS": threads}
            job["env"]["CROSSGAP_CACHE"] = base_env["CROSSGAP_CACHE"]
        log(f"[book] executing {', '.join(j['name'] for j in todo)} ({workers} at a time, {threads} threads each)")
        if workers == 1:
            results = [_execute_job(job) for job in todo]
        else:
            import multiprocessing as mp

            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_execute_job, job) for job in todo]
                results = [f.result() for f in futures]
        for name, seconds in results:
            log(f"[book] {name}: executed in {seconds:.0f} s")
            ran.append(name)
    return ran


def assemble_sources(build_dir: Path) -> Path:
    """Copy the book's sources (config, toc, prose) next to the executed notebooks."""
    src = build_dir / "src"
    for item in BOOK_SOURCES:
        origin, target = ROOT / item, src / item
        if origin.is_dir():
            shutil.copytree(
                origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_executed", "_build", "__pycache__")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    return src


def check_sources(src: Path) -> None:
    """Every page in ``_toc.yml`` must exist (an unexecuted notebook means an incomplete book)."""
    missing = [
        page
        for page in toc_pages(src / "_toc.yml")
        if not any((src / f"{page}{ext}").exists() for ext in (".md", ".ipynb"))
    ]
    if missing:
        raise BookError(f"the book is incomplete, these pages are missing: {missing}")


def toc_pages(toc_path: Path) -> list[str]:
    """All page paths (without suffix) named in a jupyter-book ``_toc.yml``."""
    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(p).with_suffix("")) if Path(p).suffix in {".md", ".ipynb"} else p for p in pages]


def build_html(build_dir: Path, log=print) -> Path:
    """Render ``build_dir/src`` with jupyter-book (warnings are errors); returns the HTML folder."""
    src = build_dir / "src"
    check_sources(src)
    cli = "from jupyter_book.cli.main import main; main()"
    cmd = [sys.executable, "-c", cli, "build", str(src), "--path-output", str(build_dir), "-W", "-n", "--keep-going"]
    log("[book] jupyter-book " + " ".join(cmd[3:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BookError(f"jupyter-book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return build_dir / "_build" / "html"


def build(profile_name: str = "embedded", build_root: Path | None = None, jobs: int = 2, only=None, force=False,
          log=print) -> Path:
    """Execute the profile's notebooks (skipping unchanged ones) and build the HTML book; returns the HTML folder."""
    profile = get_profile(profile_name)
    build_dir = (build_root or ROOT / "_build") / profile.name
    start = time.time()
    assemble_sources(build_dir)
    execute_profile(profile, build_dir, jobs=jobs, only=only, force=force, log=log)
    html = build_html(build_dir, log=log)
    log(f"[book] {profile.name}: built in {time.time() - start:.0f} s -> {html / 'index.html'}")
    return html


def prefetch(profile_name: str = "paper", log=print) -> None:
    """Download (or find in the cache) the weights of every paper model a profile uses, before an offline build."""
    from .experiments import paper_models
    from .models import load_clip

    labels = get_profile(profile_name).parameters.get("MODELS")
    for model in paper_models(labels):
        log(f"[book] weights of {model.label}: {model.open_clip_name} / {model.pretrained}")
        load_clip(model.open_clip_name, pretrained=model.pretrained, device="cpu")


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossgap_lib.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute notebooks on a profile and build the HTML book")
    b.add_argument("--profile", default=os.environ.get("PROFILE", "embedded"))
    b.add_argument("--build-root", type=Path, default=None, help="default: _build/ in the repository")
    b.add_argument("--jobs", type=int, default=2, help="notebooks executed in parallel within a stage")
    b.add_argument("--only", nargs="*", default=None, help="execute only these notebooks (others must be built)")
    b.add_argument("--force", action="store_true", help="re-execute even unchanged notebooks")
    f = sub.add_parser("prefetch", help="fetch the weights a profile needs (run once with network access)")
    f.add_argument("--profile", default="paper")
    r = sub.add_parser("run", help="execute one notebook with your own parameters")
    r.add_argument("notebook", type=Path)
    r.add_argument("--profile", default="embedded", help="profile whose parameters are the starting point")
    r.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter (VALUE parsed as YAML: 3, 0.5, [1, 2], ViT-B-32)")
    r.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.profile, args.build_root, jobs=args.jobs, only=args.only, force=args.force)
        elif args.command == "prefetch":
            prefetch(args.profile)
        else:
            profile = get_profile(args.profile)
            name = args.notebook.stem
            parameters = {**profile.parameters_for(name), **{k: _parse_value(v) for k, v in args.parameter}}
            output = args.output or Path("_build") / "runs" / f"{name}.ipynb"
            env = {**profile.env, "MPLBACKEND": INLINE_BACKEND}
            execute_notebook(args.notebook.resolve(), output.resolve(), parameters, env=env,
                             banner=_banner_cell(profile, parameters))
            print(f"[book] executed {args.notebook} -> {output}")
    except (BookError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
