"""crossgap: modality inversion (OTI/OVI), modality-gap measures and soft-target CLIP training.

Companion library of the book re-deriving *Cross the Gap* (Mistretta et al., ICLR 2025). Public names are
re-exported lazily so that ``import crossgap_lib`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_clip": "models",
    "LoadedClip": "models",
    "encode_text_with_pseudo_tokens": "inversion",
    "encode_image_with_pseudo_tokens": "inversion",
    "InversionConfig": "inversion",
    "oti": "inversion",
    "ovi": "inversion",
    "InversionResult": "inversion",
    "encode_images": "pipeline",
    "encode_texts": "pipeline",
    "invert_dataset": "pipeline",
    "retrieval_scores": "metrics",
    "revisited_map": "metrics",
    "zero_shot_accuracy": "metrics",
    "SoftTargetClipLoss": "losses",
    "IntraModalClipLoss": "losses",
    "train_clip": "train",
    "TrainConfig": "train",
    "TextTeacher": "teachers",
    "ImageTeacher": "teachers",
    "teacher_embeddings": "teachers",
    "evaluate": "evaluation",
    "Evidence": "evaluation",
    "load_source": "evaluation",
    "run_lab": "lab",
    "LabConfig": "lab",
    "load_dataset": "datasets",
    "make_shapes": "datasets.shapes",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'crossgap_lib' has no attribute {name!r}")
