"""Training tiny CLIPs on the built-in shapes data: contrastive (``clip``), soft-target (``soft``) or with an
intra-modal SimCLR term (``intra``); fixed or learnable temperature; deterministic, resumable, DDP-ready.

A run lives in ``<out_dir>/train/<key>/`` where ``key`` hashes the config: ``state.pt`` holds the resumable state
(written atomically every ``checkpoint_every`` steps) and ``model.pt`` the finished model, which
``load_clip(config.model, pretrained=path)`` loads. Every random draw of step ``s`` (batch order, caption choice,
augmentations) comes from a generator seeded by ``(seed, s)``, so a resumed run retraces an uninterrupted one and a
``torchrun`` run with the same global batch sees the same samples as a single process.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from crossgap_lib.cache import (
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

TRAIN_CODE_VERSION = 3  # bump when a change alters what a config trains to (invalidates cached runs)
LOSSES = ("clip", "soft", "intra")
_NOT_IN_KEY = ("progress", "out_dir", "num_threads", "checkpoint_every")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Everything a training run depends on; plain literals only (the run folder is keyed by them)."""

    model: str = "crossgap-small"
    n_train: int = 8192
    data: dict = field(default_factory=dict)  # ShapesConfig overrides, e.g. {"nuisance_caption_rate": 0.5}
    data_seed: int = 0
    epochs: int = 16  # 1024 steps of 128: past the colour-only loss plateau (log 32) that ends near step 500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 50  # steps of linear warm-up before the cosine decay
    loss: str = "clip"  # clip | soft | intra
    temperature: float | None = None  # None: learnable (init 0.07, logit scale clamped at 100); else fixed
    soft_target_temperature: float = 0.05
    soft_hard_weight: float = 0.0
    soft_teachers: str = "both"  # both | image | text: whose similarities make the soft targets
    text_teacher: str | None = None  # None: all-MiniLM-L6-v2 (bundled); else a local sentence-transformers folder
    image_teacher: str | None = None  # None: EfficientNet-Lite0 (bundled); else a timm model name
    intra_weight: float = 1.0
    intra_temperature: float = 0.1
    projection_dim: int = 64
    seed: int = 0
    num_threads: int = 2
    out_dir: str | None = None
    checkpoint_every: int = 50
    compact_vocabulary: bool = True  # train only the token-embedding rows the captions use (same result, faster)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.temperature is not None and not (_is_number(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be None (learnable) or a positive float, got {self.temperature!r}")
        for name in ("n_train", "epochs", "batch_size", "num_threads", "checkpoint_every", "projection_dim"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("warmup", "seed", "data_seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be >= 0 (an int), got {value!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed n_train ({self.n_train})")
        for name in ("lr", "soft_target_temperature", "intra_temperature"):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                raise ValueError(f"{name} must be positive (a finite float), got {value!r}")
        for name in ("weight_decay", "soft_hard_weight", "intra_weight"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 (a finite float), got {value!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty str (an open_clip config name), got {self.model!r}")
        for name in ("text_teacher", "image_teacher", "out_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"{name} must be None or a str, got {value!r}")
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)  # a literal, so the config stays JSON-like
        from crossgap_lib.losses import _check_teachers

        _check_teachers(self.soft_teachers)
        for name in ("compact_vocabulary", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.data, dict):
            raise ValueError(f"data must be a dict of ShapesConfig overrides, got {type(self.data).__name__}")
        from crossgap_lib.datasets.shapes import ShapesConfig

        known = {f.name for f in fields(ShapesConfig)}
        unknown = sorted(set(self.data) - known, key=str)
        if unknown:
            raise ValueError(f"data has unknown ShapesConfig field(s) {unknown}; expected some of {sorted(known)}")
        try:
            ShapesConfig(**self.data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"data: invalid ShapesConfig override ({err})") from err

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def key(self) -> str:
        """Cache key of the run: the config without the fields that do not change the trained weights."""
        parts = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_KEY}
        return cache_key(kind="train", version=TRAIN_CODE_VERSION, **parts)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict of literals; unknown keys are an error."""
        return from_literals(cls, values)


def from_literals(cls, values: dict):
    """A config dataclass from a dict of literals, naming unknown keys (TrainConfig, FinetuneConfig)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected some of {sorted(known)}")
    return cls(**values)


@dataclass
class TrainResult:
    """A finished run: where its model is and how training went."""

    checkpoint_path: str
    run_dir: str
    config: dict
    losses: list[float]  # one per step (global batch loss)
    logit_scales: list[float]  # exp(logit_scale) after each step
    steps: int
    train_seconds: float
    from_cache: bool

    @property
    def temperature(self) -> float:
        """Final temperature 1 / logit_scale."""
        return 1.0 / self.logit_scales[-1]

    def load(self, device: str = "cpu"):
        """The trained model as a :class:`crossgap_lib.models.LoadedClip`."""
        from crossgap_lib.models import load_clip

        return load_clip(self.config["model"], pretrained=self.checkpoint_path, device=device)


# ----------------------------------------------------------------------------------------------- augmentations
def augment_views(
    images: torch.Tensor,
    generator: torch.Generator,
    crop_scale: tuple[float, float] = (0.35, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    jitter: float = 0.4,
) -> torch.Tensor:
    """Random resized crop + horizontal flip + colour jitter, vectorised: uint8 (B,3,H,W) -> uint8 (B,3,H,W)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (B,3,H,W), got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    area = uniform(*crop_scale)
    ratio = torch.exp(uniform(math.log(crop_ratio[0]), math.log(crop_ratio[1])))
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a fraction of the image side
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    center_x = uniform(-1.0, 1.0) * (1 - width)
    center_y = uniform(-1.0, 1.0) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, center_x
    theta[:, 1, 1], theta[:, 1, 2] = height, center_y
    x = images.float() / 255
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    brightness, contrast, saturation = (uniform(1 - jitter, 1 + jitter, 1, 1, 1) for _ in range(3))
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (x - gray) * saturation + gray
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------------------------- model pieces
class ProjectionHead(nn.Module):
    """SimCLR projection MLP used by the ``intra`` loss: (B, embed_dim) -> (B, projection_dim)."""

    def __init__(self, embed_dim: int, projection_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, projection_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class _Trainee(nn.Module):
    """CLIP (+ projection head) behind one ``forward`` so DDP sees every parameter use."""

    def __init__(self, clip: nn.Module, head: nn.Module | None):
        super().__init__()
        self.clip, self.head = clip, head

    def forward(self, images: torch.Tensor | None, tokens: torch.Tensor, views: torch.Tensor | None = None) -> dict:
        """``images=None`` with ``views`` (2B, ...): the CLIP image of each pair is its first view (one image forward
        fewer per step than a separate clean image)."""
        view_features = self.clip.encode_image(views, normalize=True) if views is not None else None
        image_features = view_features[: views.shape[0] // 2] if images is None else \
            self.clip.encode_image(images, normalize=True)
        out = {
            "image_features": image_features,
            "text_features": self.clip.encode_text(tokens, normalize=True),
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if view_features is not None:
            out["view_projections"] = self.head(view_features)
        return out


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, embeddings' scales and the logit scale."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay (open_clip_train's ``cosine_lr`` formula) as a pure function of the step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(config.total_steps - config.warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * (step - config.warmup) / span)) * config.lr


def _step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 16 + stream)


# ----------------------------------------------------------------------------------------------- data
@dataclass
class _TrainingData:
    images: torch.Tensor  # uint8 (N,3,H,W)
    caption_tokens: torch.Tensor  # (total captions, context)
    caption_offsets: torch.Tensor  # (N,) index of each image's first caption
    caption_counts: torch.Tensor  # (N,)
    mean: tuple
    std: tuple
    teacher_image: torch.Tensor | None = None  # (N, Di)
    teacher_text: torch.Tensor | None = None  # (total captions, Dt)


def _model_image_size(model: nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def training_dataset(config: TrainConfig, image_size: int | None = None):
    """The shapes training split a config trains on (``config.data`` overrides ``ShapesConfig``)."""
    from crossgap_lib.datasets.shapes import ShapesConfig, make_shapes

    overrides = dict(config.data)
    if image_size is not None:
        overrides.setdefault("image_size", image_size)
    return make_shapes("train", n=config.n_train, config=ShapesConfig(**overrides), seed=config.data_seed)


def adamw(params: Any, lr: float, device: torch.device | str = "cpu") -> torch.optim.AdamW:
    """CLIP's AdamW (betas 0.9/0.98, eps 1e-6), fused where torch supports it on ``device`` (a tiny model's step
    spends a quarter of its time in the per-tensor optimiser otherwise; see benchmarks/bench_lab.py)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)


def _prepare_data(config: TrainConfig, clip: nn.Module, tokenizer: Callable, cache_dir: Path, progress: bool):
    dataset = training_dataset(config, image_size=_model_image_size(clip))
    captions = dataset.captions
    counts = torch.tensor([len(c) for c in captions], dtype=torch.long)
    if (counts < 1).any():
        raise ValueError("every training image needs at least one caption")
    flat_captions = [c for per_image in captions for c in per_image]
    data = _TrainingData(
        images=dataset.images,
        caption_tokens=encode_distinct(flat_captions, tokenizer),
        caption_offsets=torch.cumsum(counts, 0) - counts,
        caption_counts=counts,
        mean=tuple(clip.visual.image_mean or (0.48145466, 0.4578275, 0.40821073)),
        std=tuple(clip.visual.image_std or (0.26862954, 0.26130258, 0.27577711)),
    )
    if config.loss == "soft":
        from crossgap_lib.teachers import ImageTeacher, TextTeacher, teacher_embeddings

        if len(set(counts.tolist())) != 1:
            raise ValueError("the soft loss needs the same number of captions for every image")
        data.teacher_image, teacher_text = teacher_embeddings(
            dataset,
            image_teacher=ImageTeacher(config.image_teacher),
            text_teacher=TextTeacher(config.text_teacher),
            cache_dir=cache_dir,
            progress=progress,
        )
        data.teacher_text = teacher_text.flatten(0, 1)  # (N * n_captions, Dt), in the order of flat_captions
    return data


class _CompactVocabulary:
    """Swap the token embedding for the rows the training captions use, then write them back when training ends.

    AdamW leaves a row whose gradient is always zero untouched except for its decoupled weight decay, so training
    the used rows alone and scaling the others by prod_t (1 - lr_t * weight_decay) at the end gives the same model as
    training the full (49408-row) embedding, without updating millions of idle parameters every step. Token ids are
    remapped in sorted order, so open_clip's end-of-text pooling (argmax over ids) still finds the same position.
    """

    def __init__(self, clip: nn.Module, data: _TrainingData):
        import open_clip

        self.active = isinstance(clip, open_clip.CLIP) and getattr(clip, "text_pool_type", "argmax") == "argmax"
        if not self.active:
            return
        self.full = clip.token_embedding
        self.used_ids = torch.unique(data.caption_tokens)  # sorted
        lookup = torch.full((self.full.num_embeddings,), -1, dtype=torch.long)
        lookup[self.used_ids] = torch.arange(len(self.used_ids))
        data.caption_tokens = lookup[data.caption_tokens]
        compact = self.full.weight.detach()[self.used_ids].clone()
        clip.token_embedding = nn.Embedding.from_pretrained(compact, freeze=False)

    def restore(self, clip: nn.Module, config: TrainConfig) -> None:
        """Put the full embedding back: trained rows copied in, idle rows decayed as AdamW would have."""
        if not self.active:
            return
        decay = math.prod(1.0 - _lr_at(step, config) * config.weight_decay for step in range(config.total_steps))
        with torch.no_grad():
            self.full.weight.mul_(decay)
            self.full.weight[self.used_ids] = clip.token_embedding.weight
        clip.token_embedding = self.full


# ----------------------------------------------------------------------------------------------- distributed
def _distributed() -> tuple[int, int]:
    """(rank, world_size); initialises a gloo process group under torchrun if none exists."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


# ----------------------------------------------------------------------------------------------- training
def run_dir(config: TrainConfig) -> Path:
    """Folder of a config's run: ``<out_dir or cache root>/train/<key>``."""
    root = Path(config.out_dir) if config.out_dir is not None else default_cache_root()
    return root / "train" / config.key()


def _result_from_file(path: Path, from_cache: bool) -> TrainResult | None:
    saved = safe_load(path)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        return None
    return TrainResult(
        checkpoint_path=str(path),
        run_dir=str(path.parent),
        config=saved["config"],
        losses=saved["losses"].tolist(),
        logit_scales=saved["logit_scales"].tolist(),
        steps=len(saved["losses"]),
        train_seconds=float(saved["train_seconds"]),
        from_cache=from_cache,
    )


def _build_loss(config: TrainConfig, rank: int, world_size: int) -> nn.Module:
    dist_kwargs = dict(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
    if config.loss == "soft":
        from crossgap_lib.losses import SoftTargetClipLoss

        return SoftTargetClipLoss(
            target_temperature=config.soft_target_temperature, hard_weight=config.soft_hard_weight,
            teachers=getattr(config, "soft_teachers", "both"), **dist_kwargs
        )
    if config.loss == "intra":
        from crossgap_lib.losses import IntraModalClipLoss

        return IntraModalClipLoss(
            intra_weight=config.intra_weight, simclr_temperature=config.intra_temperature, **dist_kwargs
        )
    from open_clip import ClipLoss

    return ClipLoss(**dist_kwargs)


def train_clip(
    config: TrainConfig, callback: Callable[[int, float], None] | None = None, progress: bool | None = None
) -> TrainResult:
    """Train (or load the cached) tiny CLIP described by ``config``; returns where its checkpoint is.

    ``callback(step, loss)`` runs after every optimiser step (an exception raised there interrupts the run, which
    resumes from the last saved state on the next call).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    progress = config.progress if progress is None else progress
    folder = run_dir(config)
    final_path = folder / "model.pt"

    def cached() -> TrainResult | None:
        return _result_from_file(final_path, from_cache=True) if final_path.exists() else None

    result = cached()
    if result is not None:
        return result
    check_writable(  # before the first step: a failure at the first save would lose the whole run
        folder,
        what="training run folder",
        hint=f"Point it at a writable folder: TrainConfig(out_dir=...) (in the lab: LabConfig.cache_dir), or, with "
        f"out_dir=None, the {CACHE_ENV} environment variable.",
    )
    return computed_once(folder, cached, lambda: _train(config, folder, callback, progress))


def _train(config: TrainConfig, folder: Path, callback: Callable[[int, float], None] | None,
           progress: bool) -> TrainResult:
    """The training loop of :func:`train_clip` (resumes from ``folder/state.pt``; writes ``folder/model.pt``)."""
    import open_clip
    from tqdm.auto import tqdm

    from crossgap_lib.models import quiet_random_init

    final_path = folder / "model.pt"
    rank, world_size = _distributed()
    if config.batch_size % world_size:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the world size ({world_size})")
    if config.model not in open_clip.list_models():
        raise ValueError(f"model {config.model!r} is not a registered open_clip config; see open_clip.list_models()")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(min(config.num_threads, previous_threads))  # never more than the caller allows
    try:
        torch.manual_seed(config.seed)
        with quiet_random_init():
            clip = open_clip.create_model(config.model, pretrained=None, pretrained_text=False)
        tokenizer = open_clip.get_tokenizer(config.model)
        head = ProjectionHead(clip.text_projection.shape[1], config.projection_dim) if config.loss == "intra" else None
        if config.temperature is not None:
            clip.logit_scale.data.fill_(math.log(1.0 / config.temperature))
            clip.logit_scale.requires_grad_(False)
        data = _prepare_data(config, clip, tokenizer, folder.parent.parent, progress and rank == 0)
        vocabulary = _CompactVocabulary(clip, data) if config.compact_vocabulary else None
        trainee = _Trainee(clip, head)
        optimizer = adamw(_param_groups(trainee, config.weight_decay), lr=config.lr)

        start_step, losses, logit_scales, elapsed = 0, [], [], 0.0
        state_path = folder / "state.pt"
        state = safe_load(state_path) if state_path.exists() else None
        if state is not None:
            trainee.load_state_dict(state["trainee"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            start_step, elapsed = int(state["step"]), float(state["train_seconds"])
            losses, logit_scales = state["losses"].tolist(), state["logit_scales"].tolist()

        model = nn.parallel.DistributedDataParallel(trainee) if world_size > 1 else trainee
        loss_fn = _build_loss(config, rank, world_size)
        from crossgap_lib.datasets.shapes import to_model_input

        def save_state(step: int, seconds: float) -> None:
            if rank == 0:
                atomic_save(
                    {
                        "step": step,
                        "trainee": trainee.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": {"step": step, "lr": _lr_at(step, config), "kind": "cosine+warmup"},
                        "rng": torch.get_rng_state(),
                        "losses": torch.tensor(losses, dtype=torch.float64),
                        "logit_scales": torch.tensor(logit_scales, dtype=torch.float64),
                        "train_seconds": seconds,
                        "config": asdict(config),
                    },
                    state_path,
                )
            _barrier(world_size)

        local = slice(rank * config.batch_size // world_size, (rank + 1) * config.batch_size // world_size)
        permutation, permutation_epoch = None, -1
        start_time = time.perf_counter() - elapsed
        bar = tqdm(
            range(start_step, config.total_steps),
            desc=f"train {config.model} {config.loss} T={config.temperature or 'learn'} seed={config.seed}",
            disable=not progress or rank != 0,
            initial=start_step,
            total=config.total_steps,
        )
        trainee.train()
        for step in bar:
            epoch, position = divmod(step, config.steps_per_epoch)
            if epoch != permutation_epoch:
                permutation = torch.randperm(config.n_train, generator=_step_generator(config.seed, epoch, 0))
                permutation_epoch = epoch
            index = permutation[position * config.batch_size : (position + 1) * config.batch_size]
            pick = torch.rand(len(index), generator=_step_generator(config.seed, step, 1))
            caption_index = data.caption_offsets[index] + (pick * data.caption_counts[index]).long()
            views = None
            if config.loss == "intra":
                generator = _step_generator(config.seed, step, 2)
                both = torch.cat([augment_views(data.images[index], generator) for _ in range(2)])
                views = both.view(2, len(index), *both.shape[1:])[:, local].flatten(0, 1)
                views = to_model_input(views, data.mean, data.std)
            index, caption_index = index[local], caption_index[local]

            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, config)
            # the intra loss's CLIP image is the first augmented view (SLIP gives CLIP its own augmented crop)
            images = None if views is not None else to_model_input(data.images[index], data.mean, data.std)
            out = model(images, data.caption_tokens[caption_index], views)
            if config.loss == "clip":
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            elif config.loss == "soft":
                loss = loss_fn(
                    out["image_features"],
                    out["text_features"],
                    out["logit_scale"],
                    data.teacher_image[index],
                    data.teacher_text[caption_index],
                )
            else:
                view_a, view_b = out["view_projections"].chunk(2)
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"], view_a, view_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if config.temperature is None:
                with torch.no_grad():
                    clip.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            logit_scales.append(float(clip.logit_scale.detach().exp()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{logit_scales[-1]:.1f}", refresh=False)  # per mininterval
            done = step + 1
            if done % config.checkpoint_every == 0 and done < config.total_steps:
                save_state(done, time.perf_counter() - start_time)
            if callback is not None:
                callback(done, losses[-1])
        bar.close()

        if vocabulary is not None:
            vocabulary.restore(clip, config)
        seconds = time.perf_counter() - start_time
        fingerprints = [module_fingerprint(trainee)]
        if world_size > 1:  # every rank must end with the same weights; recorded so that it can be checked
            fingerprints = [None] * world_size
            dist.all_gather_object(fingerprints, module_fingerprint(trainee))
        if rank == 0:
            atomic_save(
                {
                    "state_dict": clip.state_dict(),
                    "model_name": config.model,
                    "config": asdict(config),
                    "projection_head": head.state_dict() if head is not None else {},
                    "losses": torch.tensor(losses, dtype=torch.float64),
                    "logit_scales": torch.tensor(logit_scales, dtype=torch.float64),
                    "train_seconds": seconds,
                    "world_size": world_size,
                    "rank_fingerprints": fingerprints,
                },
                final_path,
            )
            state_path.unlink(missing_ok=True)
        _barrier(world_size)
        result = _result_from_file(final_path, from_cache=False)
        assert result is not None, f"could not read back {final_path}"
        return result
    finally:
        torch.set_num_threads(previous_threads)
