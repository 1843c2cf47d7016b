"""Preflight: weights and datasets located (never loaded or downloaded), every missing item named with its fix."""

from __future__ import annotations

import pytest

from crossgap_lib import models, preflight, progress


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No weights anywhere: $CROSSGAP_WEIGHTS, the Hugging Face cache and open_clip's URL cache are empty folders."""
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(weights))
    monkeypatch.delenv("CROSSGAP_DATA", raising=False)
    monkeypatch.setattr(models, "_hf_hub_cache", lambda: str(tmp_path / "hf"))
    monkeypatch.setattr(models, "_url_cache", lambda: tmp_path / "clip")

    def no_download(*args, **kwargs):
        raise AssertionError("preflight must not download or load anything")

    monkeypatch.setattr(models, "load_clip", no_download)
    monkeypatch.setattr(models, "_network_available", no_download)
    monkeypatch.setattr(preflight, "PROFILES", tmp_path / "profiles.yml")  # sources defined by the test
    return weights


PAPER = {"kind": "paper"}  # a source given as a dict: models and datasets from the parameters


def test_lab_and_dryrun_sources_need_nothing():
    for source in ("lab", "dryrun", {"kind": "lab"}, {"kind": "dryrun", "models": ["CLIP B/32"]}):
        params = {"SOURCE": source, "MODELS": ["CLIP B/32"], "DATASETS": ["cub"], "DEVICE": "cuda"}
        assert preflight.missing_assets(params) == []


def test_every_missing_model_and_dataset_is_one_message_with_its_fix(empty_caches):
    params = {"SOURCE": PAPER, "DEVICE": "cpu", "MODELS": ["CLIP B/32", "SLIP B/16"], "IMAGE_MODELS": ["CLIP B/32"],
              "DATASETS": ["cub"], "TEXT_DATASETS": ["coco"], "ZERO_SHOT_DATASETS": ["dtd"], "DATA_ROOT": None}
    messages = preflight.missing_assets(params)
    assert len(messages) == 5, messages  # CLIP B/32 once, though named twice
    weights = [m for m in messages if m.startswith("weights of")]
    assert [m.split(" (")[0] for m in weights] == ["weights of CLIP B/32", "weights of SLIP B/16"]
    assert all("CROSSGAP_WEIGHTS" in m and "prefetch --profile paper" in m for m in weights)
    assert "ViT-B-32__openai.safetensors" in weights[0]
    data = [m for m in messages if m.startswith("dataset")]
    assert [m.split(" ")[1] for m in data] == ["cub", "coco", "dtd"]
    assert all("$CROSSGAP_DATA" in m and "describe(" in m for m in data)


def test_weights_and_datasets_that_are_there_are_found_without_loading(empty_caches, tmp_path, monkeypatch):
    (empty_caches / "ViT-B-32__openai.safetensors").write_bytes(b"not really weights: never read")
    data = tmp_path / "data"
    cub = data / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
        (cub / name).write_text("")
    monkeypatch.setenv("CROSSGAP_DATA", str(data))
    params = {"SOURCE": PAPER, "MODEL": "CLIP B/32", "DATASET": "cub", "DATA_ROOT": None}
    assert preflight.missing_assets(params) == []
    # DATA_ROOT wins over $CROSSGAP_DATA
    messages = preflight.missing_assets({**params, "DATA_ROOT": str(tmp_path / "elsewhere")})
    assert len(messages) == 1 and "DATA_ROOT=" in messages[0] and "CUB_200_2011" in messages[0]


def test_a_source_named_in_profiles_yml_brings_its_models_and_datasets(empty_caches, tmp_path):
    (tmp_path / "profiles.yml").write_text(
        "sources:\n  real:\n    kind: paper\n    models: [CLIP B/32]\n    image_datasets: [cub]\n"
        "    text_datasets: [coco]\n    curve: {model: SigLIP B/16, dataset: dtd}\n"
        "  toy:\n    kind: lab\n    lab: {}\n")
    assert preflight.missing_assets({"SOURCE": "toy", "DEVICE": "cpu"}) == []
    messages = preflight.missing_assets({"SOURCE": "real", "DEVICE": "cpu", "MODEL": None, "DATASET": "sop"})
    assert [m.split(":")[0] for m in messages] == [
        "weights of CLIP B/32 (ViT-B-32, tag openai)", "weights of SigLIP B/16 (ViT-B-16-SigLIP, tag webli)",
        "tokenizer of SigLIP B/16 (Hugging Face timm/ViT-B-16-SigLIP)", "dataset cub (CUB-200-2011)",
        "dataset coco (COCO captions)", "dataset dtd (DTD)", "dataset sop (Stanford Online Products)"]
    assert preflight.needs_assets({"SOURCE": "real"}) and not preflight.needs_assets({"SOURCE": "toy"})


def test_unknown_names_are_reported_not_raised(empty_caches):
    messages = preflight.missing_assets({"SOURCE": PAPER, "MODELS": ["CLIP B/99"], "DATASETS": ["nope"]})
    assert len(messages) == 2
    assert "CLIP B/99" in messages[0] and "CLIP B/32" in messages[0]  # names the known ones
    assert "nope" in messages[1] and "not a known dataset" in messages[1]


def test_a_checkpoint_file_is_looked_up_in_crossgap_weights(empty_caches, monkeypatch):
    monkeypatch.setattr(preflight, "model_row", lambda entry: (entry["label"], "ViT-B-32", entry["pretrained"]))
    params = {"SOURCE": PAPER, "MODELS": [{"label": "CLIP B/32 T=1", "pretrained": "clip_t1.pt"}]}
    [message] = preflight.missing_assets(params)
    assert "checkpoint of CLIP B/32 T=1" in message and "clip_t1.pt" in message and "CROSSGAP_WEIGHTS" in message
    (empty_caches / "clip_t1.pt").write_bytes(b"")
    assert preflight.missing_assets(params) == []


def test_cuda_device_without_a_gpu_is_reported(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    messages = preflight.missing_assets({"SOURCE": PAPER, "DEVICE": "cuda"})
    assert len(messages) == 1 and "no CUDA GPU" in messages[0]


def test_report_progress_appends_lines_only_under_the_runner(tmp_path, monkeypatch):
    target = tmp_path / "progress.log"
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    progress.report_progress("ignored")
    assert not target.exists()
    monkeypatch.setenv(progress.PROGRESS_ENV, str(target))
    progress.report_progress("lab: model 1/4\nclip")
    progress.report_progress("lab: model 2/4")
    assert target.read_text().splitlines() == ["lab: model 1/4 clip", "lab: model 2/4"]
    monkeypatch.setenv(progress.PROGRESS_ENV, str(tmp_path / "missing" / "dir" / "p.log"))
    progress.report_progress("an unwritable file is ignored")


def test_time_left_estimates_from_the_units_done():
    import time

    assert progress.time_left(time.perf_counter(), 0, 4) == "estimating time left"
    assert progress.time_left(time.perf_counter() - 120, 2, 4) == "~2.0 min left"
    assert progress.time_left(time.perf_counter() - 10, 1, 2) == "~10 s left"


def test_the_captioner_and_the_textual_sets_are_checked(empty_caches):
    captioner = {"model": "coca_ViT-L-14", "pretrained": "mscoco_finetuned_laion2b_s13b_b90k"}
    source = {"kind": "paper", "captioner": captioner, "text_datasets": ["imdb", "20newsgroups", "nanoscifact"]}
    messages = preflight.missing_assets({"SOURCE": source})
    assert [m.split(":")[0] for m in messages] == [
        "weights of captioner coca_ViT-L-14 (coca_ViT-L-14, tag mscoco_finetuned_laion2b_s13b_b90k)",
        "dataset imdb (IMDB Large Movie Review Dataset)", "dataset 20newsgroups (20 Newsgroups (bydate))",
        "dataset nanoscifact (NanoBEIR SciFact)"]
    assert "coca_ViT-L-14__mscoco_finetuned_laion2b_s13b_b90k.safetensors" in messages[0]
    (empty_caches / "coca_ViT-L-14__mscoco_finetuned_laion2b_s13b_b90k.safetensors").write_bytes(b"never read")
    assert len(preflight.missing_assets({"SOURCE": source})) == 3
    random = {"kind": "paper", "captioner": {**captioner, "pretrained": None}}  # random weights: nothing to find
    assert preflight.missing_assets({"SOURCE": random}) == []
