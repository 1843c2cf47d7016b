"""Tests for crossgap_lib.templates (the authors' per-dataset zero-shot prompts, class-name cleaning) and their use in
the evaluation protocol's paper/dryrun source."""

from __future__ import annotations

import pytest
import torch

from crossgap_lib import evaluation
from crossgap_lib.datasets import IMAGE_SPECS
from crossgap_lib.evaluation import ZeroShotTask, load_source
from crossgap_lib.templates import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    check_template,
    class_prompts,
    clean_classname,
    format_prompts,
    zero_shot_prompt,
)


def test_every_paper_zero_shot_dataset_has_the_authors_template():
    datasets = load_source("paper")["zero_shot_datasets"] + load_source("dryrun")["zero_shot_datasets"]
    assert len(set(datasets)) == 11
    for name in datasets:
        check_template(zero_shot_prompt(name, default=None))
    assert set(TEMPLATES) <= {spec.name for spec in IMAGE_SPECS}  # keys are crossgap_lib.datasets names
    assert zero_shot_prompt("eurosat") == "a centered satellite photo of {}."
    assert zero_shot_prompt("dtd") == "{} texture." and zero_shot_prompt("ucf101") == "a photo of a person doing {}."
    assert zero_shot_prompt("flowers102") == "a photo of a {}, a type of flower."


def test_datasets_without_a_template_get_the_default_or_an_error():
    assert zero_shot_prompt("cub") == DEFAULT_TEMPLATE and zero_shot_prompt("sop", default="{}") == "{}"
    with pytest.raises(ValueError, match=r"no zero-shot template for dataset 'cub'.*'dtd'"):
        zero_shot_prompt("cub", default=None)
    with pytest.raises(ValueError, match="dataset must be a dataset name"):
        zero_shot_prompt(None)
    with pytest.raises(ValueError, match="exactly one"):
        zero_shot_prompt("cub", default="a photo")


@pytest.mark.parametrize(("raw", "clean"), [
    ("Apply_Eye_Makeup", "Apply Eye Makeup"),  # UCF101 folder names (CoOp splits CamelCase with "_")
    ("black_footed_albatross", "black footed albatross"),
    ("Annual Crop Land", "Annual Crop Land"),  # already readable: unchanged
    ("  sea__or   lake ", "sea or lake"),
    ("737-400", "737-400"),  # FGVC-Aircraft variants keep their punctuation
])
def test_clean_classname_examples(raw, clean):
    assert clean_classname(raw) == clean
    assert clean_classname(clean) == clean  # idempotent


def test_clean_classname_refuses_non_names():
    with pytest.raises(ValueError, match="empty after cleaning"):
        clean_classname("__")
    with pytest.raises(ValueError, match="must be a str"):
        clean_classname(3)


def test_prompts_fill_the_template_with_cleaned_names():
    assert class_prompts("dtd", ["banded", "bubbly_x"]) == ["banded texture.", "bubbly x texture."]
    assert class_prompts("food101", ["apple_pie"]) == ["a photo of apple pie, a type of food."]
    assert format_prompts("a photo of a {}.", ["red circle"]) == ["a photo of a red circle."]
    for bad in ("a photo", "a {} of {}", "a {x}", "{0}", "a {", 7):
        with pytest.raises(ValueError, match="exactly one"):
            format_prompts(bad, ["cat"])
    with pytest.raises(ValueError, match="non-empty list"):
        format_prompts("{}", "cat")
    with pytest.raises(ValueError, match="non-empty list"):
        format_prompts("{}", [])


def test_zero_shot_task_uses_its_template_else_the_source_prompt(monkeypatch):
    seen = []

    def encode_texts(clip, texts, **kwargs):
        seen.append(list(texts))
        return torch.eye(len(texts), 3)

    monkeypatch.setattr(evaluation.pipeline, "encode_texts", encode_texts)
    monkeypatch.setattr(evaluation.pipeline, "encode_images", lambda clip, images, **k: torch.eye(2, 3))
    monkeypatch.setattr(evaluation.pipeline, "invert_dataset",
                        lambda *a, **k: type("R", (), {"features": torch.eye(2, 3)})())
    images = type("Images", (), {"labels": [0, 1]})()
    entry = type("Entry", (), {"oti": None})()
    for template, expected in ((None, ["a photo of a banded.", "a photo of a bubbly x."]),
                               ("{} texture.", ["banded texture.", "bubbly x texture."])):
        task = ZeroShotTask("dtd", images, ["banded", "bubbly_x"], template=template)
        values, _ = evaluation._zero_shot_task(None, entry, task, "a photo of a {}.", None, False)
        assert seen[-1] == expected and values["inter"]["top-1"] == 1.0


def test_dryrun_source_tasks_carry_the_dataset_templates(tmp_path):
    spec = load_source({"kind": "dryrun", "models": [], "image_datasets": ["dtd", "cub"],
                        "zero_shot_datasets": ["dtd", "fgvc_aircraft"], "span_vocabulary": 4,
                        "miniature": {"n_classes": 2, "images_per_class": 2}})
    clip = type("Clip", (), {"device": "cpu"})()  # tasks() reads only the device
    tasks = evaluation._PaperSource(spec, tmp_path, progress=False).tasks(clip, None)
    assert [(t.dataset, t.template) for t in tasks["zero_shot"]] == [
        ("dtd", "{} texture."), ("fgvc_aircraft", "a photo of a {}, a type of aircraft.")]
    assert [(t.dataset, t.template) for t in tasks["image"]] == [("dtd", "{} texture."), ("cub", DEFAULT_TEMPLATE)]
    for task in tasks["zero_shot"]:
        assert task.classnames == [clean_classname(c) for c in task.images.classnames]
