"""Tests of crossgap_lib.lab: the smoke preset end to end on crossgap-micro in a temporary cache."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from crossgap_lib.lab import FRACTION_METRICS, LabConfig, LabResults, lab_dir, run_lab


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[LabConfig, LabResults]:
    config = LabConfig.smoke()
    config.cache_dir = str(tmp_path_factory.mktemp("lab_cache"))
    config.progress = False
    return config, run_lab(config, progress=False)


def test_presets_are_dicts_of_literals_and_round_trip():
    for preset in (LabConfig.embedded(), LabConfig.smoke()):
        as_dict = preset.to_dict()
        assert LabConfig.from_dict(as_dict) == preset
        assert len(preset.seeds) >= 2

        def literal(value) -> bool:
            if isinstance(value, dict):
                return all(isinstance(k, str) and literal(v) for k, v in value.items())
            if isinstance(value, list):
                return all(literal(v) for v in value)
            return value is None or isinstance(value, (str, int, float, bool))

        assert literal(as_dict)
    assert len(LabConfig.embedded().seeds) >= 3


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
        ({"between": [["soft", "nope"]]}, "between must hold"),
        ({"oti_curve": {"setting": "clip"}}, "oti_curve must be None or a dict"),
        ({"prompt_template": "a photo"}, "one '\\{\\}'"),
    ],
)
def test_config_validation(change, match):
    with pytest.raises(ValueError, match=match):
        LabConfig.from_dict({**LabConfig.smoke().to_dict(), **change})
    with pytest.raises(ValueError, match="unknown LabConfig fields"):
        LabConfig.from_dict({"modle": "x"})


def test_key_ignores_cache_dir_and_progress_only():
    a, b = LabConfig.smoke(), LabConfig.smoke()
    b.cache_dir, b.progress, b.num_threads = "/elsewhere", True, 2
    assert a.key() == b.key()
    b.oti_steps += 1
    assert a.key() != b.key()


def test_setting_becomes_train_config():
    config = LabConfig.smoke()
    config.data = {"n_captions": 2, "nuisance_caption_rate": 0.0}
    setting = {"name": "x", "loss": "clip", "temperature": 1.0, "data": {"nuisance_caption_rate": 0.5}}
    train = config.train_config(setting, seed=3)
    assert train.temperature == 1.0 and train.seed == 3 and train.model == "crossgap-micro"
    assert train.data == {"n_captions": 2, "nuisance_caption_rate": 0.5}
    assert train.n_train == config.train["n_train"]


def test_tidy_and_summary_tables(smoke):
    config, results = smoke
    names = [s["name"] for s in config.settings]
    tidy = results.tidy
    assert {"setting", "seed", "metric", "value", "loss", "temperature", "data_variant"} <= set(tidy.columns)
    per_unit = tidy.groupby(["setting", "seed"]).size()
    assert len(per_unit) == len(names) * len(config.seeds)
    assert per_unit.nunique() == 1  # every unit reports the same metrics
    assert set(tidy.metric) <= set(FRACTION_METRICS)
    fractions = tidy[tidy.metric.map(FRACTION_METRICS) & (tidy.metric != "train_seconds")]
    assert fractions.value.between(0, 1).all()

    summary = results.summary
    assert len(summary) == len(names) * tidy.metric.nunique()
    assert (summary.n_seeds == len(config.seeds)).all()
    spread = summary[summary.ci_high > summary.ci_low]
    assert len(spread) > 0
    assert ((summary.ci_low <= summary["mean"] + 1e-12) & (summary["mean"] <= summary.ci_high + 1e-12)).all()
    means = tidy.groupby(["setting", "metric"]).value.mean()
    for row in summary.itertuples():
        assert row.mean == pytest.approx(means[(row.setting, row.metric)])

    table = results.table(["img_intra_mAP", "img_oti_mAP", "zero_shot"])
    assert list(table.index) == names and list(table.columns) == ["img_intra_mAP", "img_oti_mAP", "zero_shot"]
    assert all("[" in cell for cell in table.to_numpy().ravel())


def test_temperature_settings_are_what_they_say(smoke):
    _, results = smoke
    scale = results.tidy[results.tidy.metric == "logit_scale"].set_index(["setting", "seed"]).value
    assert scale.loc["clip T=1"].tolist() == pytest.approx([1.0] * 2)
    assert (scale.loc["clip"] > 5).all()  # learnable, starting at 1/0.07


def test_per_query_values_match_the_table(smoke):
    config, results = smoke
    tidy = results.tidy.set_index(["setting", "seed", "metric"]).value
    for setting in config.settings:
        for seed in config.seeds:
            unit = results.per_query[f"{setting['name']}|{seed}"]
            assert unit["img_intra"].shape == (config.n_test,)
            assert unit["txt_ovi"].shape == (config.ovi_queries,)
            for key in ("img_intra", "img_oti", "img_pca_prompts", "txt_intra", "txt_ovi"):
                assert float(unit[key].nanmean()) == pytest.approx(tidy[(setting["name"], seed, f"{key}_mAP")])
            assert float(unit["zero_shot"].mean()) == pytest.approx(tidy[(setting["name"], seed, "zero_shot")])
            torch.testing.assert_close(unit["oti_gain"], unit["img_oti"] - unit["img_intra"])


def test_contrasts_have_both_intervals(smoke):
    config, results = smoke
    contrasts = results.contrasts
    within = contrasts[contrasts.kind == "within"]
    assert len(within) == 8 * len(config.settings)
    between = contrasts[contrasts.kind == "between"]
    assert set(between.contrast) == {f"{a} - {b}" for a, b in config.between}
    ok = contrasts.dropna(subset=["seed_ci_low"])
    assert ((ok.seed_ci_low <= ok.mean_diff + 1e-12) & (ok.mean_diff <= ok.seed_ci_high + 1e-12)).all()
    assert ((contrasts.boot_ci_low <= contrasts.boot_diff + 1e-12)
            & (contrasts.boot_diff <= contrasts.boot_ci_high + 1e-12)).all()
    table = results.contrast_table("between")
    assert len(table) == len(between) and table["queries (bootstrap)"].str.contains("[", regex=False).all()
    # the seed-level mean difference of equal-size per-seed query sets is the pooled mean difference
    row = within[(within.setting == "clip") & (within.contrast == "OTI - intra (image)")].iloc[0]
    pooled = torch.cat([results.per_query[f"clip|{s}"]["oti_gain"] for s in config.seeds]).mean()
    assert row.mean_diff == pytest.approx(float(pooled)) == pytest.approx(row.boot_diff)


def test_figure_data(smoke):
    config, results = smoke
    for setting in config.settings:
        feats = results.features[setting["name"]]
        assert feats["image"].shape[0] == config.n_test == feats["oti"].shape[0]
        assert torch.allclose(feats["image"].norm(dim=1), torch.ones(config.n_test), atol=1e-4)
    curve = results.oti_curve
    assert curve["num_pseudo_tokens"] == config.oti_curve["num_pseudo_tokens"]
    assert curve["steps"] == [0, 3, 6]
    assert len(curve["mAP"]) == 2 and all(len(m) == 3 for m in curve["mAP"])
    assert all(len(loss) == config.oti_curve["steps"] for loss in curve["loss"])
    assert curve["loss"][0][-1] < curve["loss"][0][0]  # the inversion does reduce its loss
    assert 0 <= curve["intra_mAP"] <= 1
    losses = results.training["clip"][config.seeds[0]]["losses"]
    assert len(losses) == config.train["epochs"] * (config.train["n_train"] // config.train["batch_size"])


def test_second_call_is_a_cache_hit(smoke):
    config, results = smoke
    assert not results.from_cache
    again = run_lab(config, progress=False)
    assert again.from_cache
    pd.testing.assert_frame_equal(again.tidy, results.tidy)
    pd.testing.assert_frame_equal(again.summary, results.summary)
    assert (lab_dir(config) / "results.pt").exists()
    assert math.isclose(again.timings["total"], results.timings["total"])


def test_interrupted_lab_resumes_from_finished_units(smoke, tmp_path):
    config, results = smoke
    (lab_dir(config) / "results.pt").unlink()
    resumed = run_lab(config, progress=False)  # every unit is stored: only the summary is recomputed
    assert not resumed.from_cache
    pd.testing.assert_frame_equal(resumed.tidy, results.tidy)


def test_unwritable_cache_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder must go")  # not writable, even as root
    config = LabConfig.smoke()
    config.cache_dir = None
    monkeypatch.setenv("CROSSGAP_CACHE", str(blocker / "cache"))
    monkeypatch.setattr("crossgap_lib.train._prepare_data", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(PermissionError, match="not writable.*CROSSGAP_CACHE"):
        run_lab(config, progress=False)
