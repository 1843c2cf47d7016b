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
# temperature shapes them, and then compares the laboratory models trained with soft targets against those trained
# with CLIP's loss: intra-modal retrieval, the OTI gain, zero-shot accuracy and the modality gap.

# %% tags=["parameters"]
PROFILE = "embedded"
SOURCE = "lab"
LAB_PRESET = "embedded"
LAB_OVERRIDES = {}
DEVICE = "cpu"
SOFT_SETTING = "soft"  # the laboratory setting trained with soft targets
BASELINE_SETTING = "clip"  # ... and the one trained with CLIP's loss
TARGET_TEMPERATURES = [0.05, 0.1, 0.2]  # shown as heatmaps
N_CLASSES_SHOWN = 8  # the example batch: this many classes ...
PER_CLASS = 2  # ... with this many images each

# %% tags=["hide-input"]
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from crossgap_lib import report, summary
from crossgap_lib.datasets.shapes import make_shapes
from crossgap_lib.lab import LabConfig, run_lab
from crossgap_lib.losses import soft_targets
from crossgap_lib.teachers import ImageTeacher, TextTeacher, teacher_embeddings

sns.set_theme(style="whitegrid", context="notebook")
config = LabConfig.from_dict({**getattr(LabConfig, LAB_PRESET)().to_dict(), **LAB_OVERRIDES})

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
# `crossgap_lib.losses.SoftTargetClipLoss`, a subclass of open_clip's `ClipLoss`.

# %% [markdown]
# ## The targets on one batch
#
# An example batch of laboratory test images, chosen so that each class appears more than once; each is paired with
# its first caption, and both teachers embed the batch.

# %%
train_setting = next((s for s in config.settings if s["name"] == SOFT_SETTING), {"name": SOFT_SETTING, "loss": "soft"})
train_config = config.train_config(train_setting, config.seeds[0])
pool = make_shapes("test", n=24 * N_CLASSES_SHOWN * PER_CLASS, config=train_config.data, seed=config.data_seed)
index = [i for c in range(len(pool.class_names)) for i in (pool.labels == c).nonzero().flatten()[:PER_CLASS].tolist()
         if int((pool.labels == c).sum()) >= PER_CLASS][: N_CLASSES_SHOWN * PER_CLASS]
labels = pool.labels[index]
names = [pool.class_names[int(c)] for c in labels]
captions = [pool.captions[i][0] for i in index]
image_teacher, text_teacher = ImageTeacher(train_config.image_teacher), TextTeacher(train_config.text_teacher)
teacher_image = image_teacher.encode(pool.images[index])
teacher_text = text_teacher.encode(captions)
tau = train_config.soft_target_temperature
hard = train_config.soft_hard_weight

fig, axes = plt.subplots(PER_CLASS, len(index) // PER_CLASS, figsize=(1.45 * len(index) / PER_CLASS, 1.95 * PER_CLASS))
for k, ax in enumerate(axes.T.ravel()):
    ax.imshow(pool.images[index[k]].permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(f"{k}: {names[k]}", fontsize=8)
    ax.axis("off")
fig.suptitle("The example batch (index: class)", fontsize=11)
fig.tight_layout()
plt.show()

# %% [markdown]
# Left: the teachers' similarity $S$. Middle: the soft targets $Q$ at the laboratory's target temperature. Right: the
# hard targets of CLIP's loss. Rows are images, columns captions; a row of $Q$ sums to one.

# %%
S = summary.teacher_similarity(teacher_image, teacher_text)
Q = soft_targets(teacher_image, teacher_text, target_temperature=tau, hard_weight=hard)
ticks = [f"{k}: {n}" for k, n in enumerate(names)]
fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
panels = [(S, "teacher similarity S", "mako", None),
          (Q, f"soft targets Q (τ = {tau:g}, w = {hard:g})", "rocket_r", (0, 1)),
          (torch.eye(len(index)), "hard targets of CLIP's loss", "rocket_r", (0, 1))]
for ax, (matrix, title, cmap, limits) in zip(axes, panels):
    vmin, vmax = limits if limits else (float(matrix.min()), 1.0)
    sns.heatmap(matrix.numpy(), ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, square=True, xticklabels=range(len(index)),
                yticklabels=ticks if ax is axes[0] else range(len(index)), cbar_kws={"shrink": 0.75})
    ax.set(title=title, xlabel="caption b", ylabel="image a" if ax is axes[0] else "")
    ax.tick_params(labelsize=7)
fig.tight_layout()
plt.show()

mass = summary.target_mass(Q, labels)
by_class = summary.similarity_by_class(S, labels)
display(Markdown(
    f"At τ = {tau:g} a row of Q puts on average {100 * mass['matching']:.1f}% of its mass on the matching caption, "
    f"{100 * mass['same class']:.1f}% on the other captions of the same class and "
    f"{100 * mass['other classes']:.1f}% on the other classes. The teachers' similarity averages "
    f"{by_class['same class']:.2f} between different pairs of the same class and {by_class['other classes']:.2f} "
    "between classes, against 1 for a pair with itself."))

# %% [markdown]
# ## The target temperature
#
# The target temperature $\tau$ decides how far the targets spread beyond the matching pair: small values give back
# CLIP's identity, large values spread the mass over every pair the teachers find similar, and eventually over the
# whole batch. How much mass leaves the diagonal also grows with the batch, since every other pair adds its share:
# the right panel repeats the measurement on a batch of the laboratory's training size (the first training images,
# embedded by the teachers with `crossgap_lib.teachers.teacher_embeddings`, as training does).

# %%
fig, axes = plt.subplots(1, len(TARGET_TEMPERATURES) + 1, figsize=(4.2 * (len(TARGET_TEMPERATURES) + 1), 4.2),
                         gridspec_kw={"width_ratios": [1] * len(TARGET_TEMPERATURES) + [1.25]})
for ax, t in zip(axes, TARGET_TEMPERATURES):
    sns.heatmap(soft_targets(teacher_image, teacher_text, target_temperature=t, hard_weight=hard).numpy(), ax=ax,
                cmap="rocket_r", vmin=0, vmax=1, square=True, cbar=False, xticklabels=False, yticklabels=False)
    ax.set(title=f"Q at τ = {t:g}", xlabel="caption b", ylabel="image a")
batch = make_shapes("train", n=train_config.batch_size, config=train_config.data, seed=config.data_seed)
batch_image, batch_text = teacher_embeddings(batch, image_teacher=image_teacher, text_teacher=text_teacher,
                                             progress=False)
batch_text = batch_text[:, 0]  # the first caption of each image
grid = np.geomspace(0.002, 2.0, 40)
curves = {
    f"example batch ({len(index)})": (teacher_image, teacher_text, labels, "-"),
    f"training-size batch ({len(batch.labels)})": (batch_image, batch_text, batch.labels, "--"),
}
masses = {}
for name, (image_f, text_f, batch_labels, style) in curves.items():
    masses[name] = pd.DataFrame([{"tau": t, **summary.target_mass(
        soft_targets(image_f, text_f, target_temperature=float(t), hard_weight=hard), batch_labels)} for t in grid])
    for column, color in zip(("matching", "same class", "other classes"), ("C0", "C1", "C2")):
        axes[-1].plot(grid, masses[name][column], ls=style, color=color,
                      label=f"{column}, {name}" if style == "-" else (name if column == "matching" else None))
axes[-1].axvline(tau, color="black", ls=":", lw=1, label=f"lab τ = {tau:g}")
axes[-1].set(xscale="log", xlabel="target temperature τ", ylabel="mean share of a row of Q",
             title="Where the targets put their mass", ylim=(0, 1))
axes[-1].legend(fontsize=7, loc="center left")
fig.tight_layout()
plt.show()

train_mass = summary.target_mass(
    soft_targets(batch_image, batch_text, target_temperature=tau, hard_weight=hard), batch.labels)
half = float(grid[np.argmax(masses[f"training-size batch ({len(batch.labels)})"]["matching"].to_numpy() < 0.5)])
display(Markdown(
    f"In a batch of {len(batch.labels)} training pairs at the laboratory's τ = {tau:g}, the targets keep "
    f"{100 * train_mass['matching']:.1f}% of each row on the matching caption, {100 * train_mass['same class']:.1f}% "
    f"on same-class captions and {100 * train_mass['other classes']:.1f}% on other classes; the matching share falls "
    f"below one half from about τ = {half:.2g} on this grid."))

# %% [markdown]
# ## What soft targets do to the laboratory models
#
# The laboratory trains the same architecture, data and schedule with CLIP's loss and with the soft-target loss,
# several seeds each (see [the laboratory](lab)). The table and figure compare the two settings on the same test
# queries: the difference *soft minus CLIP* for intra-modal image and text retrieval, OTI retrieval, the OTI gain (OTI
# minus intra-modal, per query) and zero-shot accuracy, with the 95% interval over seeds (seeds paired) and the
# paired bootstrap interval over queries.

# %%
if SOURCE == "paper":
    display(Markdown(
        "The soft-target loss is this book's addition, so the paper has no number for it and the `paper` source has "
        "nothing to rerun here: this page shows the laboratory (which runs in every profile) as it is."))
lab = run_lab(config, progress=False)
settings = [s["name"] for s in config.settings]
available = SOFT_SETTING in settings and BASELINE_SETTING in settings
QUANTITIES = {"img_intra": "image-to-image mAP (intra-modal)", "img_oti": "OTI-to-image mAP",
              "oti_gain": "OTI gain (OTI - intra-modal)", "txt_intra": "text-to-text mAP (intra-modal)",
              "zero_shot": "zero-shot accuracy"}
if not available:
    display(Markdown(f"This laboratory has no `{SOFT_SETTING}` or no `{BASELINE_SETTING}` setting (it has "
                     f"{settings}), so there is nothing to compare."))
else:
    rows = pd.DataFrame([{"quantity": label, **summary.contrast(lab, SOFT_SETTING, key, BASELINE_SETTING)}
                         for key, label in QUANTITIES.items()])
    table = pd.DataFrame({
        f"{SOFT_SETTING} - {BASELINE_SETTING} (points) [95% CI over seeds]": [
            report.ci_text(r["mean_diff"], r["seed_ci_low"], r["seed_ci_high"]) for _, r in rows.iterrows()],
        "[95% bootstrap CI over queries]": [
            report.ci_text(r["boot_diff"], r["boot_ci_low"], r["boot_ci_high"]) for _, r in rows.iterrows()],
        "seeds": rows["n_seeds"].to_numpy(), "queries x seeds": rows["n_pairs"].to_numpy(),
    }, index=rows["quantity"])
    display(table)

# %%
if available:
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    y = np.arange(len(rows))
    ax.hlines(y, 100 * rows["seed_ci_low"], 100 * rows["seed_ci_high"], color="C0", lw=1.2,
              label="95% CI over seeds")
    ax.hlines(y, 100 * rows["boot_ci_low"], 100 * rows["boot_ci_high"], color="C0", lw=6, alpha=0.35,
              label="95% bootstrap CI over queries")
    for i, per_seed in enumerate(rows["per_seed"]):
        ax.scatter([100 * v for v in per_seed], [i] * len(per_seed), marker="|", s=70, color="C0")
    ax.scatter(100 * rows["mean_diff"], y, color="C0", edgecolor="black", zorder=3, label="mean (ticks: seeds)")
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(y, labels=rows["quantity"])
    ax.invert_yaxis()
    ax.grid(False, axis="y")
    ax.set(xlabel=f"{SOFT_SETTING} - {BASELINE_SETTING} (points)",
           title="Soft targets against CLIP's loss, same test queries (laboratory)")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    plt.show()
    display(Markdown("\n".join(
        "- " + report.verdict(f"{r['quantity']}, {SOFT_SETTING} - {BASELINE_SETTING}", r["mean_diff"],
                              r["seed_ci_low"], r["seed_ci_high"], interval="95% CI over seeds")
        for _, r in rows.iterrows())))

# %% [markdown]
# ## The modality gap
#
# The centroid distance between image and caption features ({cite:t}`liang2022mind`) and the mean cosine of matched
# image-caption pairs, per setting (mean over seeds with the 95% interval), and their difference paired by seed.

# %%
GAP = {"gap_centroid": "centroid distance", "gap_matched_cos": "matched image-caption cosine"}
if available:
    display(lab.table(metrics_shown=[*GAP, "logit_scale"]).loc[[BASELINE_SETTING, SOFT_SETTING]])
    gap_rows = {metric: summary.seed_difference(lab, metric, SOFT_SETTING, BASELINE_SETTING) for metric in GAP}
    display(Markdown("\n".join(
        "- " + report.verdict(f"{label}, {SOFT_SETTING} - {BASELINE_SETTING}", d["mean"], d["low"], d["high"],
                              scale=1, unit="", digits=3, interval="95% CI over seeds").replace("  (", " (")
        for (metric, label), d in zip(GAP.items(), gap_rows.values()))))

    fig, axes = plt.subplots(1, len(GAP), figsize=(9, 3.4))
    tidy = lab.tidy[lab.tidy["setting"].isin([BASELINE_SETTING, SOFT_SETTING])]
    for ax, (metric, label) in zip(axes, GAP.items()):
        wide = tidy[tidy["metric"] == metric].pivot(index="seed", columns="setting", values="value")
        wide = wide[[BASELINE_SETTING, SOFT_SETTING]]
        for _seed, values in wide.iterrows():
            ax.plot([0, 1], values.to_numpy(), marker="o", color="0.55", lw=1)
        ax.plot([0, 1], wide.mean().to_numpy(), marker="D", color="C0", lw=2.5, label="mean over seeds")
        ax.set_xticks([0, 1], labels=[BASELINE_SETTING, SOFT_SETTING])
        ax.set_xlim(-0.3, 1.3)
        ax.set(title=label, xlabel="laboratory setting", ylabel=label)
    axes[0].legend(fontsize=8)
    fig.suptitle("Modality gap per model: grey lines join the two models of one training seed", fontsize=10)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## In short

# %%
if available:
    by = rows.set_index("quantity")

    def said(key: str) -> str:
        r = by.loc[QUANTITIES[key]]
        word = {"up": "raises", "down": "lowers", "none": "does not detectably change"}[
            report.direction(r["mean_diff"], r["seed_ci_low"], r["seed_ci_high"])]
        return (f"{word} {QUANTITIES[key]} "
                f"({report.ci_text(r['mean_diff'], r['seed_ci_low'], r['seed_ci_high'])} points)")

    gap = gap_rows["gap_centroid"]
    gap_word = {"up": "widens", "down": "narrows", "none": "does not detectably change"}[
        report.direction(gap["mean"], gap["low"], gap["high"])]
    display(Markdown(
        f"Against CLIP's loss, in this laboratory and with 95% intervals over {len(config.seeds)} seeds, training "
        f"with soft targets {said('img_intra')}, {said('oti_gain')} and {said('zero_shot')}; it {gap_word} the "
        f"centroid gap ({report.ci_text(gap['mean'], gap['low'], gap['high'], scale=1, digits=3)}). If soft "
        "targets repaired intra-modal misalignment, intra-modal retrieval would rise and the OTI gain would shrink; "
        "the signs above say which of these this laboratory shows."))
