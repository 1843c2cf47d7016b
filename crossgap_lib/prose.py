"""Sentences and table cells built from measured numbers, so the book's prose never states an effect by hand."""

from __future__ import annotations

import math

import pandas as pd


def ci_text(mean: float, low: float, high: float, scale: float = 100.0, digits: int = 1, signed: bool = True) -> str:
    """``"+1.2 [0.4, 2.0]"``: a value and its confidence interval, scaled (fractions -> points by default)."""
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if any(math.isnan(v) for v in (low, high)):
        return fmt.format(mean * scale) + " [n/a]"
    return f"{fmt.format(mean * scale)} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def verdict(what: str, mean: float, low: float, high: float, scale: float = 100.0, unit: str = "points",
            digits: int = 1, interval: str = "95% CI") -> str:
    """One sentence: the effect with its interval, and whether the interval excludes zero."""
    text = f"{what}: {ci_text(mean, low, high, scale, digits)} {unit} ({interval})"
    if any(math.isnan(v) for v in (low, high)):
        return text + ", with too few samples for an interval."
    if low > 0:
        return text + ": the interval lies above zero, an increase."
    if high < 0:
        return text + ": the interval lies below zero, a decrease."
    return text + ": the interval includes zero, no detectable effect."


def direction(mean: float, low: float, high: float) -> str:
    """``"up"``, ``"down"`` or ``"none"`` (interval includes zero)."""
    if low > 0:
        return "up"
    if high < 0:
        return "down"
    return "none"


def agreement(reported_delta: float, low: float, high: float) -> str:
    """Whether a measured interval agrees in sign with a reported difference: ``"agrees"``, ``"disagrees"``,
    ``"inconclusive"``."""
    measured = direction(0.0, low, high)
    if measured == "none":
        return "inconclusive"
    return "agrees" if (reported_delta > 0) == (measured == "up") else "disagrees"


def contrast_table(contrasts: pd.DataFrame, scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """Format a lab contrasts frame (``crossgap_lib.lab.LabResults.contrasts``) for display: one text column per CI."""
    frame = contrasts.copy()
    frame["difference [95% CI over seeds]"] = [
        ci_text(m, lo, hi, scale, digits)
        for m, lo, hi in zip(frame["mean_diff"], frame["seed_ci_low"], frame["seed_ci_high"])]
    frame["[95% bootstrap CI over queries]"] = [
        ci_text(m, lo, hi, scale, digits)
        for m, lo, hi in zip(frame["boot_diff"], frame["boot_ci_low"], frame["boot_ci_high"])]
    numeric = ("mean_diff", "seed_ci_low", "seed_ci_high", "boot_diff", "boot_ci_low", "boot_ci_high", "per_seed")
    return frame.drop(columns=[c for c in numeric if c in frame])
