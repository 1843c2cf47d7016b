"""Uncertainty of reported numbers: t-intervals over seeds, paired bootstrap over items, and their formatting."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from scipy import stats as scipy_stats

__all__ = ["format_ci", "mean_ci", "paired_bootstrap_ci", "seed_ci"]


def _as_values(name: str, values: Any) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError(f"{name} is empty; expected at least one value")
    return values


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def mean_ci(values: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of values (n,) with its Student-t confidence interval: (mean, low, high).

    For e.g. one number per seed. With a single value the bounds are NaN (and a warning says so).
    """
    values = _as_values("values", values)
    _check_confidence(confidence)
    if not torch.isfinite(values).all():
        raise ValueError("values contains NaN or infinite entries; expected finite numbers")
    n = values.numel()
    mean = float(values.mean())
    if n == 1:
        warnings.warn("mean_ci got a single value: the confidence interval is undefined (NaN bounds)", stacklevel=2)
        return mean, math.nan, math.nan
    sem = float(values.std(correction=1)) / math.sqrt(n)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return mean, mean - half, mean + half


def seed_ci(values: list[float]) -> tuple[float, float, float]:
    """:func:`mean_ci` of one number per seed, silently: with fewer than two seeds the bounds are NaN (tables show the
    mean alone)."""
    if len(values) < 2:
        return float(sum(values) / len(values)), math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mean_ci(values)


def paired_bootstrap_ci(
    a: Any, b: Any, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of a - b over paired items (n,) with a percentile bootstrap interval: (mean_diff, low, high).

    Items are resampled with replacement ``n_boot`` times (seeded). Pairs where a or b is NaN (e.g. queries skipped by
    :func:`crossgap_lib.metrics.retrieval_scores`) are dropped first.
    """
    a = _as_values("a", a)
    b = _as_values("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired (same length), got {a.numel()} and {b.numel()} values")
    _check_confidence(confidence)
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if torch.isinf(a).any() or torch.isinf(b).any():
        raise ValueError("a or b contains infinite values; expected finite numbers (NaN marks a missing pair)")
    kept = ~(torch.isnan(a) | torch.isnan(b))
    if not kept.any():
        raise ValueError("every pair of a and b has a NaN; nothing to compare")
    diff = (a - b)[kept]
    n = diff.numel()
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(n_boot, dtype=torch.float64)
    batch = max(1, 2**22 // n)  # resamples per batch: bounded memory
    for start in range(0, n_boot, batch):
        stop = min(start + batch, n_boot)
        index = torch.randint(0, n, (stop - start, n), generator=generator)
        means[start:stop] = diff[index].mean(1)
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return float(diff.mean()), low, high


def format_ci(mean: float, low: float, high: float, scale: float = 100, digits: int = 1, signed: bool = True) -> str:
    """'+1.2 [0.4, 2.0]': mean and interval times ``scale``, the mean with its sign when ``signed``."""
    sign = "+" if signed else ""
    m, lo, hi = (v * scale for v in (mean, low, high))
    return f"{m:{sign}.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
