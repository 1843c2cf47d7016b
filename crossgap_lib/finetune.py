"""Fine-tuning a loaded CLIP on captioned images: Table 4 of the paper (CLIP ViT-B/32 on COCO at a fixed temperature)
and the laboratory's tiny CLIPs on the shapes data, with the losses of :mod:`crossgap_lib.train`; cached, resumable,
DDP-ready.

>>> base = load_clip("ViT-B-32", pretrained="openai", device="cuda")
>>> data = caption_images("coco", split="train")     # Karpathy train + restval: 113,287 images, 5 captions each
>>> result = finetune_clip(base, data, FinetuneConfig(temperature=1.0))
>>> result.clip                                        # the fine-tuned model, a LoadedClip (base left untouched)

**Data.** Any dataset with ``.captions`` (one list of captions per image) whose items are images or ``(image, label)``
pairs: PIL images and uint8 tensors go through the model's own ``preprocess``, float tensors are taken as preprocessed
(:class:`crossgap_lib.pipeline` rules). :func:`crossgap_lib.datasets.shapes.make_shapes` datasets qualify as they are;
:func:`caption_images` adds the images to a Karpathy caption split of :func:`crossgap_lib.datasets.load_dataset`
(COCO: ``<coco>/train2014/`` and ``<coco>/val2014/`` next to ``dataset_coco.json``). The ``soft`` loss also needs
``.images`` (uint8 (N, 3, H, W), sliced) and ``.fingerprint()`` for :func:`crossgap_lib.teachers.teacher_embeddings`.

**Sampling** follows :func:`crossgap_lib.train.train_clip`: an epoch is ``N // batch_size`` steps over a permutation
drawn from ``(seed, epoch)``; each image's caption is drawn from ``(seed, step)``; the ``intra`` loss's two views of
each image from ``(seed, step, position)``. A resumed run therefore retraces an uninterrupted one, and ``torchrun`` with
the same global batch sees the same samples as one process (each rank loads only its share of the batch).

**Run folder** ``<cache>/finetune/<key>/``: ``key`` hashes the base model's name and weights
(:func:`crossgap_lib.pipeline.weights_fingerprint`), the dataset's fingerprint, :meth:`FinetuneConfig.key` and the
precision actually used. ``state.pt`` (weights, optimiser, grad scaler, RNG, curves) is written atomically every
``checkpoint_every`` steps; ``model.pt`` holds the finished weights (``state_dict`` + ``model_name``, the
:mod:`crossgap_lib.train` layout). :func:`finetune_clip` rebuilds the model from the base, so settings that come with a
weights tag (QuickGELU and preprocessing of OpenAI weights) are kept.

**Choices for Table 4** (the defaults of :class:`FinetuneConfig`). The paper's fine-tuning hyper-parameters were not
available to us (the stored arXiv text we could search shows its abstract and introduction, not the appendix, and the
authors' repository, github miccunifi/Cross-the-Gap, has no fine-tuning code), so we chose:

- 4425 steps of batch 128 = 5 epochs of the Karpathy train split (113,287 images). Five epochs is what Liang et al.'s
  temperature experiment on COCO captions uses (github Weixin-Liang/Modality-Gap,
  ``Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py``: ``batch_size=64, end_epoch=5``; they train from
  random initialisation); Table 4 builds on their finding that the temperature sets the gap. Batch 128 keeps a
  contrastive batch of useful size while fitting any GPU in fp16.
- AdamW with CLIP's betas (0.9, 0.98) and eps 1e-6 for ViTs, lr 1e-5 and weight decay 0.1 (not on gains, biases and
  the logit scale), linear warm-up over 100 steps then cosine decay: the learning rate and decay usual for full
  fine-tuning of a pre-trained CLIP (e.g. FLYP, Goyal et al. 2023), small enough that 4k steps adapt the model
  without wrecking it.
- The first 5 captions of every image (COCO has 5 to 7), so every image has the same count (the soft loss needs it);
  the model's evaluation preprocessing (resize + centre crop), no augmentation (only the ``intra`` loss makes views).
- Fixed temperature T: the logit scale is set to 1/T and frozen. ``temperature=None`` keeps the model's learnable
  scale (clamped at 100, as in CLIP and :mod:`crossgap_lib.train`); the ``soft`` row of ``profiles.yml`` uses it.
- fp16 autocast with a gradient scaler on CUDA (``precision="bf16"``: bf16 autocast, no scaler); fp32 elsewhere.
- ``soft`` loss: the library's teachers (EfficientNet-Lite0, all-MiniLM-L6-v2) on the training device; COCO images
  reach the image teacher at 224 px (shorter side, centre crop), EfficientNet-Lite0's training resolution.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps

from . import pipeline
from .cache import (
    CACHE_ENV,
    atomic_save,
    cache_key,
    check_writable,
    computed_once,
    default_cache_root,
    encode_distinct,
    module_fingerprint,
    safe_load,
)
from .models import LoadedClip
from .train import (
    LOSSES,
    ProjectionHead,
    TrainResult,
    _barrier,
    _build_loss,
    _distributed,
    _is_int,
    _is_number,
    _lr_at,
    _param_groups,
    _step_generator,
    _Trainee,
    adamw,
    augment_views,
    from_literals,
)

__all__ = ["CaptionedImages", "FinetuneConfig", "FinetuneResult", "caption_images", "finetune_clip",
           "finetune_from_spec", "missing_caption_images", "normalise_spec", "spec_key"]

FINETUNE_CODE_VERSION = 2  # bump when a change alters what a config fine-tunes to (invalidates cached runs)
PRECISIONS = ("fp16", "bf16", "fp32")
_NOT_IN_KEY = ("checkpoint_every", "num_workers", "progress")
_DATA_KEYS = ("dataset", "split", "captions_per_image")
# where the images of a Karpathy caption split live, under the dataset's folder, and where they are published
IMAGE_FOLDERS = {"coco": (("train2014", "val2014"), "https://cocodataset.org/#download (2014 Train and Val images)"),
                 "flickr30k": (("flickr30k-images",), "https://shannon.cs.illinois.edu/DenotationGraph/")}


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on besides the base model and the data; plain literals only."""

    temperature: float | None = None  # fixed T (logit scale 1/T, frozen); None: keep the model's learnable scale
    loss: str = "clip"  # clip | soft | intra (crossgap_lib.train's losses)
    steps: int = 4425  # 5 epochs of COCO's Karpathy train split at batch 128
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    precision: str = "fp16"  # on CUDA: fp16 (autocast + GradScaler) | bf16 | fp32; other devices train in fp32
    soft_target_temperature: float = 0.05
    soft_hard_weight: float = 0.0
    soft_teachers: str = "both"  # both | image | text (crossgap_lib.losses.soft_targets)
    text_teacher: str | None = None  # None: all-MiniLM-L6-v2 (bundled); else a local sentence-transformers folder
    image_teacher: str | None = None  # None: EfficientNet-Lite0 (bundled); else a timm model name
    intra_weight: float = 1.0
    intra_temperature: float = 0.1
    projection_dim: int = 256  # SLIP's SimCLR embedding width
    checkpoint_every: int = 500
    num_workers: int = 0  # DataLoader workers decoding images
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.temperature is not None and not (_is_number(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be None (learnable) or a positive float, got {self.temperature!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "projection_dim"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("warmup", "seed", "num_workers"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "soft_target_temperature", "intra_temperature"):
            if not (_is_number(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be positive (a finite float), got {getattr(self, name)!r}")
        for name in ("weight_decay", "soft_hard_weight", "intra_weight"):
            if not (_is_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be >= 0 (a finite float), got {getattr(self, name)!r}")
        for name in ("text_teacher", "image_teacher"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be None or a str, got {getattr(self, name)!r}")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True or False, got {self.progress!r}")
        from .losses import _check_teachers

        _check_teachers(self.soft_teachers)

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the run (the name :func:`crossgap_lib.train._lr_at` reads)."""
        return self.steps

    def key(self) -> str:
        """Cache key of the config: every field except those that do not change the weights."""
        parts = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_KEY}
        return cache_key(kind="finetune", version=FINETUNE_CODE_VERSION, **parts)

    def effective_precision(self, device: torch.device | str) -> str:
        """The precision a run on ``device`` uses: ``precision`` on CUDA, fp32 elsewhere."""
        return self.precision if torch.device(device).type == "cuda" else "fp32"

    @classmethod
    def from_dict(cls, values: dict) -> FinetuneConfig:
        """Build from a dict of literals; unknown keys are an error."""
        return from_literals(cls, values)


@dataclass
class FinetuneResult(TrainResult):
    """A finished fine-tuning run: :class:`crossgap_lib.train.TrainResult`'s record plus the fine-tuned model."""

    clip: LoadedClip | None = None

    def load(self, device: str = "cpu") -> LoadedClip:
        """The fine-tuned model (already loaded; ``device`` is the one it was tuned on)."""
        return self.clip

    def info(self) -> dict:
        """Training curves and time, the ``training`` entry of an evidence."""
        return {"losses": self.losses, "logit_scales": self.logit_scales, "train_seconds": self.train_seconds,
                "steps": self.steps}


# ---------------------------------------------------------------------------------------------------- data
class _DecodedImages:
    """``CaptionedImages.images``: slices decode to uint8 (n, 3, S, S) (shorter side to S, centre crop), in threads."""

    def __init__(self, dataset: CaptionedImages, size: int):
        self.dataset, self.size = dataset, size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.dataset), 3, self.size, self.size)

    def _decode(self, index: int) -> torch.Tensor:
        path = self.dataset.root / self.dataset.relative_paths[index]
        with Image.open(path) as image:
            image.draft("RGB", (self.size, self.size))  # JPEG: decode at the smallest scale still >= size
            fitted = ImageOps.fit(image.convert("RGB"), (self.size, self.size), Image.BICUBIC)
        return torch.from_numpy(np.array(fitted, dtype=np.uint8)).permute(2, 0, 1)

    def __getitem__(self, index: slice) -> torch.Tensor:
        from concurrent.futures import ThreadPoolExecutor

        if not isinstance(index, slice):
            raise ValueError(f"CaptionedImages.images supports slices only, got {type(index).__name__}")
        rows = range(*index.indices(len(self.dataset)))
        if not rows:
            return torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes outside the GIL
            return torch.stack(list(pool.map(self._decode, rows)))


class CaptionedImages(torch.utils.data.Dataset):
    """Images of a caption split with their captions: ``[i] -> (PIL RGB image, i)``; ``.captions`` (N lists of
    ``captions_per_image``), ``.paths``, ``.fingerprint()``; ``.images[a:b]`` decodes to uint8 (for the image teacher).
    """

    def __init__(self, name: str, split: str, root: Path, relative_paths: list[str], captions: list[list[str]],
                 source_fingerprint: str, teacher_image_size: int = 224):
        if len(relative_paths) != len(captions):
            raise ValueError(f"{len(relative_paths)} image paths but {len(captions)} caption lists")
        self.name, self.split, self.root, self.captions = name, split, Path(root), captions
        self.relative_paths = [str(p) for p in relative_paths]
        self.source_fingerprint, self.teacher_image_size = source_fingerprint, teacher_image_size

    @property
    def paths(self) -> list[Path]:
        """Absolute image paths, aligned with ``captions``."""
        return [self.root / p for p in self.relative_paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        from .datasets import CorruptImageError

        path = self.root / self.relative_paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB"), index
        except (OSError, SyntaxError, ValueError) as error:
            raise CorruptImageError(f"{self.name} split {self.split!r}: cannot read image #{index} {path} ({error}); "
                                    "replace the file") from error

    @property
    def images(self) -> _DecodedImages:
        """Lazily decoded uint8 images (N, 3, S, S), S = ``teacher_image_size``; slice it."""
        return _DecodedImages(self, self.teacher_image_size)

    def fingerprint(self) -> str:
        """Hash of the caption split, each image's path, size and modification time, and the teacher image size."""
        h = hashlib.sha256(f"{self.source_fingerprint}\t{self.teacher_image_size}".encode())
        for relative, captions in zip(self.relative_paths, self.captions):
            try:
                st = os.stat(self.root / relative)
                h.update(f"{relative}\t{st.st_size}\t{st.st_mtime_ns}\t{len(captions)}\n".encode())
            except OSError:
                h.update(f"{relative}\tmissing\n".encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"CaptionedImages({self.name!r}, split={self.split!r}, n={len(self)})"


def _karpathy_paths(texts: Any, image_ids: list[int]) -> list[str]:
    """Each image's file relative to the dataset folder, from ``filepath`` / ``filename`` of the Karpathy json."""
    from .datasets.base import bad_format, read_json

    path = texts.root / texts.spec.options["file"]
    default = {"flickr30k": "flickr30k-images"}.get(texts.name, "")  # Flickr30k entries have no filepath
    try:
        files = {int(entry["imgid"]): Path(entry.get("filepath", default)) / entry["filename"]
                 for entry in read_json(texts.spec, path)["images"]}
        return [str(files[i]) for i in image_ids]
    except (KeyError, TypeError, ValueError) as err:
        raise bad_format(texts.spec, path, f"an image entry lacks {err} (fine-tuning needs 'imgid' and 'filename', "
                                           "and 'filepath' for COCO)") from err


def _image_hint(name: str, folder: Path | str) -> str:
    folders, url = IMAGE_FOLDERS.get(name, ((), "the dataset's publisher"))
    where = " and ".join(f"{folder}/{f}/" for f in folders) or str(folder)
    return f"fine-tuning needs the images too: put them in {where} (published at {url})"


def caption_images(name: str = "coco", root: str | os.PathLike | None = None, split: str = "train",
                   captions_per_image: int = 5, teacher_image_size: int = 224) -> CaptionedImages:
    """A Karpathy caption split of :func:`crossgap_lib.datasets.load_dataset` (``coco`` or ``flickr30k``; ``train``
    includes ``restval``) with its images: N images, the first ``captions_per_image`` captions of each."""
    from .datasets import DatasetNotFoundError, load_dataset
    from .datasets.text import KarpathyCaptions

    texts = load_dataset(name, root=root, split=split)
    if not isinstance(texts, KarpathyCaptions):
        raise ValueError(f"dataset {name!r}: fine-tuning reads Karpathy caption splits with images "
                         f"({sorted(IMAGE_FOLDERS)}); got {type(texts).__name__}")
    if not _is_int(captions_per_image) or captions_per_image < 1:
        raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
    grouped: dict[int, list[str]] = {}
    for text, label in zip(texts.texts, texts.labels.tolist()):
        grouped.setdefault(int(label), []).append(text)
    short = [i for i, captions in grouped.items() if len(captions) < captions_per_image]
    if short:
        raise ValueError(f"{name} split {split!r}: {len(short)} images have fewer than {captions_per_image} captions "
                         f"(e.g. imgid {short[0]}); pass a smaller captions_per_image")
    image_ids = list(grouped)
    relative = _karpathy_paths(texts, image_ids)
    missing = [p for p in relative if not (texts.root / p).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{texts.spec.title} split {split!r}: {len(missing)} of {len(relative)} images are "
                                   f"missing, e.g. {texts.root / missing[0]}; {_image_hint(texts.name, texts.root)}")
    captions = [grouped[i][:captions_per_image] for i in image_ids]
    return CaptionedImages(texts.name, split, texts.root, relative, captions, texts.fingerprint(), teacher_image_size)


def missing_caption_images(name: str, root: str | os.PathLike | None = None) -> str | None:
    """What is missing to fine-tune on caption set ``name`` (json or image folders), or None; reads no file."""
    from .datasets import _spec
    from .datasets.base import locate

    spec = _spec(name)
    if spec.name not in IMAGE_FOLDERS:
        return f"{name!r} is not a caption set with images; expected one of {sorted(IMAGE_FOLDERS)}"
    try:
        folder = locate(spec, root)
    except FileNotFoundError as err:
        return f"{str(err).splitlines()[0].rstrip('.')}; {_image_hint(spec.name, f'<data root>/{spec.folder}')}"
    absent = [f for f in IMAGE_FOLDERS[spec.name][0] if not (folder / f).is_dir() or not any((folder / f).iterdir())]
    if absent:
        return f"{spec.title}: image folder(s) {', '.join(absent)} missing or empty under {folder}; " \
               + _image_hint(spec.name, folder)
    return None


def _captions_of(dataset: Any, config: FinetuneConfig) -> list[list[str]]:
    """The dataset's captions (one non-empty list of strings per image), checked against its length."""
    captions = getattr(dataset, "captions", None)
    try:
        n = len(dataset)
    except TypeError as err:
        raise ValueError(f"dataset must be a sized dataset of images, got {type(dataset).__name__}") from err
    if captions is None or len(captions) != n:
        raise ValueError(f"dataset must have .captions with one list of captions per image ({n} images), e.g. "
                         "make_shapes(...) or finetune.caption_images('coco'); got "
                         + ("none" if captions is None else f"{len(captions)} lists"))
    bad = next((i for i, c in enumerate(captions) if isinstance(c, str) or not c or
                not all(isinstance(t, str) for t in c)), None)
    if bad is not None:
        raise ValueError(f"dataset.captions[{bad}] must be a non-empty list of str, got {captions[bad]!r}")
    if config.batch_size > n:
        raise ValueError(f"batch_size ({config.batch_size}) must not exceed the dataset's {n} images")
    if config.loss == "soft" and not hasattr(dataset, "images"):
        raise ValueError("the soft loss needs dataset.images (uint8 (N, 3, H, W), sliceable) for the image teacher: "
                         "use make_shapes(...) or finetune.caption_images(...)")
    return [list(c) for c in captions]


def _sample_generator(seed: int, step: int, position: int) -> torch.Generator:
    """Generator of one image's augmentation at one step (independent of how the batch is split over ranks)."""
    return torch.Generator().manual_seed((((seed * 1_000_003 + step) * 16 + 3) * 65_536 + position) % 2**63)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``step`` -> this rank's share of that step's batch: images, caption tokens, their global indices, views."""

    def __init__(self, dataset: Any, captions: list[list[str]], clip: LoadedClip, config: FinetuneConfig,
                 local: slice):
        self.inputs = pipeline._ModelInputs(dataset, clip.preprocess, pipeline._image_size(clip))
        self.flat = [c for per_image in captions for c in per_image]
        counts = torch.tensor([len(c) for c in captions])
        self.offsets, self.counts = torch.cumsum(counts, 0) - counts, counts
        self.tokenizer, self.config, self.local = clip.tokenizer, config, local
        self.per_epoch = len(captions) // config.batch_size
        cfg = clip.model.visual.preprocess_cfg
        self.mean, self.std = tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3))
        self._epoch, self._permutation = -1, None
        self._tokens: dict[str, torch.Tensor] = {}  # each distinct caption tokenized once
        self.raw = self._raw_images(dataset, clip)

    def _raw_images(self, dataset: Any, clip: LoadedClip) -> torch.Tensor | None:
        """The dataset's uint8 image tensor (N, 3, H, W) when batches can be made from it in one vectorised step
        (scale + normalise) that gives what ``clip.preprocess`` gives item by item (checked on two items), else None."""
        from .datasets.shapes import to_model_input

        images = getattr(dataset, "images", None)
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
                and images.shape[1] == 3 and len(images) == len(self.counts) >= 2
                and tuple(images.shape[-2:]) == self.inputs.image_size):
            return None
        expected = torch.stack([self.inputs[0], self.inputs[1]])
        fast = to_model_input(images[:2], self.mean, self.std)
        return images if torch.allclose(fast, expected, atol=1e-5) else None

    def __len__(self) -> int:
        return self.config.steps

    def indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global image indices (B,) and caption indices into the flat captions (B,) of one step."""
        seed, batch = self.config.seed, self.config.batch_size
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._permutation = torch.randperm(len(self.counts), generator=_step_generator(seed, epoch, 0))
            self._epoch = epoch
        index = self._permutation[position * batch:(position + 1) * batch]
        pick = torch.rand(len(index), generator=_step_generator(seed, step, 1))
        return index, self.offsets[index] + (pick * self.counts[index]).long()

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        index, caption_index = self.indices(step)
        positions = range(len(index))[self.local]
        index, caption_index = index[self.local], caption_index[self.local]
        if self.raw is not None:
            from .datasets.shapes import to_model_input

            images = to_model_input(self.raw[index], self.mean, self.std)
        else:
            images = torch.stack([self.inputs[int(i)] for i in index])
        batch = {"index": index, "caption_index": caption_index, "images": images,
                 "tokens": encode_distinct([self.flat[int(c)] for c in caption_index], self.tokenizer, self._tokens)}
        if self.config.loss == "intra":
            batch["views"] = self._views(images, step, positions)
        return batch

    def _views(self, images: torch.Tensor, step: int, positions: range) -> torch.Tensor:
        """Two augmented views (2 * b, 3, H, W) of preprocessed images (b, 3, H, W), by ``train.augment_views``."""
        from .datasets.shapes import to_model_input

        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (self.mean, self.std))
        raw = ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
        views = []
        for k in range(2):
            views.append(torch.cat([augment_views(raw[j:j + 1], _sample_generator(self.config.seed, step, 2 * p + k))
                                    for j, p in enumerate(positions)]))
        return to_model_input(torch.cat(views), self.mean, self.std)


# ---------------------------------------------------------------------------------------------------- training
def run_key(clip: LoadedClip, dataset: Any, config: FinetuneConfig, precision: str) -> str:
    """Cache key of a run: base model name and weights, dataset fingerprint, config and the precision used."""
    return cache_key(kind="finetune_run", version=FINETUNE_CODE_VERSION, model=clip.name,
                     weights=pipeline.weights_fingerprint(clip.model), dataset=pipeline.dataset_fingerprint(dataset),
                     config=config.key(), precision=precision)


def _finetuned_clip(base: LoadedClip, model: nn.Module, path: Path) -> LoadedClip:
    model.eval()
    return LoadedClip(model=model, preprocess=base.preprocess, tokenizer=base.tokenizer, name=base.name,
                      pretrained=f"{base.pretrained}+finetune:{path.parent.name}", device=base.device,
                      precision=base.precision, weights_path=str(path))


def _result(base: LoadedClip, model: nn.Module, saved: dict, path: Path, from_cache: bool) -> FinetuneResult:
    return FinetuneResult(clip=_finetuned_clip(base, model, path), checkpoint_path=str(path), run_dir=str(path.parent),
                          config=saved["config"], losses=saved["losses"].tolist(),
                          logit_scales=saved["logit_scales"].tolist(), steps=len(saved["losses"]),
                          train_seconds=float(saved["train_seconds"]), from_cache=from_cache)


def _cached(base: LoadedClip, path: Path) -> FinetuneResult | None:
    saved = safe_load(path) if path.exists() else None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        return None
    model = copy.deepcopy(base.model)
    model.load_state_dict(saved["state_dict"])
    return _result(base, model, saved, path, from_cache=True)


class _Run:
    """One fine-tuning run's trainable state: model (+ head), optimiser, grad scaler, curves; saves and resumes."""

    def __init__(self, base: LoadedClip, config: FinetuneConfig, precision: str, folder: Path, rank: int,
                 world_size: int):
        self.config, self.precision, self.folder, self.rank = config, precision, folder, rank
        self.device = pipeline._device(base)
        model = copy.deepcopy(base.model).train()
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise ValueError("the base model must have fp32 weights (load_clip(..., precision='fp32'), the default); "
                             "fine-tuning keeps fp32 weights and autocasts to config.precision")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name != "logit_bias")  # SigLIP's bias: unused by these losses
        if config.temperature is not None:
            model.logit_scale.data.fill_(math.log(1.0 / config.temperature))
            model.logit_scale.requires_grad_(False)
        torch.manual_seed(config.seed)
        head = ProjectionHead(pipeline._embed_dim(base), config.projection_dim) if config.loss == "intra" else None
        self.trainee = _Trainee(model, head).to(self.device)
        self.optimizer = adamw(_param_groups(self.trainee, config.weight_decay), lr=config.lr, device=self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.step, self.losses, self.logit_scales, self.elapsed = 0, [], [], 0.0
        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        self.model = nn.parallel.DistributedDataParallel(self.trainee, device_ids=device_ids) if world_size > 1 \
            else self.trainee
        self.loss_fn = _build_loss(config, rank, world_size)
        self.world_size = world_size

    @property
    def state_path(self) -> Path:
        return self.folder / "state.pt"

    def resume(self) -> None:
        """Load ``state.pt`` if a previous run left one."""
        state = safe_load(self.state_path) if self.state_path.exists() else None
        if state is None:
            return
        self.trainee.load_state_dict(state["trainee"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.step, self.elapsed = int(state["step"]), float(state["train_seconds"])
        self.losses, self.logit_scales = state["losses"].tolist(), state["logit_scales"].tolist()

    def save_state(self, seconds: float) -> None:
        """Atomically write the resumable state (rank 0), then wait for every rank."""
        if self.rank == 0:
            atomic_save({"step": self.step, "trainee": self.trainee.state_dict(),
                         "optimizer": self.optimizer.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                         "rng": torch.get_rng_state(), "losses": torch.tensor(self.losses, dtype=torch.float64),
                         "logit_scales": torch.tensor(self.logit_scales, dtype=torch.float64),
                         "train_seconds": seconds, "config": asdict(self.config)}, self.state_path)
        _barrier(self.world_size)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)

    def train_step(self, batch: dict, teacher: tuple | None) -> float:
        """One optimiser step on a batch from :class:`_StepBatches`; returns the global batch loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(self.step, self.config)
        wanted = ("tokens", "views") if "views" in batch else ("images", "tokens")  # intra: CLIP sees the first view
        move = {k: batch[k].to(self.device, non_blocking=True) for k in wanted}       # (as in crossgap_lib.train)
        with self._autocast():
            out = self.model(move.get("images"), move["tokens"], move.get("views"))
        out = {k: v.float() for k, v in out.items()}
        if self.config.loss == "clip":
            loss = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        elif self.config.loss == "soft":
            loss = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                                teacher[0][batch["index"]].to(self.device),
                                teacher[1][batch["caption_index"]].to(self.device))
        else:
            view_a, view_b = out["view_projections"].chunk(2)
            loss = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"], view_a, view_b)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        logit_scale = self.trainee.clip.logit_scale
        if self.config.temperature is None:
            with torch.no_grad():
                logit_scale.clamp_(0, math.log(100))
        self.step += 1
        self.losses.append(float(loss.detach()))
        self.logit_scales.append(float(logit_scale.detach().exp()))
        return self.losses[-1]

    def finish(self, base: LoadedClip, seconds: float, extra: dict) -> FinetuneResult:
        """Write ``model.pt`` (rank 0), drop ``state.pt``; every rank returns the fine-tuned model."""
        fingerprints = [module_fingerprint(self.trainee)]
        if self.world_size > 1:
            fingerprints = [None] * self.world_size
            torch.distributed.all_gather_object(fingerprints, module_fingerprint(self.trainee))
        clip = self.trainee.clip
        saved = {"state_dict": {k: v.detach().cpu() for k, v in clip.state_dict().items()}, "model_name": base.name,
                 "config": asdict(self.config), "precision": self.precision,
                 "projection_head": self.trainee.head.state_dict() if self.trainee.head is not None else {},
                 "losses": torch.tensor(self.losses, dtype=torch.float64),
                 "logit_scales": torch.tensor(self.logit_scales, dtype=torch.float64), "train_seconds": seconds,
                 "world_size": self.world_size, "rank_fingerprints": fingerprints, **extra}
        path = self.folder / "model.pt"
        if self.rank == 0:
            atomic_save(saved, path)
            self.state_path.unlink(missing_ok=True)
        _barrier(self.world_size)
        return _result(base, clip, saved, path, from_cache=False)


def _teacher_embeddings(dataset: Any, config: FinetuneConfig, root: Path, device: torch.device, rank: int,
                        world_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher embeddings of every image (N, Di) and caption (N * n_captions, Dt); rank 0 computes, others load."""
    from .teachers import ImageTeacher, TextTeacher, teacher_embeddings

    where = "cuda" if device.type == "cuda" else "cpu"
    result = None
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            result = teacher_embeddings(dataset, image_teacher=ImageTeacher(config.image_teacher, device=where),
                                        text_teacher=TextTeacher(config.text_teacher, device=where),
                                        cache_dir=root, progress=progress and rank == 0)
        _barrier(world_size)
    image, text = result
    return image, text.flatten(0, 1)


def finetune_clip(clip: LoadedClip, dataset: Any, config: FinetuneConfig | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                  callback: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune (or load the cached fine-tuning of) ``clip`` on a captioned ``dataset``; ``clip`` is left untouched.

    ``callback(step, loss)`` runs after every optimiser step (an exception raised there interrupts the run, which
    resumes from the last saved state on the next call). Training runs on ``clip``'s device.
    """
    config = FinetuneConfig() if config is None else config
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    if not isinstance(clip, LoadedClip):
        raise ValueError(f"clip must be a crossgap_lib.models.LoadedClip (load_clip(...)), got {type(clip).__name__}")
    progress = config.progress if progress is None else progress
    captions = _captions_of(dataset, config)
    precision = config.effective_precision(pipeline._device(clip))
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = root / "finetune" / run_key(clip, dataset, config, precision)
    cached = _cached(clip, folder / "model.pt")
    if cached is not None:
        return cached
    check_writable(folder, what="fine-tuning run folder",
                   hint=f"Pass another cache_dir=... or set the {CACHE_ENV} environment variable to a writable folder.")
    return computed_once(folder, lambda: _cached(clip, folder / "model.pt"), lambda: _finetune(
        clip, dataset, captions, config, precision, root, folder, progress, callback))


def _finetune(clip: LoadedClip, dataset: Any, captions: list[list[str]], config: FinetuneConfig, precision: str,
              root: Path, folder: Path, progress: bool, callback: Callable[[int, float], None] | None
              ) -> FinetuneResult:
    """The fine-tuning loop of :func:`finetune_clip` (resumes from ``folder/state.pt``; writes ``folder/model.pt``)."""
    from tqdm.auto import tqdm

    from .progress import report_progress, time_left

    rank, world_size = _distributed()
    if config.batch_size % world_size:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the world size ({world_size})")
    run = _Run(clip, config, precision, folder, rank, world_size)
    teacher = None
    if config.loss == "soft":
        teacher = _teacher_embeddings(dataset, config, root, run.device, rank, world_size, progress)
    run.resume()
    local = slice(rank * config.batch_size // world_size, (rank + 1) * config.batch_size // world_size)
    batches = _StepBatches(dataset, captions, clip, config, local)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(run.step, config.steps),
                                         num_workers=config.num_workers, pin_memory=run.device.type == "cuda")
    label = f"finetune {clip.name} {config.loss} T={config.temperature or 'learn'}"
    bar = tqdm(total=config.steps, initial=run.step, desc=label, disable=not progress or rank != 0)
    started, first = time.perf_counter() - run.elapsed, run.step
    for batch in loader:
        loss = run.train_step(batch, teacher)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", scale=f"{run.logit_scales[-1]:.1f}", refresh=False)
        if run.step % config.checkpoint_every == 0 and run.step < config.steps:
            run.save_state(time.perf_counter() - started)
            report_progress(f"{label}: step {run.step}/{config.steps}, "
                            f"{time_left(started + run.elapsed, run.step - first, config.steps - first)}")
        if callback is not None:
            callback(run.step, loss)
    bar.close()
    return run.finish(clip, time.perf_counter() - started,
                      {"base": {"name": clip.name, "pretrained": str(clip.pretrained),
                                "weights": pipeline.weights_fingerprint(clip.model)},
                       "dataset": pipeline.dataset_fingerprint(dataset)})


# ---------------------------------------------------------------------------------------------------- model rows
def normalise_spec(spec: Any, temperature: float | None = None, label: str = "model") -> dict:
    """A model row's ``finetune:`` dict, checked and completed: data keys plus every :class:`FinetuneConfig` field.

    ``temperature`` is the row's own ``temperature`` (the same as ``finetune.temperature``; both given: must agree).
    """
    if not isinstance(spec, dict):
        raise ValueError(f"model {label!r}: 'finetune' must be a dict with 'dataset' and FinetuneConfig fields, got "
                         f"{spec!r}")
    if "dataset" not in spec:
        raise ValueError(f"model {label!r}: 'finetune' needs a 'dataset' (a caption set with images: "
                         f"{sorted(IMAGE_FOLDERS)})")
    from .datasets import _spec

    data = {"dataset": _spec(spec["dataset"]).name, "split": spec.get("split", "train"),
            "captions_per_image": spec.get("captions_per_image", 5)}
    if not _is_int(data["captions_per_image"]) or data["captions_per_image"] < 1:
        raise ValueError(f"model {label!r}: finetune.captions_per_image must be a positive int, got "
                         f"{data['captions_per_image']!r}")
    if data["dataset"] not in IMAGE_FOLDERS:
        raise ValueError(f"model {label!r}: finetune dataset {spec['dataset']!r} has no images to fine-tune on; "
                         f"expected one of {sorted(IMAGE_FOLDERS)}")
    values = {k: v for k, v in spec.items() if k not in _DATA_KEYS}
    given = values.get("temperature")
    if temperature is not None and given is not None and not math.isclose(float(given), float(temperature)):
        raise ValueError(f"model {label!r}: temperature {temperature} and finetune.temperature {given} disagree; give "
                         "one of them")
    if given is None and temperature is not None:
        values["temperature"] = float(temperature)
    try:
        config = FinetuneConfig.from_dict(values)
    except ValueError as err:
        raise ValueError(f"model {label!r}: finetune: {err}") from err
    return {**data, **asdict(config)}


def spec_key(spec: dict) -> str:
    """Cache-key part of a normalised ``finetune:`` dict: the data and :meth:`FinetuneConfig.key` (not bookkeeping)."""
    config = FinetuneConfig.from_dict({k: v for k, v in spec.items() if k not in _DATA_KEYS})
    return cache_key(data={k: spec[k] for k in _DATA_KEYS}, config=config.key())


def finetune_from_spec(base: LoadedClip, spec: dict, data_root: str | os.PathLike | None = None,
                       cache_dir: str | os.PathLike | None = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune ``base`` as a model row's normalised ``finetune:`` dict says (the paper and dry-run sources)."""
    data = caption_images(spec["dataset"], root=data_root, split=spec["split"],
                          captions_per_image=spec["captions_per_image"])
    config = FinetuneConfig.from_dict({**{k: v for k, v in spec.items() if k not in _DATA_KEYS}, "progress": progress})
    return finetune_clip(base, data, config, cache_dir=cache_dir)
