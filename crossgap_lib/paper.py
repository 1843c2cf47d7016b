"""The paper's models and their inversion settings (``settings.csv``, provenance: the paper's public configs).

A model is named by its paper label (``"CLIP B/32"``), or given as a dict for any other open_clip model or a
fine-tuned checkpoint::

    model_settings("CLIP B/32")
    model_settings({"label": "my ViT-B-16", "open_clip_name": "ViT-B-16", "pretrained": "laion2b_s34b_b88k"})
    model_settings({"label": "CLIP B/32 T=1", "base": "CLIP B/32", "temperature": 1.0,
                    "pretrained": "clip_b32_coco_T1.pt"})   # Table 4: a checkpoint file under $CROSSGAP_WEIGHTS
    model_settings({"label": "CLIP B/32 T=1", "base": "CLIP B/32", "temperature": 1.0,
                    "finetune": {"dataset": "coco", "steps": 4425}})  # Table 4: fine-tuned here (crossgap_lib.finetune)

``finetune`` (a dict: ``dataset``, optional ``split`` and ``captions_per_image``, and any
:class:`crossgap_lib.finetune.FinetuneConfig` field) means: load the row's weights (``pretrained``, by default the
base's), fine-tune them with :func:`crossgap_lib.finetune.finetune_clip`, evaluate the result. The row's
``temperature`` is the fine-tuning temperature; a ``soft`` or ``intra`` loss makes the row's family ``soft`` or
``slip``.

``inversion`` overrides apply over every model's settings (``{"oti": {"steps": 10}, "ovi": {"steps": 2}}``): this is how
a profile sizes the inversions without touching the paper's values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .claims import reported
from .inversion import InversionConfig
from .models import WEIGHTS_ENV, LoadedClip, load_clip

SLIP_ARCHS = {"SLIP B/16": "slip-vit-b-16", "SLIP L/16": "slip-vit-l-16"}
_MODEL_KEYS = {"label", "base", "open_clip_name", "pretrained", "family", "temperature", "finetune"}
_LOSS_FAMILIES = {"soft": "soft", "intra": "slip"}  # a fine-tuning loss -> the claims the row speaks to


@dataclass
class PaperModel:
    """One model row: which weights, the OTI / OVI settings, and which of the paper's claims it speaks to."""

    label: str
    open_clip_name: str
    pretrained: str
    family: str  # "clip" | "slip" | "siglip"
    oti: InversionConfig
    ovi: InversionConfig
    seed: int = 0
    temperature: float | None = None  # fixed fine-tuning temperature (Table 4 rows)
    weights_label: str = ""  # the paper label whose architecture (and, in the dry run, random checkpoint) it uses
    finetune: dict | None = None  # crossgap_lib.finetune.normalise_spec of the row's ``finetune``: fine-tuned here


def paper_labels() -> list[str]:
    """The paper's model labels, in the order of ``settings.csv``."""
    return list(reported("settings")["model"])


def family_of(label: str) -> str:
    """The family of a paper model label: "slip", "siglip" or "clip"."""
    return "slip" if label.startswith("SLIP") else "siglip" if label.startswith("SigLIP") else "clip"


def _override(config: InversionConfig, overrides: dict | None, method: str) -> InversionConfig:
    values = (overrides or {}).get(method, {})
    if not isinstance(values, dict):
        raise ValueError(f"inversion.{method} must be a dict of InversionConfig fields, got {values!r}")
    return config.updated(**values)


def model_settings(model: str | dict, inversion: dict | None = None) -> PaperModel:
    """The settings of one paper model (a label of ``settings.csv``) or of a model given as a dict (see module doc)."""
    table = reported("settings").set_index("model")
    spec: dict[str, Any] = {"label": model} if isinstance(model, str) else dict(model)
    unknown = sorted(set(spec) - _MODEL_KEYS)
    if unknown or "label" not in spec:
        raise ValueError(f"model {model!r}: expected a paper label ({paper_labels()}) or a dict with 'label' and some "
                         f"of {sorted(_MODEL_KEYS - {'label'})}; unknown keys {unknown}")
    base_label = spec.get("base", spec["label"] if spec["label"] in table.index else "CLIP B/32")
    if base_label not in table.index:
        raise ValueError(f"model {spec['label']!r}: base {base_label!r} is not a paper model; expected one of "
                         f"{paper_labels()}")
    if isinstance(model, str) and model not in table.index:
        raise ValueError(f"unknown paper model {model!r}; the paper's settings list {paper_labels()} (or pass a dict "
                         "with 'label', 'open_clip_name' and 'pretrained' for another open_clip model)")
    row = table.loc[base_label]
    oti = InversionConfig(template=row["template"], num_pseudo_tokens=int(row["oti_R"]), steps=int(row["oti_steps"]),
                          lr=float(row["lr"]), weight_decay=float(row["weight_decay"]),
                          batch_size=int(row["batch_size"]), seed=int(row["seed"]))
    ovi = replace(oti, num_pseudo_tokens=int(row["ovi_R"]), steps=int(row["ovi_steps"]))
    arch = SLIP_ARCHS.get(base_label, row["open_clip_name"])
    temperature = None if spec.get("temperature") is None else float(spec["temperature"])
    finetune, family = None, family_of(base_label)
    if spec.get("finetune") is not None:
        from .finetune import normalise_spec

        finetune = normalise_spec(spec["finetune"], temperature, spec["label"])
        temperature, family = finetune["temperature"], _LOSS_FAMILIES.get(finetune["loss"], family)
    return PaperModel(
        label=spec["label"], open_clip_name=spec.get("open_clip_name", arch),
        pretrained=str(spec.get("pretrained", row["pretrained"])), family=spec.get("family", family),
        oti=_override(oti, inversion, "oti"), ovi=_override(ovi, inversion, "ovi"), temperature=temperature,
        weights_label=base_label, finetune=finetune)


def resolve_pretrained(model: PaperModel) -> str:
    """The ``pretrained`` argument for :func:`load_clip`: a tag, or a checkpoint file name looked up in
    ``$CROSSGAP_WEIGHTS`` (a clear error when it is missing)."""
    value = model.pretrained
    if not value.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return value  # a tag: load_clip finds (or explains how to provide) its weights
    if os.path.isfile(value):
        return value
    folder = os.environ.get(WEIGHTS_ENV)
    candidate = Path(folder) / value if folder else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    raise FileNotFoundError(
        f"model {model.label!r}: checkpoint {value!r} not found"
        + (f" in ${WEIGHTS_ENV}={folder}" if folder else f" (${WEIGHTS_ENV} is not set)")
        + f". Put the file there (an open_clip state dict of {model.open_clip_name}) or give its full path as "
        "'pretrained' in the source's model entry.")


def load_model(model: PaperModel, device: str = "cuda", progress: bool = False) -> LoadedClip:
    """Load one model's weights (open_clip cache, ``$CROSSGAP_WEIGHTS``, or an explicit file) on ``device``."""
    return load_clip(model.open_clip_name, pretrained=resolve_pretrained(model), device=device, progress=progress)
