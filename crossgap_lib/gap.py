"""Modality gap and intra-modal misalignment: measures, similarity distributions and post-hoc baselines.

Measures: :func:`centroid_distance` (Liang et al. 2022), :func:`matched_cosine`, :func:`similarity_distributions`
(the pairwise-cosine histograms of the paper's Figure 2c and Figure A1) and :func:`class_overlap` (how much
same-class and different-class similarities overlap).

Post-hoc baselines map features to features, so the retrieval code scores them beside OTI/OVI:
:func:`mean_center`, :func:`shift_along_gap` and the text-span projection of Herzog & Wang (arXiv 2603.16100,
:func:`fit_text_span`). All outputs are L2-normalised unless ``renormalize=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from .metrics import _as_features

__all__ = [
    "TextSpanProjector",
    "centroid",
    "centroid_distance",
    "class_overlap",
    "fit_text_span",
    "matched_cosine",
    "mean_center",
    "shift_along_gap",
    "similarity_distributions",
]


def _same_dim(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has dim {a.shape[1]} but {name_b} has dim {b.shape[1]}; expected equal")


def _paired(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    _same_dim(name_a, a, name_b, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}; expected matched pairs")


def _check_max_pairs(max_pairs: int) -> None:
    if not isinstance(max_pairs, int) or max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive int, got {max_pairs!r}")


# -------------------------------------------------------------------------------------------------------- measures
def centroid(features: torch.Tensor) -> torch.Tensor:
    """Mean (D,) of the L2-normalised features (N, D)."""
    return F.normalize(_as_features("features", features), dim=1).mean(0)


def centroid_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """Modality gap of Liang et al. (2022): ||mean(normalised images) - mean(normalised texts)||."""
    image_features = _as_features("image_features", image_features)
    text_features = _as_features("text_features", text_features)
    _same_dim("image_features", image_features, "text_features", text_features)
    return float((centroid(image_features) - centroid(text_features)).norm())


def matched_cosine(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of the cosine between row i of images (N, D) and row i of texts (N, D)."""
    image_features = _as_features("image_features", image_features)
    text_features = _as_features("text_features", text_features)
    _paired("image_features", image_features, "text_features", text_features)
    cosines = F.cosine_similarity(image_features.double(), text_features.double(), dim=1)
    std = float(cosines.std()) if cosines.numel() > 1 else 0.0
    return float(cosines.mean()), std


def _sample_pairs(n: int, max_pairs: int, generator: torch.Generator, within: bool) -> tuple[torch.Tensor, ...]:
    """Index pairs (i, j), i != j, over n items: unordered pairs of one set (``within``) or ordered pairs of two
    aligned sets of n rows; all of them if at most ``max_pairs``, else ``max_pairs`` drawn uniformly with
    replacement."""
    total = n * (n - 1) // 2 if within else n * (n - 1)
    if total <= max_pairs:
        if within:
            return tuple(torch.triu_indices(n, n, offset=1))
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = i != j
        return i[keep], j[keep]
    i = torch.randint(0, n, (max_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (max_pairs,), generator=generator)) % n
    return i, j


def _pair_cosines(a: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    a = F.normalize(a.double(), dim=1)
    b = F.normalize(b.double(), dim=1)
    return (a[i] * b[j]).sum(1).float()


def _class_pairs(
    labels: torch.Tensor, max_pairs: int, generator: torch.Generator
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(same-class pairs, different-class pairs) of indices, all of them or ``max_pairs`` sampled of each kind."""
    n = labels.numel()
    if n * (n - 1) // 2 <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
        same = labels[i] == labels[j]
        return (i[same], j[same]), (i[~same], j[~same])
    # same class: i uniform among items with a classmate, j uniform among its classmates
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = counts.cumsum(0) - counts
    slot = torch.searchsorted(classes, labels)
    eligible = (counts[slot] > 1).nonzero().squeeze(1)
    if eligible.numel():
        i = eligible[torch.randint(0, eligible.numel(), (max_pairs,), generator=generator)]
        size = counts[slot[i]]
        rank_of_i = torch.empty_like(order)
        rank_of_i[order] = torch.arange(n)
        own = rank_of_i[i] - starts[slot[i]]
        other = (own + 1 + (torch.rand(max_pairs, generator=generator) * (size - 1)).long().clamp_max(size - 2)) % size
        same_pairs = (i, order[starts[slot[i]] + other])
    else:
        same_pairs = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    # different class: rejection sampling of uniform pairs
    if classes.numel() < 2:
        diff_pairs = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    else:
        found_i, found_j, n_found = [], [], 0
        while n_found < max_pairs:
            i = torch.randint(0, n, (2 * max_pairs,), generator=generator)
            j = torch.randint(0, n, (2 * max_pairs,), generator=generator)
            keep = labels[i] != labels[j]
            found_i.append(i[keep])
            found_j.append(j[keep])
            n_found += int(keep.sum())
        diff_pairs = (torch.cat(found_i)[:max_pairs], torch.cat(found_j)[:max_pairs])
    return same_pairs, diff_pairs


@torch.no_grad()
def similarity_distributions(
    image_features: torch.Tensor,
    text_features: torch.Tensor | None = None,
    inverted_features: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Pairwise cosine similarities (1-D tensors) for histograms like the paper's Figure 2c and Figure A1.

    Keys: ``image-image`` (distinct image pairs); with ``text_features``: ``text-text`` and ``text-image``; with
    ``inverted_features`` (e.g. OTI features, row i inverted from image i): ``inverted-image``. When two sets have
    the same number of rows, row i of one is taken as the match of row i of the other: the cross-set keys then hold
    non-matched pairs (i != j) and ``<key>/matched`` holds the matched ones. With ``labels`` (N,) for the images:
    ``image-image/same-class`` and ``image-image/different-class``. At most ``max_pairs`` pairs per key (sampled
    uniformly with replacement, seeded, beyond that).
    """
    _check_max_pairs(max_pairs)
    generator = torch.Generator().manual_seed(seed)
    images = _as_features("image_features", image_features).cpu()
    out: dict[str, torch.Tensor] = {}
    if images.shape[0] > 1:
        i, j = _sample_pairs(images.shape[0], max_pairs, generator, within=True)
        out["image-image"] = _pair_cosines(images, images, i, j)
    cross = {}
    if text_features is not None:
        texts = _as_features("text_features", text_features).cpu()
        _same_dim("image_features", images, "text_features", texts)
        if texts.shape[0] > 1:
            i, j = _sample_pairs(texts.shape[0], max_pairs, generator, within=True)
            out["text-text"] = _pair_cosines(texts, texts, i, j)
        cross["text-image"] = texts
    if inverted_features is not None:
        inverted = _as_features("inverted_features", inverted_features).cpu()
        _same_dim("image_features", images, "inverted_features", inverted)
        cross["inverted-image"] = inverted
    for key, other in cross.items():
        if other.shape[0] == images.shape[0]:
            out[f"{key}/matched"] = _pair_cosines(other, images, torch.arange(images.shape[0]),
                                                  torch.arange(images.shape[0]))
            if images.shape[0] > 1:
                i, j = _sample_pairs(images.shape[0], max_pairs, generator, within=False)
                out[key] = _pair_cosines(other, images, i, j)
        else:
            n_all = other.shape[0] * images.shape[0]
            if n_all <= max_pairs:
                i, j = torch.meshgrid(torch.arange(other.shape[0]), torch.arange(images.shape[0]), indexing="ij")
                i, j = i.flatten(), j.flatten()
            else:
                i = torch.randint(0, other.shape[0], (max_pairs,), generator=generator)
                j = torch.randint(0, images.shape[0], (max_pairs,), generator=generator)
            out[key] = _pair_cosines(other, images, i, j)
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ValueError(f"labels must be 1-D integer labels of length {images.shape[0]}, got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        (si, sj), (di, dj) = _class_pairs(labels.long().cpu(), max_pairs, generator)
        out["image-image/same-class"] = _pair_cosines(images, images, si, sj)
        out["image-image/different-class"] = _pair_cosines(images, images, di, dj)
    return out


@torch.no_grad()
def class_overlap(
    features: torch.Tensor, labels: torch.Tensor, bins: int = 100, max_pairs: int = 200_000, seed: int = 0
) -> dict[str, float]:
    """How much same-class and different-class cosine similarities of features (N, D) overlap.

    Returns ``overlap`` (overlap coefficient: sum over ``bins`` equal bins on [-1, 1] of the smaller of the two
    normalised histograms; 1 = identical distributions, 0 = disjoint), ``auc`` (probability that a same-class pair
    is more similar than a different-class pair, ties counting half), ``frac_diff_above_median_same`` (fraction of
    different-class pairs more similar than the median same-class pair), ``mean_same``, ``mean_diff``, ``n_same``,
    ``n_diff``. All pairs are used up to ``max_pairs``; beyond that ``max_pairs`` of each kind are sampled.
    """
    features = _as_features("features", features).cpu()
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0] or labels.is_floating_point():
        raise ValueError(f"labels must be 1-D integer labels of length {features.shape[0]}, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    _check_max_pairs(max_pairs)
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    generator = torch.Generator().manual_seed(seed)
    (si, sj), (di, dj) = _class_pairs(labels.long().cpu(), max_pairs, generator)
    if si.numel() == 0 or di.numel() == 0:
        raise ValueError("class_overlap needs at least one same-class and one different-class pair; got "
                         f"{si.numel()} and {di.numel()} (check labels)")
    same = _pair_cosines(features, features, si, sj).double()
    diff = _pair_cosines(features, features, di, dj).double()
    hist_same = torch.histc(same.clamp(-1, 1), bins=bins, min=-1, max=1) / same.numel()
    hist_diff = torch.histc(diff.clamp(-1, 1), bins=bins, min=-1, max=1) / diff.numel()
    y_true = torch.cat([torch.ones(same.numel()), torch.zeros(diff.numel())]).numpy()
    auc = float(roc_auc_score(y_true, torch.cat([same, diff]).numpy()))
    return {
        "overlap": float(torch.minimum(hist_same, hist_diff).sum()),
        "auc": auc,
        "frac_diff_above_median_same": float((diff > same.median()).double().mean()),
        "mean_same": float(same.mean()),
        "mean_diff": float(diff.mean()),
        "n_same": same.numel(),
        "n_diff": diff.numel(),
    }


# ------------------------------------------------------------------------------------------------ post-hoc baselines
def _finish(features: torch.Tensor, renormalize: bool) -> torch.Tensor:
    return F.normalize(features, dim=1) if renormalize else features


def mean_center(features: torch.Tensor, mean: torch.Tensor | None = None, renormalize: bool = True) -> torch.Tensor:
    """Features (N, D) minus a mean (D,) (default: their own mean), L2-normalised again when ``renormalize``.

    Apply per modality; pass the gallery's mean to center queries of the same modality consistently.
    """
    features = _as_features("features", features)
    if mean is None:
        mean = features.mean(0)
    mean = torch.as_tensor(mean, dtype=features.dtype, device=features.device)
    if mean.shape != (features.shape[1],):
        raise ValueError(f"mean must have shape ({features.shape[1]},), got {tuple(mean.shape)}")
    return _finish(features - mean, renormalize)


def shift_along_gap(
    image_features: torch.Tensor,
    image_centroid: torch.Tensor,
    text_centroid: torch.Tensor,
    alpha: float = 1.0,
    renormalize: bool = True,
) -> torch.Tensor:
    """Image features (N, D) moved by alpha * (text_centroid - image_centroid) (D,), then L2-normalised."""
    image_features = _as_features("image_features", image_features)
    dim = image_features.shape[1]
    shift = []
    for name, c in (("image_centroid", image_centroid), ("text_centroid", text_centroid)):
        c = torch.as_tensor(c, dtype=image_features.dtype, device=image_features.device)
        if c.shape != (dim,):
            raise ValueError(f"{name} must have shape ({dim},), got {tuple(c.shape)}")
        shift.append(c)
    return _finish(image_features + alpha * (shift[1] - shift[0]), renormalize)


@dataclass
class TextSpanProjector:
    """Orthogonal projection onto the top principal directions of a set of text features."""

    components: torch.Tensor  # (k, D) orthonormal rows, by decreasing variance
    explained_variance: torch.Tensor  # (k,) eigenvalues of the text covariance
    mean: torch.Tensor  # (D,) mean of the text features (used only with center=True)
    center: bool = False

    @property
    def n_components(self) -> int:
        """Dimension k of the text span."""
        return self.components.shape[0]

    def project(self, features: torch.Tensor, renormalize: bool = True) -> torch.Tensor:
        """U^T U f for features (N, D) -> (N, D) (after subtracting the text mean if ``center``), renormalised."""
        features = _as_features("features", features)
        if features.shape[1] != self.components.shape[1]:
            raise ValueError(f"features have dim {features.shape[1]}, the projector expects "
                             f"{self.components.shape[1]}")
        basis = self.components.to(features.device, features.dtype)
        if self.center:
            features = features - self.mean.to(features.device, features.dtype)
        return _finish((features @ basis.T) @ basis, renormalize)


def fit_text_span(
    text_features: torch.Tensor, n_components: int | None = None, center: bool = False
) -> TextSpanProjector:
    """PCA of text features (M, D) -> projector onto their top ``n_components`` directions (default D // 2).

    The text-span baseline of Herzog & Wang (arXiv 2603.16100): fit on the text features of a class-name vocabulary,
    then project image features with ``.project`` before retrieval. As in their released code the directions are the
    eigenvectors of the covariance of the text features (which is computed around the text mean), while the
    features are projected without subtracting that mean (``center=False``); ``center=True`` subtracts it first.
    """
    text_features = _as_features("text_features", text_features).double()
    n_texts, dim = text_features.shape
    if n_texts < 2:
        raise ValueError(f"text_features needs at least 2 rows to estimate a covariance, got {n_texts}")
    if n_components is None:
        n_components = max(1, dim // 2)
    if not isinstance(n_components, int) or not 1 <= n_components <= dim:
        raise ValueError(f"n_components must be an int in [1, {dim}], got {n_components!r}")
    covariance = torch.cov(text_features.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    order = torch.argsort(eigenvalues, descending=True)[:n_components]
    return TextSpanProjector(
        components=eigenvectors[:, order].T.float().contiguous(),
        explained_variance=eigenvalues[order].float(),
        mean=text_features.mean(0).float(),
        center=center,
    )

