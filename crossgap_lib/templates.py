"""Zero-shot prompts per dataset and class-name cleaning: the authors' protocol.

The paper's zero-shot classification (Table 2) runs CoOp's ``ZeroshotCLIP`` trainer: **one** hand-written template per
dataset, no ensemble, and class names with underscores turned into spaces. Sources, read to write this table:

- miccunifi/Cross-the-Gap ``src/classification/trainers.py``: ``CUSTOM_TEMPLATES`` and the line building the prompts
  in ``ZeroshotCLIP.build_model`` (``c.replace("_", " ")``); ``src/classification/zero_shot_classification.py`` picks
  the ``ZeroshotCLIP`` trainer (not CoOp's ensembling ``ZeroshotCLIP2``).
- KaiyangZhou/CoOp ``trainers/zsclip.py``: the same templates and cleaning, where the authors' table comes from.

Class names themselves come from the datasets' CoOp split files (already readable: "Annual Crop Land", "face"), which
:mod:`crossgap_lib.datasets` reads; :func:`clean_classname` repeats the authors' underscore rule on top (a no-op there).
Datasets the authors never classify (CUB, SOP, the revisited sets) get :data:`DEFAULT_TEMPLATE`, CLIP's generic prompt.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

DEFAULT_TEMPLATE = "a photo of a {}."  # CLIP's generic prompt; the authors' entry for several datasets too

# crossgap_lib.datasets name -> template. Every entry: Cross-the-Gap src/classification/trainers.py CUSTOM_TEMPLATES
# (key in the comment), identical to KaiyangZhou/CoOp trainers/zsclip.py CUSTOM_TEMPLATES.
TEMPLATES: dict[str, str] = {
    "caltech101": "a photo of a {}.",  # "Caltech101"
    "dtd": "{} texture.",  # "DescribableTextures"
    "eurosat": "a centered satellite photo of {}.",  # "EuroSAT"
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",  # "FGVCAircraft"
    "food101": "a photo of {}, a type of food.",  # "Food101"
    "imagenet": "a photo of a {}.",  # "ImageNet"
    "flowers102": "a photo of a {}, a type of flower.",  # "OxfordFlowers"
    "oxford_pets": "a photo of a {}, a type of pet.",  # "OxfordPets"
    "stanford_cars": "a photo of a {}.",  # "StanfordCars"
    "sun397": "a photo of a {}.",  # "SUN397"
    "ucf101": "a photo of a person doing {}.",  # "UCF101"
    "imagenetv2": "a photo of a {}.",  # "ImageNetV2"
    "imagenet_sketch": "a photo of a {}.",  # "ImageNetSketch"
    "imagenet_a": "a photo of a {}.",  # "ImageNetA"
    "imagenet_r": "a photo of a {}.",  # "ImageNetR"
}


def clean_classname(name: str) -> str:
    """A class name as the authors put it in a prompt: underscores become spaces, runs of white space one space."""
    if not isinstance(name, str):
        raise ValueError(f"class name must be a str, got {type(name).__name__} ({name!r})")
    cleaned = " ".join(name.replace("_", " ").split())
    if not cleaned:
        raise ValueError(f"class name {name!r} is empty after cleaning; give every class a readable name")
    return cleaned


def zero_shot_prompt(dataset: str, default: str | None = DEFAULT_TEMPLATE) -> str:
    """The authors' zero-shot template of ``dataset`` (one ``{}``); ``default`` for a dataset they do not classify,
    or, with ``default=None``, a ValueError listing the datasets that have one."""
    if not isinstance(dataset, str):
        raise ValueError(f"dataset must be a dataset name (str), got {type(dataset).__name__}")
    if dataset in TEMPLATES:
        return TEMPLATES[dataset]
    if default is None:
        raise ValueError(f"no zero-shot template for dataset {dataset!r}; datasets with one: {sorted(TEMPLATES)} "
                         "(add it to crossgap_lib.templates.TEMPLATES with its source)")
    check_template(default)
    return default


def check_template(template: str) -> None:
    """ValueError unless ``template`` is a string with exactly one empty ``{}`` (where the class name goes)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template)] if isinstance(template, str) else None
    except ValueError:
        fields = None
    if fields is None or [f for f in fields if f is not None] != [""]:
        raise ValueError(f"a prompt template must be a str with exactly one '{{}}' for the class name, got "
                         f"{template!r} (e.g. 'a photo of a {{}}.')")


def format_prompts(template: str, classnames: Sequence[str]) -> list[str]:
    """One prompt per class: ``template`` filled with each cleaned class name, in label order."""
    check_template(template)
    if isinstance(classnames, str) or not len(classnames):
        raise ValueError(f"classnames must be a non-empty list of class names, got {classnames!r}")
    return [template.format(clean_classname(c)) for c in classnames]


def class_prompts(dataset: str, classnames: Sequence[str]) -> list[str]:
    """The authors' zero-shot prompts of a dataset: its template with each cleaned class name (C prompts)."""
    return format_prompts(zero_shot_prompt(dataset), classnames)
