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
# # The laboratory: tiny CLIPs trained here
#
# Real CLIP weights and the paper's datasets cannot be downloaded on the machine that builds the default book. So the
# book brings its own laboratory: a generated dataset of coloured shapes with captions, and tiny CLIP models (open_clip
# architectures, a few million parameters) trained on it from scratch, several times with different seeds. Every
# later chapter reads the models and measurements made here.
#
# The laboratory is *controlled*, not *realistic*. Each of the paper's mechanisms can be switched on and off: the
# temperature that sets the modality gap, an intra-modal (SLIP-style) loss term, soft targets, what the captions
# mention. What it cannot do is tell how large any effect is for CLIP trained on 400 million web image-text pairs.

# %% tags=["parameters"]
PROFILE = "embedded"
SOURCE = "lab"
LAB_PRESET = "embedded"
LAB_OVERRIDES = {}
DEVICE = "cpu"

# %% tags=["hide-input"]
# %matplotlib inline
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from myst_nb import glue

from crossgap_lib.datasets.shapes import ShapesConfig, describe, make_shapes, show_grid
from crossgap_lib.lab import LabConfig, run_lab

sns.set_theme(style="whitegrid", context="notebook")
config = LabConfig.from_dict({**getattr(LabConfig, LAB_PRESET)().to_dict(), **LAB_OVERRIDES})

# %% [markdown]
# ## The data: classes in the captions, nuisance in the pixels
#
# A class is a combination of semantic attributes (shape and colour). Each image also carries nuisance factors that
# no caption mentions by default: background colour and texture, position, size, rotation and small distractor
# shapes. Raw pixel similarity is therefore dominated by nuisance, while the captions carry the class. This mirrors
# the situation the paper describes: what two images have in common visually is not what their captions say.

# %%
data_config = ShapesConfig(**{**config.data})
sample = make_shapes("train", n=16, config=data_config, seed=config.data_seed)
fig = show_grid(sample, n=16)
fig.suptitle("Generated training images with one of their captions")
display(fig)

# %% tags=["hide-output"]
print(describe(data_config))

# %% [markdown]
# ## What is trained
#
# Each *setting* below is trained once per seed with the same data, architecture and schedule; only the loss or the
# temperature differs. `clip` is open_clip's contrastive loss with CLIP's learnable temperature; `T=0.01` and `T=1`
# fix the temperature (the paper's modality-gap experiment); `soft` is the soft-target loss of this book; `intra`
# adds a SimCLR image-image term as SLIP does.

# %%
settings = pd.DataFrame(config.settings).astype(object).fillna("")
display(settings)
display(Markdown(
    f"Architecture `{config.model}`, seeds {config.seeds}, {config.n_test} held-out test images as queries and "
    f"{config.n_gallery} training images as the retrieval gallery. Training overrides: `{config.train}`."
))

# %% tags=["hide-output"]
lab = run_lab(config, progress=True)

# %% [markdown]
# ## Training curves
#
# The contrastive loss and the logit scale (inverse temperature) over training, one line per seed.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
palette = dict(zip(lab.training, sns.color_palette("tab10", len(lab.training))))
for name, runs in lab.training.items():
    for seed, run in runs.items():
        label = name if seed == config.seeds[0] else None
        axes[0].plot(run["losses"], color=palette[name], alpha=0.7, label=label)
        axes[1].plot(run["logit_scales"], color=palette[name], alpha=0.7, label=label)
axes[0].set(xlabel="step", ylabel="training loss", title="Loss")
axes[1].set(xlabel="step", ylabel="logit scale = 1 / temperature", title="Temperature", yscale="log")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## How good are the tiny CLIPs?
#
# Zero-shot classification with class prompts, cross-modal retrieval (R@1 of the matching caption among the test
# captions) and the modality gap (distance between the image and text centroids, {cite:t}`liang2022mind`), as mean
# over seeds with a 95% t-interval across seeds.

# %%
shown = ["zero_shot", "i2t_R@1", "t2i_R@1", "gap_centroid", "gap_matched_cos", "logit_scale", "train_seconds"]
table = lab.table(metrics_shown=shown)
display(table)

# %%
summary = lab.summary.set_index(["setting", "metric"])["mean"]
first = config.settings[0]["name"]
glue("lab_zero_shot", float(100 * summary[(first, "zero_shot")]), display=False)
glue("lab_gap", float(summary[(first, "gap_centroid")]), display=False)
glue("lab_minutes", lab.timings["total"] / 60, display=False)
glue("lab_models", len(config.settings) * len(config.seeds), display=False)
chance = 100 / len(data_config.class_names)
display(Markdown(
    f"The `{first}` models classify {100 * summary[(first, 'zero_shot')]:.1f}% of held-out images correctly "
    f"zero-shot (chance: {chance:.1f}%), with a centroid gap of {summary[(first, 'gap_centroid')]:.2f}. "
    f"{len(config.settings) * len(config.seeds)} models were trained and evaluated in "
    f"{lab.timings['total'] / 60:.1f} minutes of compute"
    + (" (read from the cache in this build)." if lab.from_cache else ".")
))

# %% [markdown]
# These models are small and their data is simple, so the absolute numbers say little. What the next chapters use
# them for is *differences*: between a query approached intra-modally and the same query inverted into the other
# modality, and between models that differ in one training choice.
