"""Preflight: are the weights and datasets a set of notebook parameters needs on this machine? Checked, not loaded.

>>> missing_assets({"SOURCE": "paper", "DEVICE": "cuda"})          # a source named in profiles.yml ...
>>> missing_assets({"SOURCE": {"kind": "paper", "models": ["CLIP B/32"], "image_datasets": ["cub"]}})  # ... or a dict
['weights of CLIP B/32 (ViT-B-32, tag openai): not found ...', "dataset cub (CUB-200-2011): ..."]

``SOURCE`` is a source: a name under ``sources`` in ``profiles.yml``, a dict with a ``kind``, or (older notebooks) the
kind itself. Only ``kind: paper`` needs anything: the laboratory (``lab``) and dry runs (``dryrun``) generate their
data and models. For a paper source, every model of the source (``models``, ``curve.model``, the ``captioner``) and of
the notebook parameters ``MODEL`` / ``*MODELS`` must have its weights (and a Hugging Face tokenizer where the model
uses one) in ``$CROSSGAP_WEIGHTS``, crossgap's weight cache or open_clip's caches (a checkpoint file: in
``$CROSSGAP_WEIGHTS``); every dataset of the source (``*datasets``: image, text, including the purely textual IMDB,
20 Newsgroups and NanoBEIR sets, and zero-shot; ``curve.dataset``) and of the parameters ``DATASET`` / ``*DATASETS``
must be found under ``DATA_ROOT`` (parameter or source ``data_root``) or ``$CROSSGAP_DATA``, and so must the caption
set, with its images, of every model row that says ``finetune`` (e.g. COCO's train split); a ``DEVICE`` of ``cuda``
needs a GPU visible to torch. Nothing is downloaded, loaded or written: each missing item is one message saying what is
missing and how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PREFETCH_COMMAND = "python -m crossgap_lib.book prefetch --profile paper"
NEEDS_ASSETS = ("paper",)  # source kinds whose notebooks read real weights and datasets
PROFILES = Path(__file__).resolve().parent.parent / "profiles.yml"


def resolve_source(source: Any, profiles_path: Path | None = None) -> dict:
    """The source dict of a ``SOURCE`` parameter: a dict as is, a name under ``sources`` in ``profiles.yml``, or (a
    name not defined there) ``{"kind": name}``."""
    if isinstance(source, dict):
        return source
    if not isinstance(source, str):
        return {}
    path = profiles_path or PROFILES
    sources = {}
    if path.exists():
        import yaml

        sources = (yaml.safe_load(path.read_text()) or {}).get("sources", {}) or {}
    return {"name": source, **sources[source]} if isinstance(sources.get(source), dict) else {"name": source,
                                                                                              "kind": source}


def _entries(mapping: dict[str, Any], single: str, plural_suffix: str) -> list[Any]:
    """Values of the keys named ``single`` or ending in ``plural_suffix`` (any case), flattened, first-seen order."""
    found: dict[str, Any] = {}
    for key, value in mapping.items():
        if key.upper() == single or key.upper().endswith(plural_suffix):
            for entry in value if isinstance(value, (list, tuple)) else [value]:
                if entry is not None:
                    found.setdefault(repr(entry), entry)
    return list(found.values())


def needs_assets(parameters: dict[str, Any]) -> bool:
    """Whether the parameters' source reads real weights and datasets (``kind: paper``)."""
    return resolve_source(parameters.get("SOURCE")).get("kind") in NEEDS_ASSETS


def model_labels(parameters: dict[str, Any]) -> list[Any]:
    """The models the parameters name: the source's ``models``, ``curve.model`` and ``captioner`` (as a model dict),
    then ``MODEL`` / ``*MODELS``."""
    source = resolve_source(parameters.get("SOURCE"))
    curve = source.get("curve") if isinstance(source.get("curve"), dict) else {}
    entries = [*_entries({"MODELS": source.get("models")}, "", "MODELS"), *_entries({"MODEL": curve.get("model")},
               "MODEL", "MODELS"), *_captioner_entry(source), *_entries(parameters, "MODEL", "MODELS")]
    return list({repr(entry): entry for entry in entries}.values())


def _captioner_entry(source: dict) -> list[dict]:
    """The source's ``captioner`` (crossgap_lib.captions) as a model dict, so its weights are checked and prefetched
    like a model's; nothing without a captioner or with random weights (a bad spec is reported by the evaluation)."""
    if not source.get("captioner"):
        return []
    from .captions import CaptionerConfig

    try:
        config = CaptionerConfig.from_dict(source["captioner"])
    except ValueError:
        return []
    if config.pretrained is None:
        return []
    return [{"label": f"captioner {config.model}", "open_clip_name": config.model, "pretrained": config.pretrained}]


def dataset_names(parameters: dict[str, Any]) -> list[str]:
    """The datasets the parameters name: the source's ``*datasets`` and ``curve.dataset``, then ``DATASET(S)``."""
    source = resolve_source(parameters.get("SOURCE"))
    curve = source.get("curve") if isinstance(source.get("curve"), dict) else {}
    entries = [*_entries(source, "", "DATASETS"), *_entries({"DATASET": curve.get("dataset")}, "DATASET", "DATASETS"),
               *_entries(parameters, "DATASET", "DATASETS")]
    return list(dict.fromkeys(str(name) for name in entries))


def model_row(entry: Any) -> tuple[str, str, str]:
    """``(label, open_clip name, pretrained tag or checkpoint file)`` of a model entry; ValueError if unknown."""
    try:
        from .paper import model_settings
    except ImportError:  # the older layout: experiments.paper_models
        from .experiments import paper_models

        if not isinstance(entry, str):
            raise ValueError(f"model {entry!r}: expected one of the paper's labels") from None
        model = paper_models([entry])[0]
    else:
        model = model_settings(entry)
    return model.label, model.open_clip_name, model.pretrained


def find_weights(arch: str, tag: str) -> tuple[str | None, list[str]]:
    """Local path of the weights of ``arch`` + ``tag`` (None if absent) and the places looked at; never downloads."""
    from open_clip.pretrained import get_pretrained_cfg

    from . import models

    if os.path.isfile(tag):
        return tag, [tag]
    looked: list[str] = [] if os.environ.get(models.WEIGHTS_ENV) else [f"${models.WEIGHTS_ENV} (not set)"]
    clean = models._clean_tag(tag)
    for folder in models._weight_folders():
        for name in dict.fromkeys((tag, clean)):
            looked.append(f"{folder / f'{arch}__{name}'}{{{','.join(models.WEIGHT_SUFFIXES)}}}")
            for suffix in models.WEIGHT_SUFFIXES:
                if (folder / f"{arch}__{name}{suffix}").is_file():
                    return str(folder / f"{arch}__{name}{suffix}"), looked
    cfg = get_pretrained_cfg(arch, clean) or {}
    if cfg.get("hf_hub") and not cfg.get("file"):
        repo_id, filenames = models._hf_repo_and_files(cfg)
        looked.append(f"Hugging Face cache {models._hf_hub_cache()} (repo {repo_id})")
        cached = models._hf_cached_file(repo_id, filenames)
        if cached:
            return cached, looked
    if cfg.get("url"):
        copy = models._url_cache() / os.path.basename(cfg["url"])
        looked.append(str(copy))
        if copy.is_file():
            return str(copy), looked
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return cfg["file"], looked
    return None, looked


def find_tokenizer(arch: str) -> tuple[bool, str | None]:
    """Whether the tokenizer of ``arch`` is on this machine, and its Hugging Face name (None: built into open_clip)."""
    import open_clip

    from . import models

    hf_name = ((open_clip.get_model_config(arch) or {}).get("text_cfg") or {}).get("hf_tokenizer_name")
    if not hf_name:
        return True, None
    if os.environ.get(models.WEIGHTS_ENV):
        if (Path(os.environ[models.WEIGHTS_ENV]).expanduser() / hf_name.replace("/", "__")).is_dir():
            return True, hf_name
    return models._hf_cached_file(hf_name, ["tokenizer_config.json"]) is not None, hf_name


def _missing_models(entries: list[Any]) -> list[str]:
    from . import models

    messages = []
    for entry in entries:
        try:
            label, name, pretrained = model_row(entry)
            arch = models.resolve_model_name(name)
        except ValueError as err:
            messages.append(f"model {entry!r}: {err} (check the MODEL/MODELS parameters)")
            continue
        if pretrained.endswith((*models.WEIGHT_SUFFIXES, ".ckpt")):  # a checkpoint file, not a tag
            folder = os.environ.get(models.WEIGHTS_ENV)
            if not (os.path.isfile(pretrained) or (folder and (Path(folder).expanduser() / pretrained).is_file())):
                where = f"${models.WEIGHTS_ENV}={folder}" if folder else f"${models.WEIGHTS_ENV} (not set)"
                messages.append(f"checkpoint of {label} ({arch}): {pretrained} not found in {where}. Provide it: put "
                                f"the file in the folder named by ${models.WEIGHTS_ENV}, or give its full path")
        else:
            path, looked = find_weights(arch, pretrained)
            if path is None:
                messages.append(
                    f"weights of {label} ({arch}, tag {pretrained}): not found (looked in {'; '.join(looked)}). "
                    f"Provide them with `{PREFETCH_COMMAND}` once on a machine with network (fills the caches), or "
                    f"put the file in ${models.WEIGHTS_ENV} as {arch}__{pretrained}.safetensors (or .pt, .pth, .bin)"
                )
        present, hf_name = find_tokenizer(arch)
        if not present:
            messages.append(
                f"tokenizer of {label} (Hugging Face {hf_name}): not found in ${models.WEIGHTS_ENV}/"
                f"{hf_name.replace('/', '__')}/ nor in the Hugging Face cache. Provide it with `{PREFETCH_COMMAND}` "
                f"once with network, or save it there with open_clip.get_tokenizer({arch!r}).save_pretrained(...)"
            )
    return list(dict.fromkeys(messages))


def _missing_datasets(names: list[str], root: Any) -> list[str]:
    from . import datasets
    from .datasets import base

    messages = []
    for name in names:
        try:
            spec = datasets._spec(name)
        except ValueError as err:
            messages.append(f"dataset {name!r}: {err}")
            continue
        try:
            base.locate(spec, root)
        except FileNotFoundError as err:
            where = f"DATA_ROOT={root}" if root else f"${base.DATA_ENV}"
            setup = "" if root or os.environ.get(base.DATA_ENV) else f"set ${base.DATA_ENV} to a folder and "
            first_line = str(err).splitlines()[0].rstrip(".").replace(f"{spec.title} ({spec.name!r}) ", "", 1)
            messages.append(
                f"dataset {spec.name} ({spec.title}): {first_line}. Provide it: {setup}put it in "
                f"{where}/{spec.folder}/ (published at {spec.url}); the expected layout is printed by "
                f"`python -c \"from crossgap_lib.datasets import describe; print(describe('{spec.name}'))\"`"
            )
    return messages


def _missing_finetune_data(entries: list[Any], root: Any) -> list[str]:
    """One message per caption set (json or images) that a model row's ``finetune`` needs and this machine lacks."""
    from .finetune import missing_caption_images
    from .paper import model_settings

    needs: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        try:
            model = model_settings(entry)
        except ValueError:
            continue  # reported by _missing_models
        if model.finetune:
            needs.setdefault((model.finetune["dataset"], model.finetune["split"]), []).append(model.label)
    messages = []
    for (name, split), labels in needs.items():
        problem = missing_caption_images(name, root)
        if problem:
            messages.append(f"fine-tuning data of {', '.join(labels)} ({name} {split} split with images): {problem}")
    return messages


def _missing_device(device: Any) -> list[str]:
    if not str(device or "").startswith("cuda"):
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return [f"device {device}: torch sees no CUDA GPU on this machine. Run the paper profile on a GPU machine "
            "(the book-gpu workflow), or pass DEVICE cpu for a (slow) CPU run of one notebook"]


def missing_assets(parameters: dict[str, Any]) -> list[str]:
    """One message per weight file, tokenizer, dataset or GPU the parameters need but this machine lacks."""
    if not needs_assets(parameters):
        return []
    root = parameters.get("DATA_ROOT") or resolve_source(parameters.get("SOURCE")).get("data_root") or None
    models = model_labels(parameters)
    return (_missing_device(parameters.get("DEVICE")) + _missing_models(models)
            + _missing_datasets(dataset_names(parameters), root) + _missing_finetune_data(models, root))
