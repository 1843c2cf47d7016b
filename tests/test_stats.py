"""Tests for crossgap_lib.stats: known intervals, coverage sanity on small seeded simulations, formatting."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from crossgap_lib.stats import format_ci, mean_ci, paired_bootstrap_ci, seed_ci


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


def test_format_ci():
    assert format_ci(0.012, 0.004, 0.020) == "+1.2 [0.4, 2.0]"
    assert format_ci(-0.0123, -0.02, -0.004, digits=2) == "-1.23 [-2.00, -0.40]"
    assert format_ci(0.412, 0.40, 0.424, signed=False) == "41.2 [40.0, 42.4]"
    assert format_ci(0.5, 0.25, 0.75, scale=1, digits=2) == "+0.50 [0.25, 0.75]"
