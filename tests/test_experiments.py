"""The paper-profile experiments, end to end on a tiny random model and miniature datasets in the real formats."""

import json
from dataclasses import replace

import pytest
from test_datasets import jpeg, karpathy, make_cub, make_revisited, write

from crossgap_lib import experiments
from crossgap_lib.models import load_clip


@pytest.fixture(scope="module")
def clip():
    return load_clip("crossgap-micro")


@pytest.fixture()
def quick():
    model = experiments.paper_models(["CLIP B/32"])[0]
    return replace(model, oti_steps=3, ovi_steps=3, batch_size=4)


def test_paper_models_follow_the_settings_file():
    models = {m.label: m for m in experiments.paper_models()}
    assert models["CLIP L/14"].open_clip_name == "ViT-L-14" and models["CLIP L/14"].ovi_R == 4
    assert models["SLIP B/16"].open_clip_name == "slip-vit-b-16" and models["SLIP B/16"].pretrained == "slip_base_100ep"
    assert models["CLIP B/32"].oti_kwargs() == {"template": "a photo of {}", "num_pseudo_tokens": 1, "steps": 150,
                                                "lr": 0.02, "weight_decay": 0.01, "batch_size": 64, "seed": 42}
    with pytest.raises(ValueError, match="unknown paper model"):
        experiments.paper_models(["CLIP B/99"])


def test_missing_weights_stop_with_the_loader_message(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="CROSSGAP_WEIGHTS"):
        experiments.load_paper_model(experiments.paper_models(["CLIP B/32"])[0], device="cpu")


def test_image_retrieval_on_a_miniature_cub(clip, quick, tmp_path):
    make_cub(tmp_path)
    cell = experiments.image_retrieval(clip, quick, "cub", root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert set(cell.values) == {"intra", "oti", "text_span"}
    assert all(0.0 <= v <= 1.0 for v in cell.values.values())
    assert cell.per_query["oti"].shape == (6,)
    again = experiments.image_retrieval(clip, quick, "cub", root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert again.values == cell.values  # second run reads the cache


def test_revisited_retrieval_reports_medium_and_hard(clip, quick, tmp_path):
    make_revisited(tmp_path, "roxford5k")
    cell = experiments.image_retrieval(clip, quick, "roxford5k", root=tmp_path, progress=False)
    assert {"intra", "intra_hard", "oti", "oti_hard"} <= set(cell.values)


def test_text_retrieval_with_ovi(clip, quick, tmp_path):
    write(tmp_path / "coco" / "dataset_coco.json", json.dumps(karpathy([
        ("test", 1, ["A dog runs.", "A brown dog running.", "Dog on grass."]),
        ("test", 2, ["Two men talk.", "Men in suits.", "People talking."]),
    ])))
    cell = experiments.text_retrieval(clip, quick, "coco", root=tmp_path, progress=False)
    assert set(cell.values) == {"intra", "ovi"} and cell.per_query["ovi"].shape == (2,)


def test_zero_shot_inter_vs_oti(clip, quick, tmp_path):
    folder = tmp_path / "dtd"
    table = {"train": [], "val": [], "test": []}
    for label, name in enumerate(["banded", "dotted"]):
        for k in range(2):
            rel = f"{name}/test_{k}.jpg"
            jpeg(folder / "images" / rel, 60 * label + 10 * k)
            table["test"].append([rel, label, name])
    write(folder / "split_zhou_DescribableTextures.json", json.dumps(table))
    cell = experiments.zero_shot(clip, quick, "dtd", root=tmp_path, progress=False)
    assert set(cell.values) == {"inter", "oti_intra"} and all(0 <= v <= 1 for v in cell.values.values())
