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
# This page shows the reported averages, measures both differences on every model of the evidence with 95%
# intervals, and looks at how the inverted features place samples relative to the class prompts.

# %% tags=["parameters"]
SOURCE = "lab-embedded"
DEVICE = "cpu"
N_BOOT = 2000
MODEL = None  # the model of the margin histograms; None: the first CLIP-family model of the evidence

# %% tags=["hide-input"]
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets, on first import

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from crossgap_lib import claims, datasets, evaluation, prose, verdicts

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## The evidence
#
# Every number on this page comes from one stored evaluation of the source (text->text and OVI->text retrieval on
# the text datasets, image and OTI features against class prompts on the zero-shot datasets, per query and per
# image), computed by the first page of a build and read from the cache here.

# %%
evidence = evaluation.evaluate(SOURCE, device=DEVICE, progress=False)

# %% tags=["remove-input"]
# the purely textual sets (IMDB, 20 Newsgroups, NanoBEIR) are the appendix's, not Table 2's: they stay off this page
TEXTUAL = set(datasets.list_datasets("text")) - set(datasets.TEXT_RETRIEVAL_DATASETS)
TEXT_DATASETS = [d for d in evidence.datasets("text") if d not in TEXTUAL]
ZS_DATASETS = evidence.datasets("zero_shot")
SOURCE_NAME = evidence.source["name"]
FAMILY, TEMPERATURE = evidence.families, evidence.temperatures


def names(items) -> str:
    return ", ".join(f"`{x}`" for x in items) if len(items) else "none"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def seeds_text(model: str) -> str:
    seeds = evidence.seeds(model)
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


SOURCE_LINE = (f"source `{SOURCE_NAME}` ({evidence.source['resolved']['kind']}): {len(evidence.labels)} models "
               f"({names(evidence.labels)})")
display(Markdown(
    f"Evidence of {SOURCE_LINE}; text datasets {names(TEXT_DATASETS)}; zero-shot datasets {names(ZS_DATASETS)}. "
    + (f"Its purely textual sets ({names([d for d in evidence.datasets('text') if d in TEXTUAL])}) are on the "
       "[appendix page](appendix.html), not in Table 2's averages. "
       if set(evidence.datasets("text")) & TEXTUAL else "")
    + "Seeds per model: " + "; ".join(f"`{m}` {seeds_text(m)}" for m in evidence.labels) + "."))

# %% [markdown]
# ## What the paper reports
#
# Left: text-to-text retrieval mAP averaged over COCO, Flickr30k and NoCaps. Right: zero-shot top-1 accuracy averaged
# over 11 classification datasets, inter-modal (image vs class prompts) and intra-modal (OTI feature vs class
# prompts). SLIP is not part of this table. Only the averages were available, not the per-dataset cells.

# %%
reported_text, reported_zs = claims.reported_with_delta("text"), claims.reported_with_delta("zero_shot")
both = pd.concat({
    "text-to-text retrieval (mAP)": reported_text.set_index("model")[["baseline", "inversion", "difference"]].set_axis(
        ["intra-modal", "OVI-to-text", "OVI - intra"], axis=1),
    "zero-shot classification (top-1)": reported_zs.set_index("model")[["baseline", "inversion", "difference"]]
    .set_axis(["inter-modal", "OTI (intra-modal)", "OTI - inter"], axis=1),
}, axis=1)
display(both)
REPORTED_NOTE = claims.provenance_note(pd.concat([claims.reported("table2_text"), claims.reported("table2_zero_shot")]))
display(Markdown(f"Provenance: {REPORTED_NOTE}."))

# %% [markdown]
# ## How a measured difference is compared with the paper
#
# Every difference below is computed per query on the same queries (the same texts for intra-modal and OVI; the same
# test images for inter-modal and OTI) by `evidence.contrast`, over the page's datasets where the model has both
# methods. Its 95% interval follows the book's one rule (`crossgap_lib.stats.paired_effect`): a bootstrap over the
# training seeds, then over the queries within each seed. It is set beside the reported difference of the model's own
# row (a paper model) or of its analogue (the mean of the CLIP-family rows for a CLIP-like model); Table 2 has no row
# for SLIP-like, soft-target or fixed-temperature models. Per model, and before any correction for the number of
# comparisons, the `sign` column reads the measured interval: it **agrees** when it excludes zero on the side of the
# reported sign, **disagrees** when it excludes zero on the other side, and is **inconclusive** when it includes
# zero. This describes each model; the verdicts on the paper's two claims (one test across all the claims of the
# book, after each claim's manipulation checks, as on [Reported vs reproduced](reproduction)) end this page.

# %% tags=["remove-input"]
def contrast_view(task: str, gains: pd.DataFrame, means: pd.DataFrame, base: str, inv: str,
                  base_name: str, inv_name: str, diff_name: str) -> pd.DataFrame:
    """Per model: both methods (x100, mean over seeds and datasets), the difference with its CI, the reported one."""
    by_method = means.pivot_table(index="model", columns="method", values="value", sort=False)
    rows = []
    for model, row in gains.iterrows():
        effect = claims.reported_for(evidence, model, task)
        rows.append({
            "model": model, base_name: round(100 * by_method.loc[model, base], 1),
            inv_name: round(100 * by_method.loc[model, inv], 1),
            f"{diff_name} [95% CI]": prose.ci_text(row["mean"], row["low"], row["high"]), "interval": row["interval"],
            "compared with": effect["analogue"] if effect else "no reported analogue",
            f"reported {diff_name}": f"{effect['delta']:+.1f}" if effect else "-",
            "sign (per model, uncorrected)": (prose.agreement(effect["delta"], row["low"], row["high"])
                     if effect and not math.isnan(row["low"]) else "-")})
    table = pd.DataFrame(rows).set_index("model")
    table.index.name = None
    return table


def contrasts(task: str, a: str, b: str, over: list[str]) -> pd.DataFrame:
    """Per model: :meth:`Evidence.contrast` of ``a`` - ``b`` over those datasets of ``over`` where it has both."""
    rows = []
    for model in evidence.labels:
        have = [d for d in over if evidence.has(model, task, d, a) and evidence.has(model, task, d, b)]
        if have:
            rows.append({"model": model, **evidence.contrast(task, a, b, model, datasets=have, n_boot=N_BOOT)})
    return pd.DataFrame(rows).set_index("model")


def per_dataset_table(means: pd.DataFrame, base: str, inv: str, diff_name: str, datasets: list[str]) -> pd.DataFrame:
    """x100 per model and dataset: both methods and their difference (means over seeds)."""
    wide = means[means["method"].isin([base, inv])].pivot_table(
        index=["model", "method"], columns="dataset", values="value", sort=False)[datasets]
    diff = wide.xs(inv, level="method") - wide.xs(base, level="method")
    diff.index = pd.MultiIndex.from_product([diff.index, [diff_name]], names=["model", "method"])
    wide = pd.concat([wide, diff])
    wide = wide.loc[[(m, k) for m in evidence.labels for k in (base, inv, diff_name) if (m, k) in wide.index]]
    wide.columns.name = None
    return (100 * wide).round(1)


# %% [markdown]
# ## Text-to-text retrieval: intra-modal vs OVI
#
# The same text queries ranked against the same gallery of texts (relevant: texts with the query's label), once with
# their own text feature and once with their OVI feature. mAP x100, averaged over seeds and text datasets.

# %%
text_gains = contrasts("text", "ovi", "intra", TEXT_DATASETS)

# %% tags=["hide-input"]
text_means = evidence.means("text", "mAP").query("dataset in @TEXT_DATASETS")
display(contrast_view("text", text_gains, text_means, "intra", "ovi", "intra-modal mAP", "OVI-to-text mAP",
                      "OVI - intra"))
display(Markdown("Per text dataset (mAP x100, mean over seeds):"))
display(per_dataset_table(text_means, "intra", "ovi", "OVI - intra", TEXT_DATASETS))
ovi_cos = evidence.means("text", "cos to target").query("dataset in @TEXT_DATASETS")
display(Markdown(
    "How closely OVI matched its target text feature (mean cosine between the OVI feature and the query's text "
    "feature, over datasets and seeds): " + "; ".join(
        f"`{m}` {g['value'].mean():.3f}" for m, g in ovi_cos.groupby("model", sort=False)) + "."))

# %% [markdown]
# ### Every metric, per text dataset
#
# The full tables behind the mAP above, folded: for each text dataset of Table 2, every metric the evidence stores
# (x100, mean over seeds) for every model and method; `cos to target` is the OVI feature's mean cosine to its query's
# text feature (not scaled). Zero-shot classification stores top-1 accuracy only, shown per dataset below.

# %% tags=["hide-input", "hide-output"]
METRIC_ORDER = ["mAP", "mAP@R", "P@R", "R@1", "cos to target"]


def metric_tables(task: str, over: list[str]) -> dict[str, pd.DataFrame]:
    """Per dataset: every stored metric (columns, x100 but cosines, mean over seeds) per model and method (rows)."""
    cells = (evidence.values[evidence.values["task"] == task]
             .groupby(["dataset", "model", "method", "metric"], sort=False)["value"].mean())
    tables = {}
    for dataset in over:
        wide = cells.loc[dataset].unstack("metric")
        wide = wide[[m for m in METRIC_ORDER if m in wide.columns] + [m for m in wide.columns if m not in METRIC_ORDER]]
        wide = wide.loc[[(m, k) for m in evidence.labels for k in evidence.methods(task) if (m, k) in wide.index]]
        wide.columns.name = None
        shown = pd.DataFrame({c: [("–" if pd.isna(v) else f"{v:.3f}" if c == "cos to target" else f"{100 * v:.1f}")
                                  for v in wide[c]] for c in wide.columns}, index=wide.index)
        tables[dataset] = shown
    return tables


for dataset, table in metric_tables("text", TEXT_DATASETS).items():
    display(Markdown(f"**`{dataset}`**"))
    display(table)

# %% [markdown]
# ## Zero-shot classification: inter-modal vs OTI
#
# Each test image is classified by its most similar class prompt, once with its image feature (inter-modal, as CLIP
# is used) and once with its OTI feature (a text feature, so the comparison with the prompts becomes intra-modal).
# Top-1 accuracy x100, averaged over seeds and zero-shot datasets; the per-image difference is 1, 0 or -1.

# %%
zs_gains = contrasts("zero_shot", "oti", "inter", ZS_DATASETS)

# %% tags=["hide-input"]
zs_means = evidence.means("zero_shot", "top-1")
display(contrast_view("zero_shot", zs_gains, zs_means, "inter", "oti", "inter-modal top-1", "OTI top-1",
                      "OTI - inter"))
display(Markdown("Per zero-shot dataset (top-1 x100, mean over seeds):"))
display(per_dataset_table(zs_means, "inter", "oti", "OTI - inter", ZS_DATASETS))

# %% [markdown]
# ## Both differences at a glance
#
# Top: the measured differences (OVI minus intra-modal retrieval mAP, OTI minus inter-modal zero-shot accuracy) with
# their 95% intervals; dots are the individual seeds (or, with one seed, the individual datasets). Bottom: the
# reported differences per model. A positive bar means inversion helps.

# %% tags=["hide-input"]
palette = dict(zip(evidence.labels, sns.color_palette("deep", len(evidence.labels))))
fig, axes = plt.subplots(2, 2, figsize=(13, 8))
for ax, gains, ylabel, title in (
        (axes[0, 0], text_gains, "OVI - intra mAP (points)",
         f"Measured: text retrieval ({plural(len(TEXT_DATASETS), 'dataset')})"),
        (axes[0, 1], zs_gains, "OTI - inter top-1 (points)",
         f"Measured: zero-shot ({plural(len(ZS_DATASETS), 'dataset')})")):
    labels = list(gains.index)
    m = 100 * gains["mean"]
    ax.bar(range(len(labels)), m, color=[palette[x] for x in labels], alpha=0.85)
    ax.errorbar(range(len(labels)), m, yerr=[(m - 100 * gains["low"]).fillna(0), (100 * gains["high"] - m).fillna(0)],
                fmt="none", ecolor="black", capsize=5, lw=1.5)
    for i, (_, row) in enumerate(gains.iterrows()):
        dots = row["per_seed"] if row["n_seeds"] > 1 else row["per_dataset"]
        ax.scatter([i] * len(dots), [100 * v for v in dots], color="black", s=14, zorder=3, alpha=0.7)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=f"{title}\nsource {SOURCE_NAME}; 95% CI")
for ax, table, ylabel, title in (
        (axes[1, 0], reported_text, "OVI - intra mAP (points)", "Reported: text retrieval (3 datasets)"),
        (axes[1, 1], reported_zs, "OTI - inter top-1 (points)", "Reported: zero-shot (11 datasets)")):
    ax.bar(range(len(table)), table["difference"], color="grey", alpha=0.8)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(range(len(table)), table["model"], rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=title)
fig.tight_layout()
plt.show()
intervals = sorted(set(text_gains["interval"]) | set(zs_gains["interval"]))
display(Markdown(
    f"Top: {SOURCE_LINE}; text datasets {names(TEXT_DATASETS)}, zero-shot datasets {names(ZS_DATASETS)}; "
    f"intervals: {', '.join(intervals)}. Bottom: {REPORTED_NOTE}, "
    f"models {names(reported_text['model'])}."))

# %% [markdown]
# ## Where the inverted features put the samples
#
# For classification against class prompts, what matters is the *margin*: the similarity to the correct class
# prompt minus the highest similarity to any other prompt (positive means correctly classified). The histograms
# compare the margins of the image features with those of their OTI features on the same images. They use the
# features the evidence keeps for figures: the first seed of the model, on the first image-retrieval dataset (its
# query images against one prompt per class), which need not be one of the zero-shot datasets above.

# %% tags=["hide-input"]
def zero_shot_margins(prompts: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cosine to the true class prompt minus the best cosine to any other prompt, per sample."""
    scores = torch.nn.functional.normalize(features.float(), dim=-1) @ torch.nn.functional.normalize(
        prompts.float(), dim=-1).T
    labels = torch.as_tensor(labels).long()
    true = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], float("-inf")).max(1).values
    return true - others


model = MODEL if MODEL is not None else (claims.pick(evidence, "clip") or evidence.labels[0])
features = evidence.features.get(model, {})
if features.get("prompt") is None:
    display(Markdown(f"The stored features of `{model}` have no class prompts (dataset "
                     f"`{features.get('dataset', 'none')}` has no class names), so no margins can be drawn."))
else:
    margins = pd.DataFrame({
        "image (inter-modal)": zero_shot_margins(features["prompt"], features["image"], features["labels"]).numpy(),
        "OTI feature (intra-modal)": zero_shot_margins(features["prompt"], features["oti"],
                                                       features["labels"]).numpy()})
    fig, ax = plt.subplots(figsize=(8.5, 4))
    sns.histplot(margins.melt(var_name="query feature", value_name="margin"), x="margin", hue="query feature",
                 bins=30, element="step", stat="density", common_norm=False, ax=ax)
    ax.axvline(0, color="black", lw=1)
    ax.set(xlabel="cosine to the true class prompt - best other class prompt", ylabel="density",
           title=f"Margins against class prompts: '{model}', seed {evidence.seeds(model)[0]}, "
                 f"dataset {features['dataset']}")
    plt.show()
    positive, median, spread = (margins > 0).mean(), margins.median(), margins.std()
    display(Markdown(
        f"`{model}` (seed {evidence.seeds(model)[0]}), the {len(margins)} query images of `{features['dataset']}` "
        f"against {features['prompt'].shape[0]} class prompts, {SOURCE_LINE}. Share with a positive margin "
        f"(correctly classified): {100 * positive.iloc[0]:.1f}% with the image feature and "
        f"{100 * positive.iloc[1]:.1f}% with the OTI feature (chance: {100 / features['prompt'].shape[0]:.1f}%). "
        f"Median margin {median.iloc[0]:+.3f} vs {median.iloc[1]:+.3f}; standard deviation {spread.iloc[0]:.3f} vs "
        f"{spread.iloc[1]:.3f}."))

# %% [markdown]
# ## What the measurements say
#
# Generated from the contrasts above: each difference with its 95% interval, whether the interval excludes zero,
# and, where the paper has a row or an analogue for the model, whether the sign agrees.

# %% tags=["remove-input"]
lines = []
for task, gains, what in (("text", text_gains, "text retrieval, OVI - intra mAP"),
                          ("zero_shot", zs_gains, "zero-shot, OTI - inter top-1")):
    for model, row in gains.iterrows():
        lines.append("- " + claims.model_sentence(evidence, model, row.to_dict(), what, task))
judgement = verdicts.judge(evidence, n_boot=N_BOOT)  # the claims' verdicts, as the reproduction page decides them
display(Markdown("\n".join(lines) + "\n\n" + judgement.note("ovi_text") + "\n\n" + judgement.note("zero_shot")))
