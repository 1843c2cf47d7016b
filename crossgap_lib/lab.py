"""The offline laboratory: train tiny CLIPs on the shapes data and measure intra-modal misalignment on them.

For every setting (loss x temperature x data variant) and seed, :func:`run_lab` trains a model (cached by
:mod:`crossgap_lib.train`), encodes held-out test images and captions and a gallery of training images and
captions (cached by :mod:`crossgap_lib.pipeline`) and measures zero-shot accuracy, cross-modal R@1, the modality gap,
intra-modal image->image and text->text retrieval, OTI->image and OVI->text retrieval, post-hoc baselines
(mean centering, shift along the gap, text-span PCA projection) and class-prompt->image retrieval. Per-query
average precisions are kept, so every difference gets two confidence intervals: a t-interval across seeds
(:func:`crossgap_lib.stats.mean_ci`) and a paired bootstrap over queries pooled across seeds
(:func:`crossgap_lib.stats.paired_bootstrap_ci`). Each (setting, seed) unit is saved when done, so an interrupted
lab resumes; the finished result is saved whole and a second call with the same config loads it.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch

from crossgap_lib import gap, metrics, pipeline, stats
from crossgap_lib.cache import atomic_save, cache_key, default_cache_root, safe_load
from crossgap_lib.progress import report_progress, time_left
from crossgap_lib.train import TrainConfig, train_clip

LAB_CODE_VERSION = 1  # bump when a change alters what a config computes (invalidates cached labs)
_NOT_IN_KEY = ("cache_dir", "progress", "num_threads")
_SETTING_KEYS = {f.name for f in fields(TrainConfig)} - {"model", "seed", "out_dir", "progress", "data_seed"}

# per-query values stored for every unit: image queries (test images), text queries (a caption of each test image)
IMAGE_METHODS = ("intra", "oti", "center", "shift", "pca_prompts", "pca_captions", "prompt")
TEXT_METHODS = ("intra", "ovi")
WITHIN_CONTRASTS = (  # (name, per-query key a, per-query key b): a - b on the same model and queries
    ("OTI - intra (image)", "img_oti", "img_intra"),
    ("centering - intra (image)", "img_center", "img_intra"),
    ("gap shift - intra (image)", "img_shift", "img_intra"),
    ("PCA prompts - intra (image)", "img_pca_prompts", "img_intra"),
    ("PCA captions - intra (image)", "img_pca_captions", "img_intra"),
    ("class prompt - intra (image)", "img_prompt", "img_intra"),
    ("OTI - class prompt (image)", "img_oti", "img_prompt"),
    ("OVI - intra (text)", "txt_ovi", "txt_intra_ovi_queries"),
)
BETWEEN_KEYS = ("img_intra", "img_oti", "oti_gain", "txt_intra", "zero_shot")  # compared across settings per query


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "setting"


@dataclass
class LabConfig:
    """What the laboratory trains and measures; plain literals only (``to_dict`` / ``from_dict``)."""

    model: str = "crossgap-small"
    settings: list = field(default_factory=lambda: [
        {"name": "clip", "loss": "clip"},
        {"name": "clip T=0.01", "loss": "clip", "temperature": 0.01},
        {"name": "clip T=1", "loss": "clip", "temperature": 1.0},
        {"name": "soft", "loss": "soft"},
        {"name": "intra", "loss": "intra"},
        {"name": "clip nuisance captions", "loss": "clip", "data": {"nuisance_caption_rate": 0.5}},
    ])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    train: dict = field(default_factory=lambda: {  # TrainConfig overrides shared by every setting
        "n_train": 8192, "epochs": 16, "batch_size": 128, "lr": 2e-3, "warmup": 50, "checkpoint_every": 200,
    })
    data: dict = field(default_factory=dict)  # ShapesConfig overrides shared by every setting (a setting may add)
    data_seed: int = 0
    n_test: int = 512  # held-out test images: the image queries (their first captions: the text queries)
    n_gallery: int = 2048  # first training images (and their first captions): the galleries
    prompt_template: str = "a photo of a {}."
    pca_components: int | None = None  # text-span dimension; None: min(D // 2, number of fitted texts - 1)
    oti_template: str = "a photo of {}"
    oti_steps: int = 150
    oti_num_pseudo_tokens: int = 1
    ovi_steps: int = 1000
    ovi_num_pseudo_tokens: int = 1
    ovi_queries: int | None = 128  # None: every text query; the first k (class-balanced) make OVI cheaper
    inversion_lr: float = 2e-2
    inversion_weight_decay: float = 0.01
    inversion_batch_size: int = 256  # samples optimised together (each sample's result does not depend on it)
    between: list = field(default_factory=lambda: [
        ["soft", "clip"], ["intra", "clip"], ["clip T=1", "clip T=0.01"], ["clip", "clip T=0.01"],
        ["clip nuisance captions", "clip"],
    ])
    oti_curve: dict | None = field(default_factory=lambda: {
        "setting": "clip", "seed": 0, "num_pseudo_tokens": [1, 2, 4, 8], "steps": 150, "record_every": 5,
        "queries": 256,
    })
    n_boot: int = 2000
    num_threads: int = 2
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.settings, list) or not self.settings:
            raise ValueError(f"settings must be a non-empty list of dicts, got {self.settings!r}")
        names = []
        for setting in self.settings:
            if not isinstance(setting, dict) or not isinstance(setting.get("name"), str):
                raise ValueError(f"every setting must be a dict with a 'name' string, got {setting!r}")
            unknown = sorted(set(setting) - _SETTING_KEYS - {"name"})
            if unknown:
                raise ValueError(
                    f"setting {setting['name']!r} has unknown keys {unknown}; expected 'name' and TrainConfig fields "
                    f"{sorted(_SETTING_KEYS)}"
                )
            names.append(setting["name"])
        if len(set(names)) != len(names) or len(set(map(_slug, names))) != len(names):
            raise ValueError(f"setting names must be distinct (also after slugging), got {names}")
        if not isinstance(self.seeds, list) or not self.seeds or len(set(self.seeds)) != len(self.seeds) \
                or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct ints >= 0, got {self.seeds!r}")
        unknown = sorted(set(self.train) - _SETTING_KEYS)
        if unknown:
            raise ValueError(f"train has unknown keys {unknown}; expected TrainConfig fields {sorted(_SETTING_KEYS)}")
        for name in ("n_test", "n_gallery", "oti_steps", "ovi_steps", "oti_num_pseudo_tokens", "ovi_num_pseudo_tokens",
                     "inversion_batch_size", "n_boot", "num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_test < 2 or self.n_gallery < 2:
            raise ValueError(f"n_test and n_gallery must be >= 2, got {self.n_test} and {self.n_gallery}")
        if self.ovi_queries is not None and not (isinstance(self.ovi_queries, int) and 1 <= self.ovi_queries):
            raise ValueError(f"ovi_queries must be None or a positive int, got {self.ovi_queries!r}")
        for pair in self.between:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(p in names for p in pair)):
                raise ValueError(f"between must hold [setting a, setting b] pairs of names in {names}, got {pair!r}")
        if self.oti_curve is not None:
            curve = self.oti_curve
            required = {"setting", "seed", "num_pseudo_tokens", "steps", "record_every", "queries"}
            if not isinstance(curve, dict) or set(curve) != required:
                raise ValueError(f"oti_curve must be None or a dict with keys {sorted(required)}, got {curve!r}")
            if curve["setting"] not in names or curve["seed"] not in self.seeds:
                raise ValueError(f"oti_curve setting/seed must be among {names} / {self.seeds}, got "
                                 f"{curve['setting']!r} / {curve['seed']!r}")
        if "{}" not in self.prompt_template or "{}" not in self.oti_template:
            raise ValueError("prompt_template and oti_template must each hold one '{}'")

    # -------------------------------------------------------------------------------------------- presets
    @classmethod
    def embedded(cls) -> LabConfig:
        """The book's default profile: crossgap-small, 6 settings x 3 seeds (1024 steps each), OVI on 128 queries."""
        return cls()

    @classmethod
    def smoke(cls) -> LabConfig:
        """Toy sizes on crossgap-micro (every code path, about a minute): the test suite's profile."""
        return cls(
            model="crossgap-micro",
            settings=[
                {"name": "clip", "loss": "clip"},
                {"name": "clip T=1", "loss": "clip", "temperature": 1.0},
                {"name": "soft", "loss": "soft"},
                {"name": "intra", "loss": "intra"},
            ],
            seeds=[0, 1],
            train={"n_train": 128, "epochs": 1, "batch_size": 32, "warmup": 1, "checkpoint_every": 1000},
            data={"n_captions": 2, "max_distractors": 1},
            n_test=48,
            n_gallery=64,
            oti_steps=8,
            ovi_steps=8,
            ovi_queries=24,
            between=[["soft", "clip"], ["clip T=1", "clip"]],
            oti_curve={"setting": "clip", "seed": 0, "num_pseudo_tokens": [1, 2], "steps": 6, "record_every": 3,
                       "queries": 16},
            n_boot=200,
            num_threads=1,
        )

    def to_dict(self) -> dict:
        """Plain-literal dict (what the book's profiles.yml holds)."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> LabConfig:
        """Build from a dict of literals; unknown keys are an error."""
        if not isinstance(values, dict):
            raise ValueError(f"LabConfig.from_dict needs a dict, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LabConfig fields {unknown}; expected some of {sorted(known)}")
        return cls(**copy.deepcopy(values))

    def key(self) -> str:
        """Cache key: the config without the fields that do not change the results, plus every run's train key."""
        parts = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_KEY}
        runs = [self.train_config(setting, seed).key() for setting in self.settings for seed in self.seeds]
        return cache_key(kind="lab", version=LAB_CODE_VERSION, train_runs=runs, **parts)

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_root()

    def train_config(self, setting: dict, seed: int) -> TrainConfig:
        """The TrainConfig of one setting and seed."""
        overrides = {**self.train, **{k: v for k, v in setting.items() if k not in ("name", "data")}}
        data = {**self.data, **self.train.get("data", {}), **setting.get("data", {})}
        return TrainConfig(
            model=self.model, seed=seed, data=data, data_seed=self.data_seed, out_dir=str(self.cache_root()),
            progress=self.progress, **{**overrides, "num_threads": self.num_threads},
        )


@dataclass
class LabResults:
    """Everything the book shows: tidy metrics, summaries with confidence intervals and raw data for figures."""

    config: dict
    tidy: pd.DataFrame  # one row per setting x seed x metric
    summary: pd.DataFrame  # one row per setting x metric: mean over seeds with a t-interval
    contrasts: pd.DataFrame  # differences with seed t-intervals and paired-bootstrap intervals over queries
    per_query: dict  # "setting|seed" -> {key: (Q,) tensor}
    features: dict  # setting -> {name: tensor} for the first seed (similarity histograms)
    oti_curve: dict  # mAP / loss vs OTI steps for several numbers of pseudo tokens on one model
    training: dict  # setting -> {seed: {"losses", "logit_scales", "train_seconds"}}
    timings: dict  # seconds spent: "train", "evaluate", "oti_curve", "total"
    from_cache: bool = False

    def table(self, metrics_shown: list[str] | None = None, scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
        """Settings x metrics with 'mean [low, high]' strings (fractions times ``scale``)."""
        frame = self.summary if metrics_shown is None else self.summary[self.summary.metric.isin(metrics_shown)]
        text = frame.apply(
            lambda r: stats.format_ci(r["mean"], r["ci_low"], r["ci_high"], scale=scale if r["is_fraction"] else 1,
                                      digits=digits if r["is_fraction"] else 3, signed=False), axis=1)
        table = frame.assign(text=text).pivot(index="setting", columns="metric", values="text")
        order = [s["name"] for s in self.config["settings"] if s["name"] in table.index]
        return table.loc[order, [m for m in (metrics_shown or table.columns) if m in table.columns]]

    def contrast_table(self, kind: str | None = None, scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
        """Contrasts with 'diff [low, high]' strings: across seeds (t) and over queries (paired bootstrap)."""
        frame = self.contrasts if kind is None else self.contrasts[self.contrasts.kind == kind]
        fmt = lambda r, m, lo, hi: stats.format_ci(r[m], r[lo], r[hi], scale=scale, digits=digits)  # noqa: E731
        return pd.DataFrame({
            "contrast": frame.contrast, "setting": frame.setting, "metric": frame.metric,
            "seeds (t-interval)": frame.apply(lambda r: fmt(r, "mean_diff", "seed_ci_low", "seed_ci_high"), axis=1),
            "queries (bootstrap)": frame.apply(lambda r: fmt(r, "boot_diff", "boot_ci_low", "boot_ci_high"), axis=1),
            "n_seeds": frame.n_seeds, "n_pairs": frame.n_pairs,
        }).reset_index(drop=True)

    def to_state(self) -> dict:
        """Plain containers (for ``torch.save`` with ``weights_only`` loading)."""
        state = {k: getattr(self, k) for k in ("config", "per_query", "features", "oti_curve", "training", "timings")}
        for name in ("tidy", "summary", "contrasts"):
            state[name] = getattr(self, name).to_dict(orient="list")
        return state

    @classmethod
    def from_state(cls, state: dict, from_cache: bool = True) -> LabResults:
        frames = {name: pd.DataFrame(state[name]) for name in ("tidy", "summary", "contrasts")}
        rest = {k: state[k] for k in ("config", "per_query", "features", "oti_curve", "training", "timings")}
        return cls(**frames, **rest, from_cache=from_cache)


# ------------------------------------------------------------------------------------------------ evaluation
FRACTION_METRICS = {  # metric name -> is it a fraction in [0, 1] (shown x100)
    "zero_shot": True, "i2t_R@1": True, "t2i_R@1": True, "gap_centroid": False, "gap_matched_cos": False,
    "img_intra_mAP": True, "img_oti_mAP": True, "img_center_mAP": True, "img_shift_mAP": True,
    "img_pca_prompts_mAP": True, "img_pca_captions_mAP": True, "img_prompt_mAP": True, "txt_intra_mAP": True,
    "txt_intra_ovi_queries_mAP": True, "txt_ovi_mAP": True, "oti_cos_to_image": False, "ovi_cos_to_text": False,
    "logit_scale": False, "train_seconds": False,
}


def _datasets(config: LabConfig, setting: dict, image_size: int):
    from crossgap_lib.datasets.shapes import make_shapes

    data = {"image_size": image_size, **config.data, **config.train.get("data", {}), **setting.get("data", {})}
    test = make_shapes("test", n=config.n_test, config=data, seed=config.data_seed)
    gallery = make_shapes("train", n=config.n_gallery, config=data, seed=config.data_seed)
    return test, gallery


def _ap(query, gallery, query_labels, gallery_labels) -> torch.Tensor:
    """Per-query average precision (Q,) of label-based retrieval."""
    return metrics.retrieval_scores(query, gallery, query_labels, gallery_labels, per_query=True)["per_query"]["AP"]


def _text_span(features: torch.Tensor, n_components: int | None) -> gap.TextSpanProjector:
    dim = features.shape[1]
    k = n_components if n_components is not None else max(1, min(dim // 2, features.shape[0] - 1))
    return gap.fit_text_span(features, n_components=k)


def _inversion_kwargs(config: LabConfig) -> dict:
    return dict(lr=config.inversion_lr, weight_decay=config.inversion_weight_decay,
                batch_size=config.inversion_batch_size, seed=0)


def evaluate_model(clip, config: LabConfig, setting: dict, progress: bool = False) -> dict:
    """Metrics (floats), per-query values ((Q,) tensors) and features of one trained model."""
    size = clip.model.visual.image_size
    test, gallery = _datasets(config, setting, int(size[0] if isinstance(size, (tuple, list)) else size))
    cache = config.cache_root()
    show = progress

    image_q = pipeline.encode_images(clip, test, cache_dir=cache, progress=show)
    image_g = pipeline.encode_images(clip, gallery, cache_dir=cache, progress=show)
    caption_q = pipeline.encode_texts(clip, [c[0] for c in test.captions], cache_dir=cache, progress=show)
    caption_g = pipeline.encode_texts(clip, [c[0] for c in gallery.captions], cache_dir=cache, progress=show)
    prompts = pipeline.encode_texts(clip, test.prompts(config.prompt_template), cache_dir=cache, progress=show)
    labels_q, labels_g = test.labels, gallery.labels
    n_q = len(labels_q)

    oti = pipeline.invert_dataset(
        clip, "oti", image_q, cache_dir=cache, progress=show, template=config.oti_template, steps=config.oti_steps,
        num_pseudo_tokens=config.oti_num_pseudo_tokens, **_inversion_kwargs(config))
    n_ovi = n_q if config.ovi_queries is None else min(config.ovi_queries, n_q)
    ovi = pipeline.invert_dataset(
        clip, "ovi", caption_q[:n_ovi], cache_dir=cache, progress=show, steps=config.ovi_steps,
        num_pseudo_tokens=config.ovi_num_pseudo_tokens, **_inversion_kwargs(config))

    per_query = {"img_intra": _ap(image_q, image_g, labels_q, labels_g),
                 "img_oti": _ap(oti.features, image_g, labels_q, labels_g)}
    gallery_mean = image_g.mean(0)
    per_query["img_center"] = _ap(gap.mean_center(image_q, gallery_mean), gap.mean_center(image_g, gallery_mean),
                                  labels_q, labels_g)
    image_centroid, text_centroid = gap.centroid(image_g), gap.centroid(caption_g)
    per_query["img_shift"] = _ap(gap.shift_along_gap(image_q, image_centroid, text_centroid),
                                 gap.shift_along_gap(image_g, image_centroid, text_centroid), labels_q, labels_g)
    for name, texts in (("pca_prompts", prompts), ("pca_captions", caption_g)):
        projector = _text_span(texts, config.pca_components)
        per_query[f"img_{name}"] = _ap(projector.project(image_q), projector.project(image_g), labels_q, labels_g)
    per_query["img_prompt"] = _ap(prompts[labels_q], image_g, labels_q, labels_g)
    per_query["oti_gain"] = per_query["img_oti"] - per_query["img_intra"]
    per_query["txt_intra"] = _ap(caption_q, caption_g, labels_q, labels_g)
    per_query["txt_intra_ovi_queries"] = per_query["txt_intra"][:n_ovi]
    per_query["txt_ovi"] = _ap(ovi.features, caption_g, labels_q[:n_ovi], labels_g)
    per_query["zero_shot"] = ((image_q @ prompts.T).argmax(1) == labels_q).double()

    matched = torch.arange(n_q)
    cos_mean, _ = gap.matched_cosine(image_q, caption_q)
    values = {
        "zero_shot": metrics.zero_shot_accuracy(prompts, image_q, labels_q),
        "i2t_R@1": metrics.retrieval_scores(image_q, caption_q, matched, matched)["R@1"],
        "t2i_R@1": metrics.retrieval_scores(caption_q, image_q, matched, matched)["R@1"],
        "gap_centroid": gap.centroid_distance(image_q, caption_q),
        "gap_matched_cos": cos_mean,
        "oti_cos_to_image": float((oti.features * image_q).sum(1).mean()),
        "ovi_cos_to_text": float((ovi.features * caption_q[:n_ovi]).sum(1).mean()),
    }
    for key, ap in per_query.items():
        if key not in ("oti_gain", "zero_shot"):
            values[f"{key}_mAP"] = float(ap.nanmean())
    features = {"image": image_q, "caption": caption_q, "prompt": prompts, "oti": oti.features, "ovi": ovi.features,
                "labels": labels_q, "gallery_image": image_g, "gallery_caption": caption_g, "gallery_labels": labels_g,
                "oti_losses": oti.losses.mean(0), "ovi_losses": ovi.losses.mean(0)}
    return {"values": values, "per_query": per_query, "features": features}


def oti_steps_curve(clip, config: LabConfig, setting: dict, progress: bool = False) -> dict:
    """OTI->image mAP and OTI loss against optimisation steps, for each number of pseudo tokens R in the config."""
    curve = config.oti_curve
    size = clip.model.visual.image_size
    test, gallery = _datasets(config, setting, int(size[0] if isinstance(size, (tuple, list)) else size))
    cache = config.cache_root()
    n = min(curve["queries"], config.n_test)
    image_q = pipeline.encode_images(clip, test, cache_dir=cache, progress=progress)[:n]
    image_g = pipeline.encode_images(clip, gallery, cache_dir=cache, progress=progress)
    prompts = pipeline.encode_texts(clip, test.prompts(config.prompt_template), cache_dir=cache, progress=progress)
    labels_q, labels_g = test.labels[:n], gallery.labels
    out = {"num_pseudo_tokens": list(curve["num_pseudo_tokens"]), "steps": None, "mAP": [], "loss": [],
           "intra_mAP": float(_ap(image_q, image_g, labels_q, labels_g).nanmean()),
           "prompt_mAP": float(_ap(prompts[labels_q], image_g, labels_q, labels_g).nanmean()),
           "setting": curve["setting"], "seed": curve["seed"], "queries": n}
    for r in curve["num_pseudo_tokens"]:
        result = pipeline.invert_dataset(
            clip, "oti", image_q, cache_dir=cache, progress=progress, template=config.oti_template,
            steps=curve["steps"], num_pseudo_tokens=r, record_every=curve["record_every"], **_inversion_kwargs(config))
        out["steps"] = list(result.history_steps)
        out["mAP"].append([float(_ap(h, image_g, labels_q, labels_g).nanmean()) for h in result.history])
        out["loss"].append(result.losses.mean(0).tolist())
    return out


# ------------------------------------------------------------------------------------------------ statistics
def _summary(tidy: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (setting, metric), group in tidy.groupby(["setting", "metric"], sort=False):
        mean, low, high = stats.seed_ci(group["value"].tolist())
        rows.append({"setting": setting, "metric": metric, "mean": mean, "ci_low": low, "ci_high": high,
                     "n_seeds": len(group), "is_fraction": FRACTION_METRICS.get(metric, False)})
    return pd.DataFrame(rows)


def _contrast_row(name: str, kind: str, setting: str, metric: str, a: list, b: list, n_boot: int) -> dict:
    """a, b: per-seed lists of paired per-query tensors."""
    per_seed = [float(torch.nanmean(x.double() - y.double())) for x, y in zip(a, b)]
    mean, low, high = stats.seed_ci(per_seed)
    boot_diff, boot_low, boot_high = stats.paired_bootstrap_ci(torch.cat(a).double(), torch.cat(b).double(),
                                                               n_boot=n_boot, seed=0)
    return {"contrast": name, "kind": kind, "setting": setting, "metric": metric, "mean_diff": mean,
            "seed_ci_low": low, "seed_ci_high": high, "n_seeds": len(per_seed), "boot_diff": boot_diff,
            "boot_ci_low": boot_low, "boot_ci_high": boot_high, "n_pairs": int(sum(len(x) for x in a)),
            "per_seed": per_seed}


def _contrasts(config: LabConfig, per_query: dict) -> pd.DataFrame:
    rows = []
    for setting in config.settings:
        name = setting["name"]
        units = [per_query[f"{name}|{seed}"] for seed in config.seeds]
        for label, key_a, key_b in WITHIN_CONTRASTS:
            rows.append(_contrast_row(label, "within", name, f"{key_a} - {key_b}", [u[key_a] for u in units],
                                      [u[key_b] for u in units], config.n_boot))
    for name_a, name_b in config.between:
        for key in BETWEEN_KEYS:
            a = [per_query[f"{name_a}|{seed}"][key] for seed in config.seeds]
            b = [per_query[f"{name_b}|{seed}"][key] for seed in config.seeds]
            rows.append(_contrast_row(f"{name_a} - {name_b}", "between", f"{name_a} vs {name_b}", key, a, b,
                                      config.n_boot))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ the lab
def lab_dir(config: LabConfig) -> Path:
    """Folder of a lab's cached units and result: ``<cache root>/lab/<key>``."""
    return config.cache_root() / "lab" / config.key()


def run_lab(config: LabConfig, progress: bool = True) -> LabResults:
    """Train every setting x seed (cached), evaluate each model and summarise with confidence intervals."""
    if not isinstance(config, LabConfig):
        raise ValueError(f"config must be a LabConfig, got {type(config).__name__}")
    from tqdm.auto import tqdm

    folder = lab_dir(config)
    result_path = folder / "results.pt"
    if result_path.exists():
        state = safe_load(result_path)
        if isinstance(state, dict) and "tidy" in state:
            return LabResults.from_state(state, from_cache=True)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        started = time.perf_counter()
        timings = {"train": 0.0, "evaluate": 0.0, "oti_curve": 0.0}
        tidy_rows, per_query, features, training = [], {}, {}, {}
        units = [(setting, seed) for setting in config.settings for seed in config.seeds]
        for i, (setting, seed) in enumerate(tqdm(units, desc="lab", disable=not progress, unit="model"), 1):
            name = setting["name"]
            unit_path = folder / "units" / f"{_slug(name)}-seed{seed}.pt"
            unit = safe_load(unit_path) if unit_path.exists() else None
            if unit is None:
                t0 = time.perf_counter()
                trained = train_clip(config.train_config(setting, seed), progress=progress)
                t1 = time.perf_counter()
                evaluation = evaluate_model(trained.load(), config, setting, progress=progress)
                unit = {
                    "values": {**evaluation["values"], "logit_scale": trained.logit_scales[-1],
                               "train_seconds": trained.train_seconds},
                    "per_query": evaluation["per_query"],
                    "features": evaluation["features"] if seed == config.seeds[0] else {},
                    "training": {"losses": trained.losses, "logit_scales": trained.logit_scales,
                                 "train_seconds": trained.train_seconds},
                    "seconds": {"train": t1 - t0, "evaluate": time.perf_counter() - t1},
                }
                atomic_save(unit, unit_path)
            timings["train"] += unit["seconds"]["train"]
            timings["evaluate"] += unit["seconds"]["evaluate"]
            train_config = config.train_config(setting, seed)
            for metric, value in unit["values"].items():
                tidy_rows.append({"setting": name, "seed": seed, "metric": metric, "value": float(value),
                                  "loss": train_config.loss, "temperature": train_config.temperature,
                                  "data_variant": ", ".join(f"{k}={v}" for k, v in setting.get("data", {}).items())})
            per_query[f"{name}|{seed}"] = unit["per_query"]
            training.setdefault(name, {})[seed] = unit["training"]
            if seed == config.seeds[0]:
                features[name] = unit["features"]
            report_progress(f"lab: model {i}/{len(units)} {name} seed {seed}, {time_left(started, i, len(units))}")

        curve = {}
        if config.oti_curve is not None:
            t0 = time.perf_counter()
            setting = next(s for s in config.settings if s["name"] == config.oti_curve["setting"])
            trained = train_clip(config.train_config(setting, config.oti_curve["seed"]), progress=progress)
            curve = oti_steps_curve(trained.load(), config, setting, progress=progress)
            timings["oti_curve"] = time.perf_counter() - t0

        tidy = pd.DataFrame(tidy_rows)
        results = LabResults(
            config=config.to_dict(), tidy=tidy, summary=_summary(tidy), contrasts=_contrasts(config, per_query),
            per_query=per_query, features=features, oti_curve=curve, training=training,
            timings={**timings, "total": time.perf_counter() - started},
        )
        atomic_save(results.to_state(), result_path)
        return results
    finally:
        torch.set_num_threads(previous_threads)
