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

Before anything runs: every parameter is checked against the notebook's ``parameters`` cell (declared, and of the
default's type), and the weights and datasets the notebooks to execute need are located (:mod:`crossgap_lib.preflight`);
all problems are reported at once. A notebook is executed under a temporary name and moved into place only when it
succeeded; a failure is reported as it happens and every failure of the stage is listed at the end.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import datetime as dt
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"  # the jupytext notebooks named in profiles.yml's stages
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # figures as cell outputs
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "crossgap_lib")  # the library: for literalinclude
PROGRESS_ENV = "CROSSGAP_PROGRESS_FILE"  # see crossgap_lib.progress
STATS_PAGE = "execution_stats"  # generated page in book/_executed/ (listed in _toc.yml)
FAILED_DIR = "_failed"  # partly executed notebooks of failed runs, for debugging (never pages of the book)
NOT_LITERAL = ...  # default of a parameter whose value is an expression: any value is accepted
_START = "\x00start"  # first line a job writes to its progress file
EXECUTED_FORMAT = 1  # bump when this runner changes what it writes into executed notebooks (banner, cell tags)


class BookError(RuntimeError):
    """A book build step failed; the message names the notebook, cell and cause."""


def _print(message: str) -> None:
    print(message, flush=True)


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
        """Parameters for one notebook: the shared ones updated by its own block (unchecked)."""
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
    """Hash of the library's source and data files (not this runner's): a change here re-executes every notebook."""
    h = hashlib.sha256(f"executed format {EXECUTED_FORMAT}".encode())
    for path in sorted(LIBRARY.rglob("*")):
        if (
            path.is_file()
            and path.suffix in {".py", ".json", ".csv", ".txt", ".yml"}
            and "__pycache__" not in path.parts
            and path.relative_to(LIBRARY) != Path("book.py")  # the runner: not imported by notebooks
        ):
            h.update(str(path.relative_to(LIBRARY)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def notebook_key(notebook: Path, parameters: dict[str, Any], library_hash: str) -> str:
    """Skip key of one executed notebook: its text + parameters + library source."""
    blob = json.dumps({"text": notebook.read_text(), "parameters": parameters, "library": library_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ parameters


def notebook_parameters(notebook_text_path: Path) -> dict[str, Any]:
    """Names the notebook's ``parameters`` cell assigns and their defaults (``...`` where not a Python literal)."""
    import jupytext

    nb = jupytext.read(notebook_text_path)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as err:
                raise BookError(f"{notebook_text_path}: the parameters cell is not valid Python ({err.msg}, line "
                                f"{err.lineno})") from None
            defaults: dict[str, Any] = {}
            for node in tree.body:
                if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                try:
                    value = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    value = NOT_LITERAL
                for target in targets:
                    if isinstance(target, ast.Name):
                        defaults[target.id] = value
            return defaults
    raise BookError(f"{notebook_text_path}: no cell tagged 'parameters' (papermill needs one)")


def _declared_parameters(notebook_text_path: Path) -> set[str]:
    return set(notebook_parameters(notebook_text_path))


def parse_value(name: str, text: str) -> Any:
    """A ``-p NAME VALUE`` value read as YAML; a malformed one is a one-line BookError naming the parameter."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BookError(f"parameter {name}: {text!r} is not a valid YAML value ({problem}); values are read as YAML, "
                        "e.g. 3, 0.5, [1, 4], ViT-B-32, 'a quoted string'") from None


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def check_type(notebook: str, name: str, value: Any, default: Any) -> None:
    """Refuse ``value`` unless it has the type of the parameters cell's ``default`` (int is fine for float)."""
    if default is None or default is NOT_LITERAL:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        quote = " (quote a string YAML reads as another type: '\"yes\"', '\"1\"')" if isinstance(default, str) else ""
        raise BookError(f"parameter {name} of {notebook}: {value!r} is {_type_name(value)}, but its default "
                        f"{default!r} is {_type_name(default)}{quote}")


def resolve_parameters(notebook: Path, profile: Profile, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters passed to one notebook, checked: the profile's shared ones it declares (others are not passed),
    its own ``notebooks.<name>`` block and ``overrides`` (these two must be declared), each of its default's type."""
    declared = notebook_parameters(notebook)
    explicit = {**profile.notebooks.get(notebook.stem, {}), **(overrides or {})}
    unknown = sorted(set(explicit) - set(declared))
    if unknown:
        raise BookError(f"{notebook.name}: unknown parameter(s) {unknown}: its parameters cell declares "
                        f"{sorted(declared)}, and a parameter it does not declare would be ignored, so it is refused")
    shared = {**profile.parameters, "PROFILE": profile.name}
    passed = {k: v for k, v in {**shared, **explicit}.items() if k in declared}
    for key, value in passed.items():
        check_type(notebook.name, key, value, declared[key])
    return passed


def _banner_cell(profile: Profile, parameters: dict[str, Any]):
    import nbformat

    shown = {k: v for k, v in parameters.items() if k != "PROFILE"}
    lines = [f"**Built with the `{profile.name}` profile.** {profile.banner.strip()}"]
    if shown:
        lines.append("Parameters passed to this page: " + ", ".join(f"`{k}={v}`" for k, v in shown.items()) + ".")
    lines.append("Rerun this page with your own parameters: see [How to rerun](rerun).")
    cell = nbformat.v4.new_markdown_cell("```{admonition} Provenance\n:class: note\n" + "\n\n".join(lines) + "\n```")
    cell.metadata["tags"] = ["crossgap-banner"]
    return cell


# ------------------------------------------------------------------------------------------------------- preflight


def preflight(plan: list[tuple[Path, dict[str, Any]]]) -> None:
    """Locate every weight file and dataset the planned notebooks need; one BookError lists all that are missing."""
    from .preflight import missing_assets

    needed_by: dict[str, list[str]] = {}
    for notebook, passed in plan:
        defaults = {k: v for k, v in notebook_parameters(notebook).items() if v is not NOT_LITERAL}
        for message in missing_assets({**defaults, **passed}):
            needed_by.setdefault(message, []).append(notebook.stem)
    if needed_by:
        items = "\n".join(f"  - {message} [needed by {', '.join(names)}]" for message, names in needed_by.items())
        raise BookError(
            f"{len(needed_by)} item(s) needed by the notebooks are not on this machine; nothing was executed:\n{items}"
            "\nWeights: $CROSSGAP_WEIGHTS or `python -m crossgap_lib.book prefetch --profile paper` (with network); "
            "datasets: $CROSSGAP_DATA (see book/rerun.md)."
        )


# ------------------------------------------------------------------------------------------------------- execution


class NotebookFailed(BookError):
    """One notebook's execution failed; ``reason`` is one line, ``partial`` the partly executed notebook."""

    def __init__(self, message: str, reason: str = "", partial: str | None = None):
        super().__init__(message)
        self.reason, self.partial = reason or message.splitlines()[0], partial

    def __reduce__(self):
        return (NotebookFailed, (str(self), self.reason, self.partial))


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: dict[str, Any],
    env: dict[str, str] | None = None,
    banner=None,
    cwd: Path | None = None,
) -> Path:
    """Execute one jupytext notebook with papermill into ``output`` (.ipynb), written only on success; a failure is a
    NotebookFailed naming the cell and error, with the partly executed notebook in ``_failed/`` next to ``output``."""
    import jupytext
    import nbformat
    import papermill

    declared = _declared_parameters(notebook)
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise BookError(
            f"{notebook.name}: unknown parameter(s) {unknown}; its parameters cell declares {sorted(declared)}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / FAILED_DIR / output.name
    old_env = dict(os.environ)
    os.environ.update(env or {})
    try:
        with tempfile.TemporaryDirectory(prefix=f".{output.stem}-", dir=output.parent) as tmp:
            source, executed_path = Path(tmp) / "source.ipynb", Path(tmp) / output.name
            nb = jupytext.read(notebook)
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, source)
            try:
                papermill.execute_notebook(str(source), str(executed_path), parameters=parameters,
                                           kernel_name="python3", cwd=str(cwd or ROOT), progress_bar=False,
                                           report_mode=False)
            except Exception as err:  # noqa: BLE001 - every failure becomes one readable line
                reason = (f"cell {err.exec_count} ({err.ename}): {err.evalue}"
                          if isinstance(err, papermill.PapermillExecutionError)
                          else f"{type(err).__name__}: {err}")
                saved = None
                if executed_path.exists():
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(executed_path, partial)
                    saved = str(partial)
                where = f"\nThe partly executed notebook is at {saved}." if saved else ""
                raise NotebookFailed(f"notebook {notebook.name} failed in {reason}{where}", _one_line(reason),
                                     saved) from None
            executed = nbformat.read(executed_path, as_version=4)
            # both parameter cells stay, folded: the notebook's defaults, then the values this profile injected
            for cell in executed.cells:
                if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
                    cell.metadata["tags"] = sorted(set(cell.metadata["tags"]) | {"hide-input"})
            if banner is not None:
                executed.cells.insert(1 if executed.cells and executed.cells[0].cell_type == "markdown" else 0, banner)
            nbformat.write(executed, executed_path)
            os.replace(executed_path, output)  # atomic: the page appears complete or not at all
            partial.unlink(missing_ok=True)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    return output


def _execute_job(job: dict) -> dict:
    """Run one planned notebook (in a worker process); returns its outcome instead of raising."""
    start = time.time()
    Path(job["progress"]).write_text(_START + "\n")
    if job.get("stderr"):  # the kernel's own chatter (e.g. ipykernel's TCP notice) goes to a file, not the terminal
        sys.stderr.flush()
        with open(job["stderr"], "w") as log_file:
            os.dup2(log_file.fileno(), 2)
    try:
        execute_notebook(Path(job["notebook"]), Path(job["output"]), job["parameters"], env=job["env"],
                         banner=job["banner"], cwd=Path(job["cwd"]))
    except NotebookFailed as err:
        return {"ok": False, "seconds": time.time() - start, "reason": err.reason, "partial": err.partial,
                "message": str(err)}
    except Exception as err:  # noqa: BLE001 - reported by the runner, with the others of the stage
        return {"ok": False, "seconds": time.time() - start, "reason": _one_line(f"{type(err).__name__}: {err}"),
                "partial": None, "message": f"{type(err).__name__}: {err}"}
    if job.get("stamp"):
        Path(job["stamp"]).write_text(job["key"])
    return {"ok": True, "seconds": time.time() - start}


class _Tail:
    """New complete lines of a growing text file."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode("utf-8", "replace").splitlines()


def run_jobs(jobs: list[dict], workers: int, log: Callable[[str], None] = _print) -> dict[str, dict]:
    """Execute jobs in ``workers`` processes; log each start, progress line, end or failure as it happens."""
    import multiprocessing as mp

    tails = {job["name"]: _Tail(Path(job["progress"])) for job in jobs}
    started: dict[str, float] = {}
    outcomes: dict[str, dict] = {}

    def relay() -> None:
        for name, tail in tails.items():
            for line in tail.lines():
                if line == _START:
                    started[name] = time.time()
                    log(f"[book] {name}: start")
                elif line.strip():
                    log(f"[book] {name} | {line}")

    def report(name: str, outcome: dict) -> None:
        relay()
        outcomes[name] = outcome
        if outcome["ok"]:
            log(f"[book] {name}: done in {outcome['seconds']:.1f} s (cache miss)")
        else:
            see = f", see {outcome['partial']}" if outcome.get("partial") else ""
            log(f"[book] {name}: FAILED after {outcome['seconds']:.1f} s: {outcome['reason']}{see}")

    for job in jobs:
        Path(job["progress"]).parent.mkdir(parents=True, exist_ok=True)
        Path(job["progress"]).write_text("")
    with cf.ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_execute_job, job): job for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            relay()
            for future in done:
                name = futures[future]["name"]
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - a worker killed (out of memory, signal)
                    seconds = time.time() - started.get(name, time.time())
                    outcome = {"ok": False, "seconds": seconds, "partial": None,
                               "reason": _one_line(f"the worker process died ({type(err).__name__}: {err})"),
                               "message": f"{type(err).__name__}: {err}"}
                report(name, outcome)
    return outcomes


@functools.cache
def environment_info(device: str) -> dict[str, str]:
    """Library version and commit, torch / open_clip / Python versions and the device, for the statistics page."""
    from importlib import metadata

    from . import __version__

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str:
        try:
            proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no", "--", "crossgap_lib", "notebooks"):
        commit += " (with uncommitted changes)"
    name = device or "cpu"
    if name.startswith("cuda"):
        import torch

        name = f"{name} ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else f"{name} (unavailable)"
    return {"crossgap": __version__, "commit": commit, "torch": version("torch"),
            "open_clip": version("open_clip_torch"), "python": sys.version.split()[0], "device": name}


def write_stats(executed_dir: Path, records: dict[str, dict], order: list[str]) -> None:
    """``execution_stats.json`` and the book page ``execution_stats.md`` (written only when they change)."""
    def write(path: Path, text: str) -> None:
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    write(executed_dir / f"{STATS_PAGE}.json", json.dumps(records, indent=2, sort_keys=True) + "\n")
    fields = ("profile", "crossgap", "commit", "torch", "open_clip", "python", "device")
    environments: dict[tuple, str] = {}  # one letter per distinct environment, listed under the table
    rows = []
    for name in order:
        r = records.get(name)
        if r is None:
            continue
        env = environments.setdefault(tuple(r.get(f, "?") for f in fields), chr(ord("A") + len(environments)))
        seconds = f"{r['seconds']:.1f} s" if r.get("seconds") is not None else "?"
        rows.append(f"| {{download}}`{name}.ipynb <{name}.ipynb>` | {seconds} | cache {r['cache']} | "
                    f"{r.get('executed_at', '?')} | {env} |")
    described = "\n".join(
        f"- **{letter}**: profile `{values[0]}`, crossgap {values[1]} at commit `{values[2]}`, torch {values[3]}, "
        f"open_clip {values[4]}, Python {values[5]}, device {values[6]}" for values, letter in environments.items())
    text = (
        "# Execution statistics\n\n"
        "How each page of this book was computed. *Run time* is the notebook's last execution; *This build* says "
        "whether this build re-executed it (cache miss) or reused the executed notebook because its text, parameters "
        "and the library were unchanged (cache hit). Each notebook name downloads the executed notebook.\n\n"
        "| Notebook | Run time | This build | Executed at | Environment |\n|---|---:|---|---|---|\n"
        + "\n".join(rows) + "\n\nEnvironments:\n\n" + described + "\n"
    )
    write(executed_dir / f"{STATS_PAGE}.md", text)


def plan_profile(profile: Profile, executed_dir: Path, only: list[str] | None = None,
                 force: bool = False) -> tuple[list[list[dict]], list[str]]:
    """Check every notebook's parameters and decide what to execute: ``(jobs per stage, names skipped)``."""
    library_hash = library_fingerprint()
    stages, skipped = [], []
    for stage in profile.stages:
        todo = []
        for name in stage:
            notebook = NOTEBOOKS / f"{name}.py"
            if not notebook.exists():
                raise BookError(f"profiles.yml names notebook {name!r} but {notebook} does not exist")
            parameters = resolve_parameters(notebook, profile)
            if only is not None and name not in only:
                continue
            key = notebook_key(notebook, parameters, library_hash)
            output, stamp = executed_dir / f"{name}.ipynb", executed_dir / f"{name}.key"
            if not force and output.exists() and stamp.exists() and stamp.read_text() == key:
                skipped.append(name)
                continue
            todo.append(dict(name=name, notebook=str(notebook), output=str(output), stamp=str(stamp), key=key,
                             parameters=parameters, banner=_banner_cell(profile, parameters), cwd=str(ROOT)))
        stages.append(todo)
    return stages, skipped


def execute_profile(
    profile: Profile,
    build_dir: Path,
    jobs: int = 2,
    only: list[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = _print,
) -> list[str]:
    """Execute the profile's notebooks into ``build_dir/src/book/_executed``; returns the names executed (not
    skipped). Parameters are checked and assets located before anything runs; a failed stage stops the build."""
    executed_dir = build_dir / "src" / "book" / "_executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    stages, skipped = plan_profile(profile, executed_dir, only=only, force=force)
    preflight([(Path(job["notebook"]), job["parameters"]) for stage in stages for job in stage])
    stats_path = executed_dir / f"{STATS_PAGE}.json"
    records = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    info = environment_info(str(profile.parameters.get("DEVICE", "cpu")))
    for name in skipped:
        log(f"[book] {name}: unchanged, skipped (cache hit)")
        records[name] = {**records.get(name, {"seconds": None, "executed_at": "?", "profile": profile.name, **info}),
                         "cache": "hit"}
    cache = Path(profile.env.get("CROSSGAP_CACHE", ROOT / ".cache" / "crossgap"))
    cache = cache if cache.is_absolute() else ROOT / cache
    ran = []
    for index, todo in enumerate(stages, 1):
        if not todo:
            continue
        workers = max(1, min(jobs, len(todo)))
        threads = str(max(1, (os.cpu_count() or 2) // workers))
        for job in todo:
            Path(job["output"]).unlink(missing_ok=True)  # stale: its key changed (or --force)
            Path(job["stamp"]).unlink(missing_ok=True)
            (executed_dir / f"{job['name']}.failed").unlink(missing_ok=True)
            job["progress"] = str(build_dir / "progress" / f"{job['name']}.log")
            job["stderr"] = str(build_dir / "progress" / f"{job['name']}.stderr.log")
            # progress bars land in the executed notebook (the pages drop stderr): one refresh per 5 s, not per 0.1 s
            job["env"] = {"MPLBACKEND": INLINE_BACKEND, "TQDM_MININTERVAL": "5", **profile.env,
                          "CROSSGAP_CACHE": str(cache), "OMP_NUM_THREADS": threads, "CROSSGAP_THREADS": threads,
                          PROGRESS_ENV: job["progress"]}
        log(f"[book] stage {index}/{len(stages)}: {', '.join(j['name'] for j in todo)} ({workers} at a time, "
            f"{threads} thread{'' if threads == '1' else 's'} each)")
        outcomes = run_jobs(todo, workers, log=log)
        failures = []
        for job in todo:
            outcome = outcomes[job["name"]]
            if outcome["ok"]:
                ran.append(job["name"])
                records[job["name"]] = {"seconds": round(outcome["seconds"], 1), "cache": "miss",
                                        "executed_at": dt.datetime.now().isoformat(timespec="seconds"),
                                        "profile": profile.name, **info}
            else:
                records.pop(job["name"], None)
                (executed_dir / f"{job['name']}.failed").write_text(outcome["reason"] + "\n")
                see = f" (see {outcome['partial']})" if outcome.get("partial") else ""
                failures.append(f"  - {job['name']}: {outcome['reason']}{see}")
        write_stats(executed_dir, records, [n for stage in profile.stages for n in stage])
        if failures:
            raise BookError(f"stage {index}: {len(failures)} of {len(todo)} notebook(s) failed, so the book was not "
                            "built:\n" + "\n".join(failures))
    write_stats(executed_dir, records, [n for stage in profile.stages for n in stage])
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
    """Every page in ``_toc.yml`` must exist; a missing or failed page refuses the book, naming each."""
    missing, failed = [], {}
    for page in toc_pages(src / "_toc.yml"):
        if any((src / f"{page}{ext}").exists() for ext in (".md", ".ipynb")):
            continue
        marker = src / f"{page}.failed"
        if marker.exists():
            failed[page] = marker.read_text().strip()
        else:
            missing.append(page)
    if missing or failed:
        parts = []
        if missing:
            parts.append(f"these pages are missing: {missing} (not executed yet: build without --only)")
        if failed:
            parts.append("these pages failed: " + "; ".join(f"{page}: {why}" for page, why in failed.items()))
        raise BookError("the book is incomplete, " + "; ".join(parts))


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


def build_html(build_dir: Path, log: Callable[[str], None] = _print) -> Path:
    """Render ``build_dir/src`` with jupyter-book (warnings are errors); returns the HTML folder."""
    src = build_dir / "src"
    check_sources(src)
    cli = "from jupyter_book.cli.main import main; main()"
    cmd = [sys.executable, "-c", cli, "build", str(src), "--path-output", str(build_dir), "-W", "-n", "--keep-going"]
    log("[book] jupyter-book " + " ".join(cmd[3:]))
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + "\n" + proc.stderr)  # without terminal colours
        problems = [line for line in output.splitlines() if re.search(r"(WARNING|ERROR|SEVERE|CRITICAL)\b", line)]
        detail = "\n".join(problems[:40]) if problems else output[-4000:]
        # Sphinx re-reads only changed pages, so a page whose warning failed this build would pass the next one
        # unread: forget the environment, and the next build reads (and checks) every page again
        shutil.rmtree(build_dir / "_build" / ".doctrees", ignore_errors=True)
        raise BookError(f"jupyter-book build failed (warnings are errors), in {src}:\n{detail}")
    log(f"[book] jupyter-book: done in {time.time() - start:.1f} s")
    return build_dir / "_build" / "html"


def build(profile_name: str = "embedded", build_root: Path | None = None, jobs: int = 2, only=None, force=False,
          log: Callable[[str], None] = _print) -> Path:
    """Execute the profile's notebooks (skipping unchanged ones) and build the HTML book; returns the HTML folder."""
    profile = get_profile(profile_name)
    build_dir = (build_root or ROOT / "_build") / profile.name
    start = time.time()
    log(f"[book] profile {profile.name}: checking parameters and assets")
    assemble_sources(build_dir)
    execute_profile(profile, build_dir, jobs=jobs, only=only, force=force, log=log)
    html = build_html(build_dir, log=log)
    log(f"[book] {profile.name}: built in {time.time() - start:.0f} s -> {html / 'index.html'}")
    return html


def profile_model_labels(profile: Profile) -> list[Any]:
    """Paper models (labels or model dicts) the profile's notebooks use through a paper source, first-seen order."""
    from .preflight import model_labels, needs_assets

    entries: dict[str, Any] = {}
    for name in [n for stage in profile.stages for n in stage]:
        notebook = NOTEBOOKS / f"{name}.py"
        defaults = {k: v for k, v in notebook_parameters(notebook).items() if v is not NOT_LITERAL}
        merged = {**defaults, **resolve_parameters(notebook, profile)}
        if needs_assets(merged):
            for entry in model_labels(merged):
                entries.setdefault(repr(entry), entry)
    return list(entries.values())


def prefetch(profile_name: str = "paper", log: Callable[[str], None] = _print) -> None:
    """Download (or find in the cache) the weights of every paper model a profile uses, before an offline build."""
    from .models import WEIGHT_SUFFIXES, WEIGHTS_ENV, load_clip
    from .preflight import model_row

    entries = profile_model_labels(get_profile(profile_name))
    if not entries:
        log(f"[book] the {profile_name} profile uses no paper models: nothing to fetch")
    failures = []
    for entry in entries:
        try:
            label, name, pretrained = model_row(entry)
        except ValueError as err:
            failures.append(f"  - {entry!r}: {_one_line(err, 1000)}")
            continue
        if pretrained.endswith((*WEIGHT_SUFFIXES, ".ckpt")):
            log(f"[book] {label}: checkpoint file {pretrained} is not downloadable; put it in ${WEIGHTS_ENV}")
            continue
        log(f"[book] weights of {label}: {name} / {pretrained}")
        try:
            load_clip(name, pretrained=pretrained, device="cpu")
        except FileNotFoundError as err:
            failures.append(f"  - {label}: {_one_line(err, 1000)}")
    if failures:
        raise BookError(f"{len(failures)} model(s) could not be fetched:\n" + "\n".join(failures))


def run_one(notebook: Path, profile_name: str, overrides: list[tuple[str, str]], output: Path | None = None,
            log: Callable[[str], None] = _print) -> Path:
    """Execute one notebook with the profile's parameters and ``-p`` overrides, all checked before the kernel."""
    profile = get_profile(profile_name)
    if not notebook.exists():
        raise BookError(f"notebook {notebook} does not exist (the notebooks are notebooks/*.py)")
    values = {name: parse_value(name, text) for name, text in overrides}
    parameters = resolve_parameters(notebook, profile, values)
    preflight([(notebook, parameters)])
    output = (output or ROOT / "_build" / "runs" / f"{notebook.stem}.ipynb").resolve()
    threads = str(max(1, os.cpu_count() or 1))
    cache = Path(profile.env.get("CROSSGAP_CACHE", ROOT / ".cache" / "crossgap"))
    job = dict(name=notebook.stem, notebook=str(notebook), output=str(output), stamp=None, key=None,
               parameters=parameters, banner=_banner_cell(profile, parameters), cwd=str(ROOT),
               progress=str(output.parent / f".{output.stem}.progress.log"),
               env={"MPLBACKEND": INLINE_BACKEND, "TQDM_MININTERVAL": "5", **profile.env,
                    "CROSSGAP_CACHE": str(cache if cache.is_absolute() else ROOT / cache),
                    "OMP_NUM_THREADS": threads, "CROSSGAP_THREADS": threads})
    job["env"][PROGRESS_ENV] = job["progress"]
    outcome = run_jobs([job], 1, log=log)[notebook.stem]
    Path(job["progress"]).unlink(missing_ok=True)
    if not outcome["ok"]:
        raise BookError(outcome["message"])
    return output


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
            output = run_one(args.notebook.resolve(), args.profile, args.parameter, args.output)
            _print(f"[book] executed {args.notebook} -> {output}")
    except (BookError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
