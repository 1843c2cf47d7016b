import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from test_datasets import make_cub

from crossgap_lib import experiments, metrics, report, tables


def test_paper_analogue_maps_settings_to_reported_rows():
    clip = tables.paper_analogue({"name": "clip", "loss": "clip"})
    assert clip["delta"] == pytest.approx((2.0 + 3.3 + 2.2 + 3.2 + 2.8) / 5)
    assert "5 CLIP-family" in clip["analogue"] and clip["provenance"] == "poster"
    slip = tables.paper_analogue({"name": "intra", "loss": "intra"})
    assert slip["delta"] == pytest.approx(0.3) and "SLIP" in slip["analogue"]
    assert tables.paper_analogue({"name": "T1", "loss": "clip", "temperature": 1.0})["delta"] == pytest.approx(-2.8)
    assert tables.paper_analogue({"name": "T", "loss": "clip", "temperature": 0.01})["delta"] == pytest.approx(0.9)
    assert tables.paper_analogue({"name": "T", "loss": "clip", "temperature": 0.1}) is None
    assert tables.paper_analogue({"name": "soft", "loss": "soft"}) is None
    zs = tables.paper_analogue({"name": "clip", "loss": "clip"}, "zero_shot")
    assert zs["delta"] == pytest.approx((-5.5 - 3.8 - 3.3 - 1.9 - 8.8) / 5, abs=1e-9)
    assert tables.paper_analogue({"name": "intra", "loss": "intra"}, "text") is None
    with pytest.raises(ValueError, match="task"):
        tables.paper_analogue({"name": "clip"}, "video")


def _contrasts():
    base = {"kind": "within", "contrast": "OTI - intra (image)", "metric": "img_oti - img_intra", "n_seeds": 3,
            "n_pairs": 30, "per_seed": [0.0]}
    return pd.DataFrame([
        {**base, "setting": "clip", "mean_diff": 0.02, "seed_ci_low": 0.01, "seed_ci_high": 0.03,
         "boot_diff": 0.02, "boot_ci_low": 0.015, "boot_ci_high": 0.025},
        {**base, "setting": "intra", "mean_diff": -0.01, "seed_ci_low": -0.03, "seed_ci_high": 0.01,
         "boot_diff": -0.01, "boot_ci_low": -0.02, "boot_ci_high": -0.005},
        {**base, "setting": "soft", "mean_diff": 0.0, "seed_ci_low": math.nan, "seed_ci_high": math.nan,
         "boot_diff": 0.0, "boot_ci_low": -0.01, "boot_ci_high": 0.01},
        {**base, "kind": "between", "contrast": "intra - clip", "setting": "intra vs clip", "metric": "oti_gain",
         "mean_diff": -0.03, "seed_ci_low": -0.05, "seed_ci_high": -0.01, "boot_diff": -0.03,
         "boot_ci_low": -0.04, "boot_ci_high": -0.02},
    ])


def test_lab_vs_reported_signs_and_missing_analogues():
    settings = [{"name": "clip", "loss": "clip"}, {"name": "intra", "loss": "intra"}, {"name": "soft", "loss": "soft"},
                {"name": "absent", "loss": "clip"}]
    table = tables.lab_vs_reported(_contrasts(), settings, "OTI - intra (image)")
    assert list(table.index) == ["clip", "intra", "soft"]
    assert table.loc["clip", "sign agreement (seeds)"] == "agrees"
    assert table.loc["clip", "lab: difference [95% CI over seeds]"] == "+2.0 [1.0, 3.0]"
    assert table.loc["intra", "sign agreement (seeds)"] == "inconclusive"
    assert table.loc["intra", "sign agreement (queries)"] == "disagrees"
    assert table.loc["soft", "sign agreement (seeds)"] == "no paper analogue"
    assert table.loc["soft", "reported difference"] == "-"
    with pytest.raises(ValueError, match="no within-model contrast"):
        tables.lab_vs_reported(_contrasts(), settings, "OVI - intra (text)")


def test_agreement_sentence():
    assert tables.agreement_sentence(2.7, 0.01, 0.02).endswith("agrees in sign.")
    assert "+2.7 points for SLIP" in tables.agreement_sentence(2.7, 0.01, 0.02, "SLIP")
    assert tables.agreement_sentence(2.7, -0.02, -0.01).endswith("opposite sign.")
    assert "includes zero" in tables.agreement_sentence(-2.7, -0.02, 0.01)
    assert "no measured interval" in tables.agreement_sentence(-2.7, math.nan, math.nan)


def test_contrast_lookups():
    frame = _contrasts()
    assert list(tables.contrast_rows(frame, "OTI - intra (image)").index) == ["clip", "intra", "soft"]
    assert tables.between_row(frame, "intra", "clip", "oti_gain")["mean_diff"] == -0.03
    assert tables.between_row(frame, "clip T=1", "clip", "oti_gain") is None


def test_reported_with_delta_spells_out_provenance():
    table = tables.reported_with_delta("table1", "intra_image_to_image_mAP", "oti_to_image_mAP")
    assert table["difference"].round(1).tolist() == table["delta"].tolist()
    assert table["provenance"].str.contains("poster").all()


def test_zero_shot_correct_matches_accuracy_and_comparison_is_paired():
    torch.manual_seed(0)
    classes = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    samples = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    labels = torch.randint(0, 5, (40,))
    correct = tables.zero_shot_correct(classes, samples, labels)
    assert correct.shape == (40,) and set(correct.tolist()) <= {0.0, 1.0}
    assert float(correct.mean()) == pytest.approx(metrics.zero_shot_accuracy(classes, samples, labels))
    same = tables.zero_shot_comparison(classes, samples, samples, labels, n_boot=50)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and same["n"] == 40
    perfect = tables.zero_shot_comparison(classes, samples, classes[labels], labels, n_boot=200)
    assert perfect["inversion"] == 1.0 and perfect["diff"] == pytest.approx(1 - same["inter"])
    assert perfect["ci_low"] > 0
    with pytest.raises(ValueError, match="labels"):
        tables.zero_shot_correct(classes, samples, labels[:3])


def test_zero_shot_margins():
    classes = torch.eye(3)
    samples = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.5, 0.0]])
    margins = tables.zero_shot_margins(classes, samples, torch.tensor([0, 1]))
    assert margins.tolist() == pytest.approx([0.8, -0.1])


def test_lab_zero_shot_on_the_smoke_lab(tmp_path):
    from crossgap_lib.lab import LabResults

    torch.manual_seed(0)
    prompts = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    labels = torch.arange(12) % 4
    features = {"clip": {"prompt": prompts, "image": torch.randn(12, 8), "oti": prompts[labels], "labels": labels}}
    summary = pd.DataFrame([{"setting": "clip", "metric": "zero_shot", "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                             "n_seeds": 3, "is_fraction": True}])
    lab = LabResults(config={"settings": [{"name": "clip", "loss": "clip"}, {"name": "soft", "loss": "soft"}],
                             "n_boot": 100},
                     tidy=pd.DataFrame(), summary=summary, contrasts=pd.DataFrame(), per_query={}, features=features,
                     oti_curve={}, training={}, timings={})
    table = tables.lab_zero_shot(lab)
    assert list(table.index) == ["clip"]
    row = table.loc["clip"]
    assert row["OTI (first seed)"] == 1.0 and row["n_images"] == 12 and row["inter (all seeds)"] == 0.5
    assert row["diff"] == pytest.approx(1.0 - row["inter (first seed)"])
    assert row["reported_delta"] == pytest.approx(-4.66)


def test_gain_vs_gap_pivots_tidy_rows():
    rows = []
    for setting, gap, intra, oti in (("b", 1.0, 0.2, 0.25), ("a", 0.5, 0.3, 0.29)):
        for seed in (0, 1):
            rows += [{"setting": setting, "seed": seed, "metric": "gap_centroid", "value": gap + seed / 10},
                     {"setting": setting, "seed": seed, "metric": "img_intra_mAP", "value": intra},
                     {"setting": setting, "seed": seed, "metric": "img_oti_mAP", "value": oti},
                     {"setting": setting, "seed": seed, "metric": "zero_shot", "value": 0.5}]
    frame = tables.gain_vs_gap(pd.DataFrame(rows))
    assert list(frame["setting"]) == ["b", "b", "a", "a"]  # order of first appearance
    assert frame["gain"].tolist() == pytest.approx([0.05, 0.05, -0.01, -0.01])
    assert frame["gap"].tolist() == pytest.approx([1.0, 1.1, 0.5, 0.6])
    with pytest.raises(ValueError, match="no metric"):
        tables.gain_vs_gap(pd.DataFrame(rows), gap_metric="gap_matched_cos")


def test_welch_difference_matches_scipy():
    from scipy import stats as scipy_stats

    a, b = [1.0, 1.2, 1.4], [0.5, 0.9, 0.6, 0.7]
    diff, low, high = tables.welch_difference(a, b)
    assert diff == pytest.approx(1.2 - 0.675)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert math.isnan(tables.welch_difference([1.0], [0.5, 0.6])[1])
    assert tables.welch_difference([1.0, 1.0], [0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_fit_line_recovers_a_slope_and_its_interval():
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 30)
    y = 2.0 * x + 0.5 + 0.05 * torch.randn(30, generator=generator)
    fit = tables.fit_line(x.tolist(), y.tolist(), n_boot=500)
    assert fit["slope"] == pytest.approx(2.0, abs=0.1) and fit["intercept"] == pytest.approx(0.5, abs=0.1)
    assert fit["slope_low"] < 2.0 < fit["slope_high"] and fit["boot_low"] < fit["slope"] < fit["boot_high"]
    assert fit["n"] == 30 and fit["r"] > 0.9
    assert tables.trend_sentence("gain", fit).endswith("grows with the gap.")
    flat = tables.fit_line(x.tolist(), (0.05 * torch.randn(30, generator=generator)).tolist(), n_boot=100)
    if flat["slope_low"] < 0 < flat["slope_high"]:
        assert tables.trend_sentence("gain", flat).endswith("no detectable trend.")
    down = tables.fit_line(x.tolist(), (-y).tolist(), n_boot=100)
    assert tables.trend_sentence("gain", down).endswith("shrinks as the gap grows.")
    assert tables.trend_sentence("gain", down, down="it falls").endswith("below zero, so it falls.")
    with pytest.raises(ValueError, match="constant"):
        tables.fit_line([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 3"):
        tables.fit_line([1, 2], [1, 2])


def _cells():
    return pd.DataFrame([
        {"model": "CLIP B/32", "dataset": "cub", "method": "intra", "value": 0.30},
        {"model": "CLIP B/32", "dataset": "cub", "method": "oti", "value": 0.34},
        {"model": "CLIP B/32", "dataset": "sop", "method": "intra", "value": 0.40},
        {"model": "CLIP B/32", "dataset": "sop", "method": "oti", "value": 0.40},
        {"model": "CLIP B/32", "dataset": "sop", "method": "text_span", "value": 0.50},
    ])


def test_paper_average_vs_reported():
    table = tables.paper_average_vs_reported(
        _cells(), "table1", {"intra": "intra_image_to_image_mAP", "oti": "oti_to_image_mAP"}, expected_datasets=15)
    row = table.loc["CLIP B/32"]
    assert row["intra reproduced"] == pytest.approx(35.0) and row["oti reproduced"] == pytest.approx(37.0)
    assert row["intra reported"] == 39.2 and row["intra difference"] == pytest.approx(35.0 - 39.2)
    assert row["n datasets"] == 2 and not row["comparable"]


def test_finetuned_models_need_checkpoints(tmp_path):
    with pytest.raises(ValueError, match=r"temperature\(s\) \['1.0'\].*crossgap_lib.train"):
        tables.finetuned_models({"1.0": None, "0.01": str(tmp_path / "a.pt")}, "ViT-B-32")
    models = tables.finetuned_models({"1.0": "one.pt", "0.01": "two.pt"}, "ViT-B-32")
    assert [m.label for m in models] == ["T=1", "T=0.01"] and models[0].pretrained == "one.pt"
    assert models[1].oti_steps == experiments.paper_models(["CLIP B/32"])[0].oti_steps


def test_table4_vs_reported_adds_averages():
    cells = pd.DataFrame([{"model": f"T={t:g}", "dataset": d, "method": m, "value": v}
                          for t in (1.0, 0.01) for d in ("cub", "sop") for m, v in (("intra", 0.2), ("oti", 0.3),
                                                                                     ("text_span", 0.9))])
    frame = tables.table4_vs_reported(cells)
    assert len(frame) == 2 * 2 * 3  # temperatures x approaches x (2 datasets + average)
    cub = frame[(frame.temperature == 1.0) & (frame.approach == "intra image-to-image") & (frame.dataset == "CUB")]
    assert cub["reported"].item() == 15.9 and cub["reproduced"].item() == pytest.approx(20.0)
    avg = frame[(frame.temperature == 0.01) & (frame.approach == "OTI-to-image") & (frame.dataset == "Average")]
    assert avg["reported"].item() == pytest.approx((24.1 + 35.2) / 2) and avg["reproduced"].item() == pytest.approx(30)


def test_paper_cells_on_a_miniature_cub(tmp_path):
    from crossgap_lib.models import load_clip

    make_cub(tmp_path)
    model = replace(experiments.paper_models(["CLIP B/32"])[0], oti_steps=2, batch_size=4)
    loaded = []

    def load(m):
        loaded.append(m.label)
        return load_clip("crossgap-micro")

    cells = tables.paper_cells("image_retrieval", [model], ["cub"], root=tmp_path, cache_dir=tmp_path / "cache",
                               progress=False, load=load)
    assert loaded == ["CLIP B/32"]
    assert set(cells["method"]) == {"intra", "oti", "text_span"} and set(cells["dataset"]) == {"cub"}
    assert cells["value"].between(0, 1).all()
    with pytest.raises(ValueError, match="task"):
        tables.paper_cells("captioning", [model], ["cub"], load=load)


def test_setting_sentence_adds_the_analogue_when_there_is_one():
    row = tables.contrast_rows(_contrasts(), "OTI - intra (image)").loc["clip"]
    clip = {"name": "clip", "loss": "clip"}
    analogue = tables.paper_analogue(clip, "image")
    assert analogue is not None
    sentence = tables.setting_sentence(clip, row, "`clip`: OTI - intra mAP")
    verdict = report.verdict("`clip`: OTI - intra mAP", row["mean_diff"], row["seed_ci_low"], row["seed_ci_high"],
                             interval="95% CI over seeds")
    assert sentence == verdict + " " + tables.agreement_sentence(
        analogue["delta"], row["seed_ci_low"], row["seed_ci_high"], f"its analogue ({analogue['analogue']})")
    soft = {"name": "soft", "loss": "soft"}  # the paper has no soft-target model: no analogue sentence
    assert tables.paper_analogue(soft, "image") is None
    assert tables.setting_sentence(soft, row, "x") == report.verdict(
        "x", row["mean_diff"], row["seed_ci_low"], row["seed_ci_high"], interval="95% CI over seeds")


def test_per_dataset_difference():
    cells = pd.DataFrame({"model": ["A", "A", "A", "A"], "dataset": ["cub", "cub", "sop", "sop"],
                          "method": ["oti", "intra", "oti", "intra"], "value": [0.5, 0.4, 0.25, 0.3]})
    table = tables.per_dataset_difference(cells, "oti", "intra", "OTI - intra")
    assert list(table.index) == [("A", "cub"), ("A", "sop")]
    assert table["OTI - intra"].round(6).tolist() == [10.0, -5.0]
    assert table.loc[("A", "cub"), "oti"] == pytest.approx(50.0)
