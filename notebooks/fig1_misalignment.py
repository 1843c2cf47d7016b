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
# laboratory's training settings.

# %% tags=["parameters"]
PROFILE = "embedded"
SOURCE = "lab"
LAB_PRESET = "embedded"
LAB_OVERRIDES = {}
DEVICE = "cpu"
MODEL = "CLIP B/32"
DATASET = "oxford_pets"
DATA_ROOT = None
N_CLASSES_SHOWN = 5
N_BOOT = 2000

# %% tags=["hide-input"]
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from crossgap_lib import dynamics, gap, report, stats
from crossgap_lib.lab import LabConfig, run_lab

sns.set_theme(style="whitegrid", context="notebook")
config = LabConfig.from_dict({**getattr(LabConfig, LAB_PRESET)().to_dict(), **LAB_OVERRIDES})

# %% [markdown]
# ## The features
#
# Each feature set holds image queries with their labels, one text per query, a class prompt per class, the OTI
# feature of each query and a gallery of images and texts to compare against. Queries and gallery are distinct
# images.

# %%
if SOURCE == "lab":
    from crossgap_lib.datasets.shapes import ShapesConfig

    lab = run_lab(config, progress=False)
    class_names = ShapesConfig(**config.data).class_names
    text_kind = "caption"
    sets = {}
    for setting in config.settings:
        f = lab.features[setting["name"]]
        sets[setting["name"]] = {
            "image": f["image"], "text": f["caption"], "prompt": f["prompt"], "oti": f["oti"], "labels": f["labels"],
            "gallery": f["gallery_image"], "gallery_labels": f["gallery_labels"], "gallery_text": f["gallery_caption"],
            "gallery_text_labels": f["gallery_labels"], "exclude_self": False,
        }
    main = config.settings[0]["name"]
    origin = (f"the laboratory's `{main}` models (first seed, {config.model}); queries: {config.n_test} held-out "
              f"images; gallery: {config.n_gallery} training images and their first captions")
elif SOURCE == "paper":
    from crossgap_lib import experiments, pipeline
    from crossgap_lib.cache import default_cache_root
    from crossgap_lib.datasets import load_dataset, retrieval_protocol

    paper_model = experiments.paper_models([MODEL])[0]
    clip = experiments.load_paper_model(paper_model, device=DEVICE)
    query_split, gallery_split, exclude_self = retrieval_protocol(DATASET)
    queries = load_dataset(DATASET, root=DATA_ROOT, split=query_split)
    gallery = queries if gallery_split == query_split else load_dataset(DATASET, root=DATA_ROOT, split=gallery_split)
    cache = default_cache_root()
    image_q = pipeline.encode_images(clip, queries, cache_dir=cache, progress=False)
    image_g = image_q if gallery is queries else pipeline.encode_images(clip, gallery, cache_dir=cache, progress=False)
    class_names = queries.classnames
    prompts = pipeline.encode_texts(clip, [experiments.PROMPT.format(c) for c in class_names], cache_dir=cache,
                                    progress=False)
    oti = pipeline.invert_dataset(clip, "oti", image_q, cache_dir=cache, progress=False, **paper_model.oti_kwargs())
    text_kind = "class prompt"
    main = MODEL
    sets = {main: {
        "image": image_q, "text": prompts[queries.labels], "prompt": prompts, "oti": oti.features,
        "labels": queries.labels, "gallery": image_g, "gallery_labels": gallery.labels, "gallery_text": prompts,
        "gallery_text_labels": torch.arange(len(class_names)), "exclude_self": exclude_self,
    }}
    origin = (f"{MODEL} on {DATASET} ({len(queries)} {query_split} images as queries, {len(gallery)} {gallery_split} "
              f"images as gallery); the text of an image is its class prompt")
else:
    raise ValueError(f"SOURCE must be 'lab' or 'paper', got {SOURCE!r}")

S = sets[main]
display(Markdown(f"Features: {origin}."))

# %% [markdown]
# ## Figure 1: two modalities, two geometries
#
# Left: one PCA fitted jointly on the image and text features of a few classes that lie close together (circles:
# images; triangles: texts; colour: class). Middle: for each query image, the probability that a gallery item of its
# own class is more similar to it than a gallery item of another class (a per-query ROC AUC; 0.5 means the
# similarity carries no class information). Right: the cosine similarities behind it.

# %%
shown, _ = dynamics.closest_classes(S["image"], S["labels"], n=min(N_CLASSES_SHOWN, len(set(S["labels"].tolist()))))
mask = torch.isin(S["labels"], torch.tensor(shown))
points, explained = dynamics.joint_pca({"image": S["image"][mask], "text": S["text"][mask]})
shown_labels = S["labels"][mask].numpy()

auc = {
    "image → images": dynamics.per_query_auc(S["image"], S["labels"], S["gallery"], S["gallery_labels"],
                                             exclude_self=S["exclude_self"]),
    f"image → {text_kind}s": dynamics.per_query_auc(S["image"], S["labels"], S["gallery_text"],
                                                    S["gallery_text_labels"]),
    "OTI → images": dynamics.per_query_auc(S["oti"], S["labels"], S["gallery"], S["gallery_labels"],
                                           exclude_self=S["exclude_self"]),
}
pairs = {
    "image-image": dynamics.class_similarities(S["image"], S["labels"], S["gallery"], S["gallery_labels"],
                                               exclude_self=S["exclude_self"]),
    f"image-{text_kind}": dynamics.class_similarities(S["image"], S["labels"], S["gallery_text"],
                                                      S["gallery_text_labels"]),
}

fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.15, 0.8, 1.2]})
palette = dict(zip(shown, sns.color_palette("tab10", len(shown))))
for c in shown:
    rows = shown_labels == c
    axes[0].scatter(*points["image"][rows].T, color=palette[c], marker="o", s=22, alpha=0.75, label=class_names[c])
    axes[0].scatter(*points["text"][rows].T, color=palette[c], marker="^", s=40, alpha=0.9, edgecolor="black",
                    linewidth=0.4)
axes[0].scatter([], [], color="grey", marker="o", label="image")
axes[0].scatter([], [], color="grey", marker="^", edgecolor="black", linewidth=0.4, label=text_kind)
axes[0].set(xlabel=f"PC1 ({100 * explained[0]:.0f}% of variance)", ylabel=f"PC2 ({100 * explained[1]:.0f}%)",
            title="Images and texts of close classes (joint PCA)")
axes[0].legend(fontsize=7, loc="best", ncol=2)

auc_frame = pd.DataFrame({"kind": list(auc), "mean": [float(v.nanmean()) for v in auc.values()]})
cis = [stats.mean_ci(v[~v.isnan()]) for v in auc.values()]
axes[1].bar(auc_frame["kind"], auc_frame["mean"], color=sns.color_palette("Set2", len(auc)),
            yerr=np.array([[m - lo, hi - m] for m, lo, hi in cis]).T, capsize=4)
axes[1].axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance (0.5)")
low_end = min(0.4, min(lo for _, lo, _ in cis) - 0.05)
axes[1].set(ylim=(low_end, 1.0), ylabel="P(same class ranked above other class)",
            title="Class information per query\n(mean, 95% CI over queries)")
axes[1].tick_params(axis="x", labelrotation=15)
axes[1].legend(fontsize=8, loc="upper left")

colors = {"image-image": "tab:blue", f"image-{text_kind}": "tab:orange"}
for name, p in pairs.items():
    sns.kdeplot(p["same"].numpy(), ax=axes[2], color=colors[name], fill=True, alpha=0.25, linewidth=1.5, cut=0,
                warn_singular=False, label=f"{name}, same class")
    sns.kdeplot(p["different"].numpy(), ax=axes[2], color=colors[name], linestyle="--", linewidth=1.5, cut=0,
                warn_singular=False, label=f"{name}, different class")
axes[2].set(xlabel="cosine similarity", ylabel="density", title="Similarity distributions")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
def auc_diff(a, b):
    """Paired bootstrap over queries of the mean per-query AUC difference a - b."""
    return stats.paired_bootstrap_ci(auc[a], auc[b], n_boot=N_BOOT, seed=0)


text_key = f"image → {text_kind}s"
pc1_image, pc1_text = points["image"][:, 0].mean(), points["text"][:, 0].mean()
pc1_spread = points["image"][:, 0].std()
if SOURCE == "lab":
    gap_row = lab.summary.set_index(["setting", "metric"]).loc[(main, "gap_centroid")]
    gap_ci = report.ci_text(gap_row["mean"], gap_row["ci_low"], gap_row["ci_high"], scale=1, digits=3, signed=False)
    gap_text = (f"The centroid distance between images and captions of the `{main}` models is {gap_ci}"
                f" (mean [95% CI] over {int(gap_row['n_seeds'])} seeds; 0 would mean no gap).")
    glue("fig1_gap", float(gap_row["mean"]), display=False)
else:
    value = gap.centroid_distance(S["image"], S["gallery_text"])
    gap_text = f"The centroid distance between the images and the class prompts is {value:.3f} (0 would mean no gap)."
    glue("fig1_gap", value, display=False)
glue("fig1_pc1_variance", 100 * float(explained[0]), display=False)
display(Markdown(
    f"{gap_text} In the joint PCA, the mean first coordinate is {pc1_image:+.2f} for images and {pc1_text:+.2f} for "
    f"texts, against a spread (standard deviation) of the images of {pc1_spread:.2f} along it.\n\n"
    + report.verdict(f"Per-query AUC, {text_key} minus image → images", *auc_diff(text_key, "image → images"),
                     unit="AUC points", interval="95% bootstrap CI over queries") + "\n\n"
    + report.verdict("Per-query AUC, OTI → images minus image → images",
                     *auc_diff("OTI → images", "image → images"), unit="AUC points",
                     interval="95% bootstrap CI over queries")
))

# %% [markdown]
# The first principal component of the joint features explains {glue:text}`fig1_pc1_variance:.0f`% of their
# variance. A gap between the modalities shows as the two marker shapes forming separate clouds along it. The
# paper's claim concerns the middle panel: if image-image similarity is less calibrated than image-text similarity,
# the first bar is lower than the second. OTI (third bar) compares an image with the gallery through the text side.

# %% [markdown]
# ## Figure A1: same-class and different-class image pairs overlap
#
# The paper's Figure A1 plots CLIP's cosine similarity of dog-dog pairs and of dog-cat pairs. Here the two classes
# are the pair whose mean image features are closest (the first plays the dog, the second the cat). The three
# panels on the right pool all classes and compare how well three kinds of similarity separate same-class from
# different-class pairs, each from the query side to the gallery images: image-image, class prompt-image and
# OTI-image.

# %%
(a, b), _ = dynamics.closest_classes(S["image"], S["labels"], n=2)
in_ab = torch.isin(S["gallery_labels"], torch.tensor([a, b]))
dog = dynamics.class_similarities(S["image"][S["labels"] == a], S["labels"][S["labels"] == a],
                                  S["gallery"][in_ab], S["gallery_labels"][in_ab])
prompt_labels = torch.arange(S["prompt"].shape[0])
kinds = {
    "image → image": (S["image"], S["labels"], S["exclude_self"]),
    "class prompt → image": (S["prompt"], prompt_labels, False),
    "OTI → image": (S["oti"], S["labels"], S["exclude_self"]),
}
overlaps, dists = {}, {}
for name, (q, ql, excl) in kinds.items():
    overlaps[name] = dynamics.cross_class_overlap(q, ql, S["gallery"], S["gallery_labels"], exclude_self=excl)
    dists[name] = dynamics.class_similarities(q, ql, S["gallery"], S["gallery_labels"], exclude_self=excl)
ab = dynamics.cross_class_overlap(S["image"][S["labels"] == a], S["labels"][S["labels"] == a], S["gallery"][in_ab],
                                  S["gallery_labels"][in_ab])

fig, axes = plt.subplots(1, 4, figsize=(17, 4))
panels = {f"{class_names[a]} vs {class_names[b]} (image → image)": (dog, ab, f"{class_names[a]} - {class_names[a]}",
                                                                   f"{class_names[a]} - {class_names[b]}")}
panels.update({name: (dists[name], overlaps[name], "same class", "different class") for name in dists})
for ax, (title, (d, o, same_label, diff_label)) in zip(axes, panels.items()):
    values = torch.cat([d["same"], d["different"]]).numpy()
    bins = np.linspace(values.min(), values.max(), 31)
    ax.hist(d["same"].numpy(), bins=bins, density=True, alpha=0.55, color="tab:green", label=same_label)
    ax.hist(d["different"].numpy(), bins=bins, density=True, alpha=0.55, color="tab:red", label=diff_label)
    ax.set(title=f"{title}\nAUC {o['auc']:.2f}, overlap {o['overlap']:.2f}", xlabel="cosine similarity")
    ax.legend(fontsize=8)
axes[0].set_ylabel("density")
fig.tight_layout()
plt.show()

# %%
glue("fig1_ab_overlap", 100 * ab["overlap"], display=False)
ranked = sorted(overlaps, key=lambda k: overlaps[k]["auc"], reverse=True)
display(Markdown(
    f"For the two closest classes ({class_names[a]} and {class_names[b]}), {100 * ab['overlap']:.0f}% of the "
    f"same-class and different-class image-image histograms overlap, and a random {class_names[a]} - "
    f"{class_names[a]} pair is more similar than a random {class_names[a]} - {class_names[b]} pair with probability "
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
# ## Across training settings
#
# The same measures for each feature set (in the laboratory: each training setting, one model per setting, the first
# seed), from the query side to the gallery images. The last two columns give the mean per-query AUC difference with a
# 95% bootstrap interval over queries; the verdict says whether that interval excludes zero.

# %%
rows = []
for name, F_ in sets.items():
    row = {"setting": name}
    per_query = {}
    for kind, (q, ql, excl) in {"image": (F_["image"], F_["labels"], F_["exclude_self"]),
                                "prompt": (F_["prompt"], torch.arange(F_["prompt"].shape[0]), False),
                                "OTI": (F_["oti"], F_["labels"], F_["exclude_self"])}.items():
        summary = dynamics.cross_class_overlap(q, ql, F_["gallery"], F_["gallery_labels"], exclude_self=excl)
        row[f"{kind} AUC (pooled)"], row[f"{kind} overlap"] = summary["auc"], summary["overlap"]
        per_query_q = q if kind != "prompt" else F_["prompt"][F_["labels"]]
        per_query[kind] = dynamics.per_query_auc(per_query_q, F_["labels"], F_["gallery"], F_["gallery_labels"],
                                                 exclude_self=F_["exclude_self"] and kind != "prompt")
    for kind in ("OTI", "prompt"):
        mean, low, high = stats.paired_bootstrap_ci(per_query[kind], per_query["image"], n_boot=N_BOOT, seed=0)
        row[f"{kind} - image, per-query AUC points [95% CI]"] = report.ci_text(mean, low, high)
        row[f"{kind} - image, verdict"] = {"up": "higher", "down": "lower", "none": "no detectable difference"}[
            report.direction(mean, low, high)]
        row[f"_{kind}"] = (mean, low, high)
    rows.append(row)
settings_table = pd.DataFrame(rows).set_index("setting")
shown_cols = [c for c in settings_table.columns if not c.startswith("_")]
display(settings_table[shown_cols].style.format(precision=3))

# %%
lines = []
for name, row in settings_table.iterrows():
    mean, low, high = row["_OTI"]
    lines.append(f"- `{name}`: " + report.verdict("OTI → image minus image → image, per-query AUC", mean, low, high,
                                                   unit="AUC points", interval="95% bootstrap CI over queries"))
display(Markdown("\n".join(lines)))

# %% [markdown]
# With one model per setting, these intervals cover the choice of queries, not the variation between training runs;
# the retrieval chapters report differences with intervals over seeds as well. In the paper's account, OTI helps
# where image-image similarity is less class-aware than text-image similarity, which is what a higher OTI AUC than
# image AUC would indicate; in its temperature-1 experiment (`clip T=1` here), it expects that difference to
# vanish.
