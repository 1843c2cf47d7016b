"""Loading CLIP-family models (OpenAI CLIP, OpenCLIP, SigLIP, SLIP, project tiny configs) through open_clip.

``load_clip(name, pretrained=None, device="cpu", precision="fp32") -> LoadedClip`` is the one entry point.

Names (``list_models()`` prints them all):
- every open_clip architecture (``open_clip.list_models()``): ``"ViT-B-32"``, ``"ViT-L-14"``, ``"ViT-B-16-SigLIP"``,
  ``"RN50"``, ...;
- the OpenAI names used by the paper, mapped onto open_clip names (``MODEL_ALIASES``): ``"ViT-B/32"``,
  ``"ViT-B/16"``, ``"ViT-L/14"``, ``"ViT-L/14@336px"`` (``RN50``, ``RN101``, ``RN50x4``, ... are the same in both);
- the project configs in ``crossgap_lib/model_configs/``, registered with ``open_clip.add_model_config`` when this
  module is imported: ``"crossgap-tiny"`` (embed 64, ViT 64px/16, width 128, 4 layers; text context 16, width 128,
  4 layers), ``"crossgap-small"`` (the laboratory's model: embed 64, ViT 64px/16, width 64, 2 layers; text context 16,
  width 64, 1 layer) and ``"crossgap-micro"`` (embed 32, ViT 32px/8, width 32, 1 layer; text context 16, width 32,
  1 layer);
- SLIP (Mu et al. 2021) as open_clip ``CLIP`` models with a timm vision trunk: ``"slip-vit-b-16"`` and
  ``"slip-vit-l-16"`` (aliases ``"SLIP_VITB16"``, ``"SLIP_VITL16"``, and the SLIP repo's CLIP baselines
  ``"CLIP_VITB16"``, ``"CLIP_VITL16"``, which share the layout). Checkpoints in the public SLIP layout
  (``{"state_dict": {"module.visual.*", "module.transformer.*", "module.image_projection", ...}, "args": ...}``)
  are converted by ``convert_slip_state_dict``; the SimCLR head ``module.image_mlp.*`` is dropped.

``pretrained``:
- ``None``: random initialisation (a warning says the features are meaningless for science);
- a tag: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``, ``"webli"``, see
  ``open_clip.list_pretrained_tags_by_model``) or a SLIP tag (``"slip_base_100ep"``, ``"slip_large_100ep"``, ...).
  The file is looked up, in order, in ``$CROSSGAP_WEIGHTS/<open_clip_name>__<tag>.{safetensors,pt,pth,bin}``
  (e.g. ``ViT-B-32__openai.safetensors``, ``slip-vit-b-16__slip_base_100ep.pt``), in
  ``~/.cache/crossgap/weights`` (same naming; where SLIP downloads go when ``CROSSGAP_WEIGHTS`` is unset), in
  open_clip's caches (Hugging Face hub cache under ``HF_HOME``, ``~/.cache/clip`` for URL weights), and only then
  downloaded. Without network the error says where it looked and how to provide the file. OpenAI-trained tags get
  QuickGELU automatically (open_clip 3 only warns about the mismatch);
- a path to a checkpoint: an open_clip state dict (``.pt``/``.bin``/``.safetensors``), a ``crossgap_lib.train``
  checkpoint (``{"state_dict": ..., "model_name": ...}``) or a SLIP checkpoint. Files are read with
  ``torch.load(weights_only=True)`` (``argparse.Namespace`` is allowed, for SLIP's ``args``).

Tokenizers come from open_clip. SigLIP's is a Hugging Face tokenizer: it is looked up in
``$CROSSGAP_WEIGHTS/<hf name with "/" -> "__">/`` (e.g. ``timm__ViT-B-16-SigLIP/``, written by the tokenizer's
``save_pretrained``), then in the Hugging Face cache, then fetched; pass ``tokenizer=`` to override it.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import logging
import os
import pickle
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.convert import convert_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from open_clip.pretrained import get_pretrained_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2

from .cache import default_cache_root

log = logging.getLogger(__name__)

WEIGHTS_ENV = "CROSSGAP_WEIGHTS"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
PRECISIONS = ("fp32", "fp16", "bf16")
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
PROJECT_MODELS = ("crossgap-tiny", "crossgap-small", "crossgap-micro", "slip-vit-b-16", "slip-vit-l-16")

MODEL_ALIASES: dict[str, str] = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
    "SLIP_VITB16": "slip-vit-b-16",
    "SLIP_VITL16": "slip-vit-l-16",
    "CLIP_VITB16": "slip-vit-b-16",
    "CLIP_VITL16": "slip-vit-l-16",
}

SLIP_URL = "https://dl.fbaipublicfiles.com/slip/{tag}.pt"
SLIP_TAGS: dict[str, tuple[str, ...]] = {
    "slip-vit-b-16": (
        "slip_base_100ep", "slip_base_50ep", "slip_base_25ep", "clip_base_25ep",
        "slip_base_cc3m_40ep", "clip_base_cc3m_40ep", "slip_base_cc12m_35ep", "clip_base_cc12m_35ep",
    ),
    "slip-vit-l-16": ("slip_large_100ep", "slip_large_50ep", "slip_large_25ep", "clip_large_25ep"),
}
# SLIP evaluates with Resize(224) (bilinear) + CenterCrop(224) and ImageNet statistics.
SLIP_PREPROCESS = {
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
    "resize_mode": "shortest",
}

if "crossgap-tiny" not in open_clip.list_models():
    open_clip.add_model_config(MODEL_CONFIG_DIR)


class AssetNotFoundError(FileNotFoundError):
    """Weights or tokenizer files that are neither on disk nor downloadable."""


@dataclass
class LoadedClip:
    """A CLIP-style model with what is needed to feed it."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    name: str
    pretrained: str | None
    device: str = "cpu"
    precision: str = "fp32"
    weights_path: str | None = None


# ----------------------------------------------------------------------------------------------------------- names


def list_models() -> list[str]:
    """All names ``load_clip`` accepts: open_clip architectures, project configs and aliases."""
    return sorted(set(open_clip.list_models()) | set(MODEL_ALIASES), key=str.lower)


def resolve_model_name(name: str) -> str:
    """The open_clip architecture name behind ``name`` (an alias, a project config or an open_clip name)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty model name string, got {name!r}")
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    known = open_clip.list_models()
    if name in known:
        return name
    by_lower = {n.lower(): MODEL_ALIASES.get(n, n) for n in list(known) + list(MODEL_ALIASES)}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, list_models(), n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"name: unknown model {name!r}.{hint} See crossgap_lib.models.list_models() for the accepted names "
        f"(open_clip architectures, OpenAI aliases such as 'ViT-B/32', project configs {PROJECT_MODELS})."
    )


def list_pretrained_tags(name: str) -> list[str]:
    """Known weight tags for ``name``: open_clip's ``list_pretrained_tags_by_model`` plus the SLIP tags."""
    arch = resolve_model_name(name)
    return list(open_clip.list_pretrained_tags_by_model(arch)) + list(SLIP_TAGS.get(arch, ()))


# --------------------------------------------------------------------------------------------- locating weights


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")


def _weight_folders() -> list[Path]:
    folders = []
    if os.environ.get(WEIGHTS_ENV):
        folders.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    folders.append(default_cache_root() / "weights")
    return folders


def _hf_hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _url_cache() -> Path:
    return Path("~/.cache/clip").expanduser()  # open_clip's download folder for URL weights


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.cache
def _network_available(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (checked once per host)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _hf_cached_file(repo_id: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_hub_cache())
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hf_repo_and_files(cfg: dict) -> tuple[str, list[str]]:
    """Repo id and candidate file names (safetensors first) of an open_clip ``hf_hub`` tag entry."""
    repo_id, filename = os.path.split(cfg["hf_hub"])
    filename = filename or "open_clip_pytorch_model.bin"
    if filename == "open_clip_pytorch_model.bin":
        return repo_id, ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return repo_id, [filename[:-4] + ".safetensors", filename]
    return repo_id, [filename]


def _provide_hint(arch: str, tag: str) -> str:
    return (
        f"To provide it: put the file in the folder named by ${WEIGHTS_ENV} as {arch}__{tag}.safetensors (or .pt, "
        f".pth, .bin), or pass pretrained='/path/to/checkpoint', or run load_clip({arch!r}, {tag!r}) once with "
        f"network to fill the cache (open_clip tags: Hugging Face cache under HF_HOME="
        f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}; SLIP tags: ${WEIGHTS_ENV} or {_weight_folders()[-1]})."
    )


def _locate_weights(arch: str, tag: str, progress: bool = True) -> tuple[str, dict]:
    """Path of the weights for ``arch`` + ``tag`` (found locally or downloaded) and the tag's open_clip config."""
    looked: list[str] = [] if os.environ.get(WEIGHTS_ENV) else [f"${WEIGHTS_ENV} (not set)"]
    names = list(dict.fromkeys((tag, _clean_tag(tag))))
    for folder in _weight_folders():
        for t in names:
            looked.append(f"{folder / f'{arch}__{t}'}{{{','.join(WEIGHT_SUFFIXES)}}}")
            for suffix in WEIGHT_SUFFIXES:
                candidate = folder / f"{arch}__{t}{suffix}"
                if candidate.is_file():
                    return str(candidate), get_pretrained_cfg(arch, _clean_tag(tag))

    tag_cfg = get_pretrained_cfg(arch, _clean_tag(tag))
    slip_tag = _clean_tag(tag) if _clean_tag(tag) in SLIP_TAGS.get(arch, ()) else None
    if not tag_cfg and slip_tag is None:
        known = list_pretrained_tags(arch)
        raise ValueError(
            f"pretrained: {tag!r} is neither a checkpoint file nor a known tag for {arch!r}. Known tags: "
            f"{known or 'none (no published weights; pass a checkpoint path)'} "
            f"(open_clip.list_pretrained_tags_by_model({arch!r}) plus SLIP tags). A local file for another tag is "
            f"found as ${WEIGHTS_ENV}/{arch}__<tag>.safetensors|.pt|.pth|.bin."
        )

    if slip_tag is not None:
        url, host = SLIP_URL.format(tag=slip_tag), "dl.fbaipublicfiles.com"
    elif tag_cfg.get("hf_hub") and not tag_cfg.get("file"):
        repo_id, filenames = _hf_repo_and_files(tag_cfg)
        cached = _hf_cached_file(repo_id, filenames)
        looked.append(f"Hugging Face cache {_hf_hub_cache()} (repo {repo_id}, files {filenames})")
        if tag_cfg.get("url") and not cached:  # also accept a file open_clip fetched from the tag's plain URL
            url_copy = _url_cache() / os.path.basename(tag_cfg["url"])
            looked.append(str(url_copy))
            cached = str(url_copy) if url_copy.is_file() else None
        if cached:
            return cached, tag_cfg
        url, host = f"hf-hub:{repo_id}", _hf_host()
    elif tag_cfg.get("url"):
        url = tag_cfg["url"]
        host = urlparse(url).hostname or ""
        cached_path = _url_cache() / os.path.basename(url)
        looked.append(str(cached_path))
        if cached_path.is_file():
            return str(cached_path), tag_cfg
    else:
        return tag_cfg["file"], tag_cfg

    offline = _hf_offline() if url.startswith("hf-hub:") else False
    if offline or not _network_available(host):
        why = "HF_HUB_OFFLINE is set" if offline else f"no network ({host} unreachable)"
        raise AssetNotFoundError(
            f"Weights for model {arch!r}, tag {tag!r} are not on this machine and cannot be downloaded ({why}). "
            f"Looked in: {'; '.join(looked)}. {_provide_hint(arch, tag)}"
        )
    try:
        if slip_tag is not None:
            folder = _weight_folders()[0]
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{arch}__{slip_tag}.pt"
            torch.hub.download_url_to_file(url, str(target), progress=progress)
            return str(target), tag_cfg
        return open_clip.pretrained.download_pretrained(tag_cfg), tag_cfg
    except Exception as exc:  # network errors vary by backend; report them in one readable line
        raise AssetNotFoundError(
            f"Downloading weights for model {arch!r}, tag {tag!r} from {url} failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Looked first in: {'; '.join(looked)}. "
            f"{_provide_hint(arch, tag)}"
        ) from exc


# ---------------------------------------------------------------------------------------------- reading checkpoints


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(WEIGHT_SUFFIXES) or value.endswith(".ckpt")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict (``module.`` prefix stripped) and metadata of a checkpoint, read with ``weights_only=True``."""
    path = Path(path)
    expected = (
        "expected a weights-only PyTorch/safetensors checkpoint: a state dict, or a dict with 'state_dict' "
        "(crossgap_lib.train and SLIP checkpoints)"
    )
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: checkpoint file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({exc}); {expected}") from exc
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch words its refusal "Unsupported global: GLOBAL x.y ..." (2.4-2.5) or "Trying to load unsupported
            # GLOBAL x.y whose module x is blocked" (2.6+); both name the callable the pickle would run
            found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(exc), flags=re.IGNORECASE)
            if found is None:  # not a pickle torch can parse at all
                raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint (unreadable pickle); {expected}") from exc
            raise ValueError(
                f"{str(path)!r} refused: it holds {found.group(1)}, a Python callable that torch.load would run "
                f"(weights_only=True allows only tensors and plain containers); {expected}. If you trust the file, "
                f"re-save its state dict: torch.save(torch.load(path, weights_only=False)['state_dict'], 'clean.pt')."
            ) from exc
        except Exception as exc:
            raise ValueError(
                f"{str(path)!r} is not a PyTorch checkpoint ({type(exc).__name__}: {exc}); {expected}"
            ) from exc

    meta: dict[str, Any] = {}
    if isinstance(obj, torch.jit.ScriptModule):  # OpenAI's original TorchScript archives
        obj = {
            k: v for k, v in obj.state_dict().items() if k not in ("input_resolution", "context_length", "vocab_size")
        }
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {list(obj)[:6]}"
        raise ValueError(f"{str(path)!r} holds a {found}; {expected}")
    state_dict = dict(obj)
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict, meta


def is_slip_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a (``module.``-stripped) state dict has SLIP's layout (timm ``visual.*`` + ``image_projection``)."""
    return "image_projection" in state_dict and any(k.startswith("visual.blocks.") for k in state_dict)


def convert_slip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a SLIP/CLIP state dict (SLIP repo layout) onto open_clip ``CLIP`` with a timm trunk; drops ``image_mlp``.

    ``visual.X`` -> ``visual.trunk.X``; ``image_projection`` (vision_width, D) -> ``visual.head.proj.weight``
    (D, vision_width); text keys (``transformer.*``, ``token_embedding``, ``positional_embedding``, ``ln_final``,
    ``text_projection``, ``logit_scale``) keep their names.
    """
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if not is_slip_state_dict(state_dict):
        raise ValueError(
            "state_dict: not a SLIP layout, expected 'image_projection' and timm 'visual.blocks.*' keys, got "
            f"{sorted(state_dict)[:6]}..."
        )
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("image_mlp."):
            continue
        if key.startswith("visual."):
            converted["visual.trunk." + key[len("visual."):]] = value
        elif key == "image_projection":
            converted["visual.head.proj.weight"] = value.t().contiguous()
        else:
            converted[key] = value
    return converted


def _to_open_clip_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if is_slip_state_dict(state_dict):
        return convert_slip_state_dict(state_dict)
    state_dict = convert_state_dict(model, state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state_dict and target is not None and state_dict[key].ndim != target.ndim:
            state_dict[key] = state_dict[key].reshape(target.shape)
    if (
        "logit_bias" not in state_dict
        and getattr(model, "logit_bias", None) is not None
        and "logit_scale" in state_dict
    ):
        state_dict["logit_bias"] = torch.zeros_like(state_dict["logit_scale"])
    resize_pos_embed(state_dict, model)
    resize_text_pos_embed(state_dict, model)
    return state_dict


def _load_weights(model: torch.nn.Module, arch: str, path: str) -> None:
    state_dict, meta = read_checkpoint(path)
    saved_name = meta.get("model_name")
    if isinstance(saved_name, str) and saved_name and resolve_model_name(saved_name) != arch:
        raise ValueError(
            f"pretrained: checkpoint {path!r} was saved for model {saved_name!r}, but name resolves to {arch!r}; "
            f"call load_clip({saved_name!r}, pretrained={path!r})"
        )
    try:
        state_dict = _to_open_clip_state_dict(model, state_dict)
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, AssertionError) as exc:  # open_clip's pos-embed resizing asserts on width mismatches
        missing = sorted(set(model.state_dict()) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(model.state_dict()))
        raise ValueError(
            f"Checkpoint {path!r} does not fit model {arch!r}: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}. Expected an open_clip {arch} state dict, a crossgap_lib.train "
            f"checkpoint of {arch} or a SLIP checkpoint. ({(str(exc) or type(exc).__name__).splitlines()[-1][:300]})"
        ) from exc


# ----------------------------------------------------------------------------------------------------- tokenizers


def _tokenizer_for(arch: str) -> Callable[..., torch.Tensor]:
    text_cfg = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name:
        return open_clip.get_tokenizer(arch)
    local = None
    looked = []
    if os.environ.get(WEIGHTS_ENV):
        folder = Path(os.environ[WEIGHTS_ENV]).expanduser() / hf_name.replace("/", "__")
        looked.append(str(folder))
        local = str(folder) if folder.is_dir() else None
    else:
        looked.append(f"${WEIGHTS_ENV} (not set)")
    if local is None:
        cached = _hf_cached_file(hf_name, ["tokenizer_config.json"])
        looked.append(f"Hugging Face cache {_hf_hub_cache()} (repo {hf_name})")
        local = os.path.dirname(cached) if cached else None
    if local is None and (_hf_offline() or not _network_available(_hf_host())):
        raise AssetNotFoundError(
            f"The tokenizer of model {arch!r} is the Hugging Face tokenizer {hf_name!r}, which is not on this machine "
            f"and cannot be fetched (no network or HF_HUB_OFFLINE). Looked in: {'; '.join(looked)}. To provide it: on "
            f"a machine with network run `python -c \"import open_clip; "
            f"open_clip.get_tokenizer('{arch}').save_pretrained('<dir>/{hf_name.replace('/', '__')}')\"` and set "
            f"{WEIGHTS_ENV}=<dir>, or pre-fill the Hugging Face cache (HF_HOME); for random-init tests pass "
            f"load_clip(..., tokenizer=<callable>)."
        )
    try:
        return open_clip.tokenizer.HFTokenizer(
            local or hf_name,
            context_length=text_cfg.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    except Exception as exc:
        raise AssetNotFoundError(
            f"Loading the tokenizer {hf_name!r} of model {arch!r} from {local or 'the hub'} failed: "
            f"{type(exc).__name__}: {exc}. Looked in: {'; '.join(looked)}."
        ) from exc


# ---------------------------------------------------------------------------------------------------------- loading


@contextlib.contextmanager
def quiet_random_init() -> Iterator[None]:
    """Hide open_clip's 'initialized randomly' log line (weights are loaded right after, or random init is meant)."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


_ACCELERATORS = ("cuda", "mps", "xpu")


def _accelerator(kind: str) -> tuple[str, bool, int]:
    """(availability check as written in messages, available, number of visible devices) of an accelerator type."""
    if kind == "mps":
        backend, check = getattr(torch.backends, "mps", None), "torch.backends.mps.is_available()"
    else:
        backend, check = getattr(torch, kind, None), f"torch.{kind}.is_available()"
    available = bool(backend is not None and backend.is_available())
    count = int(backend.device_count()) if available and hasattr(backend, "device_count") else int(available)
    return check, available, count


def _check_device(device: str | torch.device) -> str:
    """The device as a string; ``ValueError`` for a malformed name, an unsupported type, an accelerator that is not
    available or an index past the visible devices."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a torch device string (expected e.g. 'cpu', 'cuda:0')") from exc
    if parsed.type == "cpu":
        return str(parsed)
    if parsed.type not in _ACCELERATORS:
        raise ValueError(f"device: {device!r} has type {parsed.type!r}; expected 'cpu' or one of {list(_ACCELERATORS)}")
    check, available, count = _accelerator(parsed.type)
    if not available:
        raise ValueError(f"device: {device!r} requested but {check} is False; use device='cpu'")
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f"device: {device!r} requested but only {count} {parsed.type} device(s) are visible "
                         f"(indices 0..{count - 1}); use e.g. device='{parsed.type}:0'")
    return str(parsed)


def load_clip(
    name: str,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    tokenizer: Callable[..., torch.Tensor] | None = None,
    progress: bool = True,
) -> LoadedClip:
    """Build a CLIP-family model by name with weights from a tag, a file or random init; returns it in eval mode.

    ``preprocess(PIL image) -> (3, H, W)`` float tensor; ``tokenizer(list[str]) -> (N, context_length)`` long.
    """
    arch = resolve_model_name(name)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not supported, expected one of {PRECISIONS}")
    device = _check_device(device)
    if tokenizer is not None and not callable(tokenizer):
        raise ValueError(f"tokenizer: expected a callable list[str] -> LongTensor, got {type(tokenizer).__name__}")
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained: expected None, a tag or a checkpoint path, got {type(pretrained).__name__}")

    weights_path, tag_cfg = None, {}
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
        if os.path.isfile(pretrained):
            weights_path = pretrained
        elif _looks_like_path(pretrained):
            raise FileNotFoundError(
                f"pretrained: checkpoint file {pretrained!r} does not exist (for a tag, pass e.g. 'openai'; "
                f"tags of {arch!r}: {list_pretrained_tags(arch)})"
            )
        else:
            weights_path, tag_cfg = _locate_weights(arch, pretrained, progress=progress)

    config = open_clip.get_model_config(arch) or {}
    preprocess_override = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    if arch.startswith("slip-"):
        preprocess_override = {**SLIP_PREPROCESS, **preprocess_override}
    force_quick_gelu = bool(tag_cfg.get("quick_gelu")) and not config.get("quick_gelu", False)
    if force_quick_gelu:
        log.info("load_clip(%r, %r): using QuickGELU, as the tag was trained with it", arch, pretrained)

    tokenizer = tokenizer if tokenizer is not None else _tokenizer_for(arch)  # before the model: fail fast
    with quiet_random_init():
        model = open_clip.create_model(
            arch,
            pretrained=None,
            precision=precision,
            device=device,
            force_quick_gelu=force_quick_gelu,
            force_preprocess_cfg=preprocess_override,
            pretrained_text=False,
        )
    if weights_path is not None:
        _load_weights(model, arch, weights_path)
    else:
        log.warning(
            "load_clip(%r): pretrained=None, so the weights are random; its features are meaningless for science "
            "(fine for tests and shape checks).",
            name,
        )
    model.eval()

    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return LoadedClip(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        name=arch,
        pretrained=pretrained,
        device=device,
        precision=precision,
        weights_path=weights_path,
    )
