"""The paper's reported numbers (with provenance), which reported row each measured model is compared with, and the
claims the reproduction page tests.

Reported numbers are never typed in code: they come from the CSV files in ``crossgap_lib/data/paper`` (copied from
``shared/paper`` with their provenance). Effects are in mAP / accuracy *points* (x100); measured values are fractions
and are scaled when compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import pandas as pd

TABLES = {
    "settings": "settings.csv",
    "table1": "table1_image_retrieval_avg.csv",
    "table2_text": "table2_text_retrieval_avg.csv",
    "table2_zero_shot": "table2_zero_shot_avg.csv",
    "table4": "table4_modality_gap.csv",
    "figure2": "figure2_digitised.csv",
    "critique": "critique_image_retrieval.csv",
}
PROVENANCE = {
    "poster": "reported (ICLR poster of the paper)",
    "poster-digitised": "reported (read off the poster's plot, about ±0.1 mAP, ±2 steps)",
    "critique": "Herzog & Wang (arXiv 2603.16100), not the paper's own numbers",
    "config": "the paper's public configuration files",
}
SLIP_LABELS = ("SLIP B/16", "SLIP L/16")
# task -> (reported table, column of the baseline, column of the inversion); the evidence's (baseline, inversion)
REPORTED = {
    "image": ("table1", "intra_image_to_image_mAP", "oti_to_image_mAP"),
    "text": ("table2_text", "intra_text_to_text_mAP", "ovi_to_text_mAP"),
    "zero_shot": ("table2_zero_shot", "inter_zero_shot_top1", "oti_intra_top1"),
}
# crossgap_lib.datasets name -> column of the critique's table and of Table 4
CRITIQUE_COLUMNS = {
    "roxford5k": "ROxford", "rparis6k": "RParis", "stanford_cars": "Cars", "oxford_pets": "Pets",
    "flowers102": "Flowers", "fgvc_aircraft": "Aircraft", "dtd": "DTD", "eurosat": "EuroSAT", "food101": "Food101",
    "sun397": "SUN397", "caltech101": "Caltech101", "ucf101": "UCF101", "imagenet": "ImageNet",
}
TABLE4_COLUMNS = {"cub": "CUB", "sop": "SOP", "roxford5k": "ROxford", "rparis6k": "RParis", "stanford_cars": "Cars"}


def reported(table: str) -> pd.DataFrame:
    """One of the paper's reported tables (see ``TABLES``), with its ``provenance`` column."""
    if table not in TABLES:
        raise ValueError(f"unknown reported table {table!r}; choose one of {sorted(TABLES)}")
    with resources.files("crossgap_lib").joinpath("data", "paper", TABLES[table]).open() as f:
        return pd.read_csv(f)


def provenance_note(frame: pd.DataFrame) -> str:
    """A sentence saying where the numbers of a reported table come from."""
    labels = sorted(set(frame["provenance"]))
    return "; ".join(f"`{label}`: {PROVENANCE.get(label, label)}" for label in labels)


def reported_with_delta(task: str) -> pd.DataFrame:
    """The reported table of a task with ``baseline``, ``inversion`` and ``difference`` columns and spelled-out
    provenance, one row per model."""
    name, base, inv = REPORTED[task]
    table = reported(name)
    return pd.DataFrame({"model": table["model"], "baseline": table[base], "inversion": table[inv],
                         "difference": table[inv] - table[base],
                         "provenance": [PROVENANCE.get(p, p) for p in table["provenance"]]})


def _close(a: float | None, b: float) -> bool:
    return a is not None and not (isinstance(a, float) and math.isnan(a)) and math.isclose(float(a), b, rel_tol=1e-9)


def reported_effect(label: str, family: str, temperature: float | None, task: str = "image") -> dict | None:
    """The reported difference a measured model is compared with, or None when the paper has none.

    A paper model is compared with its own row. Otherwise: a model trained at fixed temperature 1 or 0.01 with the
    fine-tuned CLIP of Table 4 (image task only); a CLIP-like model with the mean of the CLIP-family rows; a
    SLIP-like one (an image-image term in training) with the mean of the SLIP rows. Returns ``analogue`` (text),
    ``baseline``, ``inversion``, ``delta`` (points) and ``provenance``; for a SLIP-family model on the image task also
    ``table3_delta``: its (or its analogue's) gain minus the mean CLIP-family gain, the difference Table 3 is judged on.
    """
    if task not in REPORTED:
        raise ValueError(f"task must be one of {sorted(REPORTED)}, got {task!r}")
    name, base_col, inv_col = REPORTED[task]
    table = reported(name)
    if label in set(table["model"]) and temperature is None:
        row = table[table["model"] == label].iloc[0]
        return _with_table3({"analogue": label, "baseline": float(row[base_col]), "inversion": float(row[inv_col]),
                             "delta": float(row[inv_col] - row[base_col]), "provenance": row["provenance"]},
                            family, task)
    if temperature is not None and not (isinstance(temperature, float) and math.isnan(temperature)):
        if task != "image" or not (_close(temperature, 1.0) or _close(temperature, 0.01)):
            return None
        t4 = reported("table4")
        rows = t4[[_close(t, float(temperature)) for t in t4["finetune_temperature"]]].set_index("approach")
        baseline, inversion = float(rows.loc["intra image-to-image", "Average"]), float(rows.loc["OTI-to-image",
                                                                                                 "Average"])
        return {"analogue": f"CLIP fine-tuned on COCO at T={float(temperature):g} (Table 4, 5 datasets)",
                "baseline": baseline, "inversion": inversion, "delta": inversion - baseline,
                "provenance": rows["provenance"].iloc[0]}
    if family == "clip":
        rows, text = table[~table["model"].isin(SLIP_LABELS)], "mean of the {n} CLIP-family models"
    elif family == "slip" and task == "image":
        rows, text = table[table["model"].isin(SLIP_LABELS)], "mean of the {n} SLIP models (Table 3)"
    else:
        return None
    baseline, inversion = float(rows[base_col].mean()), float(rows[inv_col].mean())
    return _with_table3({"analogue": text.format(n=len(rows)), "baseline": baseline, "inversion": inversion,
                         "delta": inversion - baseline, "provenance": rows["provenance"].iloc[0]}, family, task)


def _clip_family_gain() -> float:
    """Mean reported OTI - intra image mAP (points) of the CLIP-family rows of Table 1 (every row but SLIP's)."""
    table = reported("table1")
    rows = table[~table["model"].isin(SLIP_LABELS)]
    return float((rows["oti_to_image_mAP"] - rows["intra_image_to_image_mAP"]).mean())


def _with_table3(row: dict, family: str, task: str) -> dict:
    """``row`` plus ``table3_delta`` for a SLIP-family model on the image task: Table 3 is a difference of gains."""
    if family == "slip" and task == "image":
        row["table3_delta"] = row["delta"] - _clip_family_gain()
    return row


def reported_for(evidence, model: str, task: str = "image") -> dict | None:
    """:func:`reported_effect` of a model of an evidence (its family and temperature from the evidence)."""
    return reported_effect(model, evidence.families[model], evidence.temperatures[model], task)


def table3_effect(evidence, model: str, n_boot: int = 2000) -> dict | None:
    """Table 3's measure for a SLIP-family model: its OTI gain minus the OTI gain of the evidence's first CLIP-like
    model (learnt temperature) on the same queries (:meth:`Evidence.contrast` with ``model_b``), plus ``what`` and
    ``versus``; None when the model is not SLIP-like, there is no CLIP-like model, or the two share no dataset."""
    clip = pick(evidence, "clip")
    if clip is None or evidence.families.get(model) != "slip":
        return None
    try:
        effect = evidence.contrast("image", "oti", "intra", model=model, model_b=clip, n_boot=n_boot)
    except (KeyError, ValueError):
        return None
    return {**effect, "what": f"`{model}` vs `{clip}`", "versus": clip}


def model_sentence(evidence, model: str, effect: dict, what: str, task: str = "image", note: str | None = None,
                   n_boot: int = 2000) -> str:
    """The measured effect of one model as a verdict sentence, followed, where the paper has a row or an analogue for
    the model, by whether the reported difference agrees in sign. A SLIP-family model on the image task is judged as
    Table 3 is: its OTI gain minus a CLIP-like model's (:func:`table3_effect`) against the reported SLIP gain minus
    the CLIP-family gain, never on the sign of its own gain. ``note``: what the parenthesis says (default: the
    model's family)."""
    from .prose import agreement_sentence, effect_sentence

    sentence = effect_sentence(f"`{model}` ({note or evidence.families[model]}), {what}", effect)
    reported_row = reported_for(evidence, model, task)
    if reported_row is None:
        return sentence
    target = f"`{model}`" if reported_row["analogue"] == model else f"its analogue ({reported_row['analogue']})"
    if "table3_delta" not in reported_row:
        return sentence + " " + agreement_sentence(reported_row["delta"], effect["low"], effect["high"], target)
    table3 = table3_effect(evidence, model, n_boot)
    if table3 is None:
        return sentence + (" Table 3 compares its gain with a CLIP-like model's, and this evidence has no CLIP-like "
                           "model sharing its datasets, so the claim is not judged here.")
    return (sentence + " Table 3 is judged on the difference of gains: "
            + effect_sentence(f"OTI gain of `{model}` minus that of `{table3['versus']}`", table3) + " "
            + agreement_sentence(reported_row["table3_delta"], table3["low"], table3["high"],
                                 f"the gain of {target} minus the mean CLIP-family gain"))


def critique_gains() -> pd.DataFrame:
    """Per model of the critique's table: average mAP of intra, OTI and PCA over its 13 datasets, the gains
    ``OTI - intra``, ``PCA - intra``, ``PCA - OTI``, and on how many datasets PCA beats OTI."""
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


def critique_cell(model: str, dataset: str, method: str) -> float:
    """The critique's mAP (points) for one model, dataset and method (``intra``, ``OTI``, ``PCA``); NaN if absent."""
    table = reported("critique").set_index(["model", "method"])
    column = CRITIQUE_COLUMNS.get(dataset)
    if column is None or (model, method) not in table.index:
        return math.nan
    return float(table.loc[(model, method), column])


# ------------------------------------------------------------------------------------------------ claims
@dataclass
class Claim:
    """One claim of the paper (or of the critique), with the reported effect it rests on."""

    key: str
    claim: str  # paraphrased
    source: str  # where it is shown, e.g. "Table 1"
    reported: str  # the reported numbers, as text
    reported_delta: float  # the reported effect in points; its sign is what a reproduction can agree with
    provenance: str  # label of PROVENANCE
    measure: str  # what is measured for it
    page: str  # the book page with the details


def _range(values) -> str:
    values = [float(v) for v in values]
    low, high = min(values), max(values)
    return f"{low:+.1f}" if low == high else f"{low:+.1f} to {high:+.1f}"


def reported_claims() -> list[Claim]:
    """The paper's claims, and the critique's, with the reported effects computed from the reported tables."""
    t1 = reported("table1")
    slip = t1["model"].isin(SLIP_LABELS)
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
              float(clip_family["delta"].mean()), "poster", "OTI - intra, image mAP", "table1_image_retrieval"),
        Claim("ovi_text", "Inversion (OVI) improves intra-modal text-to-text retrieval", "Table 2",
              f"OVI - intra: {_range(t2['delta'])} mAP ({len(t2)} models)", float(t2["delta"].mean()), "poster",
              "OVI - intra, text mAP", "table2_text_zero_shot"),
        Claim("zero_shot", "Inversion hurts zero-shot classification, a natively inter-modal task", "Table 2",
              f"OTI (intra-modal) - image (inter-modal): {_range(zs['delta'])} top-1 ({len(zs)} models)",
              float(zs["delta"].mean()), "poster", "OTI-vs-prompt minus image-vs-prompt accuracy",
              "table2_text_zero_shot"),
        Claim("slip", "Intra-modal (SLIP) training leaves almost no OTI gain", "Table 3",
              f"OTI gain SLIP {_range(slip_rows['delta'])} vs CLIP-family {_range(clip_family['delta'])} mAP",
              float(slip_rows["delta"].mean() - clip_family["delta"].mean()), "poster",
              "OTI gain of the SLIP-like model minus that of the CLIP-like one", "table1_image_retrieval"),
        Claim("gap", "Closing the modality gap (temperature 1) makes inversion useless", "Table 4",
              f"OTI gain {gain_closed:+.1f} at T=1 vs {gain_open:+.1f} at T=0.01 "
              f"(change {gain_closed - gain_open:+.1f})", float(gain_closed - gain_open), "poster",
              "OTI gain of the T=1 model minus that of the low-temperature one", "table4_modality_gap"),
        Claim("oti_peak", "OTI retrieval peaks early, then decays toward the intra-modal level", "Figure 2",
              f"R={best_r}: peak {peak:.1f} at step {int(float(f2.loc[best_r, 'peak_step']))}, {final:.1f} at "
              f"step 1000 (change {final - peak:+.1f})", final - peak, "poster-digitised",
              "mAP at the last step minus at the peak step (cross-fitted)", "fig2_oti_dynamics"),
        Claim("critique_pca", "Critique: a text-span PCA projection beats OTI", "Herzog & Wang",
              f"PCA - OTI: {_range(gains['PCA - OTI'])} mAP ({len(gains)} models, 13 datasets)",
              float(gains["PCA - OTI"].mean()), "critique", "text-span projection - OTI, image mAP", "posthoc_gap"),
    ]


def _fixed_temperature(row: dict) -> float | None:
    """A models-table row's fixed temperature, or None for a learnt one (stored as None or NaN)."""
    t = row.get("temperature")
    return None if t is None or (isinstance(t, float) and math.isnan(t)) else float(t)


def pick(evidence, family: str, temperature: float | None = None) -> str | None:
    """The first model of a family (and fixed temperature, or learnt when None) in the evidence, or None."""
    for row in evidence.models.to_dict("records"):
        t = _fixed_temperature(row)
        if row["family"] == family and (_close(t, temperature) if temperature is not None else t is None):
            return row["label"]
    return None


def _base_of(row: dict) -> str:
    base = row.get("finetuned from")
    return "" if base is None or (isinstance(base, float) and math.isnan(base)) else str(base)


def soft_pair(evidence) -> tuple[str | None, str | None]:
    """(soft-target model, its control): the first model of family ``soft``, and the model trained the same way with
    CLIP's loss, i.e. the learnt-temperature ``clip`` model fine-tuned from the same base when the soft model is a
    fine-tuning (the laboratory's ``clip ft``), else the first learnt-temperature ``clip`` model (the paper profile's
    base CLIP). Either is None when the evidence has none."""
    rows = evidence.models.to_dict("records")
    soft = next((r for r in rows if r["family"] == "soft"), None)
    if soft is None:
        return None, pick(evidence, "clip")
    base = _base_of(soft)
    matched = next((r["label"] for r in rows if r["family"] == "clip" and _fixed_temperature(r) is None and base
                    and _base_of(r) == base), None)
    return soft["label"], matched or pick(evidence, "clip")


def soft_variants(evidence, control: str) -> list[str]:
    """The soft-target models fine-tuned from the same base as ``control`` (the ablations compared with it)."""
    rows = evidence.models.to_dict("records")
    base = next((_base_of(r) for r in rows if r["label"] == control), "")
    return [r["label"] for r in rows if r["family"] == "soft" and base and _base_of(r) == base]


def gap_pair(evidence) -> tuple[str, str] | None:
    """(gap-closed model, gap-open model): the models trained at fixed T = 1 and at the lowest other fixed T."""
    fixed = [(r["label"], t) for r in evidence.models.to_dict("records")
             if (t := _fixed_temperature(r)) is not None]
    closed = next((label for label, t in fixed if _close(t, 1.0)), None)
    others = sorted((t, label) for label, t in fixed if not _close(t, 1.0))
    return (closed, others[0][1]) if closed and others else None


def table2_text(evidence) -> list[str] | None:
    """The text datasets Table 2's claim averages over: the evidence's, without the appendix's purely textual sets
    (IMDB, 20 Newsgroups, NanoBEIR), which the paper reports separately; None (every dataset) when none is left."""
    from .datasets import TEXT_RETRIEVAL_DATASETS, list_datasets

    textual = set(list_datasets("text")) - set(TEXT_RETRIEVAL_DATASETS)
    kept = [d for d in evidence.datasets("text") if d not in textual]
    return kept or None


def critique_span(evidence, model: str) -> str | None:
    """The text-span method the critique's claim is judged on: k = D / 2 (the critique's fixed choice) where the
    sweep has it, else the largest k measured; None without a span projection."""
    spans = {int(m[len("pca_k"):]): m for m in evidence.methods("image") if m.startswith("pca_k")}
    if not spans:
        return None
    features = evidence.features.get(model, {}).get("image")
    half = features.shape[1] // 2 if features is not None else None
    return spans.get(half, spans[max(spans)])


def measure_claims(evidence, n_boot: int = 2000) -> dict[str, dict | None]:
    """Each claim's measured effect on an evidence (a :func:`crossgap_lib.stats.paired_effect` dict plus ``what``,
    which models it compares), or None when the evidence lacks the models it needs."""
    from .stats import peak_test

    main = pick(evidence, "clip")
    slip = pick(evidence, "slip")
    pair = gap_pair(evidence)
    out: dict[str, dict | None] = {}

    def add(key: str, what: str, **kwargs) -> None:
        try:
            out[key] = {**evidence.contrast(n_boot=n_boot, **kwargs), "what": what}
        except (KeyError, ValueError):
            out[key] = None

    if main is not None:
        add("oti_image", f"`{main}`", task="image", a="oti", b="intra", model=main)
        add("ovi_text", f"`{main}`", task="text", a="ovi", b="intra", model=main, datasets=table2_text(evidence))
        add("zero_shot", f"`{main}`", task="zero_shot", a="oti", b="inter", model=main)
        span = critique_span(evidence, main)
        if span is not None:
            add("critique_pca", f"`{main}`, `{span}`", task="image", a=span, b="oti", model=main)
    out.setdefault("critique_pca", None)
    for key in ("oti_image", "ovi_text", "zero_shot"):
        out.setdefault(key, None)
    out["slip"] = table3_effect(evidence, slip, n_boot) if slip is not None else None
    out["gap"] = None
    if pair is not None:
        add("gap", f"`{pair[0]}` vs `{pair[1]}`", task="image", a="oti", b="intra", model=pair[0], model_b=pair[1])
    curve = evidence.curve
    out["oti_peak"] = None
    if curve:
        index = curve["num_pseudo_tokens"].index(curve["focus"])
        out["oti_peak"] = {**peak_test(curve["AP"][index], curve["steps"], n_boot),
                           "what": f"`{curve['model']}` seed {curve['seed']}, R={curve['focus']}"}
    return out
