# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The modality gap and the value of inversion (Table 4)
#
# If OTI helps because it carries a query across the modality gap, it should stop helping when there is no gap to
# cross. The paper tests this by fine-tuning CLIP ViT-B/32 on COCO twice with the contrastive loss at a *fixed*
# temperature: 0.01, close to CLIP's own, which keeps image and text features apart, and 1, which is known to close
# the gap. Table 4 reports image-to-image retrieval on five datasets for both models, intra-modal and with OTI: at
# temperature 1 inversion is reported to bring nothing and even to hurt, at 0.01 it still helps a little.
#
# This page shows the reported table, measures the same contrast on models trained at fixed temperatures, and then
# asks the question behind it across every trained model: does the inversion gain grow with the size of the gap?

# %% tags=["parameters"]
PROFILE = "embedded"
SOURCE = "lab"
LAB_PRESET = "embedded"
LAB_OVERRIDES = {}
DEVICE = "cpu"
FINETUNED_CHECKPOINTS = {"1.0": None, "0.01": None}
MODEL_NAME = "ViT-B-32"
DATASETS = ["cub", "sop", "roxford5k", "rparis6k", "stanford_cars"]
DATA_ROOT = None

# %% tags=["hide-input"]
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets, on first import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from crossgap_lib import report, tables
from crossgap_lib.lab import LabConfig, run_lab
from crossgap_lib.models import load_clip
from crossgap_lib.reported import provenance_note, reported

sns.set_theme(style="whitegrid", context="notebook")
config = LabConfig.from_dict({**getattr(LabConfig, LAB_PRESET)().to_dict(), **LAB_OVERRIDES})

# %% [markdown]
# ## What the paper reports
#
# Image-to-image mAP of the two fine-tuned CLIPs (revisited Oxford and Paris: Medium protocol), and the difference
# OTI minus intra-modal per dataset.

# %%
table4 = reported("table4")
columns = ["CUB", "SOP", "ROxford", "RParis", "Cars", "Average"]
shown = table4.set_index(["finetune_temperature", "approach"])[columns]
deltas = (shown.xs("OTI-to-image", level="approach") - shown.xs("intra image-to-image", level="approach"))
shown = pd.concat([shown, deltas.assign(approach="OTI - intra").set_index("approach", append=True)])
order = [(t, a) for t in (1.0, 0.01) for a in ("intra image-to-image", "OTI-to-image", "OTI - intra")]
shown = shown.loc[order].rename(index=lambda t: f"T = {t:g}", level=0)
shown.index.names = ["fine-tuning temperature", "approach"]
display(shown.round(1))
display(Markdown(f"Provenance: {provenance_note(table4)}."))

# %% [markdown]
# ## Fixed temperatures, measured
#
# The models trained with the contrastive loss at different temperatures: the modality gap (distance between the
# image and text centroids; mean cosine between an image and its own caption), the final logit scale, intra-modal and
# OTI-to-image mAP and the OTI gain, each with a 95% interval across training seeds, next to the paper's analogue.

# %%
if SOURCE == "lab":
    lab = run_lab(config, progress=False)
    settings = config.settings
    clip_settings = [s for s in settings if s["loss"] == "clip"]
    names = [s["name"] for s in clip_settings]
    measured = lab.table(metrics_shown=["gap_centroid", "gap_matched_cos", "logit_scale", "img_intra_mAP",
                                        "img_oti_mAP"]).loc[names]
    measured.columns = ["gap: centroid distance", "gap: matched cosine", "logit scale", "intra-modal mAP",
                        "OTI-to-image mAP"]
    beside = tables.lab_vs_reported(lab.contrasts, clip_settings, "OTI - intra (image)")
    measured = measured.join(beside[["lab: difference [95% CI over seeds]", "paper analogue", "reported difference",
                                     "sign agreement (seeds)"]].rename(
        columns={"lab: difference [95% CI over seeds]": "OTI - intra [95% CI over seeds]"}))
    measured.insert(0, "temperature", ["learnable" if s.get("temperature") is None else f"fixed {s['temperature']:g}"
                                       for s in clip_settings])
    display(measured)
    display(Markdown(
        f"Laboratory: `{config.model}` trained from scratch for seeds {config.seeds} (the paper *fine-tunes* a "
        "pre-trained CLIP on COCO instead). mAP and gains in points; gap measures unscaled. These tiny models on "
        "generated shapes cannot reproduce the paper's magnitudes: compare the direction of the effects."))
elif SOURCE == "paper":
    models = tables.finetuned_models(FINETUNED_CHECKPOINTS, MODEL_NAME)
    cells = tables.paper_cells(
        "image_retrieval", models, DATASETS, root=DATA_ROOT, device=DEVICE, progress=False,
        load=lambda model: load_clip(MODEL_NAME, pretrained=model.pretrained, device=DEVICE))
    comparison = tables.table4_vs_reported(cells)
    measured = comparison.pivot_table(index=["temperature", "approach"], columns="dataset",
                                      values=["reported", "reproduced", "difference"], sort=False)
    display(measured.round(1))
    display(Markdown(f"Reported: {provenance_note(table4)}. Reproduced: {MODEL_NAME} with the checkpoints "
                     f"{FINETUNED_CHECKPOINTS} and the OTI settings of CLIP B/32; `Average` is over the datasets "
                     "run here."))

# %% [markdown]
# ## Closing the gap: the contrast
#
# The high-temperature model against the low-temperature reference, on the same test queries: differences of
# intra-modal mAP, OTI mAP and OTI gain, with a 95% interval across seeds and a paired bootstrap over queries.

# %%
if SOURCE == "lab":
    fixed = sorted((s for s in clip_settings if s.get("temperature") is not None), key=lambda s: s["temperature"])
    high = fixed[-1]["name"] if fixed else None
    low = (fixed[0]["name"] if len(fixed) > 1
           else next((s["name"] for s in clip_settings if s.get("temperature") is None), None))
    rows = [tables.between_row(lab.contrasts, high, low, key) for key in ("img_intra", "img_oti", "oti_gain")]
    if high is None or low is None or any(r is None for r in rows):
        between = None
        display(Markdown(f"This lab profile has no between-settings contrast of a high and a low temperature "
                         f"(settings: {names}; contrasts: {config.between})."))
    else:
        between = report.contrast_table(pd.DataFrame(rows)).set_index("metric")[
            ["contrast", "difference [95% CI over seeds]", "[95% bootstrap CI over queries]", "n_seeds", "n_pairs"]]
        between.index = ["intra-modal mAP", "OTI mAP", "OTI gain"]
        display(between)
        gaps = lab.tidy[lab.tidy.metric == "gap_centroid"]
        gap_diff = tables.welch_difference(gaps[gaps.setting == high]["value"], gaps[gaps.setting == low]["value"])
        display(Markdown(
            f"Comparison: `{high}` minus `{low}`. The centroid gap differs by "
            f"{report.ci_text(*gap_diff, scale=1, digits=3)} (Welch 95% CI over seeds)."))
elif SOURCE == "paper":
    avg = comparison[comparison.dataset == "Average"].set_index(["temperature", "approach"])[
        ["reported", "reproduced"]]
    gain = avg.xs("OTI-to-image", level="approach") - avg.xs("intra image-to-image", level="approach")
    display(gain[["reported", "reproduced"]].rename(columns=lambda c: f"OTI - intra, {c}").round(1))

# %% [markdown]
# ## Gap and gain, side by side
#
# Left: the centroid gap of each contrastive model (dots: training seeds). Middle: its OTI gain with the 95% interval
# over seeds. Right: the reported OTI gain per dataset of the two fine-tuned CLIPs.

# %%
reported_gain = deltas.T.drop(index="Average").rename(columns=lambda t: f"T = {t:g}")
fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
if SOURCE == "lab":
    colours = dict(zip(names, sns.color_palette("deep", len(names))))
    gaps = lab.tidy[(lab.tidy.metric == "gap_centroid") & lab.tidy.setting.isin(names)]
    summary = lab.summary.set_index(["setting", "metric"])
    ax = axes[0]
    means = [summary.loc[(n, "gap_centroid"), "mean"] for n in names]
    ax.bar(names, means, color=[colours[n] for n in names], alpha=0.8)
    for i, n in enumerate(names):
        values = gaps[gaps.setting == n]["value"]
        ax.scatter([i] * len(values), values, color="black", s=14, zorder=3)
    ax.set(ylabel="distance between image and text centroids", title="Laboratory: modality gap")
    ax = axes[1]
    gains = tables.contrast_rows(lab.contrasts, "OTI - intra (image)").loc[names]
    m = 100 * gains["mean_diff"]
    ax.bar(names, m, color=[colours[n] for n in names], alpha=0.8)
    ax.errorbar(range(len(names)), m, yerr=[m - 100 * gains["seed_ci_low"], 100 * gains["seed_ci_high"] - m],
                fmt="none", ecolor="black", capsize=5)
    ax.axhline(0, color="grey", lw=1)
    ax.set(ylabel="OTI - intra mAP (points), 95% CI over seeds", title="Laboratory: OTI gain")
    for ax in axes[:2]:
        ax.tick_params(axis="x", rotation=20)
else:
    repro = comparison[comparison.dataset != "Average"].pivot_table(
        index=["dataset"], columns=["temperature", "approach"], values="reproduced")
    for ax, temperature in zip(axes[:2], (1.0, 0.01)):
        if temperature in repro.columns.get_level_values(0):
            diff = repro[(temperature, "OTI-to-image")] - repro[(temperature, "intra image-to-image")]
            ax.bar(diff.index, diff.values, color="grey")
        ax.axhline(0, color="black", lw=1)
        ax.set(ylabel="OTI - intra mAP (points)", title=f"Reproduced: fine-tuned at T={temperature:g}")
ax = axes[2]
reported_gain.plot.bar(ax=ax, color=sns.color_palette("rocket", 2), alpha=0.85, rot=0)
ax.axhline(0, color="grey", lw=1)
ax.set(ylabel="OTI - intra mAP (points)", xlabel="", title="Reported: CLIP B/32 fine-tuned on COCO")
low_y, high_y = ax.get_ylim()
ax.set_ylim(low_y, high_y + 0.5 * (high_y - low_y))  # room for the legend
ax.legend(title="fine-tuning temperature", loc="upper left", ncol=2, fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Does the inversion gain grow with the gap?
#
# One point per trained model (every setting and seed of the laboratory): its centroid gap against its OTI gain, with
# a least-squares line. Points of one setting share a training recipe, so they are not independent, and the slope's
# interval, which treats them as if they were, is on the optimistic side. The right panel uses the other gap
# measure, the mean cosine between an image and its own caption (a *larger* cosine means a *smaller* gap).

# %%
if SOURCE == "lab":
    fits = {}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for ax, metric, xlabel in ((axes[0], "gap_centroid", "modality gap: centroid distance"),
                               (axes[1], "gap_matched_cos", "matched image-caption cosine (higher = smaller gap)")):
        points = tables.gain_vs_gap(lab.tidy, gap_metric=metric)
        sns.scatterplot(data=points.assign(gain=100 * points["gain"]), x="gap", y="gain", hue="setting", s=60,
                        ax=ax, palette="deep")
        fit = tables.fit_line(points["gap"], points["gain"], n_boot=config.n_boot)
        fits[metric] = fit
        xs = np.linspace(points["gap"].min(), points["gap"].max(), 50)
        ax.plot(xs, 100 * (fit["intercept"] + fit["slope"] * xs), color="black", lw=1.5,
                label=f"least-squares fit, slope {report.ci_text(fit['slope'], fit['slope_low'], fit['slope_high'])}"
                      " (95% CI)")
        ax.axhline(0, color="grey", lw=1)
        ax.set(xlabel=xlabel, ylabel="OTI - intra mAP (points)", title=f"OTI gain vs gap ({len(points)} models)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
elif SOURCE == "paper":
    fits = None
    display(Markdown("Only two fine-tuned models enter Table 4 in the paper profile, too few for a fit; the "
                     "gain-vs-gap fit across many trained models is drawn on the laboratory version of this page."))

# %% [markdown]
# ## What the measurements say
#
# Generated from the numbers above, each with its 95% interval.

# %%
if SOURCE == "lab":
    lines = []
    gains = tables.contrast_rows(lab.contrasts, "OTI - intra (image)")
    for setting in clip_settings:
        row = gains.loc[setting["name"]]
        lines.append("- " + tables.setting_sentence(setting, row, f"`{setting['name']}`: OTI - intra mAP"))
    if between is not None:
        gain_row = tables.between_row(lab.contrasts, high, low, "oti_gain")
        reported_change = float(deltas.loc[1.0, "Average"] - deltas.loc[0.01, "Average"])
        low_temperature = next(s.get("temperature") for s in clip_settings if s["name"] == low)
        reference = "" if low_temperature == 0.01 else f"; the paper's reference is T=0.01, this lab's is `{low}`"
        lines.append("- " + report.verdict(f"OTI gain of `{high}` minus that of `{low}`", gain_row["mean_diff"],
                                           gain_row["seed_ci_low"], gain_row["seed_ci_high"],
                                           interval="95% CI over seeds")
                     + " " + tables.agreement_sentence(
                         reported_change, gain_row["seed_ci_low"], gain_row["seed_ci_high"],
                         f"the T=1 gain minus the T=0.01 gain (5-dataset averages{reference})"))
        lines.append("- " + report.verdict(f"Centroid gap of `{high}` minus `{low}`", *gap_diff, scale=1, digits=3,
                                           unit="units of distance", interval="Welch 95% CI over seeds"))
    trends = {
        "gap_centroid": ("the OTI gain against the centroid gap", "mAP points per unit of centroid distance",
                         "the gain grows with the gap", "the gain shrinks as the gap grows"),
        "gap_matched_cos": ("the OTI gain against the matched cosine", "mAP points per unit of cosine",
                            "the gain grows as the gap shrinks", "the gain grows with the gap"),
    }
    for metric, (what, unit, up, down) in trends.items():
        fit = fits[metric]
        lines.append("- " + tables.trend_sentence(what, fit, unit=unit, up=up, down=down)
                     + f" Bootstrap over models: [{100 * fit['boot_low']:.1f}, {100 * fit['boot_high']:.1f}].")
    display(Markdown("\n".join(lines)))
    display(Markdown(
        "The paper's reading predicts a positive slope against the centroid distance and a negative one against "
        "the matched cosine."))
elif SOURCE == "paper":
    lines = [f"- T={t:g}: OTI - intra = {row['reproduced']:+.1f} mAP points averaged over {len(DATASETS)} datasets "
             f"(reported {row['reported']:+.1f})." for t, row in gain.iterrows()]
    display(Markdown("\n".join(lines)))
