"""Captioning as a baseline for intra-modal image retrieval (the paper's Figure A2): describe each query image in words
with a captioning model, then let the evaluated CLIP rank the gallery images by the caption's text feature (an
inter-modal query, like OTI's pseudo-word feature, but made of real words).

>>> config = CaptionerConfig.from_dict({"model": "coca_ViT-L-14", "pretrained": "mscoco_finetuned_laion2b_s13b_b90k"})
>>> captioner = load_captioner(config, device="cuda")        # crossgap_lib.models.load_clip: same offline lookup
>>> captions = caption_images(captioner, dataset, config, cache_dir=default_cache_root())   # one str per image

Decoding is greedy. open_clip's ``CoCa.generate`` defaults to beam search (6 beams in 3 groups), but its
``generation_type="top_k", top_k=1`` path is greedy decoding, and we use that: it is deterministic, about six times
cheaper (beam search encodes every image once per beam) and, unlike beam search, does not need transformers'
``BeamSearchScorer``, which transformers 5 removed (open_clip 3.3 then disables ``generate`` altogether, so the loop
is written here). :func:`greedy_tokens` follows open_clip's loop token for token (open_clip
``src/open_clip/coca_model.py``, ``CoCa.generate``): the end token is blocked until the sequence (start token
included) is ``min_seq_len`` long and forced at position ``seq_len - 1``, and a sequence ends at its first end or pad
token. ``tests/test_captions.py`` checks the tokens against open_clip's own loop.

Captions are cached like :mod:`crossgap_lib.pipeline` features (same chunk store, keyed by the captioner's weights,
preprocessing, the dataset and the decoding settings), chunk by chunk, so an interrupted run resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from . import pipeline
from .models import LoadedClip, load_clip

__all__ = ["CaptionerConfig", "caption_images", "decode_tokens", "greedy_tokens", "load_captioner"]

CAPTION_VERSION = 1  # bump when the decoding changes meaning (invalidates cached captions)


@dataclass(frozen=True)
class CaptionerConfig:
    """Which captioning model, how long its captions, and which image datasets' queries it captions."""

    model: str = "coca_ViT-L-14"
    pretrained: str | None = "mscoco_finetuned_laion2b_s13b_b90k"  # None: random weights (tests only)
    seq_len: int = 30  # open_clip generate's default: token positions, start and end tokens included
    min_seq_len: int = 5  # open_clip generate's default: no end token before this length
    batch_size: int = 32
    datasets: tuple[str, ...] | None = None  # image datasets whose queries are captioned; None: all of the source's
    figure_dataset: str | None = None  # dataset of the Figure A2-style record; None: the first captioned one

    @classmethod
    def from_dict(cls, spec: dict) -> CaptionerConfig:
        """A config from a source's ``captioner`` mapping (unknown keys and bad lengths are a ValueError)."""
        if not isinstance(spec, dict):
            raise ValueError(f"captioner must be a mapping such as {{model: coca_ViT-L-14, pretrained: "
                             f"mscoco_finetuned_laion2b_s13b_b90k}}, got {spec!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"captioner: unknown keys {unknown}; expected some of {sorted(known)}")
        values = dict(spec)
        if values.get("datasets") is not None:
            values["datasets"] = tuple(values["datasets"])
        config = cls(**values)
        for name in ("seq_len", "min_seq_len", "batch_size"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"captioner.{name} must be a positive int, got {value!r}")
        if config.seq_len <= config.min_seq_len:
            raise ValueError(f"captioner.seq_len ({config.seq_len}) must exceed min_seq_len ({config.min_seq_len}): "
                             "the end token is only allowed from min_seq_len on")
        return config


def load_captioner(config: CaptionerConfig, device: str = "cpu") -> LoadedClip:
    """The captioning model of ``config`` through :func:`crossgap_lib.models.load_clip`; a ValueError if it is not a
    CoCa (a model with a text decoder)."""
    captioner = load_clip(config.model, pretrained=config.pretrained, device=device)
    _check_captioner(captioner)
    if config.seq_len > int(getattr(captioner.model, "context_length", config.seq_len)):
        raise ValueError(f"captioner.seq_len={config.seq_len} exceeds {config.model}'s context length "
                         f"{captioner.model.context_length}; lower it")
    return captioner


def _check_captioner(captioner: LoadedClip) -> None:
    if not hasattr(captioner.model, "text_decoder"):
        raise ValueError(f"captioner {captioner.name!r} has no text decoder, so it cannot write captions; use a CoCa "
                         "model (open_clip.list_models() lists the coca_* names, e.g. 'coca_ViT-L-14')")


def _special_ids(tokenizer: Any) -> tuple[int, int, int]:
    """(start, end, pad) token ids of an open_clip tokenizer (CLIP's BPE: 49406, 49407, 0)."""
    return int(getattr(tokenizer, "sot_token_id", 49406)), int(getattr(tokenizer, "eot_token_id", 49407)), 0


@torch.no_grad()
def greedy_tokens(model: torch.nn.Module, images: torch.Tensor, seq_len: int, min_seq_len: int, sot: int, eot: int,
                  pad: int = 0) -> torch.Tensor:
    """Greedy CoCa captions of preprocessed images (B, 3, H, W): token ids (B, seq_len), start token first, pad-filled.

    open_clip ``CoCa.generate(generation_type="top_k", top_k=1)``'s loop without sampling (see the module doc).
    """
    image_latent, image_embs = model._encode_image(images)
    out = torch.full((images.shape[0], 1), sot, dtype=torch.long, device=images.device)
    done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    while out.shape[1] < seq_len and not bool(done.all()):
        logits = model(images, out, image_latent=image_latent, image_embs=image_embs,
                       output_labels=False)["logits"][:, -1].float()
        if out.shape[1] < min_seq_len:
            logits[:, eot] = float("-inf")
        token = logits.argmax(dim=-1)
        if out.shape[1] + 1 == seq_len:
            token = torch.full_like(token, eot)
        token = torch.where(done, torch.full_like(token, pad), token)
        out = torch.cat([out, token[:, None]], dim=1)
        done |= (token == eot) | (token == pad)
    padding = torch.full((out.shape[0], seq_len - out.shape[1]), pad, dtype=torch.long, device=out.device)
    return torch.cat([out, padding], dim=1)


def decode_tokens(tokenizer: Any, tokens: torch.Tensor) -> list[str]:
    """Captions of token ids (N, L) from :func:`greedy_tokens`: the text between the start token and the first end or
    pad token."""
    sot, eot, pad = _special_ids(tokenizer)
    captions = []
    for row in tokens.tolist():
        body = row[1:] if row and row[0] == sot else row
        end = next((i for i, t in enumerate(body) if t in (eot, pad)), len(body))
        captions.append(" ".join(tokenizer.decode(body[:end]).split()))
    return captions


def caption_images(captioner: LoadedClip, dataset: Any, config: CaptionerConfig | None = None,
                   cache_dir: str | Path | None = None, progress: bool = True, chunk_size: int = 512) -> list[str]:
    """One greedy caption per image of ``dataset`` (N items, as :func:`crossgap_lib.pipeline.encode_images` takes).

    With ``cache_dir`` the token ids are stored under ``<cache_dir>/captions/<key>/`` chunk by chunk (resumable), keyed
    by the captioner's name, weights, preprocessing and precision, the dataset's fingerprint and the decoding settings.
    """
    config = config or CaptionerConfig()
    _check_captioner(captioner)
    n_items = len(dataset)
    if n_items < 1:
        raise ValueError("dataset is empty; expected at least one image to caption")
    device = pipeline._device(captioner)
    inputs = pipeline._ModelInputs(dataset, captioner.preprocess, pipeline._image_size(captioner))
    sot, eot, pad = _special_ids(captioner.tokenizer)
    show = progress and pipeline._dist()[0] == 0

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        loader = DataLoader(Subset(inputs, range(start, stop)), batch_size=config.batch_size,
                            pin_memory=device.type == "cuda")
        rows = []
        autocast, _ = pipeline._autocast(device)
        with autocast, pipeline._eval_mode(captioner.model):
            for images in tqdm(loader, desc="caption_images", leave=False, disable=not show, unit="batch"):
                rows.append(greedy_tokens(captioner.model, images.to(device, non_blocking=True), config.seq_len,
                                          config.min_seq_len, sot, eot, pad).cpu())
        return {"tokens": torch.cat(rows)}

    key_parts = {}
    if cache_dir is not None:
        key_parts = {**pipeline._model_identity(captioner), "caption_version": CAPTION_VERSION, "decoding": "greedy",
                     "seq_len": config.seq_len, "min_seq_len": config.min_seq_len,
                     "preprocess": pipeline._preprocess_fingerprint(captioner.preprocess),
                     "dataset": pipeline.dataset_fingerprint(dataset, progress=show), "n_items": n_items}
    rows = pipeline._run_chunked(compute, n_items, chunk_size, cache_dir, "captions", key_parts, progress,
                                 "caption_images")
    return decode_tokens(captioner.tokenizer, rows["tokens"])

