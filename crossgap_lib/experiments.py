"""The paper's experiments on real models and datasets (the book's ``paper`` profile).

Each function takes a loaded model, the paper's inversion settings for it and a dataset name, and returns the
numbers of one cell of the paper's tables (fractions in [0, 1]) plus the per-query values that confidence intervals
need. Features and inversions go through :mod:`crossgap_lib.pipeline`, so a rerun loads them from the cache and an
interrupted run resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import gap, metrics, pipeline
from .datasets import imagenet_classnames, load_dataset, retrieval_protocol, zero_shot_split
from .models import LoadedClip, load_clip
from .reported import reported

PROMPT = "a photo of a {}."
SLIP_MODELS = {"SLIP B/16": "slip-vit-b-16", "SLIP L/16": "slip-vit-l-16"}


@dataclass
class PaperModel:
    """One row of the paper's settings: which weights, and the OTI/OVI hyper-parameters used for them."""

    label: str
    open_clip_name: str
    pretrained: str
    oti_steps: int
    oti_R: int
    ovi_steps: int
    ovi_R: int
    lr: float
    weight_decay: float
    batch_size: int
    seed: int
    template: str

    def oti_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`crossgap_lib.inversion.oti` for this model."""
        return {"template": self.template, "num_pseudo_tokens": self.oti_R, "steps": self.oti_steps, "lr": self.lr,
                    "weight_decay": self.weight_decay, "batch_size": self.batch_size, "seed": self.seed}

    def ovi_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`crossgap_lib.inversion.ovi` for this model."""
        return {"num_pseudo_tokens": self.ovi_R, "steps": self.ovi_steps, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "seed": self.seed}


def paper_models(labels: list[str] | None = None) -> list[PaperModel]:
    """The paper's models with their settings (``settings.csv``, provenance: config), optionally a subset by label."""
    table = reported("settings")
    known = list(table["model"])
    if labels is not None:
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise ValueError(f"unknown paper model(s) {unknown}; the paper's settings list {known}")
        table = table.set_index("model").loc[labels].reset_index()
    rows = []
    for row in table.to_dict("records"):
        name = SLIP_MODELS.get(row["model"], row["open_clip_name"])
        rows.append(PaperModel(row["model"], name, row["pretrained"], int(row["oti_steps"]), int(row["oti_R"]),
                               int(row["ovi_steps"]), int(row["ovi_R"]), float(row["lr"]), float(row["weight_decay"]),
                               int(row["batch_size"]), int(row["seed"]), row["template"]))
    return rows


def load_paper_model(model: PaperModel, device: str = "cuda") -> LoadedClip:
    """Load the weights of one paper model (open_clip cache, ``$CROSSGAP_WEIGHTS`` or a clear error)."""
    precision = "fp32"
    return load_clip(model.open_clip_name, pretrained=model.pretrained, device=device, precision=precision)


@dataclass
class Cell:
    """One model x dataset result: metric name -> value, per-query values for confidence intervals."""

    values: dict[str, float]
    per_query: dict[str, torch.Tensor] = field(default_factory=dict)


def _text_span(clip: LoadedClip, cache_dir: Path | None, progress: bool) -> gap.TextSpanProjector:
    names = imagenet_classnames()
    text_features = pipeline.encode_texts(clip, [PROMPT.format(c) for c in names], cache_dir=cache_dir,
                                          progress=progress)
    return gap.fit_text_span(text_features)


def image_retrieval(clip: LoadedClip, model: PaperModel, dataset: str, root: str | Path | None = None,
                    cache_dir: str | Path | None = None, progress: bool = True) -> Cell:
    """Table 1: image-to-image mAP, intra-modal vs OTI-to-image vs the critique's text-span projection."""
    query_split, gallery_split, exclude_self = retrieval_protocol(dataset)
    queries = load_dataset(dataset, root=root, split=query_split)
    gallery = queries if gallery_split == query_split else load_dataset(dataset, root=root, split=gallery_split)
    query_features = pipeline.encode_images(clip, queries, cache_dir=cache_dir, progress=progress)
    gallery_features = (query_features if gallery is queries
                        else pipeline.encode_images(clip, gallery, cache_dir=cache_dir, progress=progress))
    inverted = pipeline.invert_dataset(clip, "oti", query_features, cache_dir=cache_dir, progress=progress,
                                       **model.oti_kwargs())
    span = _text_span(clip, cache_dir, progress)
    candidates = {
        "intra": (query_features, gallery_features),
        "oti": (inverted.features, gallery_features),
        "text_span": (span.project(query_features), span.project(gallery_features)),
    }
    values, per_query = {}, {}
    for name, (q, g) in candidates.items():
        if hasattr(queries, "gnd"):  # revisited Oxford / Paris: Medium protocol is the headline number
            scores = metrics.revisited_map(q @ g.T, queries.gnd)
            values[name] = scores["medium"]
            values[f"{name}_hard"] = scores["hard"]
        else:
            scores = metrics.retrieval_scores(q, g, queries.labels, gallery.labels, exclude_self=exclude_self,
                                              per_query=True)
            values[name] = scores["mAP"]
            per_query[name] = scores["per_query"]["AP"]
    return Cell(values, per_query)


def text_retrieval(clip: LoadedClip, model: PaperModel, dataset: str, root: str | Path | None = None,
                   cache_dir: str | Path | None = None, progress: bool = True) -> Cell:
    """Table 2 (left): text-to-text mAP, intra-modal vs OVI-to-text."""
    query_split, gallery_split, exclude_self = retrieval_protocol(dataset)
    queries = load_dataset(dataset, root=root, split=query_split)
    gallery = load_dataset(dataset, root=root, split=gallery_split)
    query_features = pipeline.encode_texts(clip, queries.texts, cache_dir=cache_dir, progress=progress)
    gallery_features = pipeline.encode_texts(clip, gallery.texts, cache_dir=cache_dir, progress=progress)
    inverted = pipeline.invert_dataset(clip, "ovi", query_features, cache_dir=cache_dir, progress=progress,
                                       **model.ovi_kwargs())
    values, per_query = {}, {}
    for name, q in {"intra": query_features, "ovi": inverted.features}.items():
        scores = metrics.retrieval_scores(q, gallery_features, queries.labels, gallery.labels,
                                          exclude_self=exclude_self, per_query=True)
        values[name], per_query[name] = scores["mAP"], scores["per_query"]["AP"]
    return Cell(values, per_query)


def zero_shot(clip: LoadedClip, model: PaperModel, dataset: str, root: str | Path | None = None,
              cache_dir: str | Path | None = None, progress: bool = True) -> Cell:
    """Table 2 (right): zero-shot top-1, inter-modal (image vs class prompts) vs intra-modal (OTI vs class prompts)."""
    samples = load_dataset(dataset, root=root, split=zero_shot_split(dataset))
    if not samples.classnames:
        raise ValueError(f"dataset {dataset!r} has no class names, so it cannot be used for zero-shot classification")
    class_features = pipeline.encode_texts(clip, [PROMPT.format(c) for c in samples.classnames], cache_dir=cache_dir,
                                           progress=progress)
    image_features = pipeline.encode_images(clip, samples, cache_dir=cache_dir, progress=progress)
    inverted = pipeline.invert_dataset(clip, "oti", image_features, cache_dir=cache_dir, progress=progress,
                                       **model.oti_kwargs())
    return Cell({
        "inter": metrics.zero_shot_accuracy(class_features, image_features, samples.labels),
        "oti_intra": metrics.zero_shot_accuracy(class_features, inverted.features, samples.labels),
    })
