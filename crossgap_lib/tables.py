"""Helpers of the book's table chapters (the paper's Tables 1-4): laboratory settings beside the paper's rows,
per-sample zero-shot outcomes, the inversion-gain-vs-gap fit and the paper-profile loops over models x datasets.

The laboratory cannot reproduce the paper's magnitudes, only the *direction* of its effects. So each laboratory
setting is paired with the paper row it imitates (:func:`paper_analogue`): CLIP's learnable-temperature loss with the
average of the paper's CLIP-family models, the SimCLR-augmented loss with SLIP, fixed temperatures 1 and 0.01 with
the fine-tuned CLIPs of Table 4. :func:`lab_vs_reported` then says, per setting, whether the measured interval agrees
in sign with the reported difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from scipy import stats as scipy_stats

from . import report, stats
from .reported import PROVENANCE, reported

SLIP_LABELS = ("SLIP B/16", "SLIP L/16")
TASKS = ("image", "text", "zero_shot")
# reported table, column of the intra-modal (or inter-modal, for zero-shot) baseline, column of the inversion
_REPORTED = {
    "image": ("table1", "intra_image_to_image_mAP", "oti_to_image_mAP"),
    "text": ("table2_text", "intra_text_to_text_mAP", "ovi_to_text_mAP"),
    "zero_shot": ("table2_zero_shot", "inter_zero_shot_top1", "oti_intra_top1"),
}
# the paper's dataset names in the reported Table 4 columns
TABLE4_COLUMNS = {"cub": "CUB", "sop": "SOP", "roxford5k": "ROxford", "rparis6k": "RParis", "stanford_cars": "Cars"}


# ------------------------------------------------------------------------------------------- lab vs the paper
def _close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(float(a), b, rel_tol=1e-9)


def paper_analogue(setting: dict, task: str = "image") -> dict | None:
    """The paper row a laboratory setting imitates, for one task, or None when the paper has none.

    ``setting`` is a lab setting dict (``name``, ``loss``, optional ``temperature``). Returns ``{"analogue": text,
    "baseline": points, "inversion": points, "delta": inversion - baseline, "provenance": label}`` where the numbers
    are averages of the reported rows (poster averages over each task's datasets).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    loss, temperature = setting.get("loss", "clip"), setting.get("temperature")
    if task == "image" and loss == "clip" and temperature is not None:
        if not (_close(temperature, 1.0) or _close(temperature, 0.01)):
            return None
        table = reported("table4")
        rows = table[[_close(t, float(temperature)) for t in table["finetune_temperature"]]].set_index("approach")
        baseline = float(rows.loc["intra image-to-image", "Average"])
        inversion = float(rows.loc["OTI-to-image", "Average"])
        return {"analogue": f"CLIP B/32 fine-tuned on COCO at T={temperature:g} (Table 4, 5 datasets)",
                "baseline": baseline, "inversion": inversion, "delta": inversion - baseline,
                "provenance": rows["provenance"].iloc[0]}
    name, base_col, inv_col = _REPORTED[task]
    table = reported(name)
    if loss == "clip" and temperature is None:
        rows, text = table[~table["model"].isin(SLIP_LABELS)], "mean of the {n} CLIP-family models"
    elif loss == "intra" and task == "image":
        rows, text = table[table["model"].isin(SLIP_LABELS)], "mean of the {n} SLIP models (Table 3)"
    else:
        return None
    baseline, inversion = float(rows[base_col].mean()), float(rows[inv_col].mean())
    return {"analogue": text.format(n=len(rows)), "baseline": baseline, "inversion": inversion,
            "delta": inversion - baseline, "provenance": rows["provenance"].iloc[0]}


def lab_vs_reported(contrasts: pd.DataFrame, settings: list[dict], contrast: str, task: str = "image",
                    scale: float = 100.0) -> pd.DataFrame:
    """One row per lab setting: the measured within-model difference ``contrast`` (e.g. ``"OTI - intra (image)"``)
    with both confidence intervals, the paper analogue's reported difference and whether their signs agree.

    Settings without a paper analogue show ``"-"`` in the reported columns and ``"no paper analogue"``.
    """
    rows = contrasts[(contrasts["contrast"] == contrast) & (contrasts["kind"] == "within")].set_index("setting")
    if rows.empty:
        raise ValueError(f"no within-model contrast {contrast!r} in the lab's contrasts "
                         f"(have {sorted(set(contrasts['contrast']))})")
    out = []
    for setting in settings:
        if setting["name"] not in rows.index:
            continue
        row = rows.loc[setting["name"]]
        analogue = paper_analogue(setting, task)
        entry = {
            "setting": setting["name"],
            "lab: difference [95% CI over seeds]": report.ci_text(
                row["mean_diff"], row["seed_ci_low"], row["seed_ci_high"], scale),
            "lab: [95% bootstrap CI over queries]": report.ci_text(
                row["boot_diff"], row["boot_ci_low"], row["boot_ci_high"], scale),
            "paper analogue": analogue["analogue"] if analogue else "-",
            "reported difference": f"{analogue['delta']:+.1f}" if analogue else "-",
        }
        for label, low, high in (("seeds", "seed_ci_low", "seed_ci_high"), ("queries", "boot_ci_low", "boot_ci_high")):
            if analogue is None:
                entry[f"sign agreement ({label})"] = "no paper analogue"
            elif any(math.isnan(row[c]) for c in (low, high)):
                entry[f"sign agreement ({label})"] = "no interval"
            else:
                entry[f"sign agreement ({label})"] = report.agreement(analogue["delta"], row[low], row[high])
        out.append(entry)
    return pd.DataFrame(out).set_index("setting")


def agreement_sentence(reported_delta: float, low: float, high: float, what: str = "its analogue") -> str:
    """``"The paper reports +2.7 for its analogue: the measured sign agrees."`` (or is opposite, or is undecided)."""
    verdict = report.agreement(reported_delta, low, high) if not any(math.isnan(v) for v in (low, high)) else None
    tail = {"agrees": "the measured interval agrees in sign.",
            "disagrees": "the measured interval has the opposite sign.",
            "inconclusive": "the measured interval includes zero, so it cannot confirm or contradict the sign.",
            None: "there is no measured interval to compare."}[verdict]
    return f"The paper reports {reported_delta:+.1f} points for {what}: {tail}"


def setting_sentence(setting: dict, row: pd.Series, label: str, task: str = "image") -> str:
    """A lab setting's within-model contrast (a row of :func:`contrast_rows`) as a verdict over seeds, followed by
    :func:`agreement_sentence` for the paper's analogue of the setting when it has one."""
    low, high = row["seed_ci_low"], row["seed_ci_high"]
    sentence = report.verdict(label, row["mean_diff"], low, high, interval="95% CI over seeds")
    analogue = paper_analogue(setting, task)
    if analogue is not None:
        sentence += " " + agreement_sentence(analogue["delta"], low, high, f"its analogue ({analogue['analogue']})")
    return sentence


def reported_with_delta(name: str, baseline: str, inversion: str) -> pd.DataFrame:
    """A reported table with its difference column recomputed (inversion - baseline) and provenance spelled out."""
    table = reported(name).copy()
    table["difference"] = table[inversion] - table[baseline]
    table["provenance"] = [PROVENANCE.get(p, p) for p in table["provenance"]]
    return table


def contrast_rows(contrasts: pd.DataFrame, contrast: str, kind: str = "within") -> pd.DataFrame:
    """The rows of one contrast, indexed by setting (empty frame when the lab did not compute it)."""
    return contrasts[(contrasts["contrast"] == contrast) & (contrasts["kind"] == kind)].set_index("setting")


def between_row(contrasts: pd.DataFrame, a: str, b: str, metric: str) -> pd.Series | None:
    """The between-settings contrast ``a - b`` on per-query key ``metric`` (None when the lab did not compute it)."""
    rows = contrasts[(contrasts["kind"] == "between") & (contrasts["contrast"] == f"{a} - {b}")
                     & (contrasts["metric"] == metric)]
    return None if rows.empty else rows.iloc[0]


# ------------------------------------------------------------------------------------------- zero-shot
@torch.no_grad()
def zero_shot_correct(class_features: torch.Tensor, sample_features: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """Per-sample top-1 outcome (N,) float64 in {0, 1} of classifying samples by dot product with class features.

    Its mean equals :func:`crossgap_lib.metrics.zero_shot_accuracy`; kept per sample for paired intervals.
    """
    scores, labels = _zero_shot_scores(class_features, sample_features, labels)
    return (scores.argmax(1) == labels).double()


def _zero_shot_scores(class_features, sample_features, labels) -> tuple[torch.Tensor, torch.Tensor]:
    if class_features.ndim != 2 or sample_features.ndim != 2 or class_features.shape[1] != sample_features.shape[1]:
        raise ValueError(f"expected (C, D) class and (N, D) sample features, got {tuple(class_features.shape)} and "
                         f"{tuple(sample_features.shape)}")
    labels = torch.as_tensor(labels).long().flatten().cpu()
    if labels.numel() != sample_features.shape[0]:
        raise ValueError(f"labels has {labels.numel()} entries for {sample_features.shape[0]} samples")
    scores = (sample_features.to(class_features.dtype) @ class_features.T).double().cpu()
    return scores, labels


def zero_shot_comparison(class_features: torch.Tensor, image_features: torch.Tensor, inverted_features: torch.Tensor,
                         labels: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> dict:
    """Zero-shot top-1 inter-modal (image vs class prompts) and intra-modal (inverted text feature vs class prompts)
    on the same samples, with a paired bootstrap interval over samples of inversion - inter."""
    inter = zero_shot_correct(class_features, image_features, labels)
    inverted = zero_shot_correct(class_features, inverted_features, labels)
    diff, low, high = stats.paired_bootstrap_ci(inverted, inter, n_boot=n_boot, seed=seed)
    return {"inter": float(inter.mean()), "inversion": float(inverted.mean()), "diff": diff, "ci_low": low,
            "ci_high": high, "n": int(inter.numel()), "per_sample_inter": inter, "per_sample_inversion": inverted}


@torch.no_grad()
def zero_shot_margins(class_features: torch.Tensor, sample_features: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """Per-sample margin (N,): similarity to the true class minus the highest similarity to any other class
    (positive: classified correctly)."""
    scores, labels = _zero_shot_scores(class_features, sample_features, labels)
    true = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], float("-inf")).max(1).values
    return true - others


def lab_zero_shot(lab, n_boot: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Zero-shot top-1 per laboratory setting: inter-modal (image vs class prompts) and intra-modal (OTI feature vs
    class prompts) on the first seed's test images, their difference with a paired bootstrap interval over images,
    the inter-modal accuracy over all seeds with its t-interval, and the paper analogue's reported difference.

    Only the first seed's OTI features are kept by the laboratory, hence the bootstrap over images of one model.
    """
    n_boot = n_boot if n_boot is not None else int(lab.config.get("n_boot", 2000))
    summary = lab.summary.set_index(["setting", "metric"])
    rows = []
    for setting in lab.config["settings"]:
        name = setting["name"]
        if name not in lab.features:
            continue
        f = lab.features[name]
        result = zero_shot_comparison(f["prompt"], f["image"], f["oti"], f["labels"], n_boot=n_boot, seed=seed)
        inter = summary.loc[(name, "zero_shot")]
        analogue = paper_analogue(setting, "zero_shot")
        rows.append({"setting": name, "inter (first seed)": result["inter"], "OTI (first seed)": result["inversion"],
                     "diff": result["diff"], "ci_low": result["ci_low"], "ci_high": result["ci_high"],
                     "n_images": result["n"], "inter (all seeds)": inter["mean"], "inter_ci_low": inter["ci_low"],
                     "inter_ci_high": inter["ci_high"], "n_seeds": int(inter["n_seeds"]),
                     "reported_delta": analogue["delta"] if analogue else math.nan,
                     "analogue": analogue["analogue"] if analogue else "-"})
    return pd.DataFrame(rows).set_index("setting")


# ------------------------------------------------------------------------------------------- gain vs gap
def gain_vs_gap(tidy: pd.DataFrame, gap_metric: str = "gap_centroid", gain: tuple[str, str] = (
        "img_oti_mAP", "img_intra_mAP")) -> pd.DataFrame:
    """One row per (setting, seed) of a lab's tidy metrics: the gap measure and the gain ``gain[0] - gain[1]``."""
    needed = {gap_metric, *gain}
    wide = tidy[tidy["metric"].isin(needed)].pivot_table(index=["setting", "seed"], columns="metric", values="value")
    missing = sorted(needed - set(wide.columns))
    if missing:
        raise ValueError(f"the tidy frame has no metric(s) {missing}")
    order = list(dict.fromkeys(tidy["setting"]))
    frame = pd.DataFrame({"gap": wide[gap_metric], "gain": wide[gain[0]] - wide[gain[1]],
                          "intra": wide[gain[1]], "inversion": wide[gain[0]]}).reset_index()
    frame["setting"] = pd.Categorical(frame["setting"], categories=order, ordered=True)
    return frame.sort_values(["setting", "seed"]).reset_index(drop=True)


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


def trend_sentence(what: str, fit: dict, scale: float = 100.0, unit: str = "points", digits: int = 1,
                   interval: str = "95% t-interval", up: str = "the gain grows with the gap",
                   down: str = "the gain shrinks as the gap grows") -> str:
    """One sentence: the fitted slope with its interval and whether it is positive (``up``), negative (``down``) or
    indistinguishable from zero."""
    text = (f"The slope of {what} is {report.ci_text(fit['slope'], fit['slope_low'], fit['slope_high'], scale, digits)}"
            f" {unit} ({interval}, n = {fit['n']}, r = {fit['r']:.2f})")
    trend = report.direction(fit["slope"], fit["slope_low"], fit["slope_high"])
    return text + {"up": f": the interval lies above zero, so {up}.",
                   "down": f": the interval lies below zero, so {down}.",
                   "none": ": the interval includes zero, no detectable trend."}[trend]


# ------------------------------------------------------------------------------------------- paper profile
_CELL_TASKS = ("image_retrieval", "text_retrieval", "zero_shot")


def paper_cells(task: str, models: list, datasets: Iterable[str], root: str | Path | None = None,
                device: str = "cuda", cache_dir: str | Path | None = None, progress: bool = True,
                load: Callable | None = None) -> pd.DataFrame:
    """Run one of :mod:`crossgap_lib.experiments`' cells for every model x dataset; tidy frame with columns model,
    dataset, method, value (fractions). ``models`` are :class:`~crossgap_lib.experiments.PaperModel`; ``load(model)``
    returns its loaded CLIP (default :func:`~crossgap_lib.experiments.load_paper_model` on ``device``). Each model is
    loaded once and released before the next."""
    from . import experiments

    if task not in _CELL_TASKS:
        raise ValueError(f"task must be one of {_CELL_TASKS}, got {task!r}")
    datasets = list(datasets)
    if not models or not datasets:
        raise ValueError("paper_cells needs at least one model and one dataset")
    run = getattr(experiments, task)
    load = load or (lambda model: experiments.load_paper_model(model, device=device))
    rows = []
    for model in models:
        clip = load(model)
        try:
            for dataset in datasets:
                cell = run(clip, model, dataset, root=root, cache_dir=cache_dir, progress=progress)
                rows += [{"model": model.label, "dataset": dataset, "method": method, "value": float(value)}
                         for method, value in cell.values.items()]
        finally:
            del clip
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def per_dataset_difference(cells: pd.DataFrame, inversion: str, baseline: str, label: str,
                           scale: float = 100.0) -> pd.DataFrame:
    """Paper cells as one row per (model, dataset) and one column per method (x ``scale``), plus the column ``label``
    = ``inversion`` - ``baseline`` (e.g. ``"OTI - intra"``)."""
    table = cells.pivot_table(index=["model", "dataset"], columns="method", values="value", sort=False) * scale
    table[label] = table[inversion] - table[baseline]
    return table


def paper_average_vs_reported(cells: pd.DataFrame, name: str, methods: dict[str, str], scale: float = 100.0,
                              expected_datasets: int | None = None) -> pd.DataFrame:
    """Average over datasets per model and method (x ``scale``) beside the reported averages of table ``name``.

    ``methods`` maps a cell method (e.g. ``"intra"``) to a reported column (e.g. ``"intra_image_to_image_mAP"``).
    Columns: ``<method> reported``, ``<method> reproduced``, ``<method> difference``, plus ``n datasets``; a model
    missing from the reported table gets NaN reported values. When ``expected_datasets`` is given and a model was run
    on a different number, the comparison is over different dataset sets: the column ``comparable`` says so.
    """
    table = reported(name).set_index("model")
    kept = cells[cells["method"].isin(methods)]
    mean = kept.pivot_table(index="model", columns="method", values="value", aggfunc="mean") * scale
    counts = kept.groupby("model")["dataset"].nunique()
    parts = []
    for method, column in methods.items():
        side = pd.DataFrame({"reported": table[column].reindex(mean.index), "reproduced": mean[method]})
        side["difference"] = side["reproduced"] - side["reported"]
        side.columns = [f"{method} {c}" for c in side.columns]
        parts.append(side)
    out = pd.concat(parts, axis=1)
    out["n datasets"] = counts.reindex(out.index)
    if expected_datasets is not None:
        out["comparable"] = out["n datasets"] == expected_datasets
    order = [m for m in dict.fromkeys(cells["model"])]
    return out.loc[order]


def finetuned_models(checkpoints: dict, model_name: str, base_label: str = "CLIP B/32") -> list:
    """The Table 4 models: one :class:`~crossgap_lib.experiments.PaperModel` per fine-tuning temperature, with the
    inversion settings of ``base_label`` and ``pretrained`` set to the checkpoint path.

    ``checkpoints`` maps the temperature (a string such as ``"1.0"``) to a checkpoint path; a missing (None) path is
    a ValueError saying what to provide.
    """
    from . import experiments

    if not isinstance(checkpoints, dict) or not checkpoints:
        raise ValueError(f"FINETUNED_CHECKPOINTS must be a dict temperature -> checkpoint path, got {checkpoints!r}")
    missing = [t for t, path in checkpoints.items() if path is None]
    if missing:
        raise ValueError(
            f"FINETUNED_CHECKPOINTS has no checkpoint for temperature(s) {missing}. Table 4 evaluates {model_name} "
            f"(OpenAI CLIP weights) fine-tuned on COCO captions with the contrastive loss at a *fixed* temperature "
            f"(1.0 closes the modality gap, 0.01 keeps it). Set FINETUNED_CHECKPOINTS['<T>'] to the path of each "
            f"fine-tuned checkpoint (an open_clip state dict that crossgap_lib.models.load_clip({model_name!r}, "
            f"pretrained=path) loads). crossgap_lib.train only trains the laboratory's tiny CLIPs from scratch on "
            f"generated data; it cannot fine-tune real CLIP on COCO, so produce the checkpoints with open_clip's "
            f"training code (logit scale frozen at log(1/T)) and pass their paths."
        )
    base = experiments.paper_models([base_label])[0]
    return [replace(base, label=f"T={float(t):g}", open_clip_name=model_name, pretrained=str(path))
            for t, path in checkpoints.items()]


def table4_vs_reported(cells: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Reproduced Table 4 (rows: temperature x approach, columns: datasets and their average) beside the reported
    one, as a long frame with columns temperature, approach, dataset, reported, reproduced, difference. The
    ``Average`` rows average the datasets that were run (reported: the mean of the same datasets' reported cells)."""
    table = reported("table4")
    approach = {"intra": "intra image-to-image", "oti": "OTI-to-image"}
    rows = []
    for (label, dataset, method), value in cells.set_index(["model", "dataset", "method"])["value"].items():
        if method not in approach:
            continue
        temperature = float(label.removeprefix("T="))
        column = TABLE4_COLUMNS.get(dataset)
        same_t = (table["finetune_temperature"] - temperature).abs() <= 1e-9 * abs(temperature)
        match = table[same_t & (table["approach"] == approach[method])]
        rep = float(match[column].iloc[0]) if column is not None and not match.empty else math.nan
        rows.append({"temperature": temperature, "approach": approach[method], "dataset": column or dataset,
                     "reported": rep, "reproduced": value * scale})
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ValueError("no intra/oti cells to compare with Table 4")
    averages = frame.groupby(["temperature", "approach"], sort=False)[["reported", "reproduced"]].mean().reset_index()
    frame = pd.concat([frame, averages.assign(dataset="Average")], ignore_index=True)
    frame["difference"] = frame["reproduced"] - frame["reported"]
    return frame
