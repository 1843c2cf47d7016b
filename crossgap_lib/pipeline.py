"""Dataset-scale feature extraction and modality inversion: batched, cached, resumable, sharded over ranks.

Every public function here splits its work into chunks of rows and runs them through one machinery:

- **Caching.** ``cache_dir=None`` computes in memory and writes nothing (even when ``$CROSSGAP_CACHE`` is set: caching
  is always asked for explicitly). Pass a folder (``crossgap_lib.cache.default_cache_root()`` honours
  ``$CROSSGAP_CACHE``) to store results under ``<cache_dir>/<kind>/<key>/`` with
  :class:`crossgap_lib.cache.ChunkStore`; ``key`` hashes everything the result depends on (model name, weight
  identity, preprocessing or tokenizer, the input, every parameter). The input is hashed by content for texts,
  feature tensors, image tensors and datasets without a ``fingerprint()`` method (every image is decoded once); a
  dataset with ``fingerprint()`` is trusted to return it (the on-disk loaders hash paths, labels and each file's size
  and modification time, so an image replaced in place gives a new key). A second call with the same key loads
  ``result.pt``; a changed parameter gives a new key. Non-finite inputs or features are an error, never cached.
- **Resuming.** Each chunk is saved atomically when done, so a killed run loses at most the chunk in flight; a rerun
  computes only the missing chunks. A corrupt chunk is recomputed with a warning, never used.
- **Sharding.** Under ``torchrun``, once the script has called ``torch.distributed.init_process_group()``, rank
  ``r`` computes chunks ``r, r + world, ...``; with a cache, rank 0 merges the chunk files after a barrier and the
  other ranks load the merged result (the folder must be on a file system all ranks see); without a cache the chunks
  are all-gathered in memory. A rank that raises leaves the others at the barrier until torchrun stops them.
  Every rank returns the full result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .cache import ChunkStore, cache_key, module_fingerprint, tensor_fingerprint
from .inversion import OTI_DEFAULTS, OVI_DEFAULTS
from .inversion import _config as inversion_config
from .models import LoadedClip

__all__ = [
    "dataset_fingerprint",
    "encode_images",
    "encode_texts",
    "invert_dataset",
    "weights_fingerprint",
]

CACHE_VERSION = 1  # bump when the stored layout or the computation changes meaning
INVERSION_METHODS = ("oti", "ovi")

# ----------------------------------------------------------------------------------------------------------------------
# identities


_WEIGHTS_MEMO: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """:func:`crossgap_lib.cache.module_fingerprint` of ``model``, memoised per model object.

    The memo is invalidated when any parameter or buffer is replaced or modified in place (tracked by the tensors'
    storage pointers and autograd version counters), so training a model and encoding again never reuses stale keys.
    """
    state = tuple((t.data_ptr(), t._version) for t in model.state_dict(keep_vars=True).values())
    memo = _WEIGHTS_MEMO.get(model)
    if memo is not None and memo[0] == state:
        return memo[1]
    fingerprint = module_fingerprint(model)
    _WEIGHTS_MEMO[model] = (state, fingerprint)
    return fingerprint


def _model_identity(clip: LoadedClip) -> dict[str, str]:
    """Cache-key parts that identify a model's outputs: name, weights tag and content, autocast precision."""
    return {
        "model": clip.name,
        "pretrained": str(clip.pretrained),
        "weights": weights_fingerprint(clip.model),
        "precision": _autocast(_device(clip))[1],
    }


def _image_bytes(image: Any, index: int) -> bytes:
    if isinstance(image, Image.Image):
        return f"{image.mode}{image.size}".encode() + image.tobytes()
    if isinstance(image, torch.Tensor):
        return tensor_fingerprint(image).encode()
    raise ValueError(
        f"dataset item {index}: expected (image, label) with a PIL image or a tensor, got {type(image).__name__}"
    )


def dataset_fingerprint(dataset: Any, progress: bool = False) -> str:
    """Identity of a dataset's images: ``dataset.fingerprint()`` if it has one, else a hash of every image.

    The fallback reads (decodes) every item once, i.e. costs about one pass over the dataset; give large datasets a
    ``fingerprint()`` method (e.g. a hash of file names, sizes and modification times, as the on-disk loaders of
    :mod:`crossgap_lib.datasets` do) to avoid it. A tensor dataset is hashed by content.
    """
    if isinstance(dataset, torch.Tensor):
        return "tensor:" + tensor_fingerprint(dataset)
    method = getattr(dataset, "fingerprint", None)
    if callable(method):
        return f"{type(dataset).__qualname__}:{method()}"
    h = hashlib.sha256(f"{type(dataset).__qualname__}:{len(dataset)}".encode())
    for i in tqdm(range(len(dataset)), desc="hashing dataset", disable=not progress, unit="img"):
        h.update(_image_bytes(_image_of(dataset[i]), i))
    return "items:" + h.hexdigest()[:16]


def _probe_image() -> Image.Image:
    """A fixed, non-square RGB gradient used to fingerprint a preprocessing pipeline by its output."""
    yy, xx = np.mgrid[0:45, 0:61]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


def _preprocess_fingerprint(preprocess: Callable) -> str:
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(preprocess))
    output = preprocess(_probe_image())
    return cache_key(text=text, output=output if isinstance(output, torch.Tensor) else repr(output))


def _tokenizer_fingerprint(tokenizer: Callable) -> str:
    probe = ["a photo of a cat.", "Two dogs, one ball; 3 people & a very long sentence that may be truncated here."]
    return cache_key(kind=type(tokenizer).__qualname__, tokens=torch.as_tensor(tokenizer(probe)))


# ----------------------------------------------------------------------------------------------------------------------
# devices and shapes


def _device(clip: LoadedClip) -> torch.device:
    try:
        return next(clip.model.parameters()).device
    except StopIteration:
        return torch.device(clip.device)


def _autocast(device: torch.device, precision: str = "fp16") -> tuple[contextlib.AbstractContextManager, str]:
    """Autocast context and its precision name: ``precision`` on CUDA (fp16 by default: the authors extract OTI's
    targets under ``torch.cuda.amp.autocast()``, miccunifi/Cross-the-Gap src/oti.py; or bf16, fp32), fp32 elsewhere."""
    from .towers import _autocast_dtype

    dtype = _autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext(), "fp32"
    return torch.autocast("cuda", dtype=dtype), precision


def _embed_dim(clip: LoadedClip) -> int:
    """Width of the joint embedding space."""
    output_dim = getattr(getattr(clip.model, "visual", None), "output_dim", None)
    if isinstance(output_dim, int) and output_dim > 0:
        return output_dim
    with torch.no_grad():
        return int(clip.model.encode_text(clip.tokenizer(["a"]).to(_device(clip))).shape[-1])


def _image_size(clip: LoadedClip) -> tuple[int, int] | None:
    size = getattr(getattr(clip.model, "visual", None), "image_size", None)
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return None


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------------------------------
# the chunk runner shared by features and inversions


def _warn_caller(message: str) -> None:
    """``warnings.warn`` attributed to the first frame outside this module: the caller of the public function
    (``encode_images``, ``encode_texts``, ``invert_dataset``), however deep the helper that warns."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level if frame is not None else 2)


def _dist() -> tuple[int, int]:
    """(rank, world_size) of the initialised ``torch.distributed`` group, or (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _warn_caller("crossgap pipeline: WORLD_SIZE > 1 but no torch.distributed process group is initialised; every "
                     "rank computes everything. Call torch.distributed.init_process_group() first to shard the work.")
    return 0, 1


def _all_gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _on_rank0_then_share(fn: Callable[[], None], rank: int, world: int) -> None:
    """Run ``fn`` on rank 0 only; if it raises, every rank raises the same error (instead of hanging at a barrier)."""
    error = None
    if rank == 0:
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - re-raised below on every rank
            error = err
    errors = _all_gather(None if error is None else (type(error), str(error)), world)
    if errors[0] is not None:
        if error is not None:
            raise error
        kind, message = errors[0]
        raise kind(message) if issubclass(kind, (OSError, ValueError, RuntimeError)) else RuntimeError(message)


def _prepare_folder(store: ChunkStore, meta: dict) -> None:
    """Check the folder is writable, drop chunks stored with another chunk size, record ``meta.json``."""
    folder = store.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_probe_pipeline.{os.getpid()}.{threading.get_ident()}"  # parallel writers: own probe
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"crossgap cache directory {folder} is not writable ({err}). Pass another cache_dir=... or set the "
            "CROSSGAP_CACHE environment variable to a writable folder and pass crossgap_lib.cache.default_cache_root()."
        ) from err
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            stored_chunk_size = json.loads(meta_path.read_text()).get("chunk_size")
        except (OSError, ValueError):
            stored_chunk_size = None
        if stored_chunk_size != store.chunk_size:
            stale = sorted(folder.glob("chunk_*.pt"))
            if stale:
                _warn_caller(
                    f"crossgap cache: {folder} holds {len(stale)} chunks of size {stored_chunk_size}, now "
                    f"chunk_size={store.chunk_size}; discarding them."
                )
            for path in stale:
                path.unlink(missing_ok=True)
            meta_path.unlink()
    if not meta_path.exists():
        meta_path.write_text(json.dumps(dict(meta, chunk_size=store.chunk_size), indent=1, sort_keys=True, default=str))


def _concat(parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _run_chunked(
    compute_fn: Callable[[int, int], dict[str, torch.Tensor]],
    n_items: int,
    chunk_size: int,
    cache_dir: str | Path | None,
    kind: str,
    key_parts: dict[str, Any],
    progress: bool,
    desc: str,
) -> dict[str, torch.Tensor]:
    """Run ``compute_fn(start, stop)`` over all chunks (cached, resumed, sharded); the rows concatenated."""
    rank, world = _dist()
    n_chunks = (n_items + chunk_size - 1) // chunk_size
    mine = list(range(rank, n_chunks, world))
    show = progress and rank == 0

    def bounds(index: int) -> tuple[int, int]:
        return index * chunk_size, min((index + 1) * chunk_size, n_items)

    if cache_dir is None:
        computed = {i: _cpu(compute_fn(*bounds(i))) for i in tqdm(mine, desc=desc, disable=not show, unit="chunk")}
        if world > 1:
            gathered: dict[int, dict[str, torch.Tensor]] = {}
            for part in _all_gather(computed, world):
                gathered.update(part)
            computed = gathered
        return _concat([computed[i] for i in range(n_chunks)])

    key = cache_key(version=CACHE_VERSION, kind=kind, **key_parts)
    keys = _all_gather(key, world)
    if len(set(keys)) > 1:
        raise RuntimeError(f"{desc}: ranks disagree on the cache key ({keys}); every rank must pass the same inputs")
    store = ChunkStore(Path(cache_dir) / kind, key, n_items, chunk_size)
    result = store.load_result() if store.result_path.exists() else None
    if all(_all_gather(result is not None, world)):
        return result
    _on_rank0_then_share(lambda: _prepare_folder(store, {"kind": kind, **key_parts}), rank, world)

    store.compute_chunks(lambda start, stop: _cpu(compute_fn(start, stop)), chunk_ids=mine, progress=show, desc=desc)

    if world > 1:
        torch.distributed.barrier()
    _on_rank0_then_share(lambda: store.merge(), rank, world)
    result = store.load_result()
    if result is None:
        raise RuntimeError(f"{desc}: merged result {store.result_path} could not be read back (with several ranks, "
                           "cache_dir must be on a file system that every rank sees)")
    return result


def _cpu(rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in rows.items()}


# ----------------------------------------------------------------------------------------------------------------------
# feature extraction


def _image_of(item: Any) -> Any:
    return item[0] if isinstance(item, (tuple, list)) else item


def _check_count(n: int, name: str) -> int:
    if n < 1:
        raise ValueError(f"{name} is empty; expected at least one item")
    return n


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _finite_features(features: torch.Tensor, caller: str, items: str, start: int) -> torch.Tensor:
    """``features`` (n, D) if all finite, else a ``ValueError`` naming the first bad rows (nothing gets cached)."""
    bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten()
    if bad.numel():
        rows = [start + int(i) for i in bad[:3]]
        raise ValueError(f"{caller}: the model returned NaN/inf features for {bad.numel()} of {items} "
                         f"{start}..{start + features.shape[0] - 1} (e.g. {rows}); nothing was cached. Check those "
                         "inputs and the model's weights (a diverged model gives NaN)")
    return features


class _ModelInputs(Dataset):
    """Dataset items -> preprocessed float tensors (C, H, W).

    PIL images and uint8 tensors (C, H, W) (C = 1 or 3, converted to PIL) go through ``preprocess``; floating tensors
    are taken as already preprocessed and only checked against the model's input size.
    """

    def __init__(self, dataset: Any, preprocess: Callable, image_size: tuple[int, int] | None):
        self.dataset, self.preprocess, self.image_size = dataset, preprocess, image_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = _image_of(self.dataset[index])
        if isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] not in (1, 3):
                raise ValueError(f"dataset item {index}: image tensor must be (C, H, W) with C in (1, 3), got "
                                 f"shape {tuple(image.shape)}")
            if image.dtype == torch.uint8:
                array = image.permute(1, 2, 0).numpy()
                image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
            elif image.is_floating_point():
                if self.image_size is not None and tuple(image.shape[-2:]) != self.image_size:
                    raise ValueError(f"dataset item {index}: preprocessed image has size {tuple(image.shape[-2:])}, "
                                     f"the model expects {self.image_size}")
                if not bool(torch.isfinite(image).all()):
                    raise ValueError(f"dataset item {index}: the image tensor holds NaN or inf values; expected "
                                     "finite pixel values (check the preprocessing that produced it)")
                return image.float()
            else:
                raise ValueError(f"dataset item {index}: image tensor dtype must be uint8 or floating, "
                                 f"got {image.dtype}")
        if not isinstance(image, Image.Image):
            got = type(image).__name__
            raise ValueError(f"dataset item {index}: expected a PIL image or a tensor, got {got}")  # noqa: TRY004
        return self.preprocess(image)


def encode_images(
    clip: LoadedClip,
    dataset: Any,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    num_workers: int = 0,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """L2-normalised image features (N, D) float32 on CPU of a dataset's images.

    ``dataset`` is a sequence of ``(image, label)`` items (or bare images) where ``image`` is a PIL image (passed
    through ``clip.preprocess``), a uint8 tensor (C, H, W) (converted to PIL, then ``clip.preprocess``: exactly what the
    PIL image it encodes would give) or a floating tensor (C, H, W) already preprocessed; or a tensor (N, C, H, W) of
    such images. With ``cache_dir`` the result is keyed by model, weights, preprocessing, precision and
    :func:`dataset_fingerprint`: the dataset's ``fingerprint()`` if it has one (the on-disk loaders hash relative
    paths, labels and each file's size and modification time, so a replaced image is noticed), else a hash of every
    decoded image. NaN/inf image tensors or features raise a ``ValueError`` and are never cached.
    """
    if isinstance(dataset, torch.Tensor) and dataset.ndim != 4:
        raise ValueError(f"dataset tensor must be (N, C, H, W), got shape {tuple(dataset.shape)}")
    n_items = _check_count(len(dataset), "dataset")
    _check_positive(batch_size, "batch_size")
    _check_positive(chunk_size, "chunk_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    device = _device(clip)
    inputs = _ModelInputs(dataset, clip.preprocess, _image_size(clip))
    show = progress and _dist()[0] == 0

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        subset = torch.utils.data.Subset(inputs, range(start, stop))
        loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
        features = []
        autocast, _ = _autocast(device)
        with torch.no_grad(), autocast, _eval_mode(clip.model):
            for images in tqdm(loader, desc="encode_images", leave=False, disable=not show, unit="batch"):
                encoded = clip.model.encode_image(images.to(device, non_blocking=True))
                features.append(F.normalize(encoded.float(), dim=-1).cpu())
        return {"features": _finite_features(torch.cat(features), "encode_images", "dataset items", start)}

    key_parts = {}
    if cache_dir is not None:
        key_parts = {
            **_model_identity(clip),
            "preprocess": _preprocess_fingerprint(clip.preprocess),
            "dataset": dataset_fingerprint(dataset, progress=show),
            "n_items": n_items,
        }
    rows = _run_chunked(compute, n_items, chunk_size, cache_dir, "image_features", key_parts, progress, "encode_images")
    return rows["features"]


def encode_texts(
    clip: LoadedClip,
    texts: Sequence[str],
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    chunk_size: int = 16384,
) -> torch.Tensor:
    """L2-normalised text features (N, D) float32 on CPU of ``texts`` tokenised with ``clip.tokenizer``.

    With ``cache_dir`` the result is keyed by model, weights, tokenizer behaviour, precision and a hash of the strings.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a list of str, got {type(texts).__name__}"
                         + ("" if isinstance(texts, str) else " with non-str items"))
    texts = list(texts)
    n_items = _check_count(len(texts), "texts")
    _check_positive(batch_size, "batch_size")
    _check_positive(chunk_size, "chunk_size")
    device = _device(clip)
    show = progress and _dist()[0] == 0

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        features = []
        autocast, _ = _autocast(device)
        with torch.no_grad(), autocast, _eval_mode(clip.model):
            for first in tqdm(range(start, stop, batch_size), desc="encode_texts", leave=False, disable=not show):
                tokens = clip.tokenizer(texts[first:min(first + batch_size, stop)]).to(device)
                features.append(F.normalize(clip.model.encode_text(tokens).float(), dim=-1).cpu())
        return {"features": _finite_features(torch.cat(features), "encode_texts", "texts", start)}

    key_parts = {}
    if cache_dir is not None:
        key_parts = {
            **_model_identity(clip),
            "tokenizer": _tokenizer_fingerprint(clip.tokenizer),
            "texts": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16],
            "n_items": n_items,
        }
    rows = _run_chunked(compute, n_items, chunk_size, cache_dir, "text_features", key_parts, progress, "encode_texts")
    return rows["features"]


# ----------------------------------------------------------------------------------------------------------------------
# inversion


def _check_features(features: Any, embed_dim: int, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"{name} must be a tensor (N, {embed_dim}), got {type(features).__name__}")  # noqa: TRY004
    if features.ndim != 2 or features.shape[1] != embed_dim:
        raise ValueError(f"{name} must have shape (N, {embed_dim}) (the model's embedding width), got "
                         f"{tuple(features.shape)}")
    _check_count(features.shape[0], name)
    if not features.is_floating_point():
        raise ValueError(f"{name} must be floating-point features, got dtype {features.dtype}")
    bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten()
    if bad.numel():
        raise ValueError(f"{name} must be finite: {bad.numel()} row(s) hold NaN or inf values (e.g. row "
                         f"{int(bad[0])}); drop or recompute them")
    return features.detach().float().cpu().contiguous()


def _result_rows(result: Any) -> dict[str, torch.Tensor]:
    """An ``InversionResult`` as tensors whose first dimension is the sample (history stored as (N, T, D))."""
    rows = {"features": result.features, "pseudo_tokens": result.pseudo_tokens, "losses": result.losses}
    if result.history is not None:
        n = result.features.shape[0]
        rows["history"] = result.history.transpose(0, 1)
        rows["history_steps"] = torch.as_tensor(result.history_steps, dtype=torch.long).expand(n, -1)
    return rows


def _rows_result(rows: dict[str, torch.Tensor], result_type: type) -> Any:
    history = rows.get("history")
    return result_type(
        features=rows["features"],
        pseudo_tokens=rows["pseudo_tokens"],
        losses=rows["losses"],
        history=None if history is None else history.transpose(0, 1).contiguous(),
        history_steps=None if history is None else rows["history_steps"][0].tolist(),
    )


def invert_dataset(
    clip: LoadedClip,
    method: str = "oti",
    features: torch.Tensor | None = None,
    cache_dir: str | Path | None = None,
    chunk_size: int = 256,
    progress: bool = True,
    config: Any = None,
    **overrides: Any,
):
    """Invert target features (N, D) with ``oti`` (image features -> text pseudo-tokens) or ``ovi`` (the reverse).

    ``config``: an :class:`crossgap_lib.inversion.InversionConfig` (default: the method's paper defaults), with any
    field overridden by keyword (``steps=20``). Work runs in chunks of ``chunk_size`` samples; each sample's result is
    independent of the chunking (its random initialisation is drawn from its global index). With ``cache_dir`` the
    result is keyed by model, weights, method, every field of the config and the features' content. Returns an
    ``InversionResult`` with ``features`` (N, D) L2-normalised, ``pseudo_tokens`` (N, R, width), ``losses``
    (N, steps) and, with ``record_every``, ``history`` (T, N, D) and ``history_steps``.
    """
    if method not in INVERSION_METHODS:
        raise ValueError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
    if features is None:
        raise ValueError(f"features is required: the target {'image' if method == 'oti' else 'text'} features (N, D)")
    features = _check_features(features, _embed_dim(clip), "features")
    _check_positive(chunk_size, "chunk_size")
    from . import inversion

    invert = getattr(inversion, method)
    parameters = inversion_config(config, OTI_DEFAULTS if method == "oti" else OVI_DEFAULTS, overrides)

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        result = invert(clip, features[start:stop], parameters, progress=False, index_offset=start)
        return _result_rows(result)

    key_parts = {}
    if cache_dir is not None:
        key_parts = {  # precision included: inversion autocasts on CUDA like feature extraction
            **_model_identity(clip),
            "method": method,
            "parameters": dataclasses.asdict(parameters),
            "features": tensor_fingerprint(features),
        }
    rows = _run_chunked(compute, features.shape[0], chunk_size, cache_dir, f"inversion_{method}", key_parts, progress,
                        f"invert_dataset[{method}]")
    return _rows_result(rows, inversion.InversionResult)
