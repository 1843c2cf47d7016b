"""Modality inversion: OTI (image -> text side) and OVI (text -> image side), and the optimisation loop they share.

OTI optimises R pseudo-token embeddings placed in a text template ("a photo of {}") so that the text encoder's output
matches an image feature; OVI optimises R visual pseudo tokens, spread over the ViT patch grid by nearest
interpolation, so that the image encoder's output matches a text feature (Mistretta et al., ICLR 2025, Sec. 3). Both
minimise 1 - cos with AdamW; :class:`InversionConfig` holds every hyper-parameter (the paper's defaults: lr 2e-2,
weight decay 0.01, 150 OTI steps, 1000 OVI steps, R = 1, and on CUDA fp16 autocast with a gradient scaler, as the
authors' ``src/oti.py`` / ``src/ovi.py`` do; CPU runs fp32).

The placeholder word is ``"£"``, as in the paper's public code: in CLIP's BPE vocabulary it is a single token (id 1950,
below the end-of-text id 49407, so open_clip's argmax pooling still finds the end of text). How the towers run with
pseudo tokens is in :mod:`crossgap_lib.towers`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .models import LoadedClip
from .towers import (
    DEFAULT_PRECISION,
    PLACEHOLDER,
    PRECISIONS,
    _autocast_dtype,
    _check_dim,
    _check_positive_int,
    _check_precision,
    _device,
    _encode_text,
    _frozen,
    _prepare_text_template,
    _template_embeddings,
    _text_tower,
    _unwrap,
    _vision_parts,
    encode_image_with_pseudo_tokens,
    encode_text_with_pseudo_tokens,
    patch_embeddings,
)

__all__ = ["PLACEHOLDER", "PRECISIONS", "InversionConfig", "InversionResult", "encode_image_with_pseudo_tokens",
           "encode_text_with_pseudo_tokens", "initial_pseudo_tokens", "oti", "ovi", "patch_embeddings"]

INIT_STD = 0.02


@dataclass(frozen=True)
class InversionConfig:
    """Every hyper-parameter of one OTI or OVI run (``template`` is OTI's; OVI ignores it). Validated on creation.

    ``precision``: autocast on CUDA, ``"fp16"`` with a gradient scaler (the authors' choice: miccunifi/Cross-the-Gap
    ``src/oti.py`` and ``src/ovi.py`` wrap the forward pass in ``torch.cuda.amp.autocast()`` and step through
    ``torch.cuda.amp.GradScaler()``), ``"bf16"`` (no scaler needed) or ``"fp32"``; on CPU every run is fp32.

    The one place these settings live: :func:`oti` / :func:`ovi`, :func:`crossgap_lib.pipeline.invert_dataset` (its
    cache key), the paper's per-model settings (:mod:`crossgap_lib.paper`), the laboratory and the OTI curve.
    """

    template: str = "a photo of {}"
    num_pseudo_tokens: int = 1
    steps: int = 150
    lr: float = 2e-2
    weight_decay: float = 0.01
    batch_size: int = 64
    seed: int = 0
    record_every: int | None = None
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        for name in ("num_pseudo_tokens", "steps", "batch_size"):
            _check_positive_int(name, getattr(self, name))
        if self.record_every is not None:
            _check_positive_int("record_every", self.record_every)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.template, str):
            raise ValueError(f"template must be a string with one '{{}}', got {self.template!r}")
        _check_precision(self.precision)

    def updated(self, **overrides: Any) -> InversionConfig:
        """A copy with some fields replaced; an unknown name is a ValueError listing the fields."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown inversion setting(s) {unknown}; InversionConfig fields are {sorted(known)}")
        return replace(self, **overrides)


OTI_DEFAULTS = InversionConfig()  # the paper: 150 steps, R = 1
OVI_DEFAULTS = InversionConfig(steps=1000)  # the paper: 1000 steps, R = 1


def _config(config: InversionConfig | None, default: InversionConfig, overrides: dict[str, Any]) -> InversionConfig:
    if config is not None and not isinstance(config, InversionConfig):
        raise ValueError(f"config must be an InversionConfig or None, got {type(config).__name__}")
    return (config or default).updated(**overrides)


def _check_offset(index_offset: int) -> None:
    if isinstance(index_offset, bool) or not isinstance(index_offset, int) or index_offset < 0:
        raise ValueError(f"index_offset must be an int >= 0, got {index_offset!r}")


# ----------------------------------------------------------------------------------------------------------- OTI/OVI
def oti(clip: LoadedClip, image_features: Tensor, config: InversionConfig | None = None, *, progress: bool = True,
        index_offset: int = 0, **overrides: Any) -> InversionResult:
    """Optimisation-based textual inversion: text-side features (N, D) matching image features (N, D).

    ``config`` (default :data:`OTI_DEFAULTS`) with any field overridden by keyword (``steps=20``). Sample i's initial
    pseudo tokens depend only on ``(seed, index_offset + i)``, so a chunked run equals a whole one.
    """
    cfg = _config(config, OTI_DEFAULTS, overrides)
    _check_offset(index_offset)
    _check_features("image_features", image_features)
    model = _unwrap(clip)
    tower = _text_tower(model)
    tmpl = _prepare_text_template(clip, tower, cfg.template, cfg.num_pseudo_tokens)
    with _frozen(model):
        with torch.no_grad():  # the template does not change between steps: embed it once
            base, placeholder_pos = _template_embeddings(tower, tmpl)
        encode = lambda tokens: _encode_text(tower, tmpl, tokens, base, placeholder_pos)
        _check_dim("image_features", image_features, encode, (cfg.num_pseudo_tokens, tower.width), "text",
                   _device(model))
        return _invert(model, encode, image_features, tower.width, cfg, index_offset, progress, "OTI")


def ovi(clip: LoadedClip, text_features: Tensor, config: InversionConfig | None = None, *, progress: bool = True,
        index_offset: int = 0, **overrides: Any) -> InversionResult:
    """Optimisation-based visual inversion: image-side features (N, D) matching text features (N, D).

    ``config`` (default :data:`OVI_DEFAULTS`) with any field overridden by keyword; ``template`` is unused.
    """
    cfg = _config(config, OVI_DEFAULTS, overrides)
    _check_offset(index_offset)
    _check_features("text_features", text_features)
    model = _unwrap(clip)
    _, width, num_patches = _vision_parts(model)
    if cfg.num_pseudo_tokens > num_patches:
        raise ValueError(
            f"num_pseudo_tokens must be <= the {num_patches} patches of the image tower, got {cfg.num_pseudo_tokens}"
        )
    encode = lambda tokens: encode_image_with_pseudo_tokens(model, tokens)
    with _frozen(model):
        _check_dim("text_features", text_features, encode, (cfg.num_pseudo_tokens, width), "image", _device(model))
        return _invert(model, encode, text_features, width, cfg, index_offset, progress, "OVI")


def _invert(
    model: nn.Module,
    encode: Callable[[Tensor], Tensor],
    targets: Tensor,
    width: int,
    cfg: InversionConfig,
    index_offset: int,
    progress: bool,
    desc: str,
) -> InversionResult:
    """Optimise pseudo tokens (N, R, width) so that normalize(encode(tokens)) matches targets (N, D): 1 - cos, AdamW."""
    device = _device(model)
    amp_dtype = _autocast_dtype(device, cfg.precision)
    n = targets.shape[0]
    targets = F.normalize(targets.float(), dim=-1)
    init = initial_pseudo_tokens(n, cfg.num_pseudo_tokens, width, cfg.seed, index_offset)
    steps, record_every, batch_size = cfg.steps, cfg.record_every, cfg.batch_size
    record_steps = list(range(0, steps + 1, record_every)) if record_every else None
    parts: list[InversionResult] = []
    bar = tqdm(total=-(-n // batch_size) * steps, desc=desc, disable=not progress, unit="step")

    def features_of(tokens: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return F.normalize(encode(tokens).float(), dim=-1)

    for start in range(0, n, batch_size):
        target = targets[start : start + batch_size].to(device)
        tokens = nn.Parameter(init[start : start + batch_size].to(device))
        optimizer = torch.optim.AdamW([tokens], lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = _grad_scaler(device, amp_dtype)
        losses, history = [], []
        for step in range(steps):
            features = features_of(tokens)
            if record_steps is not None and step % record_every == 0:
                history.append(features.detach())
            loss = 1 - (features * target).sum(dim=-1)  # per sample; summed so each sample's update is its own
            _optimizer_step(loss.sum(), optimizer, scaler)
            losses.append(loss.detach())
            bar.update()
        with torch.no_grad():
            final = features_of(tokens)
        if record_steps is not None and steps % record_every == 0:
            history.append(final)
        parts.append(
            InversionResult(
                features=final.cpu(),
                pseudo_tokens=tokens.detach().cpu(),
                losses=torch.stack(losses, dim=1).float().cpu(),
                history=torch.stack(history).cpu() if record_steps is not None else None,
                history_steps=record_steps,
            )
        )
    bar.close()
    return InversionResult.concat(parts)


def _grad_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (small fp16 gradients underflow without one); None for bf16 and fp32."""
    return torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None


def _optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """One update from a scalar loss: plain backward + step, or scaled backward, unscaled step and scale update."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # unscales first; skips the step when a gradient is inf/NaN
    scaler.update()


def initial_pseudo_tokens(n: int, num_pseudo_tokens: int, width: int, seed: int = 0, index_offset: int = 0) -> Tensor:
    """N(0, 0.02) initial pseudo tokens (n, R, width); sample i depends only on (seed, index_offset + i)."""
    tokens = torch.empty(n, num_pseudo_tokens, width)
    generator = torch.Generator()
    for i in range(n):
        sample_seed = np.random.SeedSequence([seed, index_offset + i]).generate_state(1, np.uint64)[0]
        generator.manual_seed(int(sample_seed))
        tokens[i].normal_(0.0, INIT_STD, generator=generator)
    return tokens



# ----------------------------------------------------------------------------------------------------------- result
@dataclass
class InversionResult:
    """Inverted features (N, D) L2-normalised on CPU, pseudo tokens (N, R, width), loss curves (N, steps), history.

    ``losses[:, t]`` is each sample's 1 - cos before update t+1; ``history[j]`` (T, N, D) holds the normalised features
    after ``history_steps[j]`` updates (0 = the initial tokens; the last entry equals ``features`` when
    ``steps % record_every == 0``).
    """

    features: Tensor
    pseudo_tokens: Tensor
    losses: Tensor
    history: Tensor | None = None
    history_steps: list[int] | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    @classmethod
    def concat(cls, results: list[InversionResult]) -> InversionResult:
        """Merge results of consecutive chunks along the sample dimension (history along dim 1)."""
        results = list(results)
        if not results:
            raise ValueError("results must hold at least one InversionResult, got an empty list")
        first = results[0]
        for r in results[1:]:
            if r.history_steps != first.history_steps or r.losses.shape[1] != first.losses.shape[1]:
                raise ValueError(
                    "results must come from runs with the same steps and record_every; got history_steps "
                    f"{first.history_steps} vs {r.history_steps}, {first.losses.shape[1]} vs {r.losses.shape[1]} steps"
                )
        history = None if first.history is None else torch.cat([r.history for r in results], dim=1)
        return cls(
            features=torch.cat([r.features for r in results]),
            pseudo_tokens=torch.cat([r.pseudo_tokens for r in results]),
            losses=torch.cat([r.losses for r in results]),
            history=history,
            history_steps=None if first.history_steps is None else list(first.history_steps),
        )



def _check_features(name: str, features: Tensor) -> None:
    if not isinstance(features, Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a tensor of shape (N, embed_dim), got {shape}")
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(features.shape)}); expected at least one feature")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf values; expected finite features")
    zero = (features == 0).all(dim=1).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"{name} has {len(zero)} all-zero row(s) (zero norm, e.g. row {zero[0]}): a zero target has "
                         "no direction to invert; drop those rows or pass the encoder's features")

