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
# # The laboratory and the models evaluated
#
# Real CLIP weights and the paper's datasets cannot be downloaded on the machine that builds the default book. So the
# book brings its own laboratory: a generated dataset of coloured shapes with captions, and tiny CLIP models (open_clip
# architectures, a few million parameters) trained on it from scratch, several times with different seeds, and
# fine-tuned from there for the temperature and soft-target manipulations, as the paper fine-tunes CLIP. With the
# paper's models (GPU build) or their dry run (the paper's architectures with random weights), this page lists the
# models instead; nothing is trained, so there are no training curves.
#
# The laboratory is *controlled*, not *realistic*. Each of the paper's mechanisms can be switched on and off: the
# temperature that sets the modality gap, an intra-modal (SLIP-style) loss term, soft targets, what the captions
# mention. What it cannot do is tell how large any effect is for CLIP trained on 400 million web image-text pairs.
#
# Every chapter reads one stored evaluation of the book's source (the *evidence*): the same protocol on every model.
# This page shows what the models are and how good they are at the tasks CLIP was trained for, before the later
# chapters ask what inversion changes.

# %% tags=["parameters"]
SOURCE = "lab-embedded"
DEVICE = "cpu"

# %% tags=["hide-input"]
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets, on first import

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator
from myst_nb import glue

from crossgap_lib import claims, evaluation, prose, stats

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## The evidence
#
# The first page of a build evaluates the source (training the laboratory's models if the source is the laboratory)
# and stores the result; every other page reads it from the cache.

# %%
evidence = evaluation.evaluate(SOURCE, device=DEVICE, progress=False)

# %% tags=["remove-input"]
RESOLVED = evidence.source["resolved"]
SOURCE_NAME = evidence.source["name"]
TASKS = {"image": "image retrieval", "text": "text retrieval", "zero_shot": "zero-shot classification"}


def names(items) -> str:
    return ", ".join(f"`{x}`" for x in items) or "none"


def duration(seconds: float) -> str:
    return f"{seconds:.1f} seconds" if seconds < 60 else f"{seconds / 60:.1f} minutes"


def seeds_text(model: str) -> str:
    seeds = evidence.seeds(model)
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


SOURCE_LINE = f"source `{SOURCE_NAME}` ({RESOLVED['kind']})"
display(Markdown(
    f"Evidence of {SOURCE_LINE}: {len(evidence.labels)} models ({names(evidence.labels)}); "
    + "; ".join(f"{what}: {names(evidence.datasets(task))}" for task, what in TASKS.items()) + "."
    + (" Read from the cache." if evidence.from_cache else "")
))

# %% [markdown]
# ## The data
#
# In the laboratory, a class is a combination of semantic attributes (shape and colour). Each image also carries
# nuisance factors: background colour and texture, position, size, rotation and small distractor shapes. Raw pixel
# similarity is therefore dominated by nuisance, while the captions carry the class: every caption names it, and a
# quarter of the training captions also name one nuisance value, so the text tower knows those words. This mirrors
# the situation the paper describes: what two images have in common visually is not what their captions say.
#
# The protocol's choices, and why (`crossgap_lib.lab.LabConfig`):
# - **held-out galleries**: queries are test images and galleries are validation images; neither was trained on;
# - **text retrieval off its ceiling**: every evaluation caption names the class *and* one nuisance value while
#   relevance stays the class, so two captions can share words without sharing the class (with class-only
#   paraphrases, text-to-text retrieval is perfect and a text-side method can only lose);
# - **power**: every setting is trained with several seeds, and every interval runs over seeds and queries;
# - **manipulations by fine-tuning**: the fixed-temperature models (T = 1, T = 0.01) and the soft-target models are
#   the trained CLIPs fine-tuned with `crossgap_lib.finetune` (the function the paper profile uses), each beside the
#   same fine-tuning with CLIP's loss and learnt temperature (`clip ft`), so that only the manipulated part differs;
# - **budget**: the whole book builds cold in under 25 minutes on 2 cores; the from-scratch models train for 768
#   steps (`benchmarks/bench_lab.py` prints where each model's time goes);
# - **the intra-modal term's views are SimCLR's** (random resized crop, flip, colour jitter), which randomise
#   position, scale and brightness but keep background colour and texture. Views that also redraw the background
#   were considered and not used: the generator can only produce them by re-rendering the same object, i.e. the same
#   shape and colour, which is the class, so the self-supervised term would become a supervised one and decide the
#   SLIP claim by construction. The manipulation check on the reproduction page shows whether the term raised
#   image-image retrieval as it is.
#
# The preview below draws a few training images from the same generator and settings as the evidence; other
# sources use the paper's datasets, listed instead.

# %% tags=["hide-input"]
def generated_data_preview(evidence, n: int = 16):
    """Images of the generated ``shapes`` dataset with the evidence's data settings, or None for other datasets."""
    if "shapes" not in evidence.datasets("image"):
        return None, None
    from crossgap_lib.datasets.shapes import ShapesConfig, describe, make_shapes, show_grid
    from crossgap_lib.lab import LabConfig

    config = LabConfig.from_dict(evidence.source.get("lab", {}))
    data = ShapesConfig(**{**config.data, **config.train.get("data", {})})
    sample = make_shapes("train", n=n, config=data, seed=config.data_seed)
    fig = show_grid(sample, n=n)
    fig.suptitle("Generated training images with one of their captions")
    return fig, describe(data)


preview, description = generated_data_preview(evidence)
if preview is not None:
    display(preview)
    display(Markdown(f"Figure: {len(preview.axes)} generated `shapes` training images (the data generator of "
                     f"{SOURCE_LINE}), each with the first of its captions."))
else:
    display(Markdown(
        f"No generated data in this evidence: {SOURCE_LINE} evaluates the datasets "
        + "; ".join(f"{what}: {names(evidence.datasets(task))}" for task, what in TASKS.items())
        + f" (from `{RESOLVED.get('data_root', '?')}`)."))

# %% tags=["hide-output"]
print(description or "no generated data")

# %% [markdown]
# ## What is evaluated
#
# One row per model of the evidence. `family` says which of the paper's claims a model speaks to (`clip`: CLIP-like
# contrastive training; `slip`: an added image-image term, as SLIP; `soft`: this book's soft-target loss; `siglip`:
# SigLIP's sigmoid loss); `temperature` is the fixed training temperature of the paper's modality-gap experiment
# (Table 4), or `learnt`. In the laboratory each row is a *setting* trained once per seed with the same data,
# architecture and schedule; only the loss or the temperature differs.

# %% tags=["hide-input"]
shown = [c for c in ("label", "family", "temperature", "loss", "finetuned from", "open_clip_name", "pretrained",
                     "parameters",
                     "image tower parameters", "text side parameters", "seeds") if c in evidence.models]
models_table = evidence.models[shown].set_index("label").copy()
models_table["temperature"] = ["learnt" if pd.isna(t) else f"{t:g}" for t in models_table["temperature"]]
models_table.index.name = None
display(models_table.style.format({c: "{:,.0f}" for c in shown if "parameters" in c}))
details = {k: v for k, v in RESOLVED.items() if k not in ("kind", "settings", "models") and v not in (None, [], "")}
display(Markdown(
    f"Table: the models of {SOURCE_LINE}. Source settings: "
    + "; ".join(f"`{k}` = `{v}`" for k, v in details.items()) + "."))

# %% [markdown]
# ## Training curves
#
# The contrastive loss and the logit scale (inverse temperature) over training, one line per seed, for every model
# trained while the evidence was computed. Models with released (or random) weights were not trained here and have
# none.

# %% tags=["hide-input"]
trained = {m: runs for m, runs in evidence.training.items() if runs}
if trained:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    palette = dict(zip(trained, sns.color_palette("tab10", len(trained))))
    for name, runs in trained.items():
        for i, (_seed, run) in enumerate(sorted(runs.items())):
            label = name if i == 0 else None
            axes[0].plot(run["losses"], color=palette[name], alpha=0.7, label=label)
            axes[1].plot(run["logit_scales"], color=palette[name], alpha=0.7, label=label)
    axes[0].set(xlabel="training step", ylabel="training loss", title="Loss")
    axes[1].set(xlabel="training step", ylabel="logit scale = 1 / temperature", title="Temperature", yscale="log")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8, title="model (one line per seed)", title_fontsize=8)
    fig.tight_layout()
    plt.show()
    seconds = sum(run["train_seconds"] for runs in trained.values() for run in runs.values())
    n_runs = sum(len(runs) for runs in trained.values())
    display(Markdown(
        f"Figure: training loss and logit scale of {n_runs} runs ({names(trained)}, {SOURCE_LINE}), "
        f"{duration(seconds)} of training in total."))
else:
    display(Markdown(
        f"No training curves in this evidence: none of the {len(evidence.labels)} models of {SOURCE_LINE} was "
        "trained while it was computed (their weights were loaded)."))

# %% [markdown]
# ## How good are the models at what they were trained for?
#
# Zero-shot classification with class prompts (top-1, averaged over the zero-shot datasets), cross-modal retrieval
# (R@1 of an image's own text among the texts of the other query images: its caption in the laboratory, else its
# class prompt) and the modality gap: the distance between the image and text centroids ({cite:t}`liang2022mind`) and
# the mean cosine of matched image-text pairs; last, the learnt or fixed logit scale. Each cell is the mean over
# seeds with a 95% t-interval over seeds; with one seed per model, the mean alone.

# %%
def per_seed(model: str, metric: str) -> list[float]:
    """One value per seed of a model: a per-model metric, or zero-shot top-1 averaged over datasets."""
    if metric == "zero-shot top-1":
        rows = evidence.metric("top-1", task="zero_shot", method="inter")
    else:
        rows = evidence.metric(metric, task="model")
    rows = rows[rows["model"] == model]
    return rows.groupby("seed")["value"].mean().tolist()


QUALITY = {"zero-shot top-1": 100, "image->text R@1": 100, "text->image R@1": 100, "gap centroid distance": 1,
           "gap matched cosine": 1, "logit scale": 1}
quality = {m: {metric: stats.seed_ci(per_seed(m, metric)) if per_seed(m, metric) else (math.nan,) * 3
               for metric in QUALITY} for m in evidence.labels}

# %% tags=["hide-input"]
def cell(values: tuple[float, float, float], scale: float) -> str:
    mean, low, high = values
    if math.isnan(mean):
        return "–"
    digits = 1 if scale == 100 else 3 if abs(mean) < 10 else 1
    if math.isnan(low):
        return f"{mean * scale:.{digits}f}"
    return prose.ci_text(mean, low, high, scale=scale, digits=digits, signed=False)


quality_table = pd.DataFrame({
    **{f"{metric}{' (%)' if scale == 100 else ''}": [cell(quality[m][metric], scale) for m in evidence.labels]
       for metric, scale in QUALITY.items()},
    "seeds": [len(evidence.seeds(m)) for m in evidence.labels],
}, index=evidence.labels)
display(quality_table)
display(Markdown(
    f"Table: mean [95% t-interval over seeds] per model of {SOURCE_LINE}; zero-shot on "
    f"{names(evidence.datasets('zero_shot'))}, retrieval and gap on the queries of "
    f"{names(evidence.datasets('model'))}."))

# %% tags=["hide-input"]
main = claims.pick(evidence, "clip") or evidence.labels[0]
zero_shot, gap = quality[main]["zero-shot top-1"], quality[main]["gap centroid distance"]
features = evidence.features.get(main, {})
n_classes = features["prompt"].shape[0] if features.get("prompt") is not None and \
    features.get("dataset") in evidence.datasets("zero_shot") else None
glue("lab_zero_shot", 100 * zero_shot[0], display=False)
glue("lab_gap", gap[0], display=False)
glue("lab_minutes", evidence.timings["total"] / 60, display=False)
glue("lab_models", sum(len(evidence.seeds(m)) for m in evidence.labels), display=False)
chance = (f" (chance on `{features['dataset']}`: {100 / n_classes:.1f}%, {n_classes} classes)"
          if n_classes else "")
display(Markdown(
    f"The `{main}` model{'s' if len(evidence.seeds(main)) > 1 else ''} ({seeds_text(main)}) "
    f"classif{'y' if len(evidence.seeds(main)) > 1 else 'ies'} "
    f"{cell(zero_shot, 100)}% of the zero-shot images correctly{chance}, with a centroid gap of {cell(gap, 1)}. "
    f"{sum(len(evidence.seeds(m)) for m in evidence.labels)} models (model x seed) were evaluated in "
    f"{duration(evidence.timings['total'])} of compute"
    + (" (read from the cache in this build)." if evidence.from_cache else ".")
))

# %% [markdown]
# The laboratory's models are small and their data is simple, so the absolute numbers say little; the dry run's
# random weights make them meaningless. What the next chapters use the models for is *differences*: between a query
# approached intra-modally and the same query inverted into the other modality, and between models that differ in one
# training choice.
