"""Tests of crossgap_lib.summary: claims, lab contrasts, verdicts, the critique's table and soft-target helpers."""

import math

import pandas as pd
import pytest
import torch

from crossgap_lib import lab as lab_module
from crossgap_lib import summary
from crossgap_lib.experiments import Cell
from crossgap_lib.lab import LabResults
from crossgap_lib.losses import soft_targets
from crossgap_lib.reported import reported

CONTRAST_COLUMNS = ["contrast", "kind", "setting", "metric", "mean_diff", "seed_ci_low", "seed_ci_high", "n_seeds",
                    "boot_diff", "boot_ci_low", "boot_ci_high", "n_pairs", "per_seed"]


def fake_lab(settings=("clip", "intra", "clip T=1"), seeds=(0, 1, 2), n=40, oti_shift=0.1, contrasts=None):
    """A LabResults with random per-query values where OTI beats intra by about ``oti_shift`` in `clip`."""
    g = torch.Generator().manual_seed(0)
    per_query, tidy, features = {}, [], {}
    for s_index, name in enumerate(settings):
        for seed in seeds:
            intra = torch.rand(n, generator=g, dtype=torch.float64) * 0.5
            shift = oti_shift if name == "clip" else 0.0
            oti = intra + shift + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
            unit = {"img_intra": intra, "img_oti": oti, "img_pca_prompts": oti + 0.05,
                    "txt_intra_ovi_queries": intra[: n // 2], "txt_ovi": intra[: n // 2] - 0.02}
            unit["oti_gain"] = unit["img_oti"] - unit["img_intra"]
            per_query[f"{name}|{seed}"] = unit
            tidy.append({"setting": name, "seed": seed, "metric": "gap_centroid", "value": 1.0 + s_index + 0.1 * seed})
        labels = torch.arange(n) % 4
        prompt = torch.eye(4, 8)
        features[name] = {"labels": labels, "prompt": prompt, "image": prompt[labels] + 0.01,
                          "oti": prompt[(labels + (torch.arange(n) % 2)) % 4]}  # OTI right on half the queries
    config = {"settings": [{"name": s} for s in settings], "seeds": list(seeds), "n_boot": 500}
    frame = pd.DataFrame(contrasts if contrasts is not None else [], columns=CONTRAST_COLUMNS)
    return LabResults(config=config, tidy=pd.DataFrame(tidy), summary=pd.DataFrame(), contrasts=frame,
                      per_query=per_query, features=features, oti_curve={}, training={}, timings={})


def test_contrast_matches_the_lab_computation():
    lab = fake_lab()
    got = summary.contrast(lab, "clip", "img_oti", "clip", "img_intra")
    units = [lab.per_query[f"clip|{s}"] for s in lab.config["seeds"]]
    expected = lab_module._contrast_row("x", "within", "clip", "m", [u["img_oti"] for u in units],
                                        [u["img_intra"] for u in units], 500)
    for key in ("mean_diff", "seed_ci_low", "seed_ci_high", "boot_diff", "boot_ci_low", "boot_ci_high", "n_pairs"):
        assert got[key] == pytest.approx(expected[key])
    assert got["kind"] == "within" and got["n_seeds"] == 3
    assert got["seed_ci_low"] > 0.05  # OTI was made ~0.1 better


def test_contrast_returns_the_lab_row_when_there_is_one():
    row = dict(zip(CONTRAST_COLUMNS, ["intra - clip", "between", "intra vs clip", "oti_gain", 0.5, 0.4, 0.6, 3, 0.5,
                                      0.45, 0.55, 120, [0.5, 0.5, 0.5]]))
    lab = fake_lab(contrasts=[row])
    assert summary.contrast(lab, "intra", "oti_gain", "clip")["mean_diff"] == 0.5
    computed = summary.contrast(lab, "clip T=1", "oti_gain", "clip")
    assert computed["setting"] == "clip T=1 vs clip" and computed["mean_diff"] < 0


def test_contrast_errors_name_what_is_missing():
    lab = fake_lab()
    with pytest.raises(ValueError, match="setting 'soft'"):
        summary.contrast(lab, "soft", "img_oti", "clip")
    with pytest.raises(ValueError, match="per-query key 'nope'"):
        summary.contrast(lab, "clip", "nope", "clip", "img_intra")


def test_seed_difference_pairs_by_seed():
    out = summary.seed_difference(fake_lab(), "gap_centroid", "intra", "clip")
    assert out["mean"] == pytest.approx(1.0) and out["per_seed"] == pytest.approx([1.0, 1.0, 1.0])
    assert out["a"] == pytest.approx(2.1) and out["b"] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="metric"):
        summary.seed_difference(fake_lab(), "nope", "intra", "clip")


def test_comparison_sentence_follows_the_interval():
    assert "higher" in summary.comparison_sentence("A", "B", 0.02, 0.01, 0.03)
    assert "lower" in summary.comparison_sentence("A", "B", -0.02, -0.03, -0.01)
    assert "no detectable difference" in summary.comparison_sentence("A", "B", 0.0, -0.01, 0.01)
    assert "too few" in summary.comparison_sentence("A", "B", 0.0, math.nan, math.nan)
    assert "+2.0 [1.0, 3.0]" in summary.comparison_sentence("A", "B", 0.02, 0.01, 0.03)


def test_zero_shot_inversion_compares_oti_with_image_queries():
    out = summary.zero_shot_inversion(fake_lab(), "clip")
    assert out["inter_accuracy"] == 1.0 and out["oti_accuracy"] == 0.5
    assert out["mean_diff"] == pytest.approx(-0.5) and out["boot_ci_high"] < 0 and math.isnan(out["seed_ci_low"])


def test_oti_decay_is_not_biased_by_picking_the_peak():
    g = torch.Generator().manual_seed(1)
    steps = list(range(0, 100, 10))
    flat = torch.rand(len(steps), 400, generator=g, dtype=torch.float64)  # no trend: the decay CI covers zero
    out = summary.oti_decay(flat, steps, n_boot=500)
    assert out["boot_ci_low"] < 0 < out["boot_ci_high"]
    bump = torch.tensor([0.2, 0.5, 0.4, 0.3, 0.3, 0.25, 0.25, 0.22, 0.21, 0.2], dtype=torch.float64)
    peaked = bump[:, None] + 0.01 * torch.randn(len(steps), 400, generator=g, dtype=torch.float64)
    out = summary.oti_decay(peaked, steps, n_boot=500)
    assert out["peak_step"] == 10 and out["boot_ci_high"] < 0
    assert out["mean_diff"] == pytest.approx(-0.3, abs=0.01)
    with pytest.raises(ValueError):
        summary.oti_decay(peaked[:, :1], steps)
    early = torch.tensor([0.9, 0.3, 0.5, 0.4], dtype=torch.float64)[:, None].expand(4, 10)
    out = summary.oti_decay(early, [0, 1, 2, 3], n_boot=100)  # step 0 (initial tokens) is not a peak candidate
    assert out["peak_step"] == 2 and out["mean_diff"] == pytest.approx(-0.1)


def test_reported_claims_come_from_the_reported_tables():
    claims = {c.key: c for c in summary.reported_claims()}
    t1 = reported("table1")
    clip_family = t1[~t1["model"].str.startswith("SLIP")]
    assert claims["oti_image"].reported_delta == pytest.approx(clip_family["delta"].mean())
    assert claims["ovi_text"].reported_delta > 0 and claims["zero_shot"].reported_delta < 0
    assert claims["slip"].reported_delta < 0 and claims["gap"].reported_delta == pytest.approx(-3.7)
    assert claims["oti_peak"].reported_delta == pytest.approx(25.3 - 32.1)
    assert claims["critique_pca"].provenance == "critique" and claims["critique_pca"].reported_delta > 0
    assert {c.provenance for c in claims.values()} <= {"poster", "poster-digitised", "critique"}


def test_measure_claims_and_table():
    lab = fake_lab()
    ap = torch.tensor([0.2, 0.5, 0.3, 0.2], dtype=torch.float64)[:, None].expand(4, 20).clone()
    curve = {"AP": torch.stack([ap, ap]), "steps": [0, 5, 10, 15], "num_pseudo_tokens": [1, 4], "setting": "clip",
             "seed": 0}
    measured = summary.measure_claims(lab, curve=curve)
    assert set(measured) == {c.key for c in summary.reported_claims()}
    assert measured["gap"]["what"] == "`clip T=1` vs `clip`" and "R=4" in measured["oti_peak"]["what"]
    table = summary.claims_table(summary.reported_claims(), measured)
    assert table.loc["oti_image", "verdict"] == "agrees"  # OTI ~ +10 points, reported positive
    assert table.loc["ovi_text", "verdict"] == "disagrees"  # OVI ~ -2 points, reported positive
    assert table.loc["zero_shot", "interval"].startswith("queries")
    assert table.loc["oti_peak", "verdict"] == "agrees"
    lines = summary.discussion(table)
    assert lines[0].startswith("Of the 7 claims, the laboratory measured 7")
    assert any(line.startswith("Opposite direction") for line in lines)
    missing = summary.measure_claims(fake_lab(settings=("clip",)))
    assert missing["slip"] is None and missing["gap"] is None and missing["oti_peak"] is None
    table = summary.claims_table(summary.reported_claims(), missing)
    assert table.loc["slip", "verdict"] == "not measured"
    assert any(line.startswith("Not measured") for line in summary.discussion(table))


def test_critique_gains_match_the_reported_averages():
    gains = summary.critique_gains()
    table = reported("critique").set_index(["model", "method"])["Average"]
    for model, row in gains.iterrows():
        assert row["OTI"] == pytest.approx(table[(model, "OTI")], abs=0.15)
        assert row["PCA - OTI"] == pytest.approx(row["PCA"] - row["OTI"])
    assert gains.loc["CLIP B/32", "datasets where PCA > OTI"] == "13/13"


def test_critique_comparison_and_real_model_effects():
    cells = {("CLIP B/32", "roxford5k"): Cell({"intra": 0.40, "oti": 0.45, "text_span": 0.50}),
             ("CLIP B/32", "dtd"): Cell({"intra": 0.30, "oti": 0.33, "text_span": 0.36}),
             ("CLIP B/32", "eurosat"): Cell({"intra": 0.50, "oti": 0.54, "text_span": 0.56})}
    frame = summary.critique_comparison(cells)
    row = frame[(frame.dataset == "ROxford") & (frame.method == "PCA")].iloc[0]
    assert row["critique"] == pytest.approx(51.4) and row["difference"] == pytest.approx(50.0 - 51.4)
    effects = summary.real_model_effects(image_cells=cells)
    row = effects.iloc[0]
    assert row["claim"] == "oti_image" and row["datasets"] == 3 and row["reproduced"] == pytest.approx(4.0)
    assert row["reported"] == pytest.approx(2.0) and row["verdict"] == "agrees"
    assert row["difference"] == pytest.approx(2.0)
    pca = effects[effects["claim"] == "critique_pca"].iloc[0]
    assert pca["reproduced"] == pytest.approx(10 / 3) and pca["reported"] == pytest.approx(49.0 - 42.94, abs=0.01)


def test_teacher_similarity_is_what_soft_targets_softmax():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 10, generator=g), torch.randn(6, 7, generator=g)
    s = summary.teacher_similarity(image, text)
    assert torch.allclose(s.diagonal(), torch.ones(6)) and torch.allclose(s, s.T)
    q = soft_targets(image, text, target_temperature=0.1)
    assert torch.allclose(torch.softmax(s / 0.1, dim=1), q, atol=1e-5)


def test_target_mass_splits_each_row():
    labels = torch.tensor([0, 0, 1, 1])
    mass = summary.target_mass(torch.eye(4), labels)
    assert mass == {"matching": 1.0, "same class": 0.0, "other classes": 0.0}
    mass = summary.target_mass(torch.full((4, 4), 0.25), labels)
    assert mass["matching"] == pytest.approx(0.25) and mass["same class"] == pytest.approx(0.25)
    assert mass["other classes"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        summary.target_mass(torch.eye(3), labels)


def test_similarity_by_class_skips_the_diagonal():
    s = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
    out = summary.similarity_by_class(s, torch.tensor([0, 0, 1]))
    assert out["same class"] == pytest.approx(0.8) and out["other classes"] == pytest.approx(0.2)
    assert math.isnan(summary.similarity_by_class(torch.eye(2), torch.tensor([0, 1]))["same class"])
