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

LAB_CODE_VERSION = 3  # bump when a change alters what a config computes (invalidates cached labs)
_NOT_IN_KEY = ("cache_dir", "progress", "num_threads")
_SETTING_KEYS = {f.name for f in fields(TrainConfig)} - {"model", "seed", "out_dir", "progress", "data_seed"}
_LAB_KEYS = {"name", "seeds", "tasks", "finetune"}  # setting keys the laboratory reads itself
TASKS = ("image", "text", "zero_shot")

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "setting"


@dataclass
class LabConfig:
    """What the laboratory trains and measures; plain literals only (``to_dict`` / ``from_dict``)."""

    model: str = "crossgap-small"
    # A setting trains from scratch (TrainConfig fields) or, with ``finetune``, fine-tunes the same seed's model of
    # another setting (crossgap_lib.finetune, the function the paper profile uses for Table 4). Optional per setting:
    # ``seeds`` (default: ``seeds``), ``tasks`` (default: every task; e.g. [image, zero_shot] skips OVI).
    settings: list = field(default_factory=lambda: [
        {"name": "clip", "loss": "clip"},
        {"name": "intra", "loss": "intra", "tasks": ["image", "zero_shot"]},
        {"name": "clip ft T=1", "finetune": {"from": "clip", "temperature": 1.0}, "tasks": ["image", "zero_shot"]},
        {"name": "clip ft T=0.01", "finetune": {"from": "clip", "temperature": 0.01},
         "tasks": ["image", "zero_shot"]},
        # the soft-target chapter: fine-tuning the trained CLIPs with soft targets against the same fine-tuning with
        # the CLIP loss (same start, steps and data: only the loss differs, as for the paper profile's soft row), and
        # its ablations (target temperature, hard weight, one teacher only)
        {"name": "clip ft", "finetune": {"from": "clip"}, "tasks": ["image", "zero_shot"]},
        {"name": "soft ft", "finetune": {"from": "clip", "loss": "soft"}, "tasks": ["image", "zero_shot"]},
        {"name": "soft ft tau=0.2", "finetune": {"from": "clip", "loss": "soft", "soft_target_temperature": 0.2},
         "tasks": ["image"]},
        {"name": "soft ft hard=0.5", "finetune": {"from": "clip", "loss": "soft", "soft_hard_weight": 0.5},
         "tasks": ["image"]},
        {"name": "soft ft image teacher", "finetune": {"from": "clip", "loss": "soft", "soft_teachers": "image"},
         "tasks": ["image"]},
        {"name": "soft ft text teacher", "finetune": {"from": "clip", "loss": "soft", "soft_teachers": "text"},
         "tasks": ["image"]},
    ])
    seeds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    # TrainConfig overrides shared by every setting: 768 steps of 128, past the colour-only loss plateau that ends
    # near step 500 (16 epochs lowered the final loss only from about 3.1 to 3.0, for a third more of the budget)
    train: dict = field(default_factory=lambda: {
        "n_train": 8192, "epochs": 12, "batch_size": 128, "lr": 2e-3, "warmup": 50, "checkpoint_every": 200,
    })
    # FinetuneConfig overrides shared by every fine-tuned setting: 64 steps at T = 1 already take the centroid
    # distance from about 0.30 to 0.05 (128 steps: 0.02), so the manipulation is strong at half the cost
    finetune: dict = field(default_factory=lambda: {"steps": 64, "batch_size": 128, "lr": 5e-4, "warmup": 8})
    # ShapesConfig overrides shared by every setting (a setting may add): a quarter of the training captions also name
    # one nuisance value, so the text tower knows those words
    data: dict = field(default_factory=lambda: {"nuisance_caption_rate": 0.25})
    # ShapesConfig overrides of the evaluation captions (images do not depend on them): every caption names the class
    # and one nuisance value while relevance stays the class, so text->text retrieval is off its ceiling
    eval_data: dict = field(default_factory=lambda: {"nuisance_caption_rate": 1.0})
    data_seed: int = 0
    n_test: int = 256  # held-out test images: the image queries (their first captions: the text queries)
    n_gallery: int = 2048  # held-out validation images (and their first captions): the galleries, never trained on
    prompt_template: str = "a photo of a {}."
    # the critique's text-span projection, fit on the generic lab vocabulary (datasets.shapes.lab_vocabulary), for
    # every k of this sweep; None: gap.default_span_ks (D/8, D/4, D/2, 3D/4, those the vocabulary supports)
    span_ks: list | None = None
    # InversionConfig fields over the paper's defaults (batch size: samples optimised together; results do not
    # depend on it). The OTI curve uses ``oti`` with its own R, steps and record_every.
    oti: dict = field(default_factory=lambda: {"steps": 150, "batch_size": 256})
    ovi: dict = field(default_factory=lambda: {"steps": 1000, "batch_size": 256})
    ovi_queries: int | None = 48  # None: every text query; the first k (3 per class) make OVI cheaper
    # OTI along the steps (Figure 2): every R on the first seed; the ``focus`` R on every seed (the peak claim's
    # replicates); recorded at log-spaced steps (``record: log``) or every ``record`` steps. R stops at 8: the lab
    # text tower's 16-token context holds at most 11 pseudo tokens in "a photo of {}" (the paper profile runs R = 16)
    oti_curve: dict | None = field(default_factory=lambda: {
        "setting": "clip", "seeds": [0, 1, 2, 3, 4], "num_pseudo_tokens": [1, 2, 4, 8], "focus": 4,
        "steps": 1000, "record": "log", "queries": 64,
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
            unknown = sorted(set(setting) - _SETTING_KEYS - _LAB_KEYS)
            if unknown:
                raise ValueError(
                    f"setting {setting['name']!r} has unknown keys {unknown}; expected {sorted(_LAB_KEYS)} and "
                    f"TrainConfig fields {sorted(_SETTING_KEYS)}"
                )
            tasks = setting.get("tasks", list(TASKS))
            if not isinstance(tasks, list) or not tasks or not set(tasks) <= set(TASKS):
                raise ValueError(f"setting {setting['name']!r}: tasks must be a non-empty list from {TASKS}, "
                                 f"got {tasks!r}")
            seeds = setting.get("seeds", [0])
            if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and x >= 0 for x in seeds):
                raise ValueError(f"setting {setting['name']!r}: seeds must be a non-empty list of ints >= 0, "
                                 f"got {seeds!r}")
            if "finetune" in setting:
                finetune = setting["finetune"]
                if not isinstance(finetune, dict) or finetune.get("from") not in names:
                    raise ValueError(f"setting {setting['name']!r}: finetune must be a dict whose 'from' names an "
                                     f"earlier setting (one of {names}), got {finetune!r}")
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
            required = {"setting", "seeds", "num_pseudo_tokens", "focus", "steps", "record", "queries"}
            if not isinstance(curve, dict) or set(curve) != required:
                raise ValueError(f"oti_curve must be None or a dict with keys {sorted(required)}, got {curve!r}")
            if curve["setting"] not in names:
                raise ValueError(f"oti_curve setting must be one of {names}, got {curve['setting']!r}")
            setting_seeds = self.seeds_of(next(x for x in self.settings if x["name"] == curve["setting"]))
            if not isinstance(curve["seeds"], list) or not curve["seeds"] or \
                    not set(curve["seeds"]) <= set(setting_seeds):
                raise ValueError(f"oti_curve seeds must be a non-empty list among {setting_seeds}, got "
                                 f"{curve['seeds']!r}")
            if curve["focus"] not in curve["num_pseudo_tokens"]:
                raise ValueError(f"oti_curve focus must be one of num_pseudo_tokens {curve['num_pseudo_tokens']}, "
                                 f"got {curve['focus']!r}")
            if curve["record"] != "log" and not (isinstance(curve["record"], int) and curve["record"] >= 1):
                raise ValueError(f"oti_curve record must be 'log' or a positive int, got {curve['record']!r}")
        if self.span_ks is not None and (not isinstance(self.span_ks, list) or not self.span_ks or not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.span_ks)):
            raise ValueError(f"span_ks must be None (gap.default_span_ks) or a non-empty list of ints >= 1, got "
                             f"{self.span_ks!r}")
        if "{}" not in self.prompt_template or "{}" not in self.inversion("oti").template:
            raise ValueError("prompt_template and the OTI template must each hold one '{}'")

    def seeds_of(self, setting: dict) -> list[int]:
        """The seeds a setting is trained with: its own ``seeds`` or the config's."""
        return list(setting.get("seeds", self.seeds))

    def tasks_of(self, setting: dict) -> list[str]:
        """The tasks a setting is measured on: its own ``tasks`` or all of them."""
        return list(setting.get("tasks", TASKS))

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
        runs = [self.train_config(setting, seed).key() for setting in self.settings if "finetune" not in setting
                for seed in self.seeds_of(setting)]
        return cache_key(kind="lab", version=LAB_CODE_VERSION, train_runs=runs, **parts)

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_root()

    def train_config(self, setting: dict, seed: int) -> TrainConfig:
        """The TrainConfig of one setting and seed."""
        if "finetune" in setting:
            setting = next(x for x in self.settings if x["name"] == setting["finetune"]["from"])
        overrides = {**self.train, **{k: v for k, v in setting.items() if k not in ("data", *_LAB_KEYS)}}
        data = {**self.data, **self.train.get("data", {}), **setting.get("data", {})}
        return TrainConfig(
            model=self.model, seed=seed, data=data, data_seed=self.data_seed, out_dir=str(self.cache_root()),
            progress=self.progress, **{**overrides, "num_threads": self.num_threads},
        )

    def finetune_config(self, setting: dict, seed: int):
        """The :class:`crossgap_lib.finetune.FinetuneConfig` of a fine-tuned setting and seed."""
        from crossgap_lib.finetune import FinetuneConfig

        if "finetune" not in setting:
            raise ValueError(f"setting {setting.get('name')!r} is trained from scratch; it has no fine-tuning config")
        options = {**self.finetune, **{k: v for k, v in setting["finetune"].items() if k != "from"}}
        return FinetuneConfig(**{"seed": seed, "progress": self.progress, **options})

    def recipe(self, setting: dict, seed: int):
        """What one setting and seed is trained with: its FinetuneConfig if fine-tuned, else its TrainConfig (the two
        share the loss options: loss, soft_target_temperature, soft_hard_weight, soft_teachers, the teachers)."""
        return self.finetune_config(setting, seed) if "finetune" in setting else self.train_config(setting, seed)


def free_cores(sample_seconds: float = 0.2) -> int:
    """Cores idle right now: the idle share of /proc/stat over ``sample_seconds`` times the usable cores (>= 1).

    The laboratory sizes its torch threads with it (``min(num_threads, free_cores())``): a tiny model's step is
    compute-bound, so a thread on a busy core only waits (see benchmarks/bench_lab.py). Where /proc/stat is missing,
    every usable core counts as free.
    """
    import os
    import time

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = times()
        time.sleep(sample_seconds)
        idle1, total1 = times()
    except (OSError, ValueError, IndexError):
        return cores
    share = (idle1 - idle0) / max(total1 - total0, 1)
    return max(1, min(cores, round(share * (os.cpu_count() or cores))))


def run_lab(config: LabConfig, device: str = "cpu", progress: bool = True):
    """Train every setting x seed (cached) and evaluate each with :func:`crossgap_lib.evaluation.evaluate`."""
    from .evaluation import evaluate

    if not isinstance(config, LabConfig):
        raise ValueError(f"config must be a LabConfig, got {type(config).__name__}")
    return evaluate({"kind": "lab", "lab": config.to_dict()}, device=device, cache_dir=config.cache_root(),
                    progress=progress)
