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
# # Intra-modal misalignment, seen in the features
#
# The paper's Figure 1 argues from CLIP's training objective. The contrastive loss pulls each image towards its own
# caption and pushes it away from the other captions in the batch. It never compares two images with each other. So
# the image-to-text geometry is shaped by training, while the image-to-image geometry is whatever is left over. Two
# images of different classes may end up closer than two images of the same class, even when each lies next to its
# own caption. Figure A1 of the paper shows this for CLIP on pets: dog-dog and dog-cat image similarities overlap
# heavily. The paper's remedy is to compare an image with the other images through the text side (OTI).
#
# This page draws both figures from real features rather than a sketch. It looks at where the two modalities lie
# (the modality gap) and at how well each kind of similarity separates same-class from different-class pairs:
# image-image, image-text, class prompt-image and OTI-image. The last part compares these measures across the
# models of the evidence.

# %% tags=["parameters"]
SOURCE = "lab-embedded"
DEVICE = "cpu"
MODEL = None  # None: the first CLIP-family model (learnt temperature) of the evidence
N_CLASSES_SHOWN = 5
N_BOOT = 2000

# %% tags=["hide-input"]
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets, on first import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator
from myst_nb import glue

from crossgap_lib import claims, dynamics, evaluation, prose, stats

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## The features
#
# The evidence keeps, for each model (its first seed) on the first image-retrieval dataset of the source: the query
# images with their labels, the gallery images, a text per gallery image (its caption in the laboratory, its class
# prompt on the paper's datasets), one class prompt per class, and the OTI feature of each query. Everything below is
# computed from these stored features: no model is loaded on this page.

# %%
evidence = evaluation.evaluate(SOURCE, device=DEVICE, progress=False)
main = MODEL or claims.pick(evidence, "clip") or evidence.labels[0]
S = evidence.features[main]

# %% tags=["remove-input"]
SOURCE_NAME = evidence.source["name"]
SOURCE_LINE = f"source `{SOURCE_NAME}` ({evidence.source['resolved']['kind']})"
TEXT_KIND = S["text_kind"]


def class_name(c: int) -> str:
    return f"class {c}"


def paired_text(F_: dict) -> bool:
    """Whether the stored gallery texts pair one-to-one with the gallery images (else they are a text vocabulary)."""
    return F_["gallery_text"] is not None and F_["gallery_text"].shape[0] == F_["gallery"].shape[0]


ORIGIN = (f"`{main}` (seed {evidence.seeds(main)[0]}) on `{S['dataset']}`, {SOURCE_LINE}: "
          f"{S['image'].shape[0]} query images, {S['gallery'].shape[0]} gallery images"
          + (" (each query left out of its own ranking)" if S["exclude_self"] else "")
          + f", {len(torch.unique(S['labels']))} classes among the queries")
display(Markdown(f"Features of {ORIGIN}; texts: {TEXT_KIND}s."))

# %% [markdown]
# ## Figure 1: two modalities, two geometries
#
# Left: one PCA fitted jointly on the gallery images and their texts for a few classes that lie close together
# (circles: images; triangles: texts; colour: class). Middle: for each query image, the probability that a gallery
# item of its own class is more similar to it than a gallery item of another class (a per-query ROC AUC; 0.5 means
# the similarity carries no class information). Right: the cosine similarities behind it.

# %%
TEXT_KEY = f"image → {TEXT_KIND}s"
EXCL = S["exclude_self"]
auc = {"image → images": dynamics.per_query_auc(S["image"], S["labels"], S["gallery"], S["gallery_labels"],
                                                exclude_self=EXCL)}
if paired_text(S):
    auc[TEXT_KEY] = dynamics.per_query_auc(S["image"], S["labels"], S["gallery_text"], S["gallery_labels"],
                                           exclude_self=EXCL)
auc["OTI → images"] = dynamics.per_query_auc(S["oti"], S["labels"], S["gallery"], S["gallery_labels"],
                                             exclude_self=EXCL)

# %% tags=["hide-input"]
n_shown = min(N_CLASSES_SHOWN, len(torch.unique(S["gallery_labels"])))
shown, _ = dynamics.closest_classes(S["gallery"], S["gallery_labels"], n=n_shown)
mask = torch.isin(S["gallery_labels"], torch.tensor(shown))
joint = {"image": S["gallery"][mask]}
if paired_text(S):
    joint["text"] = S["gallery_text"][mask]
points, explained = dynamics.joint_pca(joint)
shown_labels = S["gallery_labels"][mask].numpy()
pairs = {"image-image": dynamics.class_similarities(S["image"], S["labels"], S["gallery"], S["gallery_labels"],
                                                    exclude_self=EXCL)}
if paired_text(S):
    pairs[f"image-{TEXT_KIND}"] = dynamics.class_similarities(S["image"], S["labels"], S["gallery_text"],
                                                              S["gallery_labels"], exclude_self=EXCL)

fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.15, 0.8, 1.2]})
palette = dict(zip(shown, sns.color_palette("tab10", len(shown))))
for c in shown:
    rows = shown_labels == c
    axes[0].scatter(*points["image"][rows].T, color=palette[c], marker="o", s=22, alpha=0.75, label=class_name(c))
    if "text" in points:
        axes[0].scatter(*points["text"][rows].T, color=palette[c], marker="^", s=40, alpha=0.9, edgecolor="black",
                        linewidth=0.4)
axes[0].scatter([], [], color="grey", marker="o", label="image")
if "text" in points:
    axes[0].scatter([], [], color="grey", marker="^", edgecolor="black", linewidth=0.4, label=TEXT_KIND)
axes[0].set(xlabel=f"PC1 ({100 * explained[0]:.0f}% of variance)", ylabel=f"PC2 ({100 * explained[1]:.0f}%)",
            title="Images and texts of close classes (joint PCA)")
axes[0].legend(fontsize=7, loc="best", ncol=2)

cis = [stats.seed_ci(v[~v.isnan()].tolist()) for v in auc.values()]
axes[1].bar(list(auc), [m for m, _, _ in cis], color=sns.color_palette("Set2", len(auc)),
            yerr=np.array([[m - lo, hi - m] for m, lo, hi in cis]).T, capsize=4)
axes[1].axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance (0.5)")
low_end = min(0.4, min(lo for _, lo, _ in cis) - 0.05)
axes[1].set(ylim=(low_end, 1.0), ylabel="P(same class ranked above other class)",
            title="Class information per query\n(mean, 95% t-interval over queries)")
axes[1].tick_params(axis="x", labelrotation=15)
axes[1].legend(fontsize=8, loc="upper left")

colors = dict(zip(pairs, ("tab:blue", "tab:orange")))
for name, p in pairs.items():
    sns.kdeplot(p["same"].numpy(), ax=axes[2], color=colors[name], fill=True, alpha=0.25, linewidth=1.5, cut=0,
                warn_singular=False, label=f"{name}, same class")
    sns.kdeplot(p["different"].numpy(), ax=axes[2], color=colors[name], linestyle="--", linewidth=1.5, cut=0,
                warn_singular=False, label=f"{name}, different class")
axes[2].set(xlabel="cosine similarity (query → gallery)", ylabel="density", title="Similarity distributions")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()
display(Markdown(
    f"Figure: features of {ORIGIN}. Left: gallery items of the {n_shown} closest classes "
    f"({', '.join(class_name(c) for c in shown)}); middle and right: every query against the whole gallery."
    + ("" if paired_text(S) else f" The stored {TEXT_KIND}s do not pair with the gallery images, so no text is "
       "shown.")))

# %% [markdown]
# The test, stated before the numbers: the paper's account predicts that image-image similarity carries less class
# information than image-text similarity (the first bar lower than the second) and that OTI, which reaches the images
# through the text side, recovers some of it (the third bar above the first). Each difference is the mean per-query
# AUC difference on the same queries with a 95% paired bootstrap interval over queries; an interval above zero
# agrees with the paper, below zero contradicts it, and one that includes zero cannot tell.

# %%
def auc_effect(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Per-query AUC a - b on the same queries: one seed, one dataset, so a paired bootstrap over queries."""
    return stats.paired_effect([[a]], [[b]], n_boot=N_BOOT)


effects = {name: auc_effect(auc[name], auc["image → images"]) for name in auc if name != "image → images"}

# %% tags=["hide-input"]
gap_rows = evidence.model_values("gap centroid distance")
gap_values = gap_rows[gap_rows["model"] == main]["value"].tolist()
gap_mean, gap_low, gap_high = stats.seed_ci(gap_values)
gap_ci = (prose.ci_text(gap_mean, gap_low, gap_high, scale=1, digits=3, signed=False) +
          (f" (mean [95% CI] over {len(gap_values)} seeds)" if len(gap_values) > 1 else " (one seed)"))
glue("fig1_gap", gap_mean, display=False)
glue("fig1_pc1_variance", 100 * float(explained[0]), display=False)
pca_text = ""
if "text" in points:
    pc1_image, pc1_text = points["image"][:, 0].mean(), points["text"][:, 0].mean()
    pca_text = (f" In the joint PCA, the mean first coordinate is {pc1_image:+.2f} for images and {pc1_text:+.2f} "
                f"for {TEXT_KIND}s, against a spread (standard deviation) of the images of "
                f"{points['image'][:, 0].std():.2f} along it.")
display(Markdown(
    f"The centroid distance between images and {TEXT_KIND}s of `{main}` is {gap_ci}; 0 would mean no gap."
    + pca_text + "\n\n"
    + "\n\n".join(prose.effect_sentence(f"Per-query AUC, {name} minus image → images", effect, unit="AUC points")
                  for name, effect in effects.items())
))

# %% [markdown]
# The first principal component of the joint features explains {glue:text}`fig1_pc1_variance:.0f`% of their
# variance. A gap between the modalities shows as the two marker shapes forming separate clouds along it.

# %% [markdown]
# ## Figure A1: same-class and different-class image pairs overlap
#
# The paper's Figure A1 plots CLIP's cosine similarity of dog-dog pairs and of dog-cat pairs. Here the two classes
# are the pair whose mean image features are closest (the first plays the dog, the second the cat). The three
# panels on the right pool all classes and compare how well three kinds of similarity separate same-class from
# different-class pairs, each from the query side to the gallery images: image-image, class prompt-image and
# OTI-image.

# %% tags=["hide-input"]
def query_kinds(F_: dict) -> dict:
    """The query sides compared with the gallery images: (features, labels, exclude_self) per kind."""
    kinds = {"image → image": (F_["image"], F_["labels"], F_["exclude_self"])}
    if F_.get("prompt") is not None:
        kinds["class prompt → image"] = (F_["prompt"], torch.arange(F_["prompt"].shape[0]), False)
    kinds["OTI → image"] = (F_["oti"], F_["labels"], F_["exclude_self"])
    return kinds


(a, b), _ = dynamics.closest_classes(S["image"], S["labels"], n=2)
in_ab = torch.isin(S["gallery_labels"], torch.tensor([a, b]))
dog = dynamics.class_similarities(S["image"][S["labels"] == a], S["labels"][S["labels"] == a],
                                  S["gallery"][in_ab], S["gallery_labels"][in_ab])
ab = dynamics.cross_class_overlap(S["image"][S["labels"] == a], S["labels"][S["labels"] == a], S["gallery"][in_ab],
                                  S["gallery_labels"][in_ab])
overlaps, dists = {}, {}
for name, (q, ql, excl) in query_kinds(S).items():
    overlaps[name] = dynamics.cross_class_overlap(q, ql, S["gallery"], S["gallery_labels"], exclude_self=excl)
    dists[name] = dynamics.class_similarities(q, ql, S["gallery"], S["gallery_labels"], exclude_self=excl)

panels = {f"{class_name(a)} vs {class_name(b)} (image → image)": (dog, ab, f"{class_name(a)} - {class_name(a)}",
                                                                 f"{class_name(a)} - {class_name(b)}")}
panels.update({name: (dists[name], overlaps[name], "same class", "different class") for name in dists})
fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4))
for ax, (title, (d, o, same_label, diff_label)) in zip(axes, panels.items()):
    values = torch.cat([d["same"], d["different"]]).numpy()
    bins = np.linspace(values.min(), values.max(), 31)
    ax.hist(d["same"].numpy(), bins=bins, density=True, alpha=0.55, color="tab:green", label=same_label)
    ax.hist(d["different"].numpy(), bins=bins, density=True, alpha=0.55, color="tab:red", label=diff_label)
    ax.set(title=f"{title}\nAUC {o['auc']:.2f}, overlap {o['overlap']:.2f}", xlabel="cosine similarity")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.legend(fontsize=8)
axes[0].set_ylabel("density")
fig.tight_layout()
plt.show()
display(Markdown(
    f"Figure: {ORIGIN}. Left: queries of {class_name(a)} against gallery images of {class_name(a)} and of its "
    f"closest class {class_name(b)}; other panels: all query-gallery pairs."
    + ("" if "class prompt → image" in dists else " No class prompts are stored for this dataset (no class names), "
       "so the prompt panel is left out.")))

# %% tags=["hide-input"]
glue("fig1_ab_overlap", 100 * ab["overlap"], display=False)
ranked = sorted(overlaps, key=lambda k: overlaps[k]["auc"], reverse=True)
display(Markdown(
    f"For the two closest classes ({class_name(a)} and {class_name(b)}), {100 * ab['overlap']:.0f}% of the "
    f"same-class and different-class image-image histograms overlap, and a random {class_name(a)} - "
    f"{class_name(a)} pair is more similar than a random {class_name(a)} - {class_name(b)} pair with probability "
    f"{ab['auc']:.2f}. Pooled over all classes, the AUCs rank "
    + ", ".join(f"{k} ({overlaps[k]['auc']:.3f})" for k in ranked) + " (highest first)."
))

# %% [markdown]
# The overlap coefficient is the shared area of the two normalised histograms (1: identical, 0: disjoint), the AUC
# the probability that a same-class pair is more similar than a different-class pair (0.5: no class information).
# Both pool the pairs of all queries, so they also compare the similarities of one query with those of another. The
# per-query AUC of Figure 1 and of the table below ranks each query's own gallery, as retrieval does; the two can
# order the kinds of similarity differently, and the confidence intervals come from the per-query version.

# %% [markdown]
# ## Across models
#
# The same measures for every model of the evidence (its first seed), from the query side to the gallery images.
# The test is the one above: a per-query AUC of OTI (or of the class prompt) above that of the image itself, with a
# 95% bootstrap interval over queries that excludes zero, agrees with the paper's account. In its temperature-1
# experiment (a model trained at T = 1, Table 4) the paper expects the OTI difference to vanish, and for SLIP-like
# models (an image-image term in training) to shrink.

# %%
rows, per_model = [], {}
for model in evidence.labels:
    F_ = evidence.features[model]
    row = {"model": model, "family": evidence.family(model)}
    per_query = {}
    for kind, (q, ql, excl) in query_kinds(F_).items():
        short = kind.split(" → ")[0]
        pooled = dynamics.cross_class_overlap(q, ql, F_["gallery"], F_["gallery_labels"], exclude_self=excl)
        row[f"{short} AUC (pooled)"], row[f"{short} overlap"] = pooled["auc"], pooled["overlap"]
        per_query_q = F_["prompt"][F_["labels"]] if short == "class prompt" else q  # one prompt per query
        per_query[short] = dynamics.per_query_auc(per_query_q, F_["labels"], F_["gallery"], F_["gallery_labels"],
                                                  exclude_self=F_["exclude_self"])
    per_model[model] = per_query
    for kind in [k for k in per_query if k != "image"]:
        effect = auc_effect(per_query[kind], per_query["image"])
        row[f"{kind} - image, per-query AUC points [95% CI]"] = prose.ci_text(effect["mean"], effect["low"],
                                                                             effect["high"])
        row[f"{kind} - image"] = {"up": "higher", "down": "lower", "none": "no detectable difference"}[
            prose.direction(effect["mean"], effect["low"], effect["high"])]
        row[f"{kind} - image vs the paper's account (higher)"] = prose.agreement(1.0, effect["low"], effect["high"])
        row[f"_{kind}"] = effect
    rows.append(row)
models_table = pd.DataFrame(rows).set_index("model")
models_table.index.name = None
shown_cols = [c for c in models_table.columns if not c.startswith("_")]
display(models_table[shown_cols].style.format(precision=3, na_rep="–"))
display(Markdown(f"Table: per model of {SOURCE_LINE}, first seed, on `{S['dataset']}`."))

# %% tags=["hide-input"]
kinds_all = list(dict.fromkeys(k for pq in per_model.values() for k in pq))
fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(per_model) + 2), 4))
width = 0.8 / len(kinds_all)
kind_colors = dict(zip(kinds_all, sns.color_palette("Set2", len(kinds_all))))
for k, kind in enumerate(kinds_all):
    for i, model in enumerate(per_model):
        values = per_model[model].get(kind)
        if values is None:
            continue
        mean, low, high = stats.seed_ci(values[~values.isnan()].tolist())
        ax.errorbar(i + (k - (len(kinds_all) - 1) / 2) * width, mean, yerr=[[mean - low], [high - mean]], fmt="o",
                    color=kind_colors[kind], capsize=3, label=f"{kind} → images" if i == 0 else None)
ax.axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance (0.5)")
ax.set_xticks(range(len(per_model)), list(per_model), rotation=20, ha="right")
ax.set(ylabel="mean per-query AUC", title="Class information per query, by model (95% t-interval over queries)")
ax.legend(fontsize=8, loc="best")
fig.tight_layout()
plt.show()
display(Markdown(f"Figure: per-query AUC of each query side against the gallery images, every model of "
                 f"{SOURCE_LINE} (first seed) on `{S['dataset']}`."))

# %% tags=["hide-input"]
display(Markdown("\n".join(
    f"- `{model}`: " + prose.effect_sentence("OTI → image minus image → image, per-query AUC", row["_OTI"],
                                             unit="AUC points")
    + f" Against the paper's account (OTI higher): {prose.agreement(1.0, row['_OTI']['low'], row['_OTI']['high'])}."
    for model, row in models_table.iterrows())))

# %% [markdown]
# With one model per row (its first seed), these intervals cover the choice of queries, not the variation between
# training runs; the retrieval chapters report differences with intervals over seeds (or datasets) as well. In the
# paper's account, OTI helps where image-image similarity is less class-aware than text-image similarity, which is
# what a higher OTI AUC than image AUC would indicate.
