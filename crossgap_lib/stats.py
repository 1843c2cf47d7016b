"""Uncertainty of reported numbers: t-intervals over seeds, paired bootstrap over items, and their formatting."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from scipy import stats as scipy_stats

__all__ = ["bootstrap_p", "equivalence_p", "fit_line", "hierarchical_bootstrap", "holm", "mean_ci", "non_superiority_p",
           "paired_bootstrap_ci", "paired_effect", "peak_test", "seed_ci", "welch_difference"]


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


def _query_resample_means(diff: torch.Tensor, n_boot: int, generator: torch.Generator) -> torch.Tensor:
    """Means of ``n_boot`` resamples (with replacement) of the non-NaN values of ``diff`` (Q,): (n_boot,)."""
    diff = diff[~torch.isnan(diff)]
    if diff.numel() == 0:
        raise ValueError("a cell has no paired (non-NaN) query values; nothing to compare")
    means = torch.empty(n_boot, dtype=torch.float64)
    batch = max(1, 2**22 // diff.numel())  # resamples per batch: bounded memory
    for start in range(0, n_boot, batch):
        stop = min(start + batch, n_boot)
        means[start:stop] = diff[torch.randint(0, diff.numel(), (stop - start, diff.numel()),
                                               generator=generator)].mean(1)
    return means


def hierarchical_bootstrap(diffs: list[list[torch.Tensor]], n_boot: int = 2000, seed: int = 0) -> torch.Tensor:
    """Bootstrap distribution (n_boot,) of the mean over seeds of each seed's dataset-averaged mean paired difference.

    ``diffs[s][k]``: per-query differences (Q,) of seed s on dataset k (NaN: a skipped query). Each replicate resamples
    the seeds with replacement (when there are at least two), then, for every drawn seed, the queries of each dataset
    with replacement: both sources of variation, training seeds and test queries, enter the interval. With one seed
    it is a bootstrap over the queries of a fixed model.
    """
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    generator = torch.Generator().manual_seed(seed)
    n_seeds = len(diffs)
    # pool[s, j]: the j-th query resample of seed s, averaged over its datasets; a drawn seed takes a random pool entry
    pool = torch.stack([torch.stack([_query_resample_means(torch.as_tensor(d, dtype=torch.float64), n_boot, generator)
                                     for d in cells]).mean(0) for cells in diffs])
    if n_seeds == 1:
        return pool[0]
    seeds = torch.randint(0, n_seeds, (n_boot, n_seeds), generator=generator)
    entries = torch.randint(0, n_boot, (n_boot, n_seeds), generator=generator)
    return pool[seeds, entries].mean(1)


def bootstrap_p(boot: torch.Tensor, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value of ``mean == null``: twice the smaller tail share of the bootstrap distribution on
    either side of ``null`` (with the +1 correction of Davison & Hinkley, so never 0)."""
    n = boot.numel()
    below, above = int((boot <= null).sum()), int((boot >= null).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (n + 1))


def equivalence_p(boot: torch.Tensor, margin: float) -> float:
    """Two one-sided tests (TOST) of ``-margin < mean < margin`` on a bootstrap distribution: the larger of the two
    one-sided p-values (small when the effect is shown to lie inside the margin)."""
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin!r}")
    n = boot.numel()
    return min(1.0, max((int((boot <= -margin).sum()) + 1) / (n + 1), (int((boot >= margin).sum()) + 1) / (n + 1)))


def non_superiority_p(boot: torch.Tensor, margin: float) -> float:
    """One-sided test of ``mean < margin`` on a bootstrap distribution (small when the effect is shown to stay below
    the margin: no gain worth the name, or a loss)."""
    return min(1.0, (int((boot >= margin).sum()) + 1) / (boot.numel() + 1))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (keys kept); NaN entries are left out and stay NaN."""
    finite = sorted(((p, k) for k, p in p_values.items() if not math.isnan(p)))
    m, running, adjusted = len(finite), 0.0, {k: math.nan for k in p_values}
    for i, (p, key) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return adjusted


INTERVAL = "hierarchical bootstrap: seeds, then queries within seed"


def paired_effect(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]], n_boot: int = 2000,
                  confidence: float = 0.95) -> dict:
    """Mean of a - b on paired per-query values, with the book's one interval rule.

    ``a[s][k]`` / ``b[s][k]``: per-query values (Q,) of seed s on dataset k (NaN: a skipped query). The effect is the
    mean over seeds of each seed's average over datasets of the mean paired difference. Its interval and two-sided
    p-value come from :func:`hierarchical_bootstrap` (seeds, then queries within seed), for every claim and every
    source alike; ``boot`` keeps the distribution for equivalence tests. ``per_seed`` / ``per_dataset`` hold the
    parts. Returns fractions (or whatever unit the values have).
    """
    if len(a) != len(b) or not a or any(len(x) != len(y) or not x for x, y in zip(a, b)):
        raise ValueError("a and b must be non-empty lists (seeds) of equally long non-empty lists (datasets)")
    _check_confidence(confidence)
    diffs = [[torch.as_tensor(x, dtype=torch.float64) - torch.as_tensor(y, dtype=torch.float64)
              for x, y in zip(xs, ys)] for xs, ys in zip(a, b)]
    per_cell = [[float(torch.nanmean(d)) for d in cells] for cells in diffs]
    per_seed = [sum(cells) / len(cells) for cells in per_cell]
    n_seeds, n_datasets = len(a), len(a[0])
    boot = hierarchical_bootstrap(diffs, n_boot=n_boot, seed=0)
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(boot, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    n_queries = int(sum(torch.as_tensor(x).numel() for x in a[0]))
    where = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}" + (f", {n_datasets} datasets" if n_datasets > 1 else "")
    return {"mean": sum(per_seed) / n_seeds, "low": low, "high": high, "p": bootstrap_p(boot), "boot": boot,
            "interval": f"{INTERVAL} ({where}, {n_queries} queries per seed)", "n_seeds": n_seeds,
            "n_datasets": n_datasets, "n_queries": n_queries, "per_seed": per_seed,
            "per_dataset": [sum(c[k] for c in per_cell) / n_seeds for k in range(n_datasets)]}


def _cross_fitted(ap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query AP at the last step and at the peak step chosen on the other half of the queries: ((Q,), (Q,))."""
    halves = [torch.arange(0, ap.shape[1], 2), torch.arange(1, ap.shape[1], 2)]
    final, at_peak = torch.empty(ap.shape[1], dtype=torch.float64), torch.empty(ap.shape[1], dtype=torch.float64)
    for choose, measure in (halves, halves[::-1]):
        peak = int(torch.nan_to_num(torch.nanmean(ap[:, choose], dim=1), nan=-1.0).argmax())
        final[measure] = ap[-1, measure]
        at_peak[measure] = ap[peak, measure]
    return final, at_peak


def peak_test(ap: Any, steps: list[int], n_boot: int = 2000, min_step: int = 1, baseline: Any = None) -> dict:
    """Does OTI retrieval peak before the last step and then decay? ``ap``: per-query AP along the steps, (T, Q) for
    one model or (S, T, Q) for S seeds.

    Picking the peak on the queries that measure it would make "last - peak" negative by construction, so the peak
    step is chosen on one half of the queries (even / odd positions) and the decay measured on the other (cross-fitted,
    both ways), per seed. Only steps >= ``min_step`` can be the peak (step 0 holds the initial, not yet optimised
    tokens). Returns the :func:`paired_effect` of AP at the last step minus AP at the cross-fitted peak (the book's one
    interval rule: seeds, then queries), and ``peak_step``, ``peak_mAP``, ``final_step``, ``final_mAP`` of the
    seed-averaged curve. With ``baseline`` ((Q,) or (S, Q) per-query values, e.g. intra-modal AP), also
    ``peak_vs_baseline``: AP at the cross-fitted peak minus the baseline, with the same interval rule.
    """
    ap = torch.as_tensor(ap, dtype=torch.float64)
    ap = ap.unsqueeze(0) if ap.ndim == 2 else ap
    if ap.ndim != 3 or ap.shape[1] != len(steps) or ap.shape[2] < 2:
        raise ValueError(f"ap must be (T={len(steps)}, Q>=2) or (S, T, Q), got {tuple(ap.shape)}")
    keep = [i for i, step in enumerate(steps) if step >= min_step]
    if not keep:
        raise ValueError(f"no recorded step is >= min_step={min_step}: {steps}")
    ap, steps = ap[:, keep], [steps[i] for i in keep]
    parts = [_cross_fitted(seed_ap) for seed_ap in ap]
    effect = paired_effect([[final] for final, _ in parts], [[at_peak] for _, at_peak in parts], n_boot=n_boot)
    curve = torch.nanmean(ap, dim=2).mean(0)
    peak = int(torch.nan_to_num(curve, nan=-1.0).argmax())
    if baseline is not None:
        baseline = torch.as_tensor(baseline, dtype=torch.float64)
        baseline = baseline.expand(ap.shape[0], -1) if baseline.ndim == 1 else baseline
        effect["peak_vs_baseline"] = paired_effect([[at_peak] for _, at_peak in parts], [[b] for b in baseline],
                                                   n_boot=n_boot)
    return {**effect, "peak_step": steps[peak], "peak_mAP": float(curve[peak]), "final_step": steps[-1],
            "final_mAP": float(curve[-1])}


def welch_difference(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference of means mean(a) - mean(b) of two independent samples (e.g. one value per training seed of two
    settings) with a Welch t-interval: (diff, low, high); NaN bounds when either sample has fewer than 2 values."""
    a = torch.as_tensor(list(a), dtype=torch.float64)
    b = torch.as_tensor(list(b), dtype=torch.float64)
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError("welch_difference needs at least one value in each sample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    diff = float(a.mean() - b.mean())
    if a.numel() < 2 or b.numel() < 2:
        return diff, math.nan, math.nan
    va, vb = float(a.var()) / a.numel(), float(b.var()) / b.numel()
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (a.numel() - 1) + vb ** 2 / (b.numel() - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=df)) * se
    return diff, diff - half, diff + half


def fit_line(x: Iterable[float], y: Iterable[float], confidence: float = 0.95, n_boot: int = 2000,
             seed: int = 0) -> dict:
    """Least-squares line y = intercept + slope * x with a t-interval of the slope (``scipy.stats.linregress``) and a
    percentile bootstrap interval over points (resamples with constant x are redrawn from the rest)."""
    x = torch.as_tensor(list(x), dtype=torch.float64)
    y = torch.as_tensor(list(y), dtype=torch.float64)
    if x.shape != y.shape or x.numel() < 3:
        raise ValueError(f"need paired x and y with at least 3 points, got {x.numel()} and {y.numel()}")
    if float(x.std()) == 0.0:
        raise ValueError("x is constant: no slope can be fitted")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    fit = scipy_stats.linregress(x.numpy(), y.numpy())
    n = x.numel()
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 2)) * fit.stderr
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n, (n_boot, n), generator=generator)
    bx, by = x[index], y[index]
    bx_c = bx - bx.mean(1, keepdim=True)
    var = (bx_c ** 2).sum(1)
    ok = var > 1e-12 * float(x.var())
    slopes = (bx_c * (by - by.mean(1, keepdim=True))).sum(1)[ok] / var[ok]
    alpha = (1 - confidence) / 2
    boot_low, boot_high = torch.quantile(slopes, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "slope_low": float(fit.slope) - half,
            "slope_high": float(fit.slope) + half, "boot_low": boot_low, "boot_high": boot_high,
            "r": float(fit.rvalue), "p": float(fit.pvalue), "n": int(n)}
