"""One evaluation protocol for every source of models and data: the evidence every page of the book reads.

A *source* says where models and datasets come from; :func:`evaluate` runs the same protocol on any of them and
returns an :class:`Evidence`, the single stored result every page reads (no page retrains, reloads or recomputes):

- ``lab``: tiny CLIPs trained here (:mod:`crossgap_lib.train`) on the built-in generated dataset (one dataset,
  ``shapes``, serving every task), several training settings x seeds;
- ``paper``: the paper's models (``settings.csv``, weights from the open_clip cache or ``$CROSSGAP_WEIGHTS``) on its
  datasets (``$CROSSGAP_DATA``), one released model per row;
- ``dryrun``: the ``paper`` source with the paper's real architectures and *random* weights written as local
  checkpoints, on miniature copies of every dataset in its real on-disk format (:mod:`crossgap_lib.dryrun`), on CPU.

Per model (and seed), the protocol measures on every image dataset: intra-modal image->image retrieval, OTI->image,
the post-hoc baselines (mean centering, shift along the gap, the critique's text-span projections), the class
prompt->image baseline, the captioning baseline ``caption`` (caption->image: a captioner's caption of each query,
:mod:`crossgap_lib.captions`, or in the lab the query's own caption) and the Intra-OTI control ``oti both`` (OTI->OTI
of the gallery, source option ``intra_oti``); on every text dataset (captions, and the purely textual IMDB,
20 Newsgroups and NanoBEIR): text->text and OVI->text; on every zero-shot dataset: image vs class prompts
(inter-modal) and OTI vs class prompts (intra-modal); the modality gap on paired image-text features; OTI and OVI
seconds per query on the machine that computes (``device``); and, on one model and dataset, the OTI curve along the
optimisation steps. Per-query values are kept for every
comparison, so every difference on every page gets its interval from :mod:`crossgap_lib.stats`.

Sources are plain dicts (the ``sources`` of ``profiles.yml``), so a notebook parameter names or holds one::

    evidence = evaluate(load_source("lab-smoke"))
    evidence = evaluate({"kind": "paper", "models": ["CLIP B/32"], "image_datasets": ["cub"]}, device="cuda")
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import gap, metrics, pipeline
from .cache import atomic_save, cache_key, check_writable, default_cache_root, exclusive, safe_load
from .inversion import InversionConfig
from .models import WEIGHTS_ENV
from .templates import clean_classname, format_prompts, zero_shot_prompt

EVIDENCE_VERSION = 4  # bump when a change alters what a source computes (invalidates stored evidence)
KINDS = ("lab", "paper", "dryrun")
PROMPT = "a photo of a {}."  # generic class prompt (PCA span vocabulary, OTI-curve histograms); per-dataset: templates
# Which revisited Oxford/Paris protocol is the per-query AP (and "mAP") that enters averages and contrasts; Easy, Medium
# and Hard are all recorded. The authors' code (miccunifi/Cross-the-Gap src/retrieval.py,
# compute_roxford_rparis_metrics) returns mAP_easy, mAP_medium and mAP_hard side by side and averages none of them;
# which one their tables report is not in the code. Medium (easy + hard positives) is the revisited protocol's usual
# headline (Radenovic et al. 2018, filipradenovic/revisitop), so it stands in until the paper says otherwise.
REVISITED_HEADLINE = "medium"


# ---------------------------------------------------------------------------------------------------- sources
@dataclass
class ModelEntry:
    """One model the protocol evaluates: a row on every page."""

    label: str  # lab setting name or paper model label
    family: str  # "clip" | "slip" | "soft" | "siglip": which of the paper's claims the row speaks to
    seed: int
    oti: InversionConfig
    ovi: InversionConfig
    load: Callable[[str], Any]  # device -> LoadedClip
    temperature: float | None = None  # a fixed training temperature (Table 4 rows); None: learnt
    info: dict = field(default_factory=dict)  # e.g. the lab's training curves


@dataclass
class ImageTask:
    """Image->image retrieval on one dataset: query and gallery images, and texts that stand for the gallery."""

    dataset: str
    queries: Any
    gallery: Any
    exclude_self: bool
    classnames: list[str] | None
    gallery_texts: list[str] | None = None  # a text per gallery image (lab: its caption); None: class prompts
    query_texts: list[str] | None = None  # a text per query image (lab: its caption), for the modality gap
    gnd: list[dict] | None = None  # revisited Oxford/Paris relevance
    template: str | None = None  # class-prompt template (crossgap_lib.templates); None: the source's "prompt"


@dataclass
class TextTask:
    """Text->text retrieval on one dataset (relevance: equal labels, or a given query x gallery matrix)."""

    dataset: str
    query_texts: list[str]
    query_labels: torch.Tensor
    gallery_texts: list[str]
    gallery_labels: torch.Tensor
    relevance: torch.Tensor | None = None  # bool (Q, N): e.g. NanoBEIR's qrels (its labels are all -1); None: labels


@dataclass
class ZeroShotTask:
    """Zero-shot classification of one dataset's images against one prompt per class."""

    dataset: str
    images: Any
    classnames: list[str]
    template: str | None = None  # its zero-shot template (crossgap_lib.templates); None: the source's "prompt"


def _lab_families(loss: str) -> str:
    return {"clip": "clip", "intra": "slip", "soft": "soft"}.get(loss, loss)


SOURCES_ENV = "CROSSGAP_SOURCES"  # an extra YAML file whose ``sources:`` add to (or replace) those of profiles.yml


def defined_sources(profiles_path: str | Path | None = None) -> dict[str, dict]:
    """Every named source: ``sources`` of ``profiles.yml``, updated by those of the file ``$CROSSGAP_SOURCES``."""
    import yaml

    path = Path(profiles_path) if profiles_path is not None else _profiles_path()
    sources = dict((yaml.safe_load(path.read_text()) or {}).get("sources", {}))
    extra = os.environ.get(SOURCES_ENV)
    if extra:
        if not Path(extra).is_file():
            raise FileNotFoundError(f"${SOURCES_ENV}={extra} is not a file; point it at a YAML file with a 'sources:' "
                                    "mapping (name -> source dict), or unset it")
        sources.update((yaml.safe_load(Path(extra).read_text()) or {}).get("sources", {}))
    return sources


def load_source(source: str | dict, profiles_path: str | Path | None = None) -> dict:
    """A source dict: ``source`` itself (a dict) or the named entry of :func:`defined_sources`."""
    if isinstance(source, dict):
        spec = copy.deepcopy(source)
    elif isinstance(source, str):
        sources = defined_sources(profiles_path)
        if source not in sources:
            raise ValueError(f"source {source!r} is not defined under 'sources' in profiles.yml or ${SOURCES_ENV}; "
                             f"defined: {sorted(sources)} (or pass a dict with a 'kind' of " + ", ".join(KINDS) + ")")
        spec = copy.deepcopy(sources[source])
        spec.setdefault("name", source)
    else:
        raise ValueError(f"source must be a name in profiles.yml or a dict, got {type(source).__name__}")
    if spec.get("kind") not in KINDS:
        raise ValueError(f"source {spec.get('name', spec)!r}: 'kind' must be one of {KINDS}, got {spec.get('kind')!r}")
    spec.setdefault("name", spec["kind"])
    return spec


def source_assets(source: str | dict) -> dict[str, list]:
    """What a source needs from outside: ``models`` (:class:`crossgap_lib.paper.PaperModel`) and ``datasets``
    (names) for a ``paper`` source; nothing for ``lab`` (generated here) and ``dryrun`` (written here)."""
    from . import paper

    spec = load_source(source)
    if spec["kind"] != "paper":
        return {"models": [], "datasets": []}
    models = [paper.model_settings(m, spec.get("inversion")) for m in spec.get("models", [])]
    datasets = list(dict.fromkeys([*spec.get("image_datasets", []), *spec.get("text_datasets", []),
                                   *spec.get("zero_shot_datasets", [])]))
    return {"models": models, "datasets": datasets, "data_root": spec.get("data_root")}


def _profiles_path() -> Path:
    here = Path(__file__).resolve().parent.parent / "profiles.yml"
    if here.exists():
        return here
    cwd = Path.cwd() / "profiles.yml"
    if cwd.exists():
        return cwd
    raise FileNotFoundError("profiles.yml not found next to crossgap_lib or in the working directory; pass the "
                            "source as a dict instead of a name")


class _LabSource:
    """Tiny CLIPs trained on the generated dataset: every setting x seed of a :class:`crossgap_lib.lab.LabConfig`."""

    def __init__(self, spec: dict, cache_dir: Path | None, progress: bool):
        from .lab import LabConfig

        self.config = LabConfig.from_dict({**spec.get("lab", {}),
                                           **({"cache_dir": str(cache_dir)} if cache_dir is not None else {})})
        self.config.progress = progress
        self.spec = spec

    def key_parts(self) -> dict:
        return {"lab": self.config.key()}

    def models(self) -> list[ModelEntry]:
        from .train import train_clip

        c = self.config
        oti, ovi = c.inversion("oti"), c.inversion("ovi")
        by_name = {setting["name"]: setting for setting in c.settings}
        entries = []
        for setting in c.settings:
            base = by_name[setting["finetune"]["from"]] if "finetune" in setting else setting
            for seed in c.seeds_of(setting):
                train_config = c.train_config(base, seed)

                def load(device: str, _tc=train_config, _setting=setting):
                    trained = train_clip(_tc, progress=c.progress)
                    info = {"losses": trained.losses, "logit_scales": trained.logit_scales,
                            "train_seconds": trained.train_seconds, "steps": trained.steps}
                    clip = trained.load(device=device)
                    if "finetune" in _setting:
                        clip, info = self._finetune(clip, _setting, _tc, device)
                    return clip, info

                loss = setting.get("finetune", {}).get("loss", train_config.loss)
                temperature = setting.get("finetune", {}).get("temperature", setting.get("temperature"))
                entries.append(ModelEntry(setting["name"], _lab_families(loss), seed, oti, ovi, load,
                                          temperature=temperature,
                                          info={"loss": loss, "data": base.get("data", {}),
                                                "tasks": c.tasks_of(setting),
                                                "finetuned from": setting.get("finetune", {}).get("from", "")}))
        return entries

    def _finetune(self, clip, setting: dict, train_config, device: str):
        """Fine-tune a trained lab CLIP with :func:`crossgap_lib.finetune.finetune_clip` on its training images."""
        from .finetune import finetune_clip
        from .train import _model_image_size, training_dataset

        config = self.config.finetune_config(setting, train_config.seed)
        dataset = training_dataset(train_config, image_size=_model_image_size(clip.model))
        result = finetune_clip(clip, dataset, config, cache_dir=self.config.cache_root(), progress=self.config.progress)
        return result.clip, {"losses": result.losses, "logit_scales": result.logit_scales,
                             "train_seconds": result.train_seconds, "steps": result.steps}

    def _shapes(self, clip, setting_data: dict):
        from .datasets.shapes import make_shapes

        size = clip.model.visual.image_size
        c = self.config
        data = {"image_size": int(size[0] if isinstance(size, (tuple, list)) else size), **c.data,
                **c.train.get("data", {}), **setting_data, **c.eval_data}
        return (make_shapes("test", n=c.n_test, config=data, seed=c.data_seed),
                make_shapes("val", n=c.n_gallery, config=data, seed=c.data_seed))

    def tasks(self, clip, entry: ModelEntry) -> dict:
        from .datasets.shapes import lab_vocabulary

        c = self.config
        test, gallery = self._shapes(clip, entry.info.get("data", {}))
        first = [caps[0] for caps in test.captions]
        gallery_first = [caps[0] for caps in gallery.captions]
        image = ImageTask("shapes", test, gallery, False, list(test.class_names), gallery_texts=gallery_first,
                          query_texts=first)
        n_ovi = len(first) if c.ovi_queries is None else min(c.ovi_queries, len(first))
        wanted = entry.info.get("tasks", ["image", "text", "zero_shot"])
        text = [TextTask("shapes", first[:n_ovi], test.labels[:n_ovi], gallery_first, gallery.labels)]
        zero_shot = [ZeroShotTask("shapes", test, list(test.class_names))]
        return {"image": [image] if "image" in wanted else [], "text": text if "text" in wanted else [],
                "zero_shot": zero_shot if "zero_shot" in wanted else [],
                # the Intra-OTI control (the gallery inverted too) on the first setting only, the CLIP the appendix
                # reads: inverting the 2048-image gallery of every model was a quarter of the lab's evaluation time
                "intra_oti": entry.label == c.settings[0]["name"],
                "gap": image, "prompt": c.prompt_template,
                "vocabulary": lab_vocabulary(test.config), "span_ks": c.span_ks}

    def curve(self) -> dict | None:
        curve = self.config.oti_curve
        if curve is None:
            return None
        return {"model": curve["setting"], "seeds": list(curve["seeds"]), "dataset": "shapes",
                "num_pseudo_tokens": list(curve["num_pseudo_tokens"]), "focus": curve["focus"],
                "steps": curve["steps"], "record": curve["record"], "queries": curve["queries"]}

    def describe(self) -> dict:
        c = self.config
        return {"kind": "lab", "model": c.model, "seeds": list(c.seeds), "n_test": c.n_test, "n_gallery": c.n_gallery,
                "settings": copy.deepcopy(c.settings)}


class _PaperSource:
    """The paper's models and datasets (or, for ``dryrun``, random-weight checkpoints on miniature datasets)."""

    def __init__(self, spec: dict, cache_dir: Path | None, progress: bool):
        from . import paper

        self.spec, self.progress = spec, progress
        self.cache_dir = cache_dir
        self.data_root = spec.get("data_root")
        self.weights_root = None
        self.rows = [paper.model_settings(m, self.spec.get("inversion")) for m in spec.get("models", [])]
        if spec["kind"] == "dryrun":
            from . import dryrun

            root = Path(spec.get("root") or (cache_dir or default_cache_root()) / "dryrun")
            datasets = sorted({*spec.get("image_datasets", []), *spec.get("text_datasets", []),
                               *spec.get("zero_shot_datasets", []),
                               *(r.finetune["dataset"] for r in self.rows if r.finetune)})  # fine-tuning data
            self.data_root = str(dryrun.write_miniature_datasets(root / "data", datasets=datasets, progress=progress,
                                                                 **spec.get("miniature", {})))
            self.weights_root = root / "weights"
            dryrun.write_random_checkpoints(self.weights_root, models=sorted({r.weights_label for r in self.rows}),
                                            progress=progress)
            for row in self.rows:  # checkpoint files a paper source names (Table 4's fine-tuned CLIPs)
                if row.pretrained.endswith((".pt", ".pth")):
                    dryrun.write_checkpoint_file(self.weights_root, row.open_clip_name, row.pretrained,
                                                 temperature=row.temperature)

    def key_parts(self) -> dict:
        from .finetune import spec_key

        models = [{k: (spec_key(v) if k == "finetune" else v) for k, v in asdict(r).items()
                   if k != "finetune" or v is not None} for r in self.rows]  # fine-tuned rows: keyed by their config
        return {"models": models, "data_root": str(self.data_root)}

    def models(self) -> list[ModelEntry]:
        from . import paper

        entries = []
        for row in self.rows:
            def load(device: str, _row=row):
                with _environment(WEIGHTS_ENV, self.weights_root):  # dryrun: the written checkpoints
                    clip = paper.load_model(_row, device=device)
                if _row.finetune is None:
                    return clip, {}
                from .finetune import finetune_from_spec

                tuned = finetune_from_spec(clip, _row.finetune, data_root=self.data_root,
                                           cache_dir=self.cache_dir or default_cache_root(), progress=self.progress)
                return tuned.clip, tuned.info()

            info = {"open_clip_name": row.open_clip_name, "pretrained": row.pretrained}
            if row.finetune:
                info["finetune"] = f"{row.finetune['dataset']} {row.finetune['loss']}, {row.finetune['steps']} steps"
            entries.append(ModelEntry(row.label, row.family, row.seed, row.oti, row.ovi, load,
                                      temperature=row.temperature, info=info))
        return entries

    def tasks(self, clip, entry: ModelEntry) -> dict:
        from .datasets import load_dataset, retrieval_protocol, zero_shot_split

        root = self.data_root
        images = []
        for name in self.spec.get("image_datasets", []):
            query_split, gallery_split, exclude_self = retrieval_protocol(name)
            queries = load_dataset(name, root=root, split=query_split)
            gallery = queries if gallery_split == query_split else load_dataset(name, root=root, split=gallery_split)
            images.append(ImageTask(name, queries, gallery, exclude_self, queries.classnames or None,
                                    gnd=getattr(queries, "gnd", None), template=zero_shot_prompt(name)))
        texts = []
        for name in self.spec.get("text_datasets", []):
            query_split, gallery_split, _ = retrieval_protocol(name)
            queries = load_dataset(name, root=root, split=query_split)
            gallery = load_dataset(name, root=root, split=gallery_split)
            limit = self.spec.get("ovi_queries")  # an int, or {dataset: int, "default": int} (the dry run's NanoBEIR)
            if isinstance(limit, dict):
                limit = limit.get(name, limit.get("default"))
            n = len(queries.texts) if limit is None else min(limit, len(queries.texts))
            relevance = queries.relevance(gallery)[:n] if hasattr(queries, "relevance") else None  # NanoBEIR qrels
            texts.append(TextTask(name, queries.texts[:n], queries.labels[:n], gallery.texts, gallery.labels,
                                  relevance=relevance))
        zero_shot = []
        for name in self.spec.get("zero_shot_datasets", []):
            samples = load_dataset(name, root=root, split=zero_shot_split(name))
            if not samples.classnames:
                raise ValueError(f"dataset {name!r} has no class names, so it cannot be used for zero-shot; remove "
                                 "it from the source's zero_shot_datasets")
            zero_shot.append(ZeroShotTask(name, samples, [clean_classname(c) for c in samples.classnames],
                                          template=zero_shot_prompt(name)))
        # the critique's span vocabulary: the 1000 ImageNet class names, bare (gap.critique_vocabulary)
        vocabulary = gap.critique_vocabulary()[:int(self.spec.get("span_vocabulary", 1000))]
        gap_task = next((t for t in images if t.classnames), images[0] if images else None)
        captions, figure_dataset = self._captions(images, clip.device)
        return {"image": images, "text": texts, "zero_shot": zero_shot, "gap": gap_task, "prompt": PROMPT,
                "vocabulary": vocabulary, "span_ks": self.spec.get("span_ks"),
                "captions": captions, "figure_dataset": figure_dataset, "intra_oti": _intra_oti(self.spec)}

    def _captions(self, images: list[ImageTask], device: str) -> tuple[dict[str, list[str]], str | None]:
        """The ``captioner``'s caption of every query image of the captioned datasets, and the Figure A2 dataset.

        The captioner is loaded once per run (then freed); its captions are cached and shared by every model."""
        from . import captions

        if not self.spec.get("captioner"):
            return {}, None
        config = captions.CaptionerConfig.from_dict(self.spec["captioner"])
        names = [t.dataset for t in images]
        unknown = sorted({*(config.datasets or ()), *([config.figure_dataset] if config.figure_dataset else [])}
                         - set(names))
        if unknown:
            raise ValueError(f"captioner: datasets {unknown} are not among the source's image_datasets {names}; "
                             "name some of those (or leave 'datasets' out to caption all)")
        wanted = [t for t in images if config.datasets is None or t.dataset in config.datasets]
        memo = self.__dict__.setdefault("_caption_memo", {})  # dataset -> captions, for the next models
        todo = [t for t in wanted if t.dataset not in memo]
        if todo:
            if self.spec["kind"] == "dryrun" and config.pretrained is not None:  # random weights stand in for it
                from . import dryrun

                dryrun.write_captioner_checkpoint(self.weights_root, config.model, config.pretrained)
            with _environment(WEIGHTS_ENV, self.weights_root):
                captioner = captions.load_captioner(config, device=device)
            for task in todo:
                memo[task.dataset] = captions.caption_images(captioner, task.queries, config, cache_dir=self.cache_dir,
                                                             progress=self.progress)
            del captioner
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()
        figure = config.figure_dataset or (wanted[0].dataset if wanted else None)
        return {t.dataset: memo[t.dataset] for t in wanted}, figure

    def curve(self) -> dict | None:
        curve = self.spec.get("curve")
        if not curve:
            return None
        return {"seed": 0, "queries": None, **curve}

    def describe(self) -> dict:
        return {"kind": self.spec["kind"], "models": [r.label for r in self.rows],
                "image_datasets": list(self.spec.get("image_datasets", [])),
                "text_datasets": list(self.spec.get("text_datasets", [])),
                "zero_shot_datasets": list(self.spec.get("zero_shot_datasets", [])),
                "data_root": str(self.data_root)}


@contextlib.contextmanager
def _environment(name: str, value: Path | None):
    """Set an environment variable for the block (nothing when ``value`` is None)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _open_source(spec: dict, cache_dir: Path | None, progress: bool):
    return _LabSource(spec, cache_dir, progress) if spec["kind"] == "lab" else _PaperSource(spec, cache_dir, progress)


# ---------------------------------------------------------------------------------------------------- evidence
@dataclass
class Evidence:
    """Everything a run measured. Fractions stay fractions (pages scale them).

    ``values``: tidy frame, one row per model x seed x task x dataset x method x metric. ``per_query``:
    ``"model|seed|task|dataset"`` -> {method: (Q,) float64 tensor} (AP per query for retrieval, 1/0 per image for
    zero-shot), the same queries for every method of a key. ``models``: one row per model (label, family,
    temperature, parameters, device). ``features``: the first seed's features of each model on the first image dataset
    (for the figures; ``captions``: the caption baseline's texts, ``figure``: the Figure A2-style record of the
    captioned dataset, caption features and thumbnails included). ``curve``: the OTI curve. ``training``: per model
    and seed, training curves (lab only). ``timings``: seconds per phase, and ``device``.
    """

    source: dict
    models: pd.DataFrame
    values: pd.DataFrame
    per_query: dict
    features: dict
    curve: dict
    training: dict
    timings: dict
    from_cache: bool = False

    # ----------------------------------------------------------------- lookups
    @property
    def labels(self) -> list[str]:
        """Model labels in source order."""
        return list(self.models["label"])

    @property
    def families(self) -> dict[str, str]:
        """Model label -> family ("clip", "slip", "soft", "siglip")."""
        return dict(zip(self.models["label"], self.models["family"]))

    @property
    def temperatures(self) -> dict[str, float | None]:
        """Model label -> its fixed training temperature, or None when it was learnt."""
        return {r["label"]: None if r["temperature"] is None or pd.isna(r["temperature"]) else float(r["temperature"])
                for r in self.models.to_dict("records")}

    def seeds(self, model: str) -> list[int]:
        """Seeds evaluated for one model."""
        return sorted({int(k.split("|")[1]) for k in self.per_query if k.split("|")[0] == model})

    def datasets(self, task: str) -> list[str]:
        """Datasets of one task, in source order."""
        rows = self.values[self.values["task"] == task]
        return list(dict.fromkeys(rows["dataset"]))

    def family(self, model: str) -> str:
        return str(self.models.set_index("label").loc[model, "family"])

    def queries(self, model: str, task: str, dataset: str, method: str) -> list[torch.Tensor]:
        """Per-seed per-query values of one model, task, dataset and method."""
        out = []
        for seed in self.seeds(model):
            unit = self.per_query.get(f"{model}|{seed}|{task}|{dataset}")
            if unit is None or method not in unit:
                raise KeyError(f"no per-query values for {model!r} seed {seed}, {task}/{dataset}, method {method!r}")
            out.append(unit[method])
        return out

    def methods(self, task: str) -> list[str]:
        """Methods measured on a task."""
        return list(dict.fromkeys(self.values[self.values["task"] == task]["method"]))

    def metric(self, metric: str, task: str | None = None, method: str | None = None) -> pd.DataFrame:
        """Rows of ``values`` for one metric (and task / method)."""
        rows = self.values[self.values["metric"] == metric]
        if task is not None:
            rows = rows[rows["task"] == task]
        if method is not None:
            rows = rows[rows["method"] == method]
        return rows

    # ----------------------------------------------------------------- statistics
    def _cells(self, model: str, task: str, datasets: list[str], method: str) -> list[list[torch.Tensor]]:
        return [[self.per_query[f"{model}|{seed}|{task}|{d}"][method] for d in datasets] for seed in self.seeds(model)]

    def has(self, model: str, task: str, dataset: str, method: str) -> bool:
        """Whether the evidence holds per-query values of a method on a model's dataset (every seed)."""
        return all(method in self.per_query.get(f"{model}|{seed}|{task}|{dataset}", {}) for seed in self.seeds(model))

    def contrast(self, task: str, a: str, b: str | None, model: str, model_b: str | None = None,
                 datasets: list[str] | None = None, n_boot: int = 2000) -> dict:
        """Method ``a`` minus method ``b`` on the same queries of ``model``, averaged over ``datasets`` (default: the
        task's datasets where both methods were measured). With ``model_b``: that difference on ``model`` minus the
        same on ``model_b`` (a difference of gains), or, with ``b=None``, method ``a`` on ``model`` minus method ``a``
        on ``model_b`` (a difference of levels); seeds are paired in order. A :func:`crossgap_lib.stats.paired_effect`
        dict (``mean``, ``low``, ``high``, ``interval``, ...) plus ``datasets``."""
        from .stats import paired_effect

        for name in (model, model_b):
            if name is not None and name not in self.labels:
                raise KeyError(f"model {name!r} is not in the evidence; it has {self.labels}")
        if b is None and model_b is None:
            raise ValueError("b=None compares one method between two models: give model_b")
        models = [m for m in (model, model_b) if m is not None]
        methods = [m for m in (a, b) if m is not None]
        if datasets is None:
            datasets = [d for d in self.datasets(task)
                        if all(self.has(m, task, d, method) for m in models for method in methods)]
        datasets = list(datasets)
        if not datasets:
            raise KeyError(f"no {task!r} dataset has {methods} for {models}")
        if model_b is not None and len(self.seeds(model)) != len(self.seeds(model_b)):
            raise ValueError(f"{model!r} has {len(self.seeds(model))} seeds and {model_b!r} "
                             f"{len(self.seeds(model_b))}: cannot pair them")
        cells_a = self._cells(model, task, datasets, a)
        if b is None:
            effect = paired_effect(cells_a, self._cells(model_b, task, datasets, a), n_boot=n_boot)
        elif model_b is None:
            effect = paired_effect(cells_a, self._cells(model, task, datasets, b), n_boot=n_boot)
        else:
            gain = [[x - y for x, y in zip(xs, ys)] for xs, ys in zip(cells_a, self._cells(model, task, datasets, b))]
            gain_b = [[x - y for x, y in zip(xs, ys)] for xs, ys in zip(self._cells(model_b, task, datasets, a),
                                                                        self._cells(model_b, task, datasets, b))]
            effect = paired_effect(gain, gain_b, n_boot=n_boot)
        return {**effect, "datasets": datasets}

    def shared_datasets(self, model: str, task: str, methods: list[str],
                        datasets: list[str] | None = None) -> list[str]:
        """The datasets (of ``datasets``, default all of the task's) on which a model has every one of ``methods``."""
        return [d for d in (self.datasets(task) if datasets is None else datasets)
                if all(self.has(model, task, d, method) for method in methods)]

    def method_comparison(self, task: str, methods: list[str], contrasts: list[tuple[str, str]],
                          datasets: list[str] | None = None, metric: str = "mAP",
                          n_boot: int = 2000) -> list[dict]:
        """Per model holding every one of ``methods`` on some of ``datasets``: those datasets, each method's
        ``metric`` (mean over seeds, then over the datasets) and :meth:`contrast` of each ``(a, b)`` pair on the same
        datasets. One dict per model: ``model``, ``datasets``, ``levels`` {method: value}, ``contrasts``
        {(a, b): effect}; models without such a dataset are left out."""
        means = self.means(task, metric)
        rows = []
        for model in self.labels:
            have = self.shared_datasets(model, task, methods, datasets)
            if not have:
                continue
            chosen = means[(means["model"] == model) & means["dataset"].isin(have)]
            rows.append({"model": model, "datasets": have,
                         "levels": chosen.groupby("method")["value"].mean().to_dict(),
                         "contrasts": {(a, b): self.contrast(task, a, b, model, datasets=have, n_boot=n_boot)
                                       for a, b in contrasts}})
        return rows

    def model_contrast(self, metric: str, model: str, model_b: str, n_boot: int = 2000) -> dict:
        """A model-level value (one per seed: the modality gap, the logit scale) of ``model`` minus ``model_b``, seeds
        paired in order, with the same interval rule as :meth:`contrast` (a bootstrap over seeds; with one seed each,
        no interval)."""
        from .stats import paired_effect

        per_model = []
        for name in (model, model_b):
            if name not in self.labels:
                raise KeyError(f"model {name!r} is not in the evidence; it has {self.labels}")
            rows = self.values[(self.values["model"] == name) & (self.values["task"] == "model")
                               & (self.values["metric"] == metric)].sort_values("seed")
            if rows.empty:
                raise KeyError(f"model {name!r} has no model-level value {metric!r}")
            per_model.append([[torch.tensor([v], dtype=torch.float64)] for v in rows["value"]])
        if len(per_model[0]) != len(per_model[1]):
            raise ValueError(f"{model!r} and {model_b!r} have different numbers of seeds: cannot pair them")
        return paired_effect(per_model[0], per_model[1], n_boot=n_boot)

    def contrast_table(self, task: str, a: str, b: str, by_dataset: bool = False, n_boot: int = 2000) -> pd.DataFrame:
        """One row per model (and dataset, with ``by_dataset``): :meth:`contrast` of ``a`` - ``b`` over the datasets
        where the model has both methods (models with none are left out)."""
        rows = []
        for model in self.labels:
            for datasets in ([[d] for d in self.datasets(task)] if by_dataset else [None]):
                try:
                    effect = self.contrast(task, a, b, model, datasets=datasets, n_boot=n_boot)
                except KeyError:
                    continue
                rows.append({"model": model, "dataset": datasets[0] if datasets else "all", **effect})
        return pd.DataFrame(rows)

    def model_values(self, metric: str) -> pd.DataFrame:
        """One row per model and seed of a per-model metric (``task == "model"``: gap, logit scale, R@1)."""
        rows = self.metric(metric, task="model")
        return rows[["model", "seed", "value"]].reset_index(drop=True)

    def means(self, task: str, metric: str = "mAP") -> pd.DataFrame:
        """Mean over seeds of ``metric`` per model, dataset and method (fractions)."""
        rows = self.metric(metric, task=task)
        return rows.groupby(["model", "dataset", "method"], sort=False)["value"].mean().reset_index()

    # ----------------------------------------------------------------- storage
    def to_state(self) -> dict:
        state = {k: getattr(self, k) for k in ("source", "per_query", "features", "curve", "training", "timings")}
        state["models"] = self.models.to_dict(orient="list")
        state["values"] = self.values.to_dict(orient="list")
        return state

    @classmethod
    def from_state(cls, state: dict, from_cache: bool = True) -> Evidence:
        rest = {k: state[k] for k in ("source", "per_query", "features", "curve", "training", "timings")}
        return cls(models=pd.DataFrame(state["models"]), values=pd.DataFrame(state["values"]), **rest,
                   from_cache=from_cache)


# ---------------------------------------------------------------------------------------------------- protocol
def _ap(query: torch.Tensor, gallery: torch.Tensor, query_labels, gallery_labels, exclude_self: bool) -> dict:
    return metrics.retrieval_scores(query, gallery, query_labels, gallery_labels, exclude_self=exclude_self,
                                    per_query=True)


def _revisited_ap(query: torch.Tensor, gallery: torch.Tensor, gnd: list[dict]) -> dict:
    """Per-query AP under the :data:`REVISITED_HEADLINE` protocol (also "mAP"), and mAP for Easy, Medium and Hard."""
    scores = query @ gallery.T
    summary = metrics.revisited_map(scores, gnd)
    per_query = torch.tensor([metrics.revisited_map(scores[i:i + 1], gnd[i:i + 1])[REVISITED_HEADLINE]
                              for i in range(len(gnd))], dtype=torch.float64)
    return {"mAP": summary[REVISITED_HEADLINE], "mAP easy": summary["easy"], "mAP medium": summary["medium"],
            "mAP hard": summary["hard"], "per_query": {"AP": per_query}}


# The Intra-OTI control inverts the gallery too. A source's ``intra_oti``: true (every dataset), false (none), a list
# of image datasets, or a gallery size N (datasets whose gallery is their query set, which costs nothing extra, and
# those with a gallery of at most N images). The paper profile's default, 5000, keeps CUB, SOP, ROxford5k and the
# classification sets with small training splits (Caltech101, DTD, FGVC-Aircraft, Flowers102, Oxford Pets: about 22k
# extra inversions per model, a tenth of its query inversions) and skips RParis6k, EuroSAT, Food101, ImageNet,
# Stanford Cars, SUN397 and UCF101.
INTRA_OTI_PAPER_GALLERY = 5000
FIGURE_QUERIES, FIGURE_TOP, FIGURE_SIZE = 4, 4, 64  # Figure A2-style record: queries, top-k per method, thumbnail px


def _intra_oti(spec: dict) -> bool | int | list[str]:
    """A source's ``intra_oti`` option (default: true for lab and dryrun, 5000 for paper), checked."""
    value = spec.get("intra_oti", INTRA_OTI_PAPER_GALLERY if spec.get("kind") == "paper" else True)
    if isinstance(value, (list, tuple)):
        unknown = sorted(set(value) - set(spec.get("image_datasets", value)))
        if unknown:
            raise ValueError(f"intra_oti names {unknown}, which are not among the source's image_datasets")
        return list(value)
    if not isinstance(value, bool) and not (isinstance(value, int) and value > 0):
        raise ValueError(f"intra_oti must be true, false, a list of image datasets or a positive gallery size, got "
                         f"{value!r}")
    return value


def _gallery_oti(clip, entry: ModelEntry, task: ImageTask, query_oti: torch.Tensor, gallery: torch.Tensor,
                 limit: bool | int | list[str], cache: Path | None, progress: bool) -> torch.Tensor | None:
    """OTI features (N, D) of the gallery for the Intra-OTI control, or None where ``limit`` skips the dataset."""
    if limit is False or (isinstance(limit, list) and task.dataset not in limit):
        return None
    if task.gallery is task.queries:
        return query_oti
    if isinstance(limit, int) and limit is not True and gallery.shape[0] > limit:
        return None
    return pipeline.invert_dataset(clip, "oti", gallery, config=entry.oti, cache_dir=cache, progress=progress).features


def _query_captions(clip, task: ImageTask, tasks: dict, cache: Path | None,
                    progress: bool) -> tuple[list[str] | None, torch.Tensor | None]:
    """A caption per query image and its text features (Q, D): the source's generated captions (paper, dryrun) or the
    query's ground-truth caption (lab: a perfect captioner); (None, None) when there are none."""
    captions = (tasks.get("captions") or {}).get(task.dataset, task.query_texts)
    if captions is None:
        return None, None
    return list(captions), pipeline.encode_texts(clip, list(captions), cache_dir=cache, progress=progress)


def _thumbnail(item: Any, size: int = FIGURE_SIZE) -> torch.Tensor:
    """A dataset item's image as a centre-cropped uint8 (3, size, size) tensor."""
    from PIL import Image, ImageOps

    image = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3:
        image = Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy())
    if not isinstance(image, Image.Image):
        raise ValueError(f"figure thumbnails need PIL images or uint8 (C, H, W) tensors, got {type(image).__name__}")
    fitted = ImageOps.fit(image.convert("RGB"), (size, size))
    return torch.from_numpy(np.asarray(fitted).copy()).permute(2, 0, 1).contiguous()


def _figure_record(task: ImageTask, candidates: dict, captions: list[str] | None) -> dict:
    """What a Figure A2-style page shows: the first queries, their captions and, per method, the top gallery items
    (indices best first, thumbnails included, so the page needs no dataset); and the caption features (Q, D) of every
    query of the dataset (kept here only: on the paper profile the figure's dataset is the small ROxford5k)."""
    n = min(FIGURE_QUERIES, len(task.queries))
    top = {}
    for method in ("intra", "oti", "caption", "oti both"):
        if method in candidates:
            query, gallery = candidates[method]
            scores = query[:n] @ gallery.T
            if task.exclude_self:  # query i is gallery item i
                scores[torch.arange(n), torch.arange(n)] = float("-inf")
            top[method] = scores.topk(min(FIGURE_TOP, gallery.shape[0] - int(task.exclude_self)), dim=1).indices
    shown = sorted({int(i) for indices in top.values() for i in indices.flatten()})
    return {"dataset": task.dataset, "query_index": torch.arange(n), "captions": captions[:n] if captions else None,
            "caption": candidates["caption"][0] if "caption" in candidates else None, "top": top,
            "query_images": torch.stack([_thumbnail(task.queries[i]) for i in range(n)]),
            "gallery_index": torch.tensor(shown, dtype=torch.long),
            "gallery_images": torch.stack([_thumbnail(task.gallery[j]) for j in shown]),
            "splits": {"query": getattr(task.queries, "split", None), "gallery": getattr(task.gallery, "split", None)}}


def _image_task(clip, entry: ModelEntry, task: ImageTask, tasks: dict, cache: Path | None, progress: bool,
                span_features: dict) -> tuple[dict, dict, dict]:
    """(values by method, per-query by method, features) of one image-retrieval dataset."""
    query = pipeline.encode_images(clip, task.queries, cache_dir=cache, progress=progress)
    gallery = query if task.gallery is task.queries else pipeline.encode_images(clip, task.gallery, cache_dir=cache,
                                                                                progress=progress)
    oti = pipeline.invert_dataset(clip, "oti", query, config=entry.oti, cache_dir=cache, progress=progress)
    prompts = None
    if task.classnames:
        prompts = pipeline.encode_texts(clip, format_prompts(task.template or tasks["prompt"], task.classnames),
                                        cache_dir=cache, progress=progress)
    if task.gallery_texts is not None:
        gallery_text = pipeline.encode_texts(clip, task.gallery_texts, cache_dir=cache, progress=progress)
    else:
        gallery_text = prompts[task.gallery.labels] if prompts is not None else span_features["texts"]
    candidates = {"intra": (query, gallery), "oti": (oti.features, gallery)}
    # the post-hoc baselines as their authors define them (crossgap_lib.gap.posthoc_methods): mean centering, the
    # shift along the gap, the critique's text-span projection for every k of the sweep (fit on a generic
    # vocabulary, never the label set) and IsoCLIP
    candidates.update(gap.posthoc_methods(query, gallery, image_centroid_source=gallery, text_features=gallery_text,
                                          vocabulary_features=span_features["vocabulary"], ks=tasks.get("span_ks"),
                                          clip=clip))
    if prompts is not None and task.gnd is None:
        candidates["prompt"] = (prompts[task.queries.labels], gallery)
    captions, caption = _query_captions(clip, task, tasks, cache, progress)
    if caption is not None:  # the captioning baseline: caption text feature -> images (inter-modal)
        candidates["caption"] = (caption, gallery)
    gallery_oti = _gallery_oti(clip, entry, task, oti.features, gallery, tasks.get("intra_oti", True), cache, progress)
    if gallery_oti is not None:  # the Intra-OTI control: OTI -> OTI of the gallery images (intra-modal, textual)
        candidates["oti both"] = (oti.features, gallery_oti)
    values, per_query = {}, {}
    for method, (q, g) in candidates.items():
        if task.gnd is not None:
            scores = _revisited_ap(q, g, task.gnd)
        else:
            scores = _ap(q, g, task.queries.labels, task.gallery.labels, task.exclude_self)
        values[method] = {k: float(v) for k, v in scores.items() if k != "per_query" and not k.startswith("n_")}
        per_query[method] = scores["per_query"]["AP"].double()
    features = {"image": query, "gallery": gallery, "oti": oti.features, "labels": task.queries.labels,
                "classnames": list(task.classnames) if task.classnames else None,
                "gallery_labels": task.gallery.labels, "gallery_text": gallery_text,
                "text_kind": "caption" if task.gallery_texts is not None else "class prompt",
                "prompt": prompts, "exclude_self": task.exclude_self, "oti_losses": oti.losses.mean(0),
                "oti_cos": float((oti.features * query).sum(1).mean()), "captions": captions,
                "caption_kind": None if captions is None else "generated" if task.dataset in (tasks.get("captions")
                                                                                            or {}) else "ground truth"}
    figure_dataset = tasks.get("figure_dataset") or next((t.dataset for t in tasks["image"]), None)
    if task.dataset == figure_dataset:
        features["figure"] = _figure_record(task, candidates, captions)
    return values, per_query, features


def _text_task(clip, entry: ModelEntry, task: TextTask, cache: Path | None, progress: bool) -> tuple[dict, dict]:
    """(values by method, per-query by method) of one text-retrieval dataset: text->text and OVI->text."""
    query = pipeline.encode_texts(clip, task.query_texts, cache_dir=cache, progress=progress)
    gallery = pipeline.encode_texts(clip, task.gallery_texts, cache_dir=cache, progress=progress)
    ovi = pipeline.invert_dataset(clip, "ovi", query, config=entry.ovi, cache_dir=cache, progress=progress)
    values, per_query = {}, {}
    for method, q in {"intra": query, "ovi": ovi.features}.items():
        if task.relevance is not None:
            scores = metrics.retrieval_scores_from_relevance(q @ gallery.T, task.relevance, per_query=True)
        else:
            scores = _ap(q, gallery, task.query_labels, task.gallery_labels, False)
        values[method] = {k: float(v) for k, v in scores.items() if k != "per_query" and not k.startswith("n_")}
        per_query[method] = scores["per_query"]["AP"].double()
    values["ovi"]["cos to target"] = float((ovi.features * query).sum(1).mean())
    return values, per_query


def _zero_shot_task(clip, entry: ModelEntry, task: ZeroShotTask, prompt: str, cache: Path | None,
                    progress: bool) -> tuple[dict, dict]:
    classes = pipeline.encode_texts(clip, format_prompts(task.template or prompt, task.classnames), cache_dir=cache,
                                    progress=progress)
    images = pipeline.encode_images(clip, task.images, cache_dir=cache, progress=progress)
    oti = pipeline.invert_dataset(clip, "oti", images, config=entry.oti, cache_dir=cache, progress=progress)
    labels = torch.as_tensor(task.images.labels).long()
    values, per_query = {}, {}
    for method, samples in {"inter": images, "oti": oti.features}.items():
        correct = ((samples @ classes.T).argmax(1) == labels).double()
        values[method] = {"top-1": float(correct.mean())}
        per_query[method] = correct
    return values, per_query


def _gap_values(clip, task: ImageTask | None, prompt: str, cache: Path | None, progress: bool) -> dict:
    """Modality gap on paired image and text features: each query image with its caption (lab) or its class prompt."""
    if task is None:
        return {}
    images = pipeline.encode_images(clip, task.queries, cache_dir=cache, progress=progress)
    if task.query_texts is not None:
        texts = pipeline.encode_texts(clip, task.query_texts, cache_dir=cache, progress=progress)
    elif task.classnames:
        prompts = pipeline.encode_texts(clip, [prompt.format(c) for c in task.classnames], cache_dir=cache,
                                        progress=progress)
        texts = prompts[task.queries.labels]
    else:
        return {}
    matched = torch.arange(images.shape[0])
    pair_labels = matched if task.query_texts is not None else torch.as_tensor(task.queries.labels)
    cos_mean, _ = gap.matched_cosine(images, texts)
    return {"gap centroid distance": gap.centroid_distance(images, texts), "gap matched cosine": cos_mean,
            "image->text R@1": metrics.retrieval_scores(images, texts, pair_labels, pair_labels)["R@1"],
            "text->image R@1": metrics.retrieval_scores(texts, images, pair_labels, pair_labels)["R@1"]}


def _oti_curve(clip, entry: ModelEntry, task: ImageTask, curve: dict, cache: Path | None, progress: bool,
               focus_only: bool = False) -> dict:
    """Per-query OTI->image AP along the steps for each R (only the focus R with ``focus_only``: the other seeds of
    the peak claim); OTI features at the peak and last step of the focus R."""
    from .dynamics import log_steps, oti_curve

    query = pipeline.encode_images(clip, task.queries, cache_dir=cache, progress=progress)
    gallery = query if task.gallery is task.queries else pipeline.encode_images(clip, task.gallery, cache_dir=cache,
                                                                                progress=progress)
    query_labels, gallery_labels = torch.as_tensor(task.queries.labels), torch.as_tensor(task.gallery.labels)
    n = query.shape[0] if curve.get("queries") is None else min(int(curve["queries"]), query.shape[0])
    query, query_labels = query[:n], query_labels[:n]  # a prefix: with exclude_self, query i stays gallery item i
    texts = None  # a text per query for the similarity histograms: its caption (lab) or its class prompt
    if task.query_texts is not None:
        texts = pipeline.encode_texts(clip, task.query_texts[:n], cache_dir=cache, progress=progress)
    elif task.classnames:
        prompt = curve.get("prompt", PROMPT)
        texts = pipeline.encode_texts(clip, [prompt.format(c) for c in task.classnames], cache_dir=cache,
                                      progress=progress)[query_labels]
    aps, losses, steps, finals = [], [], None, []
    record = curve.get("record", curve.get("record_every"))
    record_steps = log_steps(curve["steps"]) if record == "log" else None
    focus = curve.get("focus") if curve.get("focus") is not None else \
        curve["num_pseudo_tokens"][len(curve["num_pseudo_tokens"]) // 2]
    values = [focus] if focus_only else list(curve["num_pseudo_tokens"])
    for r in values:
        config = replace(entry.oti, num_pseudo_tokens=r)
        result = oti_curve(clip, query, gallery, query_labels, gallery_labels, num_pseudo_tokens=r,
                           steps=curve["steps"], record_every=1 if record == "log" else record,
                           record_steps=record_steps, exclude_self=task.exclude_self,
                           template=config.template, lr=config.lr, weight_decay=config.weight_decay,
                           batch_size=config.batch_size, seed=config.seed, cache_dir=cache, progress=progress)
        aps.append(result.ap.T.double())
        losses.append(result.loss.double())
        steps = result.steps
        finals.append(result.features)
        intra = result.intra_ap.double()
    ap = torch.stack(aps)  # (R, T, Q)
    focus_index = values.index(focus)
    mean_curve = torch.nanmean(ap[focus_index], dim=1)
    peak_index = int(torch.argmax(torch.nan_to_num(mean_curve, nan=-1.0)[1:])) + 1 if len(steps) > 1 else 0
    peak_step = steps[peak_index]
    at_peak = finals[focus_index]
    if peak_step != steps[-1] and peak_step > 0 and not focus_only:
        at_peak = pipeline.invert_dataset(clip, "oti", query, config=replace(entry.oti, num_pseudo_tokens=focus,
                                                                            steps=peak_step),
                                          cache_dir=cache, progress=progress).features
    return {"model": entry.label, "seed": entry.seed, "dataset": task.dataset, "num_pseudo_tokens": values,
            "steps": list(steps), "AP": ap, "loss": torch.stack(losses),
            "intra": intra, "focus": focus, "peak_step": peak_step, "features_at_peak": at_peak,
            "features_last": finals[focus_index], "query": query, "query_labels": query_labels, "texts": texts,
            "gallery": gallery, "gallery_labels": gallery_labels, "exclude_self": task.exclude_self}


def device_name(device: str) -> str:
    """The machine that computes: the GPU's name, or the CPU model with torch's thread count."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu} ({torch.get_num_threads()} threads)"


def _seconds_per_query(clip, method: str, features: torch.Tensor, config: InversionConfig) -> float:
    """Wall-clock seconds per query of one inversion, never read from the cache. On a GPU: one full batch
    (``config.batch_size`` queries, or all there are) after a one-step warm-up, since a batch runs in parallel; on a
    CPU, whose time grows with the batch, one query (keeps the dry run cheap)."""
    cuda = str(clip.device).startswith("cuda")
    n = min(features.shape[0], config.batch_size) if cuda else 1
    if cuda:
        pipeline.invert_dataset(clip, method, features[:1], config=config, steps=1, record_every=None, progress=False)
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipeline.invert_dataset(clip, method, features[:n], config=config, progress=False)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def _latency(clip, entry: ModelEntry, tasks: dict, cache: Path | None, progress: bool) -> dict:
    """OTI and OVI seconds per query on this machine (queries of the first image, else zero-shot, and text dataset).

    A dedicated uncached run, so the number is always measured; it is stored in the model's evidence unit, so evidence
    read back from the cache keeps the timing of the machine that computed it (``device`` in the unit)."""
    out = {}
    images = [t.queries for t in tasks["image"]] + [t.images for t in tasks["zero_shot"]]
    if images:
        queries = pipeline.encode_images(clip, images[0], cache_dir=cache, progress=progress)
        out["OTI s/query"] = _seconds_per_query(clip, "oti", queries, entry.oti)
    if tasks["text"]:
        queries = pipeline.encode_texts(clip, tasks["text"][0].query_texts, cache_dir=cache, progress=progress)
        out["OVI s/query"] = _seconds_per_query(clip, "ovi", queries, entry.ovi)
    return out


def _parameters(clip) -> dict:
    model = clip.model
    text = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual."))
    visual = sum(p.numel() for p in model.visual.parameters())
    return {"parameters": visual + text, "image tower parameters": visual, "text side parameters": text}


def evaluate_model(entry: ModelEntry, source, device: str, cache: Path | None, progress: bool,
                   first_seed: bool) -> dict:
    """The protocol on one model: values, per-query values, features and training info (a storable dict)."""
    t0 = time.perf_counter()
    clip, info = entry.load(device)
    t1 = time.perf_counter()
    tasks = source.tasks(clip, entry)  # paper, dryrun: also the captioner's captions (once per run)
    t_tasks = time.perf_counter() - t1
    vocabulary = pipeline.encode_texts(clip, tasks["vocabulary"], cache_dir=cache, progress=progress)
    rows, per_query, features = [], {}, {}

    def add(task: str, dataset: str, values: dict) -> None:
        for method, metrics_ in values.items():
            for metric, value in metrics_.items():
                rows.append({"task": task, "dataset": dataset, "method": method, "metric": metric,
                             "value": float(value)})

    figure = None
    for task in tasks["image"]:
        span_inputs = {"vocabulary": vocabulary, "texts": vocabulary}
        values, pq, feats = _image_task(clip, entry, task, tasks, cache, progress, span_inputs)
        add("image", task.dataset, values)
        per_query[f"image|{task.dataset}"] = pq
        figure = feats.pop("figure", figure) if first_seed else None
        if first_seed and not features:
            features = {"dataset": task.dataset, **feats}
    for task in tasks["text"]:
        values, pq = _text_task(clip, entry, task, cache, progress)
        add("text", task.dataset, values)
        per_query[f"text|{task.dataset}"] = pq
    for task in tasks["zero_shot"]:
        values, pq = _zero_shot_task(clip, entry, task, tasks["prompt"], cache, progress)
        add("zero_shot", task.dataset, values)
        per_query[f"zero_shot|{task.dataset}"] = pq
    model_values = _gap_values(clip, tasks["gap"], tasks["prompt"], cache, progress)
    model_values["logit scale"] = float(clip.model.logit_scale.detach().exp())
    if first_seed:  # the first seed of each model: the time depends on the architecture and settings, not the seed
        model_values.update(_latency(clip, entry, tasks, cache, progress))
    add("model", tasks["gap"].dataset if tasks["gap"] is not None else "-", {"model": model_values})
    if figure is not None:
        features["figure"] = figure
    return {"rows": rows, "per_query": per_query, "features": features, "training": info,
            "parameters": _parameters(clip), "device": device_name(device),
            "seconds": {"load": t1 - t0, "tasks": t_tasks, "evaluate": time.perf_counter() - t1 - t_tasks},
            "clip": clip, "tasks": tasks}


def evidence_key(spec: dict, source) -> str:
    """Cache key of a source's evidence: the source dict and what its models and data are."""
    return cache_key(kind="evidence", version=EVIDENCE_VERSION, spec={k: v for k, v in spec.items()
                                                                       if k not in ("name",)},
                     **source.key_parts())


def evaluate(source: str | dict, device: str = "cpu", cache_dir: str | Path | None = None,
             progress: bool = True) -> Evidence:
    """Run the protocol on every model of a source (a name in ``profiles.yml`` or a dict); cached and resumable.

    Each model's result is saved when done, so an interrupted run resumes; the whole evidence is saved at the end and a
    second call with the same source returns it from the cache (``from_cache=True``).
    """
    spec = load_source(source)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_root()
    check_writable(cache)  # before any training or inversion: an unwritable cache would lose the run
    opened = _open_source(spec, cache, progress)
    folder = cache / "evidence" / evidence_key(spec, opened)
    result_path = folder / "evidence.pt"
    state = safe_load(result_path) if result_path.exists() else None
    if isinstance(state, dict) and "values" in state:
        return Evidence.from_state(state)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / ".lock"):  # another process computing the same evidence: wait for it, then read it
        state = safe_load(result_path) if result_path.exists() else None
        if isinstance(state, dict) and "values" in state:
            return Evidence.from_state(state)
        threads = torch.get_num_threads()
        try:
            return _evaluate(spec, opened, folder, result_path, device, cache, progress)
        finally:
            torch.set_num_threads(threads)


def _wants_curve(curve_spec: dict | None, entries: list[ModelEntry], entry: ModelEntry) -> tuple[bool, list[int]]:
    """Whether the OTI curve is measured on this model and seed, and the curve's seeds."""
    seeds = [] if curve_spec is None else curve_spec.get("seeds", [curve_spec.get("seed", entry.seed)])
    return curve_spec is not None and entry.label == curve_spec.get("model", entries[0].label) \
        and entry.seed in seeds, seeds


def _first_seed(entries: list[ModelEntry], entry: ModelEntry) -> bool:
    """Whether ``entry`` is its model's first seed: the one whose features, figure and latency the evidence keeps."""
    return entry.seed == min(e.seed for e in entries if e.label == entry.label)


def _compute_unit(opened, entries: list[ModelEntry], i: int, unit_path: Path, device: str, cache: Path,
                  progress: bool) -> dict:
    """Evaluate model ``i`` (and its OTI curve where wanted), save the unit to ``unit_path`` and return it."""
    entry, curve_spec = entries[i], opened.curve()
    wants_curve, curve_seeds = _wants_curve(curve_spec, entries, entry)
    first_seed = _first_seed(entries, entry)
    result = evaluate_model(entry, opened, device, cache, progress, first_seed=first_seed)
    clip, tasks = result.pop("clip"), result.pop("tasks")
    if wants_curve:
        t0 = time.perf_counter()
        task = next((t for t in tasks["image"] if t.dataset == curve_spec.get("dataset", t.dataset)), None)
        if task is None:
            raise ValueError(f"the OTI curve's dataset {curve_spec.get('dataset')!r} is not among the source's "
                             f"image datasets {[t.dataset for t in tasks['image']]}")
        result["curve"] = _oti_curve(clip, entry, task, curve_spec, cache, progress,
                                     focus_only=entry.seed != curve_seeds[0])
        result["seconds"]["curve"] = time.perf_counter() - t0
    atomic_save(result, unit_path)
    return result


_WORKER: dict = {}  # a pool worker's opened source and models, built once per worker process


def _worker_init(spec: dict, cache: str) -> None:
    torch.set_num_threads(1)
    opened = _open_source(spec, Path(cache), progress=False)
    _WORKER.update(opened=opened, entries=opened.models())


def _worker_unit(i: int, unit_path: str, device: str, cache: str) -> None:
    """Compute one unit in a pool worker (the unit goes to disk, where the parent reads it)."""
    _compute_unit(_WORKER["opened"], _WORKER["entries"], i, Path(unit_path), device, Path(cache), progress=False)


def _unit_path(folder: Path, i: int) -> Path:
    return folder / "units" / f"{i:03d}.pt"


def _stored_unit(path: Path, wants_curve: bool) -> dict | None:
    """A model's stored unit, or None when it is missing or lacks the OTI curve it should hold."""
    unit = safe_load(path) if path.exists() else None
    return unit if unit is not None and (not wants_curve or "curve" in unit) else None


def _units_in_parallel(spec: dict, opened, entries: list[ModelEntry], missing: list[int], folder: Path, device: str,
                       cache: Path) -> bool:
    """Laboratory on a CPU: compute the ``missing`` units in worker processes of one thread each, as many as the
    config's threads and the idle cores allow (two single-thread processes train a tiny CLIP faster than one with two
    threads; benchmarks/bench_lab.py). Shared steps (a base model's training, the teachers' embeddings) are
    file-locked, so a worker that needs one another is computing waits for it. Returns whether it ran: with one
    worker, or one unit to compute, the caller's loop computes the units."""
    import concurrent.futures
    import multiprocessing

    from .lab import free_cores
    from .progress import report_progress, time_left

    if device != "cpu":
        return False
    workers = min(opened.config.num_threads, free_cores())
    if workers < 2 or len(missing) < 2:
        return False
    (folder / "units").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                initargs=(spec, str(cache))) as pool:
        futures = {pool.submit(_worker_unit, i, str(_unit_path(folder, i)), device, str(cache)): i for i in missing}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            future.result()  # a worker's error is raised here
            entry = entries[futures[future]]
            report_progress(f"evaluate {spec['name']}: model {done}/{len(missing)} ({entry.label}, seed {entry.seed}) "
                            f"done in {workers} processes, {time_left(started, done, len(missing))}")
    return True


def _evaluate(spec: dict, opened, folder: Path, result_path: Path, device: str, cache: Path,
              progress: bool) -> Evidence:
    from tqdm.auto import tqdm

    from .progress import report_progress, time_left

    started = time.perf_counter()
    entries = opened.models()
    curve_spec = opened.curve()
    units = {i: _stored_unit(_unit_path(folder, i), _wants_curve(curve_spec, entries, entry)[0])
             for i, entry in enumerate(entries)}
    missing = [i for i, unit in units.items() if unit is None]
    if spec["kind"] == "lab" and _units_in_parallel(spec, opened, entries, missing, folder, device, cache):
        units.update({i: safe_load(_unit_path(folder, i)) for i in missing})
    rows, per_query, features, training, model_rows = [], {}, {}, {}, {}
    timings = {"load": 0.0, "evaluate": 0.0, "curve": 0.0}
    curve: dict = {}
    bar = tqdm(entries, desc=f"evaluate {spec['name']}", unit="model", disable=not progress)
    for i, entry in enumerate(bar):
        unit = units.pop(i)
        curve_seeds = _wants_curve(curve_spec, entries, entry)[1]
        first_seed = _first_seed(entries, entry)
        if unit is None:
            if spec["kind"] == "lab":  # per model: as many threads as asked for and as cores are idle now (lab.py)
                from .lab import free_cores

                torch.set_num_threads(min(opened.config.num_threads, free_cores()))
            unit = _compute_unit(opened, entries, i, _unit_path(folder, i), device, cache, progress)
        for row in unit["rows"]:
            rows.append({"model": entry.label, "seed": entry.seed, "family": entry.family, **row})
        for key, value in unit["per_query"].items():
            per_query[f"{entry.label}|{entry.seed}|{key}"] = value
        if first_seed:
            features[entry.label] = unit["features"]
        if unit.get("training"):
            training.setdefault(entry.label, {})[entry.seed] = unit["training"]
        if "curve" in unit:
            if entry.seed == curve_seeds[0]:
                curve = {**unit["curve"], **{k: v for k, v in curve.items()
                                             if k in ("AP_seeds", "intra_seeds", "curve_seeds")}}
            focus_ap = unit["curve"]["AP"][unit["curve"]["num_pseudo_tokens"].index(unit["curve"]["focus"])]
            curve.setdefault("AP_seeds", []).append(focus_ap)
            curve.setdefault("intra_seeds", []).append(unit["curve"]["intra"])
            curve.setdefault("curve_seeds", []).append(entry.seed)
        model_rows.setdefault(entry.label, {"label": entry.label, "family": entry.family,
                                            "temperature": entry.temperature, **unit["parameters"],
                                            **{k: v for k, v in entry.info.items() if isinstance(v, (str, int, float))},
                                            "device": unit.get("device"), "seeds": 0})
        model_rows[entry.label]["seeds"] += 1
        for k, v in unit["seconds"].items():
            timings[k] = timings.get(k, 0.0) + v
        report_progress(f"evaluate {spec['name']}: model {i + 1}/{len(entries)} ({entry.label}, seed {entry.seed}) "
                        f"done, {time_left(started, i + 1, len(entries))}")
    if curve.get("AP_seeds"):
        curve["AP_seeds"] = torch.stack(curve["AP_seeds"])  # (S, T, Q): the focus R on every curve seed
        curve["intra_seeds"] = torch.stack(curve["intra_seeds"])  # (S, Q)
    devices = ", ".join(dict.fromkeys(str(r["device"]) for r in model_rows.values()))  # where the units were computed
    evidence = Evidence(source={**spec, "resolved": opened.describe()}, models=pd.DataFrame(list(model_rows.values())),
                        values=pd.DataFrame(rows), per_query=per_query, features=features, curve=curve,
                        training=training, timings={**timings, "total": time.perf_counter() - started,
                                                    "device": devices})
    atomic_save(evidence.to_state(), result_path)
    return evidence
