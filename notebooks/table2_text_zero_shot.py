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
# # Text retrieval with OVI, and zero-shot classification with OTI (Table 2)
#
# Table 2 of the paper tests the misalignment hypothesis from both sides. On the left, a *text* query looks for
# texts about the same thing: the intra-modal baseline compares text features directly, while OVI (visual inversion)
# first optimises an image-encoder input whose feature matches the query text and then compares that *image* feature
# with the gallery texts, an inter-modal comparison. The paper reports that OVI helps on COCO, Flickr30k and NoCaps.
# On the right, the converse: zero-shot classification is natively inter-modal (an image against class prompts), and
# approaching it intra-modally, by first inverting the image into a text feature with OTI, is reported to *hurt*.
#
# This page shows the reported averages, measures both differences on the same footing with confidence intervals,
# and looks at how the inverted features place samples relative to the class prompts.

# %% tags=["parameters"]
PROFILE = "embedded"
SOURCE = "lab"
LAB_PRESET = "embedded"
LAB_OVERRIDES = {}
DEVICE = "cpu"
MODELS = ["CLIP B/32", "CLIP L/14", "OpenCLIP B/32", "OpenCLIP L/14", "SigLIP B/16"]
TEXT_DATASETS = ["coco", "flickr30k", "nocaps"]
ZERO_SHOT_DATASETS = ["caltech101", "dtd", "eurosat", "fgvc_aircraft", "food101", "imagenet", "flowers102",
                      "oxford_pets", "stanford_cars", "sun397", "ucf101"]
DATA_ROOT = None

# %% tags=["hide-input"]
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets, on first import

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from crossgap_lib import experiments, report, tables
from crossgap_lib.lab import LabConfig, run_lab
from crossgap_lib.reported import provenance_note, reported

sns.set_theme(style="whitegrid", context="notebook")
config = LabConfig.from_dict({**getattr(LabConfig, LAB_PRESET)().to_dict(), **LAB_OVERRIDES})

# %% [markdown]
# ## What the paper reports
#
# Left: text-to-text retrieval mAP averaged over COCO, Flickr30k and NoCaps. Right: zero-shot top-1 accuracy averaged
# over 11 classification datasets, inter-modal (image vs class prompts) and intra-modal (OTI feature vs class
# prompts). SLIP is not part of this table.

# %%
reported_text = tables.reported_with_delta("table2_text", "intra_text_to_text_mAP", "ovi_to_text_mAP")
reported_zs = tables.reported_with_delta("table2_zero_shot", "inter_zero_shot_top1", "oti_intra_top1")
both = pd.concat({
    "text-to-text retrieval (mAP)": reported_text.set_index("model")[
        ["intra_text_to_text_mAP", "ovi_to_text_mAP", "difference"]].set_axis(
        ["intra-modal", "OVI-to-text", "OVI - intra"], axis=1),
    "zero-shot classification (top-1)": reported_zs.set_index("model")[
        ["inter_zero_shot_top1", "oti_intra_top1", "difference"]].set_axis(
        ["inter-modal", "OTI (intra-modal)", "OTI - inter"], axis=1),
}, axis=1)
display(both)
display(Markdown(f"Provenance: {provenance_note(reported('table2_text'))}; averages only, per-dataset cells were not "
                 "available."))

# %% [markdown]
# ## Text-to-text retrieval: intra-modal vs OVI
#
# The same text queries ranked against the same gallery of texts, once with their own feature and once with the OVI
# feature. Intervals are 95% intervals across training seeds and, for the laboratory, a paired bootstrap over queries.

# %%
if SOURCE == "lab":
    lab = run_lab(config, progress=False)
    settings = config.settings
    text_gains = tables.contrast_rows(lab.contrasts, "OVI - intra (text)")
    text_table = lab.table(metrics_shown=["txt_intra_ovi_queries_mAP", "txt_ovi_mAP"]).rename(columns={
        "txt_intra_ovi_queries_mAP": "intra-modal mAP", "txt_ovi_mAP": "OVI-to-text mAP"})
    text_table.columns.name = None
    text_table = text_table.join(tables.lab_vs_reported(lab.contrasts, settings, "OVI - intra (text)", task="text"))
    display(text_table)
    n_ovi = int(text_gains["n_pairs"].iloc[0] // text_gains["n_seeds"].iloc[0])
    display(Markdown(
        f"Laboratory: `{config.model}`, seeds {config.seeds}. Queries: the first caption of {n_ovi} held-out test "
        f"images (OVI, {config.ovi_steps} steps, {config.ovi_num_pseudo_tokens} visual pseudo-token(s)); gallery: one "
        f"caption of each of {config.n_gallery} training images; relevant: captions of the same class. Only the "
        "learnable-temperature contrastive setting has a paper analogue here (the mean of the five models above). "
        "The tiny models and generated captions differ from the paper's, so only the *sign* of the difference is "
        "comparable."))
elif SOURCE == "paper":
    models = experiments.paper_models(MODELS)
    text_cells = tables.paper_cells("text_retrieval", models, TEXT_DATASETS, root=DATA_ROOT, device=DEVICE,
                                    progress=False)
    per_dataset = tables.per_dataset_difference(text_cells, "ovi", "intra", "OVI - intra")
    display(per_dataset.round(1))
    text_table = tables.paper_average_vs_reported(
        text_cells, "table2_text", {"intra": "intra_text_to_text_mAP", "ovi": "ovi_to_text_mAP"}, expected_datasets=3)
    display(text_table.round(1))

# %% [markdown]
# ## Zero-shot classification: inter-modal vs OTI
#
# Each test image is classified by its most similar class prompt ("a photo of a {class}."), once with its image
# feature (inter-modal, as CLIP is used) and once with its OTI feature (a text feature, so the comparison with the
# prompts becomes intra-modal).

# %%
if SOURCE == "lab":
    zs = tables.lab_zero_shot(lab)
    zs_table = pd.DataFrame({
        "inter-modal, all seeds [95% CI]": [report.ci_text(r["inter (all seeds)"], r["inter_ci_low"],
                                                           r["inter_ci_high"], signed=False) for _, r in zs.iterrows()],
        "inter-modal, first seed": (100 * zs["inter (first seed)"]).round(1),
        "OTI, first seed": (100 * zs["OTI (first seed)"]).round(1),
        "OTI - inter [95% bootstrap CI over images]": [report.ci_text(r["diff"], r["ci_low"], r["ci_high"])
                                                       for _, r in zs.iterrows()],
        "paper analogue": zs["analogue"],
        "reported difference": [f"{d:+.1f}" if pd.notna(d) else "-" for d in zs["reported_delta"]],
        "sign agreement": [report.agreement(r["reported_delta"], r["ci_low"], r["ci_high"])
                           if pd.notna(r["reported_delta"]) else "no paper analogue"
                           for _, r in zs.iterrows()],
    }, index=zs.index)
    display(zs_table)
    display(Markdown(
        f"The laboratory keeps OTI features for the first training seed only (seed {config.seeds[0]}), so the OTI "
        f"comparison is made on that seed's model, with a paired bootstrap over its {int(zs['n_images'].iloc[0])} "
        f"test images ({config.oti_steps} OTI steps). The interval covers the choice of test images, not the "
        "training seed. Chance level is "
        f"{100 / len(lab.features[settings[0]['name']]['prompt']):.1f}%."))
elif SOURCE == "paper":
    zs_cells = tables.paper_cells("zero_shot", models, ZERO_SHOT_DATASETS, root=DATA_ROOT, device=DEVICE,
                                  progress=False)
    per_dataset = tables.per_dataset_difference(zs_cells, "oti_intra", "inter", "OTI - inter")
    display(per_dataset.round(1))
    zs_table = tables.paper_average_vs_reported(
        zs_cells, "table2_zero_shot", {"inter": "inter_zero_shot_top1", "oti_intra": "oti_intra_top1"},
        expected_datasets=11)
    display(zs_table.round(1))

# %% [markdown]
# ## Both differences at a glance
#
# Top: the measured differences (OVI minus intra-modal retrieval mAP, OTI minus inter-modal zero-shot accuracy) with
# their 95% intervals. Bottom: the reported differences per model. A positive bar means inversion helps.

# %%
palette = sns.color_palette("deep", 10)
fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
if SOURCE == "lab":
    panels = [
        (axes[0, 0], list(text_gains.index), 100 * text_gains["mean_diff"], 100 * text_gains["seed_ci_low"],
         100 * text_gains["seed_ci_high"], "OVI - intra mAP (points)", "Text retrieval: 95% CI over seeds"),
        (axes[0, 1], list(zs.index), 100 * zs["diff"], 100 * zs["ci_low"], 100 * zs["ci_high"],
         "OTI - inter top-1 (points)", "Zero-shot: 95% bootstrap CI over images"),
    ]
    suptitle = f"Laboratory ({config.model}, generated shapes and captions)"
else:
    text_delta = text_table["ovi reproduced"] - text_table["intra reproduced"]
    zs_delta = zs_table["oti_intra reproduced"] - zs_table["inter reproduced"]
    panels = [
        (axes[0, 0], list(text_delta.index), text_delta, None, None, "OVI - intra mAP (points)",
         "Text retrieval: average over datasets"),
        (axes[0, 1], list(zs_delta.index), zs_delta, None, None, "OTI - inter top-1 (points)",
         "Zero-shot: average over datasets"),
    ]
    suptitle = "Reproduced with the paper's models"
for ax, names, means, lows, highs, ylabel, title in panels:
    colours = [palette[i % len(palette)] for i in range(len(names))]
    ax.bar(range(len(names)), means, color=colours, alpha=0.85)
    if lows is not None:
        ax.errorbar(range(len(names)), means, yerr=[means - lows, highs - means], fmt="none", ecolor="black",
                    capsize=5, lw=1.5)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=f"{suptitle}\n{title}")
for ax, table, ylabel, title in (
        (axes[1, 0], reported_text, "OVI - intra mAP (points)", "Reported: text retrieval (3 datasets)"),
        (axes[1, 1], reported_zs, "OTI - inter top-1 (points)", "Reported: zero-shot (11 datasets)")):
    ax.bar(range(len(table)), table["difference"], color="grey", alpha=0.8)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(range(len(table)), table["model"], rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=title)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Where the inverted features put the samples
#
# For zero-shot classification, what matters is the *margin*: the similarity to the correct class prompt minus the
# highest similarity to any other prompt (positive means correctly classified). The histograms compare the margins of
# the image features with those of their OTI features on the same test images, for the learnable-temperature
# contrastive model.

# %%
if SOURCE == "lab":
    name = next((s["name"] for s in settings if s["loss"] == "clip" and s.get("temperature") is None),
                settings[0]["name"])
    f = lab.features[name]
    margins = pd.DataFrame({
        "image (inter-modal)": tables.zero_shot_margins(f["prompt"], f["image"], f["labels"]).numpy(),
        "OTI feature (intra-modal)": tables.zero_shot_margins(f["prompt"], f["oti"], f["labels"]).numpy(),
    })
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.histplot(margins.melt(var_name="query feature", value_name="margin"), x="margin", hue="query feature",
                 bins=30, element="step", stat="density", common_norm=False, ax=ax)
    ax.axvline(0, color="black", lw=1)
    ax.set(xlabel="cosine to the true class prompt - best other class prompt",
           title=f"Zero-shot margins, '{name}' model, seed {config.seeds[0]}")
    plt.show()
    frac = (margins > 0).mean()
    spread = margins.std()
    display(Markdown(
        f"Share of test images with a positive margin: {100 * frac.iloc[0]:.1f}% with the image feature and "
        f"{100 * frac.iloc[1]:.1f}% with the OTI feature (the zero-shot accuracies). Median margin: "
        f"{margins.iloc[:, 0].median():+.3f} vs {margins.iloc[:, 1].median():+.3f}; standard deviation "
        f"{spread.iloc[0]:.3f} vs {spread.iloc[1]:.3f}."))
elif SOURCE == "paper":
    display(Markdown("The margin histograms need the per-image features, which this page does not keep for the "
                     "paper's models; the averages above are the paper-profile result."))

# %% [markdown]
# ## What the measurements say
#
# Generated from the numbers above, each with its 95% interval.

# %%
if SOURCE == "lab":
    lines = []
    for setting in settings:
        name = setting["name"]
        label = f"`{name}`, text retrieval, OVI - intra mAP"
        lines.append("- " + tables.setting_sentence(setting, text_gains.loc[name], label, task="text"))
    for name, row in zs.iterrows():
        sentence = report.verdict(f"`{name}`, zero-shot, OTI - inter top-1", row["diff"], row["ci_low"],
                                  row["ci_high"], interval="95% bootstrap CI over the first seed's test images")
        if pd.notna(row["reported_delta"]):
            sentence += " " + tables.agreement_sentence(row["reported_delta"], row["ci_low"], row["ci_high"],
                                                        f"its analogue ({row['analogue']})")
        lines.append("- " + sentence)
    display(Markdown("\n".join(lines)))
elif SOURCE == "paper":
    lines = [f"- {m}: OVI - intra = {r['ovi reproduced'] - r['intra reproduced']:+.1f} mAP points averaged over "
             f"{int(r['n datasets'])} text datasets (reported {r['ovi reported'] - r['intra reported']:+.1f})."
             for m, r in text_table.iterrows()]
    lines += [f"- {m}: OTI - inter = {r['oti_intra reproduced'] - r['inter reproduced']:+.1f} top-1 points averaged "
              f"over {int(r['n datasets'])} datasets (reported {r['oti_intra reported'] - r['inter reported']:+.1f})."
              for m, r in zs_table.iterrows()]
    display(Markdown("\n".join(lines)))
