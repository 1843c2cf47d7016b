"""Reported vs reproduced: the paper's claims, how the laboratory measures each one, and data-driven verdicts.

The book's summary page (``notebooks/reproduction.py``) only calls :func:`reported_claims`, :func:`measure_claims`,
:func:`claims_table` and :func:`discussion`. The helpers below them are shared with the post-hoc and soft-target
pages: :func:`contrast` (a difference of paired per-query values across the lab's seeds, with a t-interval over
seeds and a paired bootstrap over queries), :func:`seed_difference` (a per-model metric compared across settings),
:func:`comparison_sentence`, the critique's table (:func:`critique_gains`, :func:`critique_comparison`) and the
soft-target illustrations (:func:`teacher_similarity`, :func:`target_mass`).

Reported numbers are never typed here: every reported effect is computed from :func:`crossgap_lib.reported.reported`.
Effects are in mAP / accuracy *points* (x100); lab values are fractions and are scaled when shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from . import report, stats
from .reported import PROVENANCE, reported

__all__ = [
    "CRITIQUE_COLUMNS",
    "Claim",
    "claims_table",
    "comparison_sentence",
    "contrast",
    "critique_comparison",
    "critique_gains",
    "discussion",
    "measure_claims",
    "oti_curve_per_query",
    "oti_decay",
    "real_model_effects",
    "reported_claims",
    "seed_difference",
    "similarity_by_class",
    "target_mass",
    "teacher_similarity",
    "zero_shot_inversion",
]

# crossgap_lib.datasets name -> column of the critique's table (critique_image_retrieval.csv)
CRITIQUE_COLUMNS = {
    "roxford5k": "ROxford", "rparis6k": "RParis", "stanford_cars": "Cars", "oxford_pets": "Pets",
    "flowers102": "Flowers", "fgvc_aircraft": "Aircraft", "dtd": "DTD", "eurosat": "EuroSAT", "food101": "Food101",
    "sun397": "SUN397", "caltech101": "Caltech101", "ucf101": "UCF101", "imagenet": "ImageNet",
}
SLIP_PREFIX = "SLIP"


# ------------------------------------------------------------------------------------------------ lab contrasts
def _settings(lab) -> list[str]:
    return [s["name"] for s in lab.config["settings"]]


def contrast(lab, setting_a: str, key_a: str, setting_b: str | None = None, key_b: str | None = None) -> dict:
    """a - b on paired per-query values of the lab (``lab.per_query``), over every seed.

    ``setting_b`` defaults to ``setting_a`` (a within-model contrast) and ``key_b`` to ``key_a`` (a between-setting
    contrast of one quantity). Returns the columns of ``lab.contrasts``: ``mean_diff`` with a t-interval over
    seeds (``seed_ci_low``/``seed_ci_high``, NaN with one seed), ``boot_diff`` with a paired bootstrap interval over
    queries pooled across seeds, ``n_seeds``, ``n_pairs``, ``per_seed``. A row of ``lab.contrasts`` with the same
    meaning is returned as is, so pages that read either agree to the digit.
    """
    setting_b = setting_a if setting_b is None else setting_b
    key_b = key_a if key_b is None else key_b
    names = _settings(lab)
    for setting in (setting_a, setting_b):
        if setting not in names:
            raise ValueError(f"setting {setting!r} is not in this lab; it has {names}")
    frame = lab.contrasts
    if setting_a == setting_b:
        kind, label, metric = "within", setting_a, f"{key_a} - {key_b}"
    elif key_a == key_b:
        kind, label, metric = "between", f"{setting_a} vs {setting_b}", key_a
    else:
        kind, label, metric = "between", f"{setting_a} vs {setting_b}", f"{key_a} - {key_b}"
    hit = frame[(frame["kind"] == kind) & (frame["setting"] == label) & (frame["metric"] == metric)]
    if len(hit):
        return hit.iloc[0].to_dict()
    seeds = lab.config["seeds"]
    units = [(lab.per_query[f"{setting_a}|{s}"], lab.per_query[f"{setting_b}|{s}"]) for s in seeds]
    for key, unit in ((key_a, units[0][0]), (key_b, units[0][1])):
        if key not in unit:
            raise ValueError(f"per-query key {key!r} is not in the lab; it has {sorted(unit)}")
    a = [ua[key_a].double() for ua, _ in units]
    b = [ub[key_b].double() for _, ub in units]
    per_seed = [float(torch.nanmean(x - y)) for x, y in zip(a, b)]
    mean, low, high = stats.seed_ci(per_seed)
    boot, boot_low, boot_high = stats.paired_bootstrap_ci(torch.cat(a), torch.cat(b), n_boot=lab.config["n_boot"],
                                                          seed=0)
    name = (f"{setting_a} - {setting_b}" if kind == "between" and key_a == key_b else
            f"{setting_a}:{key_a} - {setting_b}:{key_b}")
    return {"contrast": name, "kind": kind, "setting": label, "metric": metric, "mean_diff": mean,
            "seed_ci_low": low, "seed_ci_high": high, "n_seeds": len(per_seed), "boot_diff": boot,
            "boot_ci_low": boot_low, "boot_ci_high": boot_high, "n_pairs": int(sum(len(x) for x in a)),
            "per_seed": per_seed}


def seed_difference(lab, metric: str, setting_a: str, setting_b: str) -> dict:
    """A per-model metric (``lab.tidy``, e.g. ``gap_centroid``) of setting a minus setting b, paired by seed:
    ``mean``, ``low``, ``high`` (t-interval over seeds), ``a``, ``b`` (means) and ``per_seed``."""
    tidy = lab.tidy[lab.tidy["metric"] == metric]
    if tidy.empty:
        raise ValueError(f"metric {metric!r} is not in the lab; it has {sorted(set(lab.tidy['metric']))}")
    values = {}
    for setting in (setting_a, setting_b):
        rows = tidy[tidy["setting"] == setting]
        if rows.empty:
            raise ValueError(f"setting {setting!r} is not in this lab; it has {_settings(lab)}")
        values[setting] = dict(zip(rows["seed"], rows["value"]))
    seeds = [s for s in values[setting_a] if s in values[setting_b]]
    per_seed = [values[setting_a][s] - values[setting_b][s] for s in seeds]
    mean, low, high = stats.seed_ci(per_seed)
    return {"mean": mean, "low": low, "high": high, "per_seed": per_seed, "n_seeds": len(seeds),
            "a": sum(values[setting_a][s] for s in seeds) / len(seeds),
            "b": sum(values[setting_b][s] for s in seeds) / len(seeds)}


def comparison_sentence(name_a: str, name_b: str, mean: float, low: float, high: float, scale: float = 100.0,
                        unit: str = "mAP points", interval: str = "95% CI over seeds") -> str:
    """'A scores higher than B: +1.2 [0.4, 2.0] mAP points (95% CI over seeds).' or 'lower', or 'no detectable
    difference' when the interval includes zero."""
    numbers = f"{report.ci_text(mean, low, high, scale)} {unit} ({interval})"
    if any(math.isnan(v) for v in (low, high)):
        return f"{name_a} - {name_b}: {numbers}; too few samples for an interval."
    if low > 0:
        return f"{name_a} scores higher than {name_b}: {numbers}."
    if high < 0:
        return f"{name_a} scores lower than {name_b}: {numbers}."
    return f"{name_a} and {name_b} show no detectable difference: {numbers}, an interval that includes zero."


# ------------------------------------------------------------------------------------------------ extra lab measures
def zero_shot_inversion(lab, setting: str = "clip", n_boot: int | None = None) -> dict:
    """Zero-shot accuracy with OTI features (text) against the class prompts (text) minus the usual image-vs-prompt
    accuracy, per query of the first seed (the lab keeps features of that seed only), with a paired bootstrap."""
    if setting not in lab.features:
        raise ValueError(f"setting {setting!r} has no stored features; the lab has {sorted(lab.features)}")
    f = lab.features[setting]
    labels = f["labels"].long()
    inverted = ((f["oti"] @ f["prompt"].T).argmax(1) == labels).double()
    inter = ((f["image"] @ f["prompt"].T).argmax(1) == labels).double()
    n_boot = lab.config["n_boot"] if n_boot is None else n_boot
    mean, low, high = stats.paired_bootstrap_ci(inverted, inter, n_boot=n_boot, seed=0)
    return {"mean_diff": mean, "seed_ci_low": math.nan, "seed_ci_high": math.nan, "n_seeds": 1, "boot_diff": mean,
            "boot_ci_low": low, "boot_ci_high": high, "n_pairs": int(labels.numel()),
            "oti_accuracy": float(inverted.mean()), "inter_accuracy": float(inter.mean())}


def oti_curve_per_query(lab, progress: bool = False) -> dict:
    """Per-query average precision along the OTI steps of the lab's ``oti_curve`` model: ``AP`` (R, T, Q),
    ``steps`` (T,), ``num_pseudo_tokens`` (R,), ``intra`` (Q,).

    ``LabResults.oti_curve`` keeps only the mean mAP per step; this reloads the same (cached) model, features and
    inversion histories with the lab's own helpers, so on a built lab it costs a model load and no optimisation.
    """
    from .lab import LabConfig, _ap, _datasets, _inversion_kwargs
    from .pipeline import encode_images, invert_dataset
    from .train import train_clip

    config = LabConfig.from_dict({**lab.config, "progress": progress})
    curve = config.oti_curve
    if curve is None:
        raise ValueError("this lab was run without an oti_curve (LabConfig.oti_curve=None)")
    setting = next(s for s in config.settings if s["name"] == curve["setting"])
    clip = train_clip(config.train_config(setting, curve["seed"]), progress=progress).load()
    size = clip.model.visual.image_size
    test, gallery = _datasets(config, setting, int(size[0] if isinstance(size, (tuple, list)) else size))
    cache = config.cache_root()
    n = min(curve["queries"], config.n_test)
    image_q = encode_images(clip, test, cache_dir=cache, progress=progress)[:n]
    image_g = encode_images(clip, gallery, cache_dir=cache, progress=progress)
    labels_q, labels_g = test.labels[:n], gallery.labels
    aps, steps = [], None
    for r in curve["num_pseudo_tokens"]:
        result = invert_dataset(clip, "oti", image_q, cache_dir=cache, progress=progress,
                                template=config.oti_template, steps=curve["steps"], num_pseudo_tokens=r,
                                record_every=curve["record_every"], **_inversion_kwargs(config))
        steps = list(result.history_steps)
        aps.append(torch.stack([_ap(h, image_g, labels_q, labels_g) for h in result.history]))
    return {"AP": torch.stack(aps).double(), "steps": steps, "num_pseudo_tokens": list(curve["num_pseudo_tokens"]),
            "intra": _ap(image_q, image_g, labels_q, labels_g).double(), "setting": curve["setting"],
            "seed": curve["seed"]}


def oti_decay(ap: torch.Tensor, steps: list[int], n_boot: int = 2000, min_step: int = 1) -> dict:
    """Does OTI retrieval peak before the last step and then decay? ``ap`` (T, Q) per-query AP along the steps.

    Picking the peak on the same queries that measure it would make "final - peak" negative by construction, so the
    peak step is chosen on one half of the queries (even / odd positions) and the decay measured on the other
    (cross-fitted, both ways). Only steps >= ``min_step`` can be the peak (step 0 holds the initial, not yet
    optimised pseudo-tokens). Returns ``mean_diff`` = mean of AP(final) - AP(peak chosen on the other half) with
    a paired bootstrap interval (``boot_ci_low``/``boot_ci_high``), ``peak_step`` and the mAP at peak and final
    step on all queries.
    """
    ap = torch.as_tensor(ap, dtype=torch.float64)
    if ap.ndim != 2 or ap.shape[0] != len(steps) or ap.shape[1] < 2:
        raise ValueError(f"ap must be (T={len(steps)}, Q>=2), got {tuple(ap.shape)}")
    keep = [i for i, step in enumerate(steps) if step >= min_step]
    if not keep:
        raise ValueError(f"no recorded step is >= min_step={min_step}: {steps}")
    ap, steps = ap[keep], [steps[i] for i in keep]
    halves = [torch.arange(0, ap.shape[1], 2), torch.arange(1, ap.shape[1], 2)]
    final, at_peak = torch.empty(ap.shape[1], dtype=torch.float64), torch.empty(ap.shape[1], dtype=torch.float64)
    for choose, measure in (halves, halves[::-1]):
        peak = int(torch.nanmean(ap[:, choose], dim=1).argmax())
        final[measure] = ap[-1, measure]
        at_peak[measure] = ap[peak, measure]
    mean, low, high = stats.paired_bootstrap_ci(final, at_peak, n_boot=n_boot, seed=0)
    curve = torch.nanmean(ap, dim=1)
    peak = int(curve.argmax())
    return {"mean_diff": mean, "seed_ci_low": math.nan, "seed_ci_high": math.nan, "n_seeds": 1, "boot_diff": mean,
            "boot_ci_low": low, "boot_ci_high": high, "n_pairs": int(ap.shape[1]), "peak_step": steps[peak],
            "peak_mAP": float(curve[peak]), "final_step": steps[-1], "final_mAP": float(curve[-1])}


# ------------------------------------------------------------------------------------------------ claims
@dataclass
class Claim:
    """One claim of the paper (or of the critique), with the reported effect it rests on."""

    key: str
    claim: str  # paraphrased
    source: str  # where it is shown, e.g. "Table 1"
    reported: str  # the reported numbers, as text
    reported_delta: float  # the reported effect in points; its sign is what a reproduction can agree with
    provenance: str  # label of crossgap_lib.reported.PROVENANCE
    measure: str  # what the laboratory measures for it
    page: str  # the book page with the details


def _range(values: pd.Series) -> str:
    values = [float(v) for v in values]
    low, high = min(values), max(values)
    return f"{low:+.1f}" if low == high else f"{low:+.1f} to {high:+.1f}"


def reported_claims() -> list[Claim]:
    """The paper's claims, and the critique's, with the reported effects computed from the reported tables."""
    t1 = reported("table1")
    slip = t1["model"].str.startswith(SLIP_PREFIX)
    clip_family, slip_rows = t1[~slip], t1[slip]
    t2 = reported("table2_text")
    zs = reported("table2_zero_shot")
    t4 = reported("table4").set_index(["finetune_temperature", "approach"])["Average"]
    gain_closed = t4[(1.0, "OTI-to-image")] - t4[(1.0, "intra image-to-image")]
    gain_open = t4[(0.01, "OTI-to-image")] - t4[(0.01, "intra image-to-image")]
    f2 = reported("figure2").set_index("R")
    best_r = f2.drop(index="baseline")["peak_mAP"].astype(float).idxmax()
    peak, final = float(f2.loc[best_r, "peak_mAP"]), float(f2.loc[best_r, "mAP_at_step_1000"])
    gains = critique_gains()
    n = len(clip_family)
    return [
        Claim("oti_image", "Inversion (OTI) improves intra-modal image-to-image retrieval", "Table 1",
              f"OTI - intra: {_range(clip_family['delta'])} mAP ({n} CLIP-family models, average over datasets)",
              float(clip_family["delta"].mean()), "poster", "OTI - intra, image mAP (`clip`)",
              "table1_image_retrieval"),
        Claim("ovi_text", "Inversion (OVI) improves intra-modal text-to-text retrieval", "Table 2",
              f"OVI - intra: {_range(t2['delta'])} mAP ({len(t2)} models)", float(t2["delta"].mean()), "poster",
              "OVI - intra, text mAP (`clip`)", "table2_text_zero_shot"),
        Claim("zero_shot", "Inversion hurts zero-shot classification, a natively inter-modal task", "Table 2",
              f"OTI (intra-modal) - image (inter-modal): {_range(zs['delta'])} top-1 ({len(zs)} models)",
              float(zs["delta"].mean()), "poster", "OTI-vs-prompt minus image-vs-prompt accuracy (`clip`, seed 0)",
              "table2_text_zero_shot"),
        Claim("slip", "Intra-modal (SLIP) training leaves almost no OTI gain", "Table 3",
              f"OTI gain SLIP {_range(slip_rows['delta'])} vs CLIP-family {_range(clip_family['delta'])} mAP",
              float(slip_rows["delta"].mean() - clip_family["delta"].mean()), "poster",
              "OTI gain of `intra` minus OTI gain of `clip`", "table1_image_retrieval"),
        Claim("gap", "Closing the modality gap (temperature 1) makes inversion useless", "Table 4",
              f"OTI gain {gain_closed:+.1f} at T=1 vs {gain_open:+.1f} at T=0.01 "
              f"(change {gain_closed - gain_open:+.1f})",
              float(gain_closed - gain_open), "poster",
              "OTI gain of `clip T=1` minus that of the low-temperature model", "table4_modality_gap"),
        Claim("oti_peak", "OTI retrieval peaks early, then decays toward the intra-modal level", "Figure 2",
              f"R={best_r}: peak {peak:.1f} at step {int(float(f2.loc[best_r, 'peak_step']))}, {final:.1f} at "
              f"step 1000 (change {final - peak:+.1f})", final - peak, "poster-digitised",
              "mAP at the last step minus at the peak step (cross-fitted)", "fig2_oti_dynamics"),
        Claim("critique_pca", "Critique: a text-span PCA projection beats OTI", "Herzog & Wang",
              f"PCA - OTI: {_range(gains['PCA - OTI'])} mAP ({len(gains)} models, 13 datasets)",
              float(gains["PCA - OTI"].mean()), "critique", "PCA (class prompts) - OTI, image mAP (`clip`)",
              "posthoc_gap"),
    ]


def _low_temperature_reference(names: list[str], main: str) -> str:
    return "clip T=0.01" if "clip T=0.01" in names else main


def measure_claims(lab, main: str = "clip", curve: dict | None = None) -> dict[str, dict | None]:
    """The laboratory's measurement for each claim key (a dict like a row of ``lab.contrasts``, plus ``what``:
    which settings it compares), or None when the lab lacks the settings it needs. ``curve``: the output of
    :func:`oti_curve_per_query` (None: the Figure 2 claim is not measured)."""
    names = _settings(lab)
    out: dict[str, dict | None] = {}

    def add(key: str, what: str, fn, *args) -> None:
        try:
            out[key] = {**fn(*args), "what": what}
        except (ValueError, KeyError):
            out[key] = None

    add("oti_image", f"`{main}`", contrast, lab, main, "img_oti", main, "img_intra")
    add("ovi_text", f"`{main}`", contrast, lab, main, "txt_ovi", main, "txt_intra_ovi_queries")
    add("zero_shot", f"`{main}`, first seed", zero_shot_inversion, lab, main)
    if "intra" in names:
        add("slip", f"`intra` vs `{main}`", contrast, lab, "intra", "oti_gain", main, "oti_gain")
    else:
        out["slip"] = None
    if "clip T=1" in names:
        ref = _low_temperature_reference(names, main)
        add("gap", f"`clip T=1` vs `{ref}`", contrast, lab, "clip T=1", "oti_gain", ref, "oti_gain")
    else:
        out["gap"] = None
    if curve is not None:
        r_values = curve["num_pseudo_tokens"]
        r = 4 if 4 in r_values else max(r_values)
        out["oti_peak"] = {**oti_decay(curve["AP"][r_values.index(r)], curve["steps"], lab.config["n_boot"]),
                           "what": f"`{curve['setting']}` seed {curve['seed']}, R={r}"}
    else:
        out["oti_peak"] = None
    add("critique_pca", f"`{main}`", contrast, lab, main, "img_pca_prompts", main, "img_oti")
    return out


def _agreement(reported_delta: float, low: float, high: float) -> str:
    if any(math.isnan(v) for v in (low, high)):
        return "n/a"
    return report.agreement(reported_delta, low, high)


def claims_table(claims: list[Claim], measured: dict[str, dict | None], scale: float = 100.0) -> pd.DataFrame:
    """One row per claim: reported effect and provenance beside the lab's effect, both intervals and verdicts.

    ``verdict`` uses the interval over seeds where there are several seeds, else the bootstrap over queries (and
    ``interval`` says which)."""
    rows = []
    for claim in claims:
        m = measured.get(claim.key)
        row = {"claim": claim.claim, "shown in": claim.source, "reported": claim.reported,
               "provenance": PROVENANCE.get(claim.provenance, claim.provenance), "lab measures": claim.measure}
        if m is None:
            row.update({"lab models": "", "lab effect [95% CI over seeds]": "not measured",
                        "lab effect [95% bootstrap CI over queries]": "not measured", "verdict": "not measured",
                        "interval": ""})
        else:
            seeds = report.ci_text(m["mean_diff"], m["seed_ci_low"], m["seed_ci_high"], scale)
            boot = report.ci_text(m["boot_diff"], m["boot_ci_low"], m["boot_ci_high"], scale)
            use_seeds = not any(math.isnan(m[k]) for k in ("seed_ci_low", "seed_ci_high"))
            low, high = ((m["seed_ci_low"], m["seed_ci_high"]) if use_seeds
                         else (m["boot_ci_low"], m["boot_ci_high"]))
            row.update({"lab models": m["what"],
                        "lab effect [95% CI over seeds]": seeds if use_seeds else "n/a (one model)",
                        "lab effect [95% bootstrap CI over queries]": boot,
                        "verdict": _agreement(claim.reported_delta, low, high),
                        "interval": f"seeds (n={m['n_seeds']})" if use_seeds else f"queries (n={m['n_pairs']})"})
        row["key"] = claim.key
        rows.append(row)
    return pd.DataFrame(rows).set_index("key")


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is an acronym ('OTI ...')."""
    return text if len(text) < 2 or text[1].isupper() else text[0].lower() + text[1:]


def discussion(table: pd.DataFrame) -> list[str]:
    """Sentences summarising a :func:`claims_table`: how many claims agree, disagree or stay inconclusive, and
    which."""
    counts = table["verdict"].value_counts()
    agree, disagree, unclear = (int(counts.get(v, 0)) for v in ("agrees", "disagrees", "inconclusive"))
    measured = agree + disagree + unclear
    lines = [(f"Of the {len(table)} claims, the laboratory measured {measured}: "
             f"{agree} {'agrees' if agree == 1 else 'agree'} in direction with the reported effect, "
             f"{disagree} {'goes' if disagree == 1 else 'go'} the other way and {unclear} "
             f"{'is' if unclear == 1 else 'are'} inconclusive (the 95% interval includes zero).")]
    for verdict, text in (("agrees", "Agreeing in direction"), ("disagrees", "Opposite direction"),
                          ("inconclusive", "Inconclusive"), ("not measured", "Not measured in this lab")):
        rows = table[table["verdict"] == verdict]
        if len(rows):
            items = "; ".join(f"{_lower_first(r['claim'])} ({r['shown in']})" for _, r in rows.iterrows())
            lines.append(f"{text}: {items}.")
    return lines


# ------------------------------------------------------------------------------------------------ real models
def real_model_effects(image_cells: dict | None = None, text_cells: dict | None = None,
                       zero_shot_cells: dict | None = None) -> pd.DataFrame:
    """Paper-profile effects per model, averaged over the datasets run, beside the poster's averages.

    Arguments map (model label, dataset) -> :class:`crossgap_lib.experiments.Cell` of ``image_retrieval``,
    ``text_retrieval`` and ``zero_shot``. One row per (claim key, model): ``reproduced`` (mean over datasets of the
    per-dataset difference, points) with a t-interval across datasets, ``reported`` (the poster's average over all
    of the paper's datasets; for ``critique_pca``, text-span projection minus OTI, the critique's 13-dataset
    average), ``difference`` and ``verdict`` (sign agreement)."""
    specs = [("oti_image", image_cells, "oti", "intra", "table1"),
             ("ovi_text", text_cells, "ovi", "intra", "table2_text"),
             ("zero_shot", zero_shot_cells, "oti_intra", "inter", "table2_zero_shot"),
             ("critique_pca", image_cells, "text_span", "oti", "critique")]
    rows = []
    for key, cells, a, b, table in specs:
        if not cells:
            continue
        reported_delta = (critique_gains()["PCA - OTI"] if table == "critique"
                          else reported(table).set_index("model")["delta"])
        by_model: dict[str, list[float]] = {}
        for (model, _dataset), cell in cells.items():
            by_model.setdefault(model, []).append(100 * (cell.values[a] - cell.values[b]))
        for model, deltas in by_model.items():
            mean, low, high = stats.seed_ci(deltas)
            ref = float(reported_delta[model]) if model in reported_delta.index else math.nan
            rows.append({"claim": key, "model": model, "datasets": len(deltas), "reproduced": mean, "ci_low": low,
                         "ci_high": high, "reported": ref, "difference": mean - ref,
                         "verdict": "n/a" if math.isnan(ref) else _agreement(ref, low, high)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ the critique
def critique_gains() -> pd.DataFrame:
    """Per model of the critique's table: average mAP of intra, OTI and PCA over its datasets and the gains
    ``OTI - intra``, ``PCA - intra``, ``PCA - OTI``, plus on how many datasets PCA beats OTI."""
    table = reported("critique")
    datasets = list(CRITIQUE_COLUMNS.values())
    rows = []
    for model, group in table.groupby("model", sort=False):
        by = group.set_index("method")[datasets].astype(float)
        means = by.mean(axis=1)
        rows.append({"model": model, "intra": means["intra"], "OTI": means["OTI"], "PCA": means["PCA"],
                     "OTI - intra": means["OTI"] - means["intra"], "PCA - intra": means["PCA"] - means["intra"],
                     "PCA - OTI": means["PCA"] - means["OTI"],
                     "datasets where PCA > OTI": f"{int((by.loc['PCA'] > by.loc['OTI']).sum())}/{len(datasets)}"})
    return pd.DataFrame(rows).set_index("model")


def critique_comparison(cells: dict) -> pd.DataFrame:
    """Paper-profile image retrieval beside the critique's numbers: ``cells`` maps (model label, dataset name of
    :mod:`crossgap_lib.datasets`) -> Cell of :func:`crossgap_lib.experiments.image_retrieval`. One row per model,
    dataset and method (intra, OTI, PCA = the text-span projection), in mAP points."""
    table = reported("critique").set_index(["model", "method"])
    methods = {"intra": "intra", "oti": "OTI", "text_span": "PCA"}
    rows = []
    for (model, dataset), cell in cells.items():
        column = CRITIQUE_COLUMNS.get(dataset)
        for key, method in methods.items():
            ref = (float(table.loc[(model, method), column])
                   if column is not None and (model, method) in table.index else math.nan)
            value = 100 * float(cell.values[key])
            rows.append({"model": model, "dataset": column or dataset, "method": method, "critique": ref,
                         "reproduced": value, "difference": value - ref})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ soft targets
def teacher_similarity(teacher_image: torch.Tensor, teacher_text: torch.Tensor) -> torch.Tensor:
    """S (N, N) = (cos(m_i(I_a), m_i(I_b)) + cos(m_t(T_a), m_t(T_b))) / 2, the teacher similarity behind
    :func:`crossgap_lib.losses.soft_targets` (which returns softmax(S / tau) mixed with the identity)."""
    image = F.normalize(torch.as_tensor(teacher_image).double(), dim=-1)
    text = F.normalize(torch.as_tensor(teacher_text).double(), dim=-1)
    if image.ndim != 2 or text.ndim != 2 or image.shape[0] != text.shape[0]:
        raise ValueError(f"expected (N, Di) and (N, Dt) teacher features, got {tuple(image.shape)} and "
                         f"{tuple(text.shape)}")
    return ((image @ image.T + text @ text.T) / 2).float()


def target_mass(targets: torch.Tensor, labels: Any) -> dict[str, float]:
    """Where the rows of a target matrix Q (N, N) put their mass, averaged over rows: on the matching pair
    (``matching``), on other pairs of the same class (``same class``) and on other classes (``other classes``)."""
    targets = torch.as_tensor(targets, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    n = targets.shape[0]
    if targets.shape != (n, n) or labels.shape != (n,):
        raise ValueError(f"expected Q (N, N) and labels (N,), got {tuple(targets.shape)} and {tuple(labels.shape)}")
    eye = torch.eye(n, dtype=torch.bool)
    same = (labels[:, None] == labels[None, :]) & ~eye
    return {"matching": float(targets[eye].mean() if n else 0.0),
            "same class": float((targets * same).sum(1).mean()),
            "other classes": float((targets * ~(same | eye)).sum(1).mean())}


def similarity_by_class(similarity: torch.Tensor, labels: Any) -> dict[str, float]:
    """Mean of a similarity matrix (N, N) over pairs of distinct items of the same class (``same class``) and over
    pairs of different classes (``other classes``); NaN where there is no such pair."""
    similarity = torch.as_tensor(similarity, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    n = similarity.shape[0]
    if similarity.shape != (n, n) or labels.shape != (n,):
        raise ValueError(f"expected S (N, N) and labels (N,), got {tuple(similarity.shape)} and {tuple(labels.shape)}")
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool)
    other = labels[:, None] != labels[None, :]
    return {"same class": float(similarity[same].mean()) if same.any() else math.nan,
            "other classes": float(similarity[other].mean()) if other.any() else math.nan}
