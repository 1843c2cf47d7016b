"""Tests of crossgap_lib.paper: the paper's models and their inversion settings."""

import pytest

from crossgap_lib import paper
from crossgap_lib.inversion import InversionConfig


def test_settings_follow_the_settings_file():
    models = {label: paper.model_settings(label) for label in paper.paper_labels()}
    assert len(models) == 7
    assert models["CLIP L/14"].open_clip_name == "ViT-L-14" and models["CLIP L/14"].ovi.num_pseudo_tokens == 4
    assert models["SLIP B/16"].open_clip_name == "slip-vit-b-16" and models["SLIP B/16"].family == "slip"
    assert models["SigLIP B/16"].family == "siglip" and models["CLIP B/32"].family == "clip"
    assert models["CLIP B/32"].oti == InversionConfig(template="a photo of {}", num_pseudo_tokens=1, steps=150,
                                                      lr=0.02, weight_decay=0.01, batch_size=64, seed=42)
    assert models["CLIP B/32"].ovi.steps == 1000
    with pytest.raises(ValueError, match="unknown paper model"):
        paper.model_settings("CLIP B/99")


def test_dict_models_and_inversion_overrides():
    finetuned = paper.model_settings({"label": "CLIP B/32 T=1", "base": "CLIP B/32", "temperature": 1.0,
                                      "pretrained": "clip_b32_coco_T1.pt"}, {"oti": {"steps": 5}})
    assert finetuned.temperature == 1.0 and finetuned.oti.steps == 5 and finetuned.ovi.steps == 1000
    assert finetuned.open_clip_name == "ViT-B-32" and finetuned.weights_label == "CLIP B/32"
    other = paper.model_settings({"label": "mine", "open_clip_name": "ViT-B-16", "pretrained": "laion2b_s34b_b88k"})
    assert other.family == "clip" and other.open_clip_name == "ViT-B-16"
    with pytest.raises(ValueError, match="unknown keys \\['weights'\\]"):
        paper.model_settings({"label": "x", "weights": "y"})
    with pytest.raises(ValueError, match="unknown inversion setting"):
        paper.model_settings("CLIP B/32", {"oti": {"stepz": 5}})


def test_table4_rows_of_the_profiles_fine_tune_on_coco():
    """The paper source fine-tunes its Table 4 rows at paper scale, the dry run a few steps on the miniature COCO."""
    from crossgap_lib.evaluation import load_source

    for name, steps in (("paper", 4425), ("dryrun", 3)):
        rows = {r.label: r for r in (paper.model_settings(m) for m in load_source(name)["models"])}
        for label, temperature in (("CLIP B/32 T=1", 1.0), ("CLIP B/32 T=0.01", 0.01)):
            row = rows[label]
            assert row.temperature == temperature == row.finetune["temperature"] and row.pretrained == "openai"
            assert row.finetune["dataset"] == "coco" and row.finetune["loss"] == "clip"
            assert row.finetune["steps"] == steps and row.weights_label == "CLIP B/32"
    soft = paper.model_settings(next(m for m in load_source("paper")["models"] if "soft" in str(m)))
    assert soft.family == "soft" and soft.temperature is None and soft.finetune["loss"] == "soft"


def test_missing_checkpoint_names_the_folder_and_the_fix(monkeypatch, tmp_path):
    model = paper.model_settings({"label": "T=1", "base": "CLIP B/32", "pretrained": "clip_b32_coco_T1.pt"})
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="clip_b32_coco_T1.pt.*CROSSGAP_WEIGHTS.*Put the file there"):
        paper.resolve_pretrained(model)
    (tmp_path / "clip_b32_coco_T1.pt").write_bytes(b"x")
    assert paper.resolve_pretrained(model) == str(tmp_path / "clip_b32_coco_T1.pt")
    assert paper.resolve_pretrained(paper.model_settings("CLIP B/32")) == "openai"


def test_missing_weights_stop_with_the_loader_message(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="CROSSGAP_WEIGHTS"):
        paper.load_model(paper.model_settings("CLIP B/32"), device="cpu")
