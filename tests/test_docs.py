"""The commands and code the README and the rerun page document, run at toy sizes (random weights, miniature data)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from crossgap_lib import dryrun
from crossgap_lib.datasets.shapes import make_shapes
from crossgap_lib.evaluation import load_source, source_assets

ROOT = Path(__file__).resolve().parent.parent


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_library_snippet_runs(tmp_path, monkeypatch):
    (snippet,) = [b for b in _blocks(ROOT / "README.md", "python") if "import crossgap_lib as cg" in b]
    dryrun.write_random_checkpoints(tmp_path / "weights", models=["CLIP B/32"], progress=False)
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path)
    shapes = make_shapes("test", n=6, config={"image_size": 32})
    gallery = make_shapes("train", n=12, config={"image_size": 32})
    namespace = {"dataset": shapes, "query_labels": shapes.labels, "gallery_labels": gallery.labels,
                 "gallery_features": torch.nn.functional.normalize(torch.randn(12, 512), dim=-1)}
    exec(snippet.replace('device="cuda"', 'device="cpu"'), namespace)  # the snippet as documented, on CPU
    assert 0.0 <= namespace["scores"]["mAP"] <= 1.0 and namespace["inverted"].features.shape == (6, 512)
    assert namespace["evidence"].labels[0] == "clip"


def test_rerun_page_source_is_a_valid_source(tmp_path, monkeypatch):
    (block,) = [b for b in _blocks(ROOT / "book" / "rerun.md", "yaml") if "sources:" in b]
    (tmp_path / "my_sources.yml").write_text(block)
    monkeypatch.setenv("CROSSGAP_SOURCES", str(tmp_path / "my_sources.yml"))
    (name,) = yaml.safe_load(block)["sources"]
    assets = source_assets(name)
    assert [m.label for m in assets["models"]] == ["SigLIP B/16", "my ViT-B-16"] and assets["datasets"]
    assert load_source(name)["kind"] == "paper"


@pytest.mark.slow
def test_rerun_page_command_runs(tmp_path):
    """The documented `book run` command with a user source, here a dry-run one so that it runs offline."""
    (command,) = [b for b in _blocks(ROOT / "book" / "rerun.md", "bash") if "crossgap_lib.book run" in b]
    (block,) = [b for b in _blocks(ROOT / "book" / "rerun.md", "yaml") if "sources:" in b]
    (name,) = yaml.safe_load(block)["sources"]
    tiny = {"kind": "dryrun", "models": ["CLIP B/32"], "image_datasets": ["cub"], "zero_shot_datasets": ["dtd"],
            "inversion": {"oti": {"steps": 2}, "ovi": {"steps": 1}}, "span_vocabulary": 8,
            "miniature": {"n_classes": 3, "images_per_class": 2}}
    (tmp_path / "my_sources.yml").write_text(yaml.safe_dump({"sources": {name: tiny}}))
    words = command.replace("\\\n", " ").split()
    assert words[0] == "CROSSGAP_SOURCES=my_sources.yml" and "--profile" in words
    words = words[1:]
    words[words.index("--profile") + 1] = "dryrun"  # the paper profile needs real weights; dryrun writes random ones
    words[words.index("-o") + 1] = str(tmp_path / "out.ipynb")
    words[0] = sys.executable
    env = {**os.environ, "CROSSGAP_SOURCES": str(tmp_path / "my_sources.yml")}
    done = subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "out.ipynb").exists() and name in (tmp_path / "out.ipynb").read_text()
