"""The offline laboratory's configuration: which tiny CLIPs to train on the generated data, and how to measure them.

A :class:`LabConfig` is the ``lab`` entry of a ``kind: lab`` source in ``profiles.yml`` (the presets live there).
Every setting (loss x temperature x data variant) is trained for every seed by :mod:`crossgap_lib.train` (cached);
:mod:`crossgap_lib.evaluation` then measures each model with the same protocol as the paper's models, with held-out
test images as queries and training images as the gallery.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from crossgap_lib.cache import cache_key, default_cache_root
from crossgap_lib.train import TrainConfig

LAB_CODE_VERSION = 1  # bump when a change alters what a config computes (invalidates cached labs)
_NOT_IN_KEY = ("cache_dir", "progress", "num_threads")
_SETTING_KEYS = {f.name for f in fields(TrainConfig)} - {"model", "seed", "out_dir", "progress", "data_seed"}

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
    # InversionConfig fields over the paper's defaults (batch size: samples optimised together; results do not
    # depend on it). The OTI curve uses ``oti`` with its own R, steps and record_every.
    oti: dict = field(default_factory=lambda: {"steps": 150, "batch_size": 256})
    ovi: dict = field(default_factory=lambda: {"steps": 1000, "batch_size": 256})
    ovi_queries: int | None = 128  # None: every text query; the first k (class-balanced) make OVI cheaper
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
        for name in ("n_test", "n_gallery", "n_boot", "num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_test < 2 or self.n_gallery < 2:
            raise ValueError(f"n_test and n_gallery must be >= 2, got {self.n_test} and {self.n_gallery}")
        if self.ovi_queries is not None and not (isinstance(self.ovi_queries, int) and 1 <= self.ovi_queries):
            raise ValueError(f"ovi_queries must be None or a positive int, got {self.ovi_queries!r}")
        for method in ("oti", "ovi"):
            self.inversion(method)  # validates (unknown fields, bad values) with InversionConfig's messages
        if self.oti_curve is not None:
            curve = self.oti_curve
            required = {"setting", "seed", "num_pseudo_tokens", "steps", "record_every", "queries"}
            if not isinstance(curve, dict) or set(curve) != required:
                raise ValueError(f"oti_curve must be None or a dict with keys {sorted(required)}, got {curve!r}")
            if curve["setting"] not in names or curve["seed"] not in self.seeds:
                raise ValueError(f"oti_curve setting/seed must be among {names} / {self.seeds}, got "
                                 f"{curve['setting']!r} / {curve['seed']!r}")
        if "{}" not in self.prompt_template or "{}" not in self.inversion("oti").template:
            raise ValueError("prompt_template and the OTI template must each hold one '{}'")

    def inversion(self, method: str):
        """The :class:`crossgap_lib.inversion.InversionConfig` of ``"oti"`` or ``"ovi"``."""
        from crossgap_lib.inversion import OTI_DEFAULTS, OVI_DEFAULTS

        values = getattr(self, method)
        if not isinstance(values, dict):
            raise ValueError(f"{method} must be a dict of InversionConfig fields, got {values!r}")
        return (OTI_DEFAULTS if method == "oti" else OVI_DEFAULTS).updated(seed=0, **values)

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


def run_lab(config: LabConfig, device: str = "cpu", progress: bool = True):
    """Train every setting x seed (cached) and evaluate each with :func:`crossgap_lib.evaluation.evaluate`."""
    from .evaluation import evaluate

    if not isinstance(config, LabConfig):
        raise ValueError(f"config must be a LabConfig, got {type(config).__name__}")
    return evaluate({"kind": "lab", "lab": config.to_dict()}, device=device, cache_dir=config.cache_root(),
                    progress=progress)
