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
# # Appendix: models, gap magnitudes, latency, the Intra-OTI control and purely textual sets
#
# The paper's appendix adds five things to the main tables: the number of pseudo tokens R chosen per backbone, the
# time an inversion takes, the size of the modality gap of each model, an *Intra-OTI* control, and retrieval on
# purely textual datasets (IMDB, 20 Newsgroups and NanoBEIR), partly with texts summarised by a large language model.
#
# This page rebuilds each of them from the same stored evidence as the other chapters, on every model of the source:
# no number here is typed by hand. Where the evidence lacks a part (a laboratory has no textual datasets), the page
# says so instead of drawing it.

# %% tags=["parameters"]
SOURCE = "lab-embedded"
DEVICE = "cpu"
N_BOOT = 2000

# %% tags=["hide-input"]
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets, on first import

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from crossgap_lib import claims, datasets, evaluation, prose

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## The evidence
#
# Every number on this page comes from one stored evaluation of the source, computed by the first page of a build
# and read from the cache here.

# %%
evidence = evaluation.evaluate(SOURCE, device=DEVICE, progress=False)

# %% tags=["remove-input"]
SOURCE_NAME = evidence.source["name"]
IMAGE_DATASETS = evidence.datasets("image")
TEXTUAL = set(datasets.list_datasets("text")) - set(datasets.TEXT_RETRIEVAL_DATASETS)  # IMDB, 20 Newsgroups, NanoBEIR
TEXTUAL_DATASETS = [d for d in evidence.datasets("text") if d in TEXTUAL]


def names(items) -> str:
    items = list(items)
    return ", ".join(f"`{x}`" for x in items) if items else "none"


def model_metric(metric: str) -> pd.Series:
    """Mean over seeds of a per-model value of the evidence (``task == "model"``), by model in source order."""
    rows = evidence.model_values(metric)
    return rows.groupby("model", sort=False)["value"].mean().reindex(evidence.labels)


SOURCE_LINE = (f"source `{SOURCE_NAME}` ({evidence.source['resolved']['kind']}): {len(evidence.labels)} models "
               f"({names(evidence.labels)})")
display(Markdown(f"Evidence of {SOURCE_LINE}; image datasets {names(IMAGE_DATASETS)}; text datasets "
                 f"{names(evidence.datasets('text'))}."))

# %% [markdown]
# ## The models and the number of pseudo tokens
#
# The size of every model of the evidence, counted from its weights: all parameters, those of the image tower, and
# those of the text side (text transformer, token and position embeddings, projections, logit scale).

# %% tags=["hide-input"]
def count_text(n: float) -> str:
    """A parameter count in words: 3.41M, 86.2k."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


COUNTS = ("parameters", "image tower parameters", "text side parameters")
sizes = evidence.models.set_index("label")[["family", *COUNTS]]
sizes = sizes.assign(**{c: [count_text(n) for n in sizes[c]] for c in COUNTS})
sizes.insert(1, "temperature", [("learnt" if t is None else f"fixed T={t:g}") for t in evidence.temperatures.values()])
sizes.index.name = None
display(sizes)

# %% [markdown]
# The inversion settings the paper's public configuration files give per backbone: steps and number of pseudo tokens
# R for OTI and OVI (the appendix's choice of R per backbone), with the shared learning rate, weight decay and batch
# size. Every model of a `paper` source takes the row of its backbone; a source may override them for all models.

# %% tags=["hide-input"]
settings = claims.reported("settings").set_index("model")
display(settings[["oti_steps", "oti_R", "ovi_steps", "ovi_R", "lr", "weight_decay", "batch_size", "template"]])
overrides = evidence.source.get("inversion")
display(Markdown(f"Provenance: {claims.provenance_note(settings)}. This evidence's source "
                 + (f"overrides them with `{overrides}`." if overrides else "does not override them.")))

# %% [markdown]
# ## The modality gap of each model
#
# Two measures on paired image and text features (each query image of the gap dataset with its caption, or with its
# class prompt where the dataset has no captions): the distance between the centroids of the normalised image and
# text features ({cite:t}`liang2022mind`; 0 when the two clouds are centred on each other), and the mean cosine
# between an image and its own text (higher: closer modalities). The logit scale is the model's inverse
# temperature. Mean over seeds.

# %% tags=["hide-input"]
GAP_METRICS = {"gap centroid distance": "centroid distance", "gap matched cosine": "matched cosine",
               "logit scale": "logit scale"}
gaps = pd.DataFrame({name: model_metric(metric) for metric, name in GAP_METRICS.items()})
gaps.insert(0, "family", [evidence.families[m] for m in gaps.index])
gaps.index.name = None
display(gaps.round(3))
display(Markdown(f"Measured on {names(evidence.datasets('model'))}; {SOURCE_LINE}."))

fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, column, title in ((axes[0], "centroid distance", "Centroid distance (image vs text)"),
                          (axes[1], "matched cosine", "Cosine of an image and its own text")):
    ax.bar(range(len(gaps)), gaps[column], color=sns.color_palette("deep", len(gaps)), alpha=0.85)
    ax.set_xticks(range(len(gaps)), gaps.index, rotation=20, ha="right")
    ax.set(ylabel=column, title=title)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## How long an inversion takes
#
# Wall-clock seconds per query of OTI (on the first image dataset's queries) and OVI (on the first text dataset's),
# each over one batch of the model's inversion batch size after a one-step warm-up, with the model's own settings
# (steps, R). The time is measured when the evidence is computed and stored with it, so a page read from the cache
# shows the machine that computed it.

# %% tags=["hide-input"]
LATENCY = {"OTI s/query": "OTI (s/query)", "OVI s/query": "OVI (s/query)"}
present = [m for m in LATENCY if m in set(evidence.values.loc[evidence.values["task"] == "model", "metric"])]
if present:
    latency = pd.DataFrame({LATENCY[m]: model_metric(m) for m in present})
    if "device" in evidence.models.columns:
        latency["device"] = list(evidence.models.set_index("label").loc[latency.index, "device"])
    latency.index.name = None
    display(latency.apply(lambda c: c if c.name == "device" else c.map(lambda v: "–" if pd.isna(v) else f"{v:.3g}")))
    missing = [LATENCY[m] for m in LATENCY if m not in present]
    display(Markdown(f"Measured on {names(dict.fromkeys(str(d) for d in latency.get('device', ['unknown'])))}."
                     + (f" Not measured in this evidence: {', '.join(missing)}." if missing else "")))
else:
    display(Markdown("This evidence stores no inversion timings, so latency is not shown."))

# %% [markdown]
# ## The Intra-OTI control
#
# OTI retrieval compares the query's OTI feature, a text feature, with the gallery's *image* features: an inter-modal
# comparison. The control inverts the gallery images too and compares OTI features with OTI features (`oti both`), so
# the comparison is intra-modal again, on the text side. If OTI helps because it crosses the modality gap, as the
# paper argues, OTI->image should beat OTI->OTI; if the inverted features were simply better features, OTI->OTI would
# do as well. mAP x100, mean over seeds and over the datasets where the model has all three methods; differences per
# query with their 95% intervals (`crossgap_lib.stats.paired_effect`).

# %% tags=["hide-input"]
control_rows = []
for row in evidence.method_comparison("image", ["intra", "oti", "oti both"],
                                      [("oti", "oti both"), ("oti both", "intra")], IMAGE_DATASETS, n_boot=N_BOOT):
    level, cross, both = row["levels"], row["contrasts"][("oti", "oti both")], row["contrasts"][("oti both", "intra")]
    control_rows.append({"model": row["model"], "datasets": len(row["datasets"]), "_names": tuple(row["datasets"]),
                         "image->image": round(100 * level["intra"], 1),
                         "OTI->image": round(100 * level["oti"], 1), "OTI->OTI": round(100 * level["oti both"], 1),
                         "OTI->image - OTI->OTI [95% CI]": prose.ci_text(cross["mean"], cross["low"], cross["high"]),
                         "OTI->OTI - image->image [95% CI]": prose.ci_text(both["mean"], both["low"], both["high"]),
                         "_cross": cross})
if control_rows:
    control = pd.DataFrame(control_rows).set_index("model")
    control.index.name = None
    display(control.drop(columns=["_cross", "_names"]))
    display(Markdown("Datasets with the control: " + "; ".join(
        f"{names(k)} ({names(g.index)})" for k, g in control.groupby("_names", sort=False)) + "."))
    display(Markdown("\n".join(
        "- " + prose.effect_sentence(f"`{model}`, OTI->image minus OTI->OTI mAP", row["_cross"])
        for model, row in control.iterrows())))
else:
    display(Markdown("No model of this evidence has the Intra-OTI control (`oti both`) on an image dataset (a "
                     "source's `intra_oti` option turns it off or limits it to small galleries), so it is not shown."))

# %% [markdown]
# ## Purely textual datasets
#
# Text-to-text retrieval on sets whose texts describe no image: IMDB reviews and 20 Newsgroups messages (relevant:
# the same class) and the NanoBEIR retrieval sets (relevant: the judged documents of each query). Intra-modal
# (text->text) against OVI->text, as in Table 2. mAP x100, mean over seeds; per model, the difference over these
# datasets with its 95% interval.
#
# The paper's appendix also runs these sets with texts first summarised by a large language model. Those variants
# cannot be rebuilt without running such a model, which this book does not do: here every text is the original one,
# cut to the text encoder's context length by its tokenizer.

# %% tags=["hide-input"]
if TEXTUAL_DATASETS:
    text_means = evidence.means("text", "mAP").query("dataset in @TEXTUAL_DATASETS")
    wide = text_means.pivot_table(index=["model", "method"], columns="dataset", values="value", sort=False)
    wide = wide.reindex(columns=TEXTUAL_DATASETS)
    wide = wide.loc[[(m, k) for m in evidence.labels for k in ("intra", "ovi") if (m, k) in wide.index]]
    wide.columns.name = None
    display((100 * wide).round(1))
    lines = []
    for model in evidence.labels:
        have = [d for d in TEXTUAL_DATASETS if evidence.has(model, "text", d, "ovi") and
                evidence.has(model, "text", d, "intra")]
        if have:
            effect = evidence.contrast("text", "ovi", "intra", model, datasets=have, n_boot=N_BOOT)
            lines.append("- " + prose.effect_sentence(f"`{model}`, OVI - intra mAP over {names(have)}", effect))
    display(Markdown("\n".join(lines)))
else:
    display(Markdown(f"This evidence has no purely textual dataset (its text datasets: "
                     f"{names(evidence.datasets('text'))}), so this part is not measured here. A source measures "
                     "them when its `text_datasets` list them (the `paper` source does)."))
