"""Datasets: loaders for the paper's datasets in their real layouts, and the built-in generated dataset (``shapes``).

>>> ds = load_dataset("cub", root="/data", split="all")       # or set $CROSSGAP_DATA
>>> image, label = ds[0]; ds.labels, ds.classnames, ds.fingerprint()
>>> retrieval_protocol("cub")                                  # ("all", "all", True): query excluded from its ranking
>>> print(describe("roxford5k"))                                # expected folder layout and where to get the data

Each dataset lives in ``<root>/<folder>/`` (CoOp's folder names for the classification sets). A missing or incomplete
folder raises :class:`DatasetNotFoundError` naming the dataset, the path, the expected layout and the source.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    DATA_ENV,
    CorruptImageError,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSpec,
    ImageDataset,
    PathLike,
    TextDataset,
    data_root,
)
from .paper import IMAGE_SPECS, SPLIT_JSON_SETS, imagenet_classnames, imagenet_wnids
from .safe_pickle import UnsafePickleError, load_pickle_safely
from .text import NANOBEIR_PAPER, NANOBEIR_SETS, TEXT_SPECS

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (*IMAGE_SPECS, *TEXT_SPECS)}

# the 11 classification sets the paper uses for image retrieval (test -> train) and zero-shot classification
CLASSIFICATION_DATASETS = ("caltech101", "dtd", "eurosat", "fgvc_aircraft", "food101", "imagenet", "flowers102",
                           "oxford_pets", "stanford_cars", "sun397", "ucf101")
IMAGE_RETRIEVAL_DATASETS = ("cub", "sop", "roxford5k", "rparis6k", *CLASSIFICATION_DATASETS)
TEXT_RETRIEVAL_DATASETS = ("coco", "flickr30k", "nocaps")

_ALIASES = {
    "cub200": "cub", "cub_200_2011": "cub", "stanford_online_products": "sop", "roxford": "roxford5k",
    "rparis": "rparis6k", "oxford_flowers": "flowers102", "pets": "oxford_pets", "cars": "stanford_cars",
    "aircraft": "fgvc_aircraft", "newsgroups": "20newsgroups", "flickr": "flickr30k", "mscoco": "coco",
}

_SHAPES_EXPORTS = ("ShapesConfig", "ShapesDataset", "make_shapes", "to_model_input")


def _spec(name: str) -> DatasetSpec:
    key = str(name).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"name={name!r} is not a known dataset; expected one of {list_datasets()}")
    return DATASETS[key]


def list_datasets(modality: str | None = None) -> list[str]:
    """Registered dataset names, optionally only ``"image"`` or ``"text"`` ones."""
    if modality not in (None, "image", "text"):
        raise ValueError(f"modality={modality!r}; expected None, 'image' or 'text'")
    return sorted(n for n, s in DATASETS.items() if modality in (None, s.modality))


def load_dataset(name: str, root: PathLike | None = None, split: str | None = None, **kwargs: Any) -> Any:
    """Build dataset ``name`` from ``root`` (or ``$CROSSGAP_DATA``); ``split`` defaults to the dataset's first split.

    Image datasets accept ``on_corrupt="raise"|"skip"``, ``check_files``, ``progress`` (and ``crop_queries`` for
    roxford5k/rparis6k).
    """
    return _spec(name)(root=root, split=split, **kwargs)


def retrieval_protocol(name: str) -> tuple[str, str, bool]:
    """The paper's retrieval protocol for ``name``: ``(query_split, gallery_split, exclude_self)``."""
    spec = _spec(name)
    if spec.protocol is None:
        raise ValueError(f"{spec.name!r} has no retrieval protocol in the paper (zero-shot only: split "
                         f"{spec.zero_shot_split!r})")
    return spec.protocol


def zero_shot_split(name: str) -> str:
    """The split the paper classifies zero-shot for ``name`` (ImageNet: val, listed as ``test``)."""
    spec = _spec(name)
    if spec.zero_shot_split is None:
        raise ValueError(f"{spec.name!r} is not used for zero-shot classification; expected one of "
                         f"{[n for n, s in DATASETS.items() if s.zero_shot_split]}")
    return spec.zero_shot_split


def describe(name: str) -> str:
    """Expected folder layout of dataset ``name``, where it is published and how to point crossgap at it."""
    return _spec(name).describe()


def __getattr__(name: str) -> Any:
    # the generated dataset lives in .shapes (engineer E's module); import it only when asked for
    if name == "shapes" or name in _SHAPES_EXPORTS:
        module = importlib.import_module(f"{__name__}.shapes")
        return module if name == "shapes" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLASSIFICATION_DATASETS",
    "DATASETS",
    "DATA_ENV",
    "IMAGE_RETRIEVAL_DATASETS",
    "NANOBEIR_PAPER",
    "NANOBEIR_SETS",
    "SPLIT_JSON_SETS",
    "TEXT_RETRIEVAL_DATASETS",
    "CorruptImageError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "ImageDataset",
    "ShapesConfig",
    "ShapesDataset",
    "TextDataset",
    "UnsafePickleError",
    "data_root",
    "describe",
    "imagenet_classnames",
    "imagenet_wnids",
    "list_datasets",
    "load_dataset",
    "load_pickle_safely",
    "make_shapes",
    "retrieval_protocol",
    "to_model_input",
    "zero_shot_split",
]
