"""Tests of crossgap_lib.finetune on crossgap-micro with a few dozen shapes images or the miniature COCO (seconds)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from crossgap_lib import dryrun, paper
from crossgap_lib.cache import safe_load
from crossgap_lib.datasets.shapes import make_shapes
from crossgap_lib.evaluation import _PaperSource
from crossgap_lib.finetune import (
    FinetuneConfig,
    caption_images,
    finetune_clip,
    missing_caption_images,
    normalise_spec,
    spec_key,
)
from crossgap_lib.models import load_clip
from crossgap_lib.preflight import missing_assets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes():
    return make_shapes("train", n=48, config={"image_size": 32, "n_captions": 2, "max_distractors": 1})


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    return dryrun.write_miniature_datasets(root, ["coco"], n_classes=3, images_per_class=2, progress=False)


def micro():
    torch.manual_seed(0)
    return load_clip("crossgap-micro", progress=False)


def tiny(**overrides) -> FinetuneConfig:
    values = dict(steps=6, batch_size=8, lr=2e-3, warmup=1, checkpoint_every=2, progress=False)
    return FinetuneConfig(**{**values, **overrides})


def weights(result) -> dict[str, torch.Tensor]:
    return safe_load(result.checkpoint_path)["state_dict"]


def test_fixed_temperature_stays_at_one_over_t_and_the_base_is_untouched(shapes, tmp_path):
    base = micro()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    fixed = finetune_clip(base, shapes, tiny(temperature=0.25), cache_dir=tmp_path)
    assert fixed.logit_scales == pytest.approx([4.0] * 6) and fixed.steps == 6
    assert float(fixed.clip.model.logit_scale.detach().exp()) == pytest.approx(4.0)
    assert fixed.clip.model is not base.model and not fixed.clip.model.training
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())
    learnt = finetune_clip(base, shapes, tiny(), cache_dir=tmp_path)
    start = float(base.model.logit_scale.detach().exp())
    assert learnt.logit_scales[-1] != pytest.approx(start) and max(learnt.logit_scales) <= 100.0
    again = finetune_clip(base, shapes, tiny(temperature=0.25), cache_dir=tmp_path)
    assert again.from_cache and again.losses == fixed.losses
    assert all(torch.equal(a, b) for a, b in zip(again.clip.model.state_dict().values(),
                                                 fixed.clip.model.state_dict().values()))


@pytest.mark.parametrize("image_size", [32, 40])  # the model's size: one vectorised step; another: item by item
def test_batches_of_an_image_tensor_match_the_preprocess_item_by_item(image_size):
    from crossgap_lib.finetune import _StepBatches

    clip = micro()
    dataset = make_shapes("train", n=16, config={"image_size": image_size, "n_captions": 2, "max_distractors": 1})
    batches = _StepBatches(dataset, dataset.captions, clip, tiny(batch_size=8), slice(None))
    assert (batches.raw is not None) == (image_size == 32)
    batch = batches[3]
    expected = torch.stack([clip.preprocess(dataset[int(i)][0]) for i in batch["index"]])
    assert torch.allclose(batch["images"], expected, atol=1e-5)
    texts = [batches.flat[int(c)] for c in batch["caption_index"]]
    assert torch.equal(batch["tokens"], clip.tokenizer(texts))  # each distinct caption tokenized once, same tokens


def test_loss_decreases_on_a_tiny_run(tmp_path):
    """16 images with one caption each: the pairs are learnt, well below the chance loss log(batch)."""
    data = make_shapes("train", n=16, config={"image_size": 32, "n_captions": 1, "max_distractors": 0})
    result = finetune_clip(micro(), data, tiny(steps=40, lr=1e-3, checkpoint_every=100), cache_dir=tmp_path)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert all(math.isfinite(x) for x in result.losses)
    assert last < first - 0.5 and last < math.log(8) - 0.5, result.losses


def test_a_killed_run_resumes_to_the_uninterrupted_weights(shapes, tmp_path):
    base = micro()
    reference = finetune_clip(base, shapes, tiny(loss="intra"), cache_dir=tmp_path / "reference")

    def stop_at_three(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_clip(base, shapes, tiny(loss="intra"), cache_dir=tmp_path / "resumed", callback=stop_at_three)
    (state,) = (tmp_path / "resumed" / "finetune").glob("*/state.pt")
    assert safe_load(state)["step"] == 2
    steps_run = []
    resumed = finetune_clip(base, shapes, tiny(loss="intra"), cache_dir=tmp_path / "resumed",
                            callback=lambda step, loss: steps_run.append(step))
    assert steps_run == [3, 4, 5, 6] and not state.exists()
    assert resumed.losses == reference.losses
    a, b = weights(resumed), weights(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    head = safe_load(resumed.checkpoint_path)["projection_head"]
    assert head and all(torch.equal(head[k], safe_load(reference.checkpoint_path)["projection_head"][k]) for k in head)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_paths_run_and_resume(precision, shapes, tmp_path, monkeypatch):
    """The CUDA-only autocast (+ GradScaler for fp16) lines, forced onto the CPU: a killed run resumes exactly."""
    monkeypatch.setattr(FinetuneConfig, "effective_precision", lambda self, device: self.precision)
    config = tiny(precision=precision, temperature=0.5)
    reference = finetune_clip(micro(), shapes, config, cache_dir=tmp_path / "reference")
    assert safe_load(reference.checkpoint_path)["precision"] == precision
    assert all(math.isfinite(x) for x in reference.losses) and reference.logit_scales == pytest.approx([2.0] * 6)

    def stop(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_clip(micro(), shapes, config, cache_dir=tmp_path / "resumed", callback=stop)
    (state,) = (tmp_path / "resumed" / "finetune").glob("*/state.pt")
    assert bool(safe_load(state)["scaler"]) == (precision == "fp16")
    resumed = finetune_clip(micro(), shapes, config, cache_dir=tmp_path / "resumed")
    assert resumed.losses == reference.losses
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed).values(), weights(reference).values()))


def test_soft_loss_on_the_miniature_coco_uses_cached_teachers(coco_root, tmp_path):
    data = caption_images("coco", root=coco_root)
    assert len(data) == 12 and {len(c) for c in data.captions} == {5}  # train + restval, 5 captions each
    assert data.images[0:3].shape == (3, 3, 224, 224) and data.images[0:3].dtype == torch.uint8
    assert data.fingerprint() == caption_images("coco", root=coco_root).fingerprint()
    result = finetune_clip(micro(), data, tiny(loss="soft", steps=3, batch_size=4), cache_dir=tmp_path)
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    assert any((tmp_path / "teacher_image").iterdir()) and any((tmp_path / "teacher_text").iterdir())
    hard = finetune_clip(micro(), data, tiny(loss="soft", steps=3, batch_size=4, soft_hard_weight=1.0),
                         cache_dir=tmp_path)
    plain = finetune_clip(micro(), data, tiny(steps=3, batch_size=4), cache_dir=tmp_path)
    assert hard.losses == pytest.approx(plain.losses, rel=1e-5)  # hard weight 1: the plain CLIP loss


@pytest.mark.parametrize(("values", "match"), [
    ({"loss": "triplet"}, "loss must be one of"),
    ({"temperature": 0}, "temperature must be None"),
    ({"steps": 0}, "steps must be a positive int"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"soft_teachers": "teacher"}, "teachers must be one of"),
    ({"epochs": 3}, "unknown FinetuneConfig fields"),
])
def test_bad_config_is_a_clear_error(values, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig.from_dict(values)


def test_bad_data_is_a_clear_error(shapes, tmp_path):
    with pytest.raises(ValueError, match="must not exceed the dataset's 48 images"):
        finetune_clip(micro(), shapes, tiny(batch_size=64), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="must have .captions"):
        finetune_clip(micro(), torch.zeros(8, 3, 32, 32), tiny(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="must be a crossgap_lib.models.LoadedClip"):
        finetune_clip(micro().model, shapes, tiny(), cache_dir=tmp_path)


def test_missing_coco_images_are_named_with_their_fix(coco_root, tmp_path):
    (tmp_path / "coco").mkdir()
    shutil.copy(Path(coco_root) / "coco" / "dataset_coco.json", tmp_path / "coco")
    assert missing_caption_images("coco", coco_root) is None
    assert "train2014, val2014 missing" in missing_caption_images("coco", tmp_path)
    with pytest.raises(FileNotFoundError, match="12 of 12 images are missing.*train2014/ and .*val2014/"):
        caption_images("coco", root=tmp_path)
    row = {"label": "T=1", "base": "CLIP B/32", "temperature": 1.0, "finetune": {"dataset": "coco"}}
    messages = missing_assets({"SOURCE": {"kind": "paper", "models": [row]}, "DATA_ROOT": str(tmp_path)})
    assert any(m.startswith("fine-tuning data of T=1 (coco train split with images)") for m in messages)


def test_finetune_rows_in_model_settings():
    row = paper.model_settings({"label": "CLIP B/32 T=1", "base": "CLIP B/32", "temperature": 1.0,
                                "finetune": {"dataset": "mscoco", "steps": 3, "batch_size": 4}})
    assert row.temperature == 1.0 and row.family == "clip" and row.pretrained == "openai"
    assert row.finetune["dataset"] == "coco" and row.finetune["temperature"] == 1.0 and row.finetune["steps"] == 3
    soft = paper.model_settings({"label": "soft", "base": "CLIP B/32", "finetune": {"dataset": "coco", "loss": "soft"}})
    assert soft.family == "soft" and soft.temperature is None
    for bad, match in [({"dataset": "coco", "temperature": 0.5}, "disagree"), ({"steps": 3}, "needs a 'dataset'"),
                       ({"dataset": "cub"}, "has no images to fine-tune on"), ({"dataset": "coco", "lr": 0},
                                                                                "finetune: lr must be positive")]:
        with pytest.raises(ValueError, match=match):
            paper.model_settings({"label": "x", "temperature": 1.0, "finetune": bad})
    spec = normalise_spec({"dataset": "coco", "steps": 3})
    assert spec_key(spec) == spec_key({**spec, "num_workers": 4, "checkpoint_every": 7})  # bookkeeping only
    assert spec_key(spec) != spec_key({**spec, "steps": 4}) != spec_key({**spec, "split": "val"})


def test_a_finetune_row_loads_through_the_paper_source(coco_root, tmp_path):
    """A dry-run-style row (dict with ``finetune``) through paper.model_settings and _PaperSource.models()."""
    checkpoint = tmp_path / "micro.pt"
    torch.save({"state_dict": micro().model.state_dict(), "model_name": "crossgap-micro"}, checkpoint)
    row = {"label": "micro T=1", "open_clip_name": "crossgap-micro", "pretrained": str(checkpoint), "temperature": 1.0,
           "finetune": {"dataset": "coco", "steps": 2, "batch_size": 4, "warmup": 1}}
    spec = {"kind": "paper", "name": "t", "models": [row], "data_root": str(coco_root)}
    source = _PaperSource(spec, tmp_path / "cache", progress=False)
    (entry,) = source.models()
    assert entry.temperature == 1.0 and entry.info["finetune"] == "coco clip, 2 steps"
    clip, info = entry.load("cpu")
    assert float(clip.model.logit_scale.detach().exp()) == pytest.approx(1.0) and len(info["losses"]) == 2
    assert any((tmp_path / "cache" / "finetune").iterdir())
    longer = _PaperSource({**spec, "models": [{**row, "finetune": {**row["finetune"], "steps": 3}}]}, tmp_path,
                          progress=False)
    workers = _PaperSource({**spec, "models": [{**row, "finetune": {**row["finetune"], "num_workers": 2}}]},
                           tmp_path, progress=False)
    assert longer.key_parts() != source.key_parts() == workers.key_parts()  # the evidence key follows the config


def test_dryrun_source_writes_the_finetuning_data(tmp_path, monkeypatch):
    monkeypatch.setattr(dryrun, "write_random_checkpoints", lambda *args, **kwargs: {})
    row = {"label": "T=1", "base": "CLIP B/32", "temperature": 1.0, "finetune": {"dataset": "coco", "steps": 3}}
    source = _PaperSource({"kind": "dryrun", "models": [row], "miniature": {"n_classes": 2, "images_per_class": 2}},
                          tmp_path, progress=False)
    assert len(caption_images("coco", root=source.data_root)) == 8


DDP_SCRIPT = """
import json, sys
import torch
from crossgap_lib.datasets.shapes import make_shapes
from crossgap_lib.finetune import FinetuneConfig, finetune_clip
from crossgap_lib.models import load_clip
torch.manual_seed(0)
clip = load_clip("crossgap-micro", progress=False)
data = make_shapes("train", n=48, config={"image_size": 32, "n_captions": 2, "max_distractors": 1})
finetune_clip(clip, data, FinetuneConfig(**json.loads(sys.argv[1])), cache_dir=sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_match_single_process(shapes, tmp_path):
    config = tiny(loss="intra", checkpoint_every=100)
    single = finetune_clip(micro(), shapes, config, cache_dir=tmp_path / "single")
    script = tmp_path / "run_ddp.py"
    script.write_text(DDP_SCRIPT)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script), json.dumps(asdict(config)),
         str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = (tmp_path / "ddp" / "finetune").glob("*/model.pt")
    saved = safe_load(path)
    assert saved["world_size"] == 2 and len(set(saved["rank_fingerprints"])) == 1
    assert saved["losses"].tolist() == pytest.approx(single.losses, rel=1e-4, abs=1e-5)
    for name, value in saved["state_dict"].items():
        expected = weights(single)[name]
        if name.endswith("attn.in_proj_bias"):  # without the key bias: its exact gradient is 0 (softmax is shift-
            keep = torch.ones(value.numel(), dtype=torch.bool)  # invariant), so Adam scales float noise up to ~lr
            keep[value.numel() // 3:2 * value.numel() // 3] = False  # per step (measured 2.5e-4 after 6 steps)
            value, expected = value[keep], expected[keep]
        torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4, msg=name)
