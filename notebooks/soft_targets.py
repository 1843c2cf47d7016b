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
# # Soft targets: telling the contrastive loss which images are alike
#
# CLIP's loss asks each image to pick out its own caption among the batch, and treats every other caption as equally
# wrong, even the caption of another image of the same class. Nothing in it says how similar two images, or two
# captions, should be to each other: the paper's *intra-modal misalignment*. This book's extension replaces the hard
# one-hot targets with **soft targets** computed by two frozen uni-modal teachers, one for images and one for text,
# so that the inter-modal objective also carries a notion of which images (and which captions) belong together.
#
# This page writes the loss down, shows its targets on a batch of laboratory images, shows how the target
# temperature shapes them, and then compares laboratory CLIPs fine-tuned with soft targets against the same CLIPs
# fine-tuned with CLIP's loss (same start, data and steps: only the loss differs, as for the paper profile's real
# soft-target CLIP): intra-modal retrieval, the OTI gain, zero-shot accuracy and the modality gap. The soft-target loss
# is this book's addition, so the paper has no number for it: every build reads the laboratory here, and where a
# second source with a real CLIP fine-tuned with soft targets is given (`REAL_SOURCE`), that real model too.
#
# **Prior art.** Softened targets for CLIP are not new: SoftCLIP ({cite:t}`gao2024softclip`) softens the one-hot
# image-text targets with *intra-modal* similarities, computed from fine-grained features of the model being
# trained (self-similarity within each modality). The loss here differs in where the similarity comes from and how
# it enters: two *frozen, external* uni-modal teachers (an ImageNet image model and a sentence encoder), whose
# image-image and text-text cosines are averaged into one target matrix shared by both directions, mixed with the
# identity by a hard weight. The ablations below take it apart: target temperature, hard weight, and each teacher
# alone.

# %% tags=["parameters"]
SOURCE = "lab-embedded"
DEVICE = "cpu"
TARGET_TEMPERATURES = [0.05, 0.1, 0.2]  # shown as heatmaps
N_CLASSES_SHOWN = 8  # the example batch: this many classes ...
PER_CLASS = 2  # ... with this many images each
N_BOOT = 2000  # bootstrap resamples of the hierarchical bootstrap (seeds, then queries within seed)
REAL_SOURCE = None  # a second source holding a real CLIP fine-tuned with soft targets (family soft), e.g. "paper"

# %% tags=["hide-input"]
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from crossgap_lib import claims, evaluation, prose
from crossgap_lib.datasets.shapes import make_shapes
from crossgap_lib.lab import LabConfig
from crossgap_lib.losses import soft_targets
from crossgap_lib.teachers import ImageTeacher, TextTeacher, teacher_embeddings

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.max_colwidth", None)

# %% [markdown]
# ## The loss
#
# Take a batch of $N$ image-caption pairs $(I_a, T_a)$, the student's normalised features $f_I, f_T$ and its logit
# scale $s$. Two frozen teachers embed the same batch: an image model $m_i$ (EfficientNet-Lite0 trained on ImageNet)
# and a sentence model $m_t$ (all-MiniLM-L6-v2). Their average cosine similarity says how alike two pairs are,
#
# $$S_{ab} = \tfrac12\Big(\cos\big(m_i(I_a), m_i(I_b)\big) + \cos\big(m_t(T_a), m_t(T_b)\big)\Big), \qquad S_{aa} = 1,$$
#
# and a softmax at the *target temperature* $\tau$, mixed with a share $w$ of the identity, turns each row into a
# target distribution,
#
# $$Q = (1 - w)\,\operatorname{softmax}_b\!\big(S / \tau\big) + w\,\mathbb 1 .$$
#
# The loss is the cross-entropy of the student's image-to-text and text-to-image softmaxes against $Q$ (symmetric,
# since $S$ is),
#
# $$\mathcal L = \frac{1}{2N}\sum_a \Big[ H\big(Q_a, \operatorname{softmax}(s\, f_{I_a} f_T^\top)\big)
#   + H\big(Q_a, \operatorname{softmax}(s\, f_{T_a} f_I^\top)\big)\Big], \qquad H(q, p) = -\sum_b q_b \log p_b .$$
#
# With $w = 1$, or $\tau \to 0$, $Q$ is the identity and the loss is CLIP's. It is implemented as
# `crossgap_lib.losses.SoftTargetClipLoss`, a subclass of open_clip's `ClipLoss`; its targets are
# `crossgap_lib.losses.soft_targets`, and the teachers are `crossgap_lib.teachers.ImageTeacher` and `TextTeacher`.

# %% [markdown]
# ## The evidence
#
# The models compared below come from the book's one evaluation protocol (`crossgap_lib.evaluation`), computed once
# per source and read here. The page compares the first model trained with soft targets (family `soft`) with its
# control (`claims.soft_pair`): the model fine-tuned from the same CLIP with CLIP's loss where the source has one
# (the laboratory's `clip ft`), else the CLIP it was fine-tuned from.

# %%
evidence = evaluation.evaluate(SOURCE, device=DEVICE, progress=False)
soft, baseline = claims.soft_pair(evidence)

# %% tags=["hide-input"]
source_line = f"source `{evidence.source['name']}` ({evidence.source['resolved']['kind']})"
missing = [family for family, model in (("soft", soft), ("clip", baseline)) if model is None]
if missing:
    display(Markdown(
        f"This evidence ({source_line}) has no model of family {' or '.join(f'`{f}`' for f in missing)} (its "
        f"models: {', '.join(f'`{m}`' for m in evidence.labels)}), so this page shows the loss only."))
else:
    display(Markdown(
        f"Evidence: {source_line}. Soft targets: `{soft}` ({len(evidence.seeds(soft))} seeds); CLIP's loss: "
        f"`{baseline}` ({len(evidence.seeds(baseline))} seeds)."))


# %% tags=["hide-input"]
def teacher_similarity(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """S (N, N): the mean of the two teachers' cosine similarities (what `soft_targets` takes a softmax of)."""
    image, text = F.normalize(image.double(), dim=-1), F.normalize(text.double(), dim=-1)
    return ((image @ image.T + text @ text.T) / 2).float()


def target_mass(targets: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean share of a row of Q on the matching pair, on other pairs of the same class and on other classes."""
    targets, n = targets.double(), targets.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    same = (labels[:, None] == labels[None, :]) & ~eye
    return {"matching": float(targets[eye].mean()), "same class": float((targets * same).sum(1).mean()),
            "other classes": float((targets * ~(same | eye)).sum(1).mean())}


def similarity_by_class(similarity: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean similarity over distinct pairs of the same class and over pairs of different classes (NaN if none)."""
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    other = labels[:, None] != labels[None, :]
    return {"same class": float(similarity[same].mean()) if same.any() else math.nan,
            "other classes": float(similarity[other].mean()) if other.any() else math.nan}


# %% [markdown]
# ## The targets on one batch
#
# An example batch of laboratory test images, generated with the data settings of the soft-target model and chosen
# so that each class appears more than once; each is paired with its first caption, and both teachers (those the
# model was trained with) embed the batch. The teachers are frozen pre-trained networks, not the evaluated models.

# %%
if soft is not None:
    lab = LabConfig.from_dict(evidence.source["lab"])  # the soft model's training settings
    setting = next(s for s in lab.settings if s["name"] == soft)
    recipe, train_config = lab.recipe(setting, evidence.seeds(soft)[0]), lab.train_config(setting, 0)  # data
    tau, hard = recipe.soft_target_temperature, recipe.soft_hard_weight
    image_teacher, text_teacher = ImageTeacher(recipe.image_teacher), TextTeacher(recipe.text_teacher)
    pool = make_shapes("test", n=24 * N_CLASSES_SHOWN * PER_CLASS, config=train_config.data, seed=lab.data_seed)
    index = [i for c in range(len(pool.class_names)) if int((pool.labels == c).sum()) >= PER_CLASS
             for i in (pool.labels == c).nonzero().flatten()[:PER_CLASS].tolist()][: N_CLASSES_SHOWN * PER_CLASS]
    labels = pool.labels[index]
    names = [pool.class_names[int(c)] for c in labels]
    teacher_image = image_teacher.encode(pool.images[index])
    teacher_text = text_teacher.encode([pool.captions[i][0] for i in index])

# %% tags=["hide-input"]
if soft is not None:
    columns = len(index) // PER_CLASS
    fig, axes = plt.subplots(PER_CLASS, columns, figsize=(1.45 * columns, 1.95 * PER_CLASS), squeeze=False)
    for k, ax in enumerate(axes.T.ravel()):
        ax.imshow(pool.images[index[k]].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{k}: {names[k]}", fontsize=8)
        ax.axis("off")
    fig.suptitle("The example batch (index: class)", fontsize=11)
    fig.tight_layout()
    plt.show()
    display(Markdown(
        f"*Figure: {len(index)} generated test images ({N_CLASSES_SHOWN} classes x {PER_CLASS}) with the data "
        f"settings of `{soft}`, {source_line}.*"))

# %% [markdown]
# Left: the teachers' similarity $S$. Middle: the soft targets $Q$ at the model's target temperature. Right: the hard
# targets of CLIP's loss. Rows are images, columns captions; a row of $Q$ sums to one.

# %% tags=["hide-input"]
if soft is not None:
    S = teacher_similarity(teacher_image, teacher_text)
    Q = soft_targets(teacher_image, teacher_text, target_temperature=tau, hard_weight=hard)
    ticks = [f"{k}: {n}" for k, n in enumerate(names)]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    panels = [(S, "teacher similarity S", "mako", None),
              (Q, f"soft targets Q (τ = {tau:g}, w = {hard:g})", "rocket_r", (0, 1)),
              (torch.eye(len(index)), "hard targets of CLIP's loss", "rocket_r", (0, 1))]
    for ax, (matrix, title, cmap, limits) in zip(axes, panels):
        vmin, vmax = limits if limits else (float(matrix.min()), 1.0)
        sns.heatmap(matrix.numpy(), ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, square=True,
                    xticklabels=range(len(index)), yticklabels=ticks if ax is axes[0] else range(len(index)),
                    cbar_kws={"shrink": 0.75})
        ax.set(title=title, xlabel="caption b", ylabel="image a" if ax is axes[0] else "")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    plt.show()
    mass, by_class = target_mass(Q, labels), similarity_by_class(S, labels)
    display(Markdown(
        f"*Figure: teacher similarity and targets of the example batch, with the target temperature and hard weight "
        f"of `{soft}` ({source_line}).*\n\n"
        f"At τ = {tau:g} a row of Q puts on average {100 * mass['matching']:.1f}% of its mass on the matching "
        f"caption, {100 * mass['same class']:.1f}% on the other captions of the same class and "
        f"{100 * mass['other classes']:.1f}% on the other classes. The teachers' similarity averages "
        f"{by_class['same class']:.2f} between different pairs of the same class and {by_class['other classes']:.2f} "
        "between classes, against 1 for a pair with itself."))

# %% [markdown]
# ## The target temperature
#
# The target temperature $\tau$ decides how far the targets spread beyond the matching pair: small values give back
# CLIP's identity, large values spread the mass over every pair the teachers find similar, and eventually over the
# whole batch. How much mass leaves the diagonal also grows with the batch, since every other pair adds its share:
# the right panel repeats the measurement on a batch of the model's training size (the first training images,
# embedded by the teachers with `crossgap_lib.teachers.teacher_embeddings`, as training does).

# %% tags=["hide-input"]
if soft is not None:
    fig, axes = plt.subplots(1, len(TARGET_TEMPERATURES) + 1, figsize=(4.2 * (len(TARGET_TEMPERATURES) + 1), 4.2),
                             gridspec_kw={"width_ratios": [1] * len(TARGET_TEMPERATURES) + [1.25]})
    for ax, t in zip(axes, TARGET_TEMPERATURES):
        sns.heatmap(soft_targets(teacher_image, teacher_text, target_temperature=t, hard_weight=hard).numpy(), ax=ax,
                    cmap="rocket_r", vmin=0, vmax=1, square=True, cbar=False, xticklabels=False, yticklabels=False)
        ax.set(title=f"Q at τ = {t:g}", xlabel="caption b", ylabel="image a")
    batch = make_shapes("train", n=recipe.batch_size, config=train_config.data, seed=lab.data_seed)
    batch_image, batch_text = teacher_embeddings(batch, image_teacher=image_teacher, text_teacher=text_teacher,
                                                 progress=False)
    batch_text = batch_text[:, 0]  # the first caption of each image
    grid = np.geomspace(0.002, 2.0, 40)
    curves = {f"example batch ({len(index)})": (teacher_image, teacher_text, labels, "-"),
              f"training-size batch ({len(batch.labels)})": (batch_image, batch_text, batch.labels, "--")}
    masses = {}
    for name, (image_f, text_f, batch_labels, style) in curves.items():
        masses[name] = pd.DataFrame([{"tau": t, **target_mass(
            soft_targets(image_f, text_f, target_temperature=float(t), hard_weight=hard), batch_labels)}
            for t in grid])
        for column, color in zip(("matching", "same class", "other classes"), ("C0", "C1", "C2")):
            axes[-1].plot(grid, masses[name][column], ls=style, color=color,
                          label=f"{column}, {name}" if style == "-" else (name if column == "matching" else None))
    axes[-1].axvline(tau, color="black", ls=":", lw=1, label=f"model's τ = {tau:g}")
    axes[-1].set(xscale="log", xlabel="target temperature τ", ylabel="mean share of a row of Q",
                 title="Where the targets put their mass", ylim=(0, 1))
    axes[-1].legend(fontsize=7, loc="center left")
    fig.tight_layout()
    plt.show()
    train_mass = target_mass(soft_targets(batch_image, batch_text, target_temperature=tau, hard_weight=hard),
                             batch.labels)
    matching = masses[f"training-size batch ({len(batch.labels)})"]["matching"].to_numpy()
    half = (f"falls below one half from about τ = {float(grid[np.argmax(matching < 0.5)]):.2g} on this grid"
            if (matching < 0.5).any() else "stays above one half over this grid")
    display(Markdown(
        f"*Figure: targets of the example batch at {len(TARGET_TEMPERATURES)} temperatures, and the mean share of a "
        f"row on the matching pair, same-class and other-class pairs along τ (hard weight {hard:g}, teachers of "
        f"`{soft}`, {source_line}).*\n\n"
        f"In a batch of {len(batch.labels)} training pairs at the model's τ = {tau:g}, the targets keep "
        f"{100 * train_mass['matching']:.1f}% of each row on the matching caption, "
        f"{100 * train_mass['same class']:.1f}% on same-class captions and {100 * train_mass['other classes']:.1f}% "
        f"on other classes; the matching share {half}."))

# %% [markdown]
# ## What soft targets do to the models
#
# In the laboratory the two models are the same trained CLIPs fine-tuned for the same steps on the same data, one
# with each loss (see [the laboratory](lab)); both are measured on the same test queries. Two kinds of comparison,
# each with a 95% interval:
#
# - a **gain** (OTI minus intra-modal retrieval, OVI minus intra-modal text retrieval, zero-shot accuracy with OTI
#   features minus with the image features) is a per-query difference within each model, and `evidence.contrast`
#   gives its difference between the two models;
# - a **level** (intra-modal image or text mAP, OTI mAP, zero-shot accuracy) is compared query by query between the
#   two models (`evidence.contrast` with `b=None`: method a on the soft model minus on the baseline).
#
# Both use the book's one interval rule: a hierarchical bootstrap over paired seeds, then queries within seed.
#
# **The test:** if soft targets repaired intra-modal misalignment, intra-modal retrieval would rise (interval of
# *soft minus CLIP* above zero) and the OTI gain would shrink (interval below zero); an interval that includes zero
# shows neither.

# %%
GAINS = {"OTI gain, image (OTI - intra)": ("image", "oti", "intra"),
         "OVI gain, text (OVI - intra)": ("text", "ovi", "intra"),
         "zero-shot, OTI - image features": ("zero_shot", "oti", "inter")}
LEVELS = {"image-to-image mAP (intra-modal)": ("image", "intra"),
          "OTI-to-image mAP": ("image", "oti"),
          "text-to-text mAP (intra-modal)": ("text", "intra"),
          "zero-shot accuracy (image vs prompts)": ("zero_shot", "inter")}

rows, unmeasured = [], []
if not missing:
    for name, (task, a, b) in {**GAINS, **{k: (t, m, None) for k, (t, m) in LEVELS.items()}}.items():
        if not evidence.shared_datasets(soft, task, [a, b or a]) or \
                not evidence.shared_datasets(baseline, task, [a, b or a]):
            unmeasured.append(name)  # a task the source does not measure on these models (e.g. no OVI)
            continue
        effect = evidence.contrast(task, a, b, model=soft, model_b=baseline, n_boot=N_BOOT)
        rows.append({"quantity": name, "kind": "level" if b is None else "gain", **effect})
rows = pd.DataFrame(rows)
if unmeasured:
    display(Markdown(f"Not measured on these two models in this source: {', '.join(unmeasured)}."))
if not rows.empty:
    display(pd.DataFrame({
        f"{soft} - {baseline} (points) [95% CI]": [prose.ci_text(m, lo, hi) for m, lo, hi in
                                                   zip(rows["mean"], rows["low"], rows["high"])],
        "interval": rows["interval"].to_numpy(),
        "verdict": [{"up": "higher with soft targets", "down": "lower with soft targets",
                     "none": "no detectable difference"}[prose.direction(m, lo, hi)]
                    for m, lo, hi in zip(rows["mean"], rows["low"], rows["high"])]}, index=rows["quantity"]))

# %% tags=["hide-input"]
if not rows.empty:
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(rows) + 1.4))
    y = np.arange(len(rows))
    for i, r in rows.iterrows():
        colour = "C0" if r["kind"] == "gain" else "C1"
        ax.plot([100 * r["low"], 100 * r["high"]], [i, i], color=colour, lw=5, alpha=0.5, solid_capstyle="butt")
        ax.scatter([100 * v for v in r["per_seed"]], [i] * len(r["per_seed"]), marker="|", s=70, color=colour)
        ax.scatter([100 * r["mean"]], [i], color=colour, edgecolor="black", zorder=3)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(y, labels=rows["quantity"])
    ax.invert_yaxis()
    ax.grid(False, axis="y")
    ax.set(xlabel=f"{soft} - {baseline} (points)", title="Soft targets against CLIP's loss, same test queries")
    ax.legend(handles=[plt.Line2D([], [], color="C0", lw=5, alpha=0.5, label="gain: evidence.contrast"),
                       plt.Line2D([], [], color="C1", lw=5, alpha=0.5, label="level: evidence.contrast, b=None"),
                       plt.Line2D([], [], color="0.3", marker="|", ls="", markersize=10,
                                  label="seed i minus seed i")], fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    plt.show()
    display(Markdown(
        f"*Figure: `{soft}` minus `{baseline}` on {', '.join(f'`{d}`' for d in evidence.datasets('image'))} "
        f"({source_line}); bars: 95% intervals (column `interval` above).*\n\n" + "\n".join(
            "- " + prose.effect_sentence(f"{r['quantity']}, {soft} - {baseline}", r) for _, r in rows.iterrows())))

# %% [markdown]
# ## The modality gap
#
# The centroid distance between image and text features ({cite:t}`liang2022mind`), the mean cosine of matched
# image-text pairs and the learnt logit scale, per model and seed, and their difference between the two models
# (`Evidence.model_contrast`: a bootstrap over paired seeds, the book's one interval rule).

# %%
GAP = {"gap centroid distance": "centroid distance", "gap matched cosine": "matched image-text cosine",
       "logit scale": "logit scale"}
gap_rows = {}
if not missing:
    per_seed = {metric: evidence.model_values(metric) for metric in GAP}
    for metric in GAP:
        effect = evidence.model_contrast(metric, soft, baseline, n_boot=N_BOOT)
        gap_rows[metric] = (effect["mean"], effect["low"], effect["high"])
    display(pd.DataFrame({label: [prose.ci_text(*gap_rows[metric], scale=1, digits=3)]
                          for metric, label in GAP.items()}, index=[f"{soft} - {baseline} [95% CI]"]))

# %% tags=["hide-input"]
if not missing:
    fig, axes = plt.subplots(1, len(GAP), figsize=(11, 3.4))
    for ax, (metric, label) in zip(axes, GAP.items()):
        frame = per_seed[metric]
        wide = frame[frame["model"].isin([baseline, soft])].pivot(index="seed", columns="model", values="value")
        wide = wide[[baseline, soft]]
        for _seed, values in wide.iterrows():
            ax.plot([0, 1], values.to_numpy(), marker="o", color="0.55", lw=1)
        ax.plot([0, 1], wide.mean().to_numpy(), marker="D", color="C0", lw=2.5, label="mean over seeds")
        ax.set_xticks([0, 1], labels=[baseline, soft])
        ax.set_xlim(-0.3, 1.3)
        ax.set(title=label, xlabel="model", ylabel=label)
        ax.ticklabel_format(axis="y", useOffset=False)
    axes[0].legend(fontsize=8)
    fig.suptitle("Modality gap per model: grey lines join the two models of one training seed", fontsize=10)
    fig.tight_layout()
    plt.show()
    gap_dataset = evidence.datasets("model")
    display(Markdown(
        f"*Figure: gap measures of `{baseline}` and `{soft}` on paired image and text features of "
        f"{', '.join(f'`{d}`' for d in gap_dataset)} ({source_line}).*\n\n" + "\n".join(
            "- " + prose.verdict(f"{label}, {soft} - {baseline}", *gap_rows[metric], scale=1, unit="", digits=3,
                                 interval="95% CI, bootstrap over paired seeds").replace("  (", " (")
            for metric, label in GAP.items())))

# %% [markdown]
# ## In short

# %% tags=["hide-input"]
if not rows.empty:
    by = rows.set_index("quantity")

    def said(name: str) -> str:
        r = by.loc[name]
        word = {"up": "raises", "down": "lowers", "none": "does not detectably change"}[
            prose.direction(r["mean"], r["low"], r["high"])]
        return f"{word} the {name} ({prose.ci_text(r['mean'], r['low'], r['high'])} points)"

    gap = gap_rows["gap centroid distance"]
    gap_word = {"up": "widens", "down": "narrows", "none": "does not detectably change"}[prose.direction(*gap)]
    seeds = len(evidence.seeds(soft))
    display(Markdown(
        f"Against CLIP's loss, on {source_line} with 95% intervals over {seeds} seed{'s' if seeds != 1 else ''}, "
        f"training with soft targets {said('image-to-image mAP (intra-modal)')}, "
        f"{said('OTI gain, image (OTI - intra)')} and {said('zero-shot accuracy (image vs prompts)')}; it "
        f"{gap_word} the centroid gap ({prose.ci_text(*gap, scale=1, digits=3)}). By the test stated above, soft "
        "targets would repair intra-modal misalignment if the first rose and the second fell; the signs above say "
        "which of these this laboratory shows."))

# %% [markdown]
# ## Ablations: which part of the soft targets does what?
#
# The laboratory also fine-tunes each trained CLIP (same seeds) for a short schedule, once with CLIP's loss (the
# control: fine-tuning alone) and once per soft-target variant: the default targets, a higher target temperature, a
# hard weight of one half, and each teacher alone. Every variant is compared with the control on the same queries
# and seeds. **The test:** a variant *shrinks the gap* if the centroid distance falls (interval below zero) and
# *repairs intra-modal misalignment* if the OTI gain falls (interval below zero) while intra-modal retrieval does not;
# "neither" when both intervals include zero.

# %% tags=["hide-input"]
control = baseline
variants = claims.soft_variants(evidence, control) if control is not None else []
ablation = []
for variant in variants if control is not None else []:
    gain = evidence.contrast("image", "oti", "intra", model=variant, model_b=control, n_boot=N_BOOT)
    level = evidence.contrast("image", "intra", None, model=variant, model_b=control, n_boot=N_BOOT)
    centroid = evidence.model_contrast("gap centroid distance", variant, control, n_boot=N_BOOT)
    cosine = evidence.model_contrast("gap matched cosine", variant, control, n_boot=N_BOOT)
    shrinks = centroid["high"] < 0
    repairs = gain["high"] < 0 and level["low"] > -0.005
    ablation.append({"variant": variant, "seeds": len(evidence.seeds(variant)),
                     "OTI gain - control (points)": prose.ci_text(gain["mean"], gain["low"], gain["high"]),
                     "intra mAP - control (points)": prose.ci_text(level["mean"], level["low"], level["high"]),
                     "centroid distance - control": prose.ci_text(centroid["mean"], centroid["low"],
                                                                  centroid["high"], scale=1, digits=3),
                     "matched cosine - control": prose.ci_text(cosine["mean"], cosine["low"], cosine["high"],
                                                               scale=1, digits=3),
                     "shrinks": {(True, True): "both", (True, False): "the gap only",
                                 (False, True): "the misalignment only", (False, False): "neither"}[(shrinks, repairs)],
                     "_gain": gain, "_centroid": centroid})
if ablation:
    frame = pd.DataFrame(ablation).set_index("variant")
    display(frame.drop(columns=["_gain", "_centroid"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(frame) + 1.6), sharey=True)
    for ax, key, scale, title in ((axes[0], "_gain", 100, "OTI gain minus the control's (points)"),
                                  (axes[1], "_centroid", 1, "centroid distance minus the control's")):
        for i, (_, r) in enumerate(frame.iterrows()):
            e = r[key]
            ax.plot([scale * e["low"], scale * e["high"]], [i, i], color="C2", lw=5, alpha=0.5, solid_capstyle="butt")
            ax.scatter([scale * e["mean"]], [i], color="C2", edgecolor="black", zorder=3)
        ax.axvline(0, color="black", lw=1)
        ax.set(title=title)
        ax.grid(False, axis="y")
    axes[0].set_yticks(range(len(frame)), labels=frame.index)
    axes[0].invert_yaxis()
    fig.tight_layout()
    plt.show()
    display(Markdown(f"*Figure: each soft-target fine-tuning minus the CLIP-loss fine-tuning `{control}` "
                     f"({source_line}); bars: 95% intervals, bootstrap over paired seeds then queries.*"))
else:
    display(Markdown(f"This evidence ({source_line}) holds no fine-tuned soft-target variants with a CLIP-loss "
                     "control, so there is no ablation to show."))

# %% [markdown]
# ## A real CLIP fine-tuned with soft targets
#
# The paper profile also fine-tunes a real CLIP with this loss (`crossgap_lib.finetune`, the function Table 4's
# models come from) and evaluates it with the same protocol. Compared with the model it started from, does it have a
# smaller gap and a smaller OTI gain? One seed: the intervals are over queries only.

# %% tags=["hide-input"]
real = evaluation.evaluate(REAL_SOURCE, device=DEVICE, progress=False) if REAL_SOURCE else None
real_soft = claims.pick(real, "soft") if real is not None else None
real_rows = []
if real_soft is not None:
    base = real.models.set_index("label").loc[real_soft].get("base", None) if "base" in real.models else None
    base = base if isinstance(base, str) and base in real.labels else claims.pick(real, "clip")
    gain = real.contrast("image", "oti", "intra", model=real_soft, model_b=base, n_boot=N_BOOT)
    real_rows = [{"quantity": "OTI gain minus the base model's (points)",
                  "value [95% CI]": prose.ci_text(gain["mean"], gain["low"], gain["high"])}]
    for metric in ("gap centroid distance", "gap matched cosine"):
        values = real.model_values(metric).groupby("model")["value"].mean()
        real_rows.append({"quantity": f"{metric}: `{real_soft}` vs `{base}`",
                          "value [95% CI]": f"{values[real_soft]:.3f} vs {values[base]:.3f}"})
    display(pd.DataFrame(real_rows).set_index("quantity"))
    display(Markdown(f"*Source `{REAL_SOURCE}`: `{real_soft}` fine-tuned from `{base}`.*"))
else:
    display(Markdown("No second source with a soft-target fine-tuned real CLIP was given to this build "
                     f"(`REAL_SOURCE = {REAL_SOURCE!r}`): the paper profile sets it."))
