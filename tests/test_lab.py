"""Tests of crossgap_lib.lab: the laboratory's configuration (its evaluation is tested in test_evaluation.py)."""

from __future__ import annotations

import pytest

from crossgap_lib.evaluation import load_source
from crossgap_lib.inversion import InversionConfig
from crossgap_lib.lab import LabConfig, run_lab


def smoke() -> LabConfig:
    return LabConfig.from_dict(load_source("lab-smoke")["lab"])


def test_presets_live_in_profiles_and_are_literals():
    for name in ("lab-embedded", "lab-smoke"):
        config = LabConfig.from_dict(load_source(name)["lab"])
        as_dict = config.to_dict()
        assert LabConfig.from_dict(as_dict) == config and len(config.seeds) >= 2

        def literal(value) -> bool:
            if isinstance(value, dict):
                return all(isinstance(k, str) and literal(v) for k, v in value.items())
            if isinstance(value, list):
                return all(literal(v) for v in value)
            return value is None or isinstance(value, (str, int, float, bool))

        assert literal(as_dict)
    assert LabConfig.from_dict(load_source("lab-embedded")["lab"]) == LabConfig()
    assert not hasattr(LabConfig, "smoke") and not hasattr(LabConfig, "embedded")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"settings": []}, "settings must be a non-empty list"),
        ({"settings": [{"loss": "clip"}]}, "'name' string"),
        ({"settings": [{"name": "a", "lossy": 1}]}, "unknown keys \\['lossy'\\]"),
        ({"settings": [{"name": "a"}, {"name": "a"}]}, "distinct"),
        ({"seeds": [0, 0]}, "seeds must be"),
        ({"n_test": 0}, "n_test must be a positive int"),
        ({"train": {"epoch": 1}}, "train has unknown keys"),
        ({"oti": {"stepz": 3}}, "unknown inversion setting"),
        ({"ovi": {"steps": 0}}, "steps must be an int >= 1"),
        ({"oti_curve": {"setting": "clip"}}, "oti_curve must be None or a dict"),
        ({"settings": [{"name": "a", "finetune": {"from": "b"}}]}, "earlier setting"),
        ({"settings": [{"name": "a", "tasks": ["images"]}]}, "tasks must be a non-empty list"),
        ({"settings": [{"name": "a", "seeds": []}]}, "seeds must be a non-empty list"),
        ({"prompt_template": "a photo"}, "one '\\{\\}'"),
        ({"span_ks": [0, 8]}, "span_ks must be None"),
        ({"span_ks": 8}, "span_ks must be None"),
    ],
)
def test_config_validation(change, match):
    with pytest.raises(ValueError, match=match):
        LabConfig.from_dict({**smoke().to_dict(), **change})
    with pytest.raises(ValueError, match="unknown LabConfig fields"):
        LabConfig.from_dict({"modle": "x"})


def test_inversion_settings_are_inversion_configs():
    config = smoke()
    assert config.inversion("oti") == InversionConfig(steps=8, batch_size=256, seed=0)
    assert config.inversion("ovi").steps == 8 and LabConfig().inversion("ovi").steps == 1000


def test_key_ignores_cache_dir_and_progress_only():
    a, b = smoke(), smoke()
    b.cache_dir, b.progress, b.num_threads = "/elsewhere", True, 2
    assert a.key() == b.key()
    b.oti = {**b.oti, "steps": b.oti["steps"] + 1}
    assert a.key() != b.key()


def test_setting_becomes_train_config():
    config = smoke()
    config.data = {"n_captions": 2, "nuisance_caption_rate": 0.0}
    setting = {"name": "x", "loss": "clip", "temperature": 1.0, "data": {"nuisance_caption_rate": 0.5}}
    train = config.train_config(setting, seed=3)
    assert train.temperature == 1.0 and train.seed == 3 and train.model == "crossgap-micro"
    assert train.data == {"n_captions": 2, "nuisance_caption_rate": 0.5}
    assert train.n_train == config.train["n_train"]


def test_fine_tuned_setting_becomes_finetune_config():
    config = LabConfig()
    soft = next(s for s in config.settings if s["name"] == "soft ft tau=0.2")
    recipe = config.recipe(soft, seed=2)
    assert type(recipe).__name__ == "FinetuneConfig"
    assert (recipe.loss, recipe.soft_target_temperature, recipe.seed) == ("soft", 0.2, 2)
    assert recipe.steps == config.finetune["steps"] and recipe.lr == config.finetune["lr"]
    scratch = next(s for s in config.settings if s["name"] == "clip")
    assert type(config.recipe(scratch, seed=2)).__name__ == "TrainConfig"
    with pytest.raises(ValueError, match="trained from scratch"):
        config.finetune_config(scratch, seed=0)


def test_run_lab_refuses_a_dict():
    with pytest.raises(ValueError, match="config must be a LabConfig"):
        run_lab({"model": "crossgap-micro"})
