"""Tests for crossgap_lib.stats: known intervals, coverage sanity on small seeded simulations, formatting."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from crossgap_lib.stats import (
    INTERVAL,
    bootstrap_p,
    equivalence_p,
    fit_line,
    hierarchical_bootstrap,
    holm,
    mean_ci,
    non_superiority_p,
    paired_bootstrap_ci,
    paired_effect,
    peak_test,
    seed_ci,
    welch_difference,
)


def test_mean_ci_known_case():
    # mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.776445
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == pytest.approx(3.0)
    assert low == pytest.approx(3.0 - half, abs=1e-5)
    assert high == pytest.approx(3.0 + half, abs=1e-5)
    _, low90, high90 = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.9)
    assert low < low90 < high90 < high


def test_mean_ci_single_value_warns():
    with pytest.warns(UserWarning, match="single value"):
        mean, low, high = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_seed_ci_is_mean_ci_without_warnings():
    assert seed_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one seed: NaN bounds, no warning
        mean, low, high = seed_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_mean_ci_coverage_sanity():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(400, 5, generator=g, dtype=torch.float64) + 2.0
    covered = [low <= 2.0 <= high for low, high in (mean_ci(row)[1:] for row in samples)]
    assert 0.90 <= sum(covered) / len(covered) <= 0.99


def test_mean_ci_errors():
    with pytest.raises(ValueError, match="values is empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN or infinite"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_paired_bootstrap_constant_difference():
    a = torch.linspace(0, 1, 30)
    mean, low, high = paired_bootstrap_ci(a + 0.25, a)
    assert mean == pytest.approx(0.25) and low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    g = torch.Generator().manual_seed(1)
    b = torch.rand(80, generator=g)
    a = b + 0.05 + 0.1 * torch.randn(80, generator=g)
    first = paired_bootstrap_ci(a, b, n_boot=500, seed=3)
    assert first == paired_bootstrap_ci(a, b, n_boot=500, seed=3)
    assert first != paired_bootstrap_ci(a, b, n_boot=500, seed=4)
    mean, low, high = first
    assert mean == pytest.approx(float((a - b).mean()))
    assert low < mean < high
    # the interval width is about 2 * 1.96 standard errors
    se = float((a - b).std()) / math.sqrt(80)
    assert 0.7 * 3.92 * se < high - low < 1.3 * 3.92 * se


def test_paired_bootstrap_coverage_sanity():
    g = torch.Generator().manual_seed(2)
    covered = 0
    for rep in range(60):
        diff = torch.randn(40, generator=g, dtype=torch.float64) + 0.3
        _, low, high = paired_bootstrap_ci(diff, torch.zeros(40), n_boot=400, seed=rep)
        covered += low <= 0.3 <= high
    assert 0.83 <= covered / 60 <= 1.0


def test_paired_bootstrap_drops_nan_pairs():
    a = torch.tensor([1.0, float("nan"), 3.0, 4.0])
    b = torch.tensor([0.0, 1.0, float("nan"), 2.0])
    mean, _, _ = paired_bootstrap_ci(a, b, n_boot=50)
    assert mean == pytest.approx(1.5)  # pairs 0 and 3 only


def test_paired_bootstrap_errors():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="every pair"):
        paired_bootstrap_ci([float("nan")], [1.0])
    with pytest.raises(ValueError, match="infinite"):
        paired_bootstrap_ci([float("inf")], [1.0])


def test_paired_effect_uses_one_hierarchical_bootstrap_for_every_shape():
    g = torch.Generator().manual_seed(3)
    a = [[torch.rand(50, generator=g, dtype=torch.float64) + 0.1] for _ in range(3)]  # 3 seeds x 1 dataset
    b = [[x[0] - 0.1] for x in a]
    out = paired_effect(a, b)
    assert out["interval"].startswith(INTERVAL) and "3 seeds" in out["interval"] and out["mean"] == pytest.approx(0.1)
    assert out["per_seed"] == pytest.approx([0.1, 0.1, 0.1]) and out["low"] == pytest.approx(0.1)
    assert out["p"] < 0.01 and out["boot"].shape == (2000,)
    one_seed = paired_effect([[a[0][0], a[1][0]]], [[b[0][0], b[1][0] + 0.05]])  # 1 seed x 2 datasets
    assert "1 seed, 2 datasets" in one_seed["interval"]
    assert one_seed["per_dataset"] == pytest.approx([0.1, 0.05]) and one_seed["mean"] == pytest.approx(0.075)
    single = paired_effect([[a[0][0]]], [[a[0][0] - 0.1 + 0.01 * torch.randn(50, generator=g)]], n_boot=300)
    assert single["low"] < 0.1 < single["high"]
    nan = a[0][0].clone()
    nan[0] = float("nan")
    assert paired_effect([[nan], [a[1][0]]], [[b[0][0]], [b[1][0]]])["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equally long"):
        paired_effect([[a[0][0]]], [[b[0][0]], [b[1][0]]])


def test_hierarchical_bootstrap_widens_with_seed_variation():
    g = torch.Generator().manual_seed(0)
    queries = [0.01 * torch.randn(200, generator=g, dtype=torch.float64) for _ in range(6)]
    same = hierarchical_bootstrap([[q] for q in queries], n_boot=1000)
    shifted = hierarchical_bootstrap([[q + 0.05 * (i % 2)] for i, q in enumerate(queries)], n_boot=1000)
    assert shifted.std() > 5 * same.std()  # seeds that disagree make the interval wider than the query noise alone
    assert shifted.mean() == pytest.approx(0.025, abs=0.005)


def test_p_values_equivalence_and_holm():
    boot = torch.linspace(-0.2, 0.2, 1001, dtype=torch.float64) + 1.0
    assert bootstrap_p(boot) < 0.01 and bootstrap_p(boot - 1.0) == pytest.approx(1.0)
    near_zero = torch.linspace(-0.2, 0.2, 1001, dtype=torch.float64)
    assert equivalence_p(near_zero, margin=0.5) < 0.01 and equivalence_p(near_zero, margin=0.1) > 0.2
    assert non_superiority_p(near_zero - 1.0, margin=0.1) < 0.01 and non_superiority_p(near_zero + 1, 0.1) > 0.9
    with pytest.raises(ValueError, match="margin"):
        equivalence_p(near_zero, margin=0.0)
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06) and math.isnan(adjusted["d"])  # monotone: b keeps c's 0.06


def test_peak_test_is_not_biased_by_picking_the_peak():
    g = torch.Generator().manual_seed(1)
    steps = list(range(0, 100, 10))
    flat = torch.rand(len(steps), 400, generator=g, dtype=torch.float64)  # no trend: the decay CI covers zero
    out = peak_test(flat, steps, n_boot=500)
    assert out["low"] < 0 < out["high"]
    bump = torch.tensor([0.2, 0.5, 0.4, 0.3, 0.3, 0.25, 0.25, 0.22, 0.21, 0.2], dtype=torch.float64)
    peaked = bump[:, None] + 0.01 * torch.randn(len(steps), 400, generator=g, dtype=torch.float64)
    out = peak_test(peaked, steps, n_boot=500, baseline=torch.full((400,), 0.3, dtype=torch.float64))
    assert out["peak_step"] == 10 and out["high"] < 0
    assert out["peak_vs_baseline"]["mean"] == pytest.approx(0.2, abs=0.01) and out["peak_vs_baseline"]["low"] > 0
    assert out["mean"] == pytest.approx(-0.3, abs=0.01)
    with pytest.raises(ValueError):
        peak_test(peaked[:, :1], steps)
    early = torch.tensor([0.9, 0.3, 0.5, 0.4], dtype=torch.float64)[:, None].expand(4, 10)
    out = peak_test(early, [0, 1, 2, 3], n_boot=100)  # step 0 (initial tokens) is not a peak candidate
    assert out["peak_step"] == 2 and out["mean"] == pytest.approx(-0.1)
    seeds = torch.stack([peaked, peaked.flip(1)])  # (S, T, Q): one interval over seeds and queries
    out = peak_test(seeds, steps, n_boot=300)
    assert out["n_seeds"] == 2 and out["high"] < 0 and out["peak_step"] == 10


def test_welch_difference_matches_scipy():
    from scipy import stats as scipy_stats

    a, b = [1.0, 1.2, 1.4], [0.5, 0.9, 0.6, 0.7]
    diff, low, high = welch_difference(a, b)
    assert diff == pytest.approx(1.2 - 0.675)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert math.isnan(welch_difference([1.0], [0.5, 0.6])[1])
    assert welch_difference([1.0, 1.0], [0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_fit_line_recovers_a_slope_and_its_interval():
    from crossgap_lib.prose import trend_sentence

    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 30)
    y = 2.0 * x + 0.5 + 0.05 * torch.randn(30, generator=generator)
    fit = fit_line(x.tolist(), y.tolist(), n_boot=500)
    assert fit["slope"] == pytest.approx(2.0, abs=0.1) and fit["intercept"] == pytest.approx(0.5, abs=0.1)
    assert fit["slope_low"] < 2.0 < fit["slope_high"] and fit["boot_low"] < fit["slope"] < fit["boot_high"]
    assert fit["n"] == 30 and fit["r"] > 0.9
    assert trend_sentence("gain", fit).endswith("grows with the gap.")
    down = fit_line(x.tolist(), (-y).tolist(), n_boot=100)
    assert trend_sentence("gain", down).endswith("shrinks as the gap grows.")
    with pytest.raises(ValueError, match="constant"):
        fit_line([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 3"):
        fit_line([1, 2], [1, 2])
