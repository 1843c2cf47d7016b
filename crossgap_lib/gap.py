"""Modality gap and intra-modal misalignment: measures, similarity distributions and post-hoc baselines.

Measures: :func:`centroid_distance` (Liang et al. 2022), :func:`matched_cosine`, :func:`similarity_distributions`
(the pairwise-cosine histograms of the paper's Figure 2c and Figure A1) and :func:`class_overlap` (how much
same-class and different-class similarities overlap).

Post-hoc baselines map image features to image features, so the retrieval code scores them beside OTI/OVI, each as
its authors define it: :func:`mean_center`, :func:`shift_along_gap` (Liang et al. 2022), the text-span projection of
Herzog & Wang (arXiv 2603.16100, :func:`fit_text_span`, :func:`text_span_sweep`, fit on a generic vocabulary such as
:func:`critique_vocabulary`) and IsoCLIP (Magistri et al., CVPR 2026, arXiv 2603.19862, :func:`isoclip_operator`).
:func:`posthoc_methods` returns every baseline's (query, gallery) pair in one call. All outputs are L2-normalised
unless ``renormalize=False``.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from .metrics import _as_features

log = logging.getLogger(__name__)

__all__ = [
    "ISOCLIP_IMAGE_K",
    "TextSpanProjector",
    "centroid",
    "centroid_distance",
    "class_overlap",
    "critique_vocabulary",
    "default_span_ks",
    "fit_text_span",
    "isoclip_k",
    "isoclip_operator",
    "isoclip_projector",
    "matched_cosine",
    "mean_center",
    "posthoc_methods",
    "projection_matrices",
    "shift_along_gap",
    "similarity_distributions",
    "text_span_sweep",
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

    Apply per modality; pass the gallery's mean to center queries of the same modality consistently. Source: the
    usual remedy for the narrow cone each modality occupies (Liang et al. 2022, "Mind the Gap", NeurIPS; the first
    step of Mu & Viswanath 2018, "All-but-the-Top", ICLR); neither the paper nor the critique defines it.
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
    """Image features (N, D) moved by alpha * (text_centroid - image_centroid) (D,), then L2-normalised.

    Source: Liang et al. 2022 ("Mind the Gap", NeurIPS, Sec. 4.2) shift embeddings along the gap vector between the
    two modality centroids and renormalise; alpha = 1 moves the image centroid onto the text centroid.
    """
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

    def truncate(self, n_components: int) -> TextSpanProjector:
        """The projector onto the top ``n_components`` of these directions (no refit)."""
        if not isinstance(n_components, int) or not 1 <= n_components <= self.n_components:
            raise ValueError(f"n_components must be an int in [1, {self.n_components}], got {n_components!r}")
        return TextSpanProjector(self.components[:n_components], self.explained_variance[:n_components], self.mean,
                                 self.center)


def fit_text_span(
    text_features: torch.Tensor, n_components: int | None = None, center: bool = False
) -> TextSpanProjector:
    """PCA of text features (M, D) -> projector onto their top ``n_components`` directions (default D // 2).

    The text-span baseline of Herzog & Wang (arXiv 2603.16100): fit on the text features of a generic vocabulary (the
    1000 ImageNet class names, :func:`critique_vocabulary`), then project image features with ``.project`` before
    retrieval. As in their released code (Vision-Kek/Is-CLIP-Really-Misaligned, cvpr26-suppl/span_projection.py,
    ``fit_pca`` and ``transform_pca``) the directions are the eigenvectors of the covariance of the text features
    (computed around the text mean), while the features are projected without subtracting that mean
    (``center=False``); ``center=True`` subtracts it first. Their k is D // 2 (``reduce_factor=2``).
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


# ------------------------------------------------------------------------ the critique's text span, swept over k
def critique_vocabulary() -> list[str]:
    """The 1000 ImageNet class names (label order) on which Herzog & Wang fit their text span.

    Their code (Vision-Kek/Is-CLIP-Really-Misaligned, cvpr26-suppl/span_projection.py ``fwd_imagenet_texts``, and the
    minimal example of cvpr26-suppl/README.md) encodes the bare names of pytorch/hub's ``imagenet_classes.txt``
    ("tench", "goldfish", "great white shark", ...), without a prompt template. That list is the first lemma of each
    ImageNet synset; we rebuild it from timm's bundled WordNet descriptions (the same 1000 names as
    pytorch/hub imagenet_classes.txt, underscores read as spaces) rather than download or vendor it.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]


def default_span_ks(dim: int, n_texts: int) -> list[int]:
    """Numbers of components to sweep: D/8, D/4, D/2 (the critique's k), 3D/4, those that n_texts texts support."""
    if not isinstance(n_texts, int) or n_texts < 2:
        raise ValueError(f"n_texts must be an int >= 2 (a covariance needs two texts), got {n_texts!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    limit = min(dim, n_texts - 1)
    ks = sorted({k for k in (dim // 8, dim // 4, dim // 2, 3 * dim // 4) if 1 <= k <= limit})
    return ks or [max(1, min(dim // 2, limit))]


def _check_ks(ks, dim: int, n_texts: int) -> list[int]:
    """Sorted distinct ks in [1, D]; k between the covariance rank (n_texts - 1) and D would pick arbitrary axes."""
    ks = [ks] if isinstance(ks, numbers.Integral) else list(ks)
    if not ks:
        raise ValueError(f"ks is empty; pass at least one number of components, e.g. {default_span_ks(dim, n_texts)}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= dim:
            raise ValueError(f"ks: {k!r} is not an int in [1, {dim}]")
        if n_texts - 1 < k < dim:
            raise ValueError(f"ks: k={k} exceeds the rank {n_texts - 1} of the covariance of {n_texts} vocabulary "
                             f"texts, so its extra directions would be arbitrary; use k <= {n_texts - 1} (or "
                             f"k = {dim}, the identity) or a larger vocabulary")
    return sorted({int(k) for k in ks})


def text_span_sweep(
    query: torch.Tensor,
    gallery: torch.Tensor,
    text_features: torch.Tensor,
    ks=None,
    renormalize: bool = True,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{k: (query (Nq, D), gallery (Ng, D)) projected onto the top-k principal directions of text_features (M, D)}.

    One covariance fit serves every k (:func:`fit_text_span`, then :meth:`TextSpanProjector.truncate`); ``ks``
    defaults to :func:`default_span_ks`. Herzog & Wang's method is k = D // 2 fit on :func:`critique_vocabulary`;
    their retrieval code L2-normalises after projecting (cvpr26-suppl/retrieval/src/retrieval.py), as
    ``renormalize`` does. Their span_projection.py fits on raw ``encode_text`` outputs; the pipeline's text features
    are L2-normalised, as in their README's minimal example (which however takes an uncentred SVD).
    """
    query = _as_features("query", query)
    gallery = _as_features("gallery", gallery)
    text_features = _as_features("text_features", text_features)
    _same_dim("query", query, "gallery", gallery)
    _same_dim("query", query, "text_features", text_features)
    dim, n_texts = text_features.shape[1], text_features.shape[0]
    if n_texts < 2:
        raise ValueError(f"text_features needs at least 2 rows to estimate a covariance, got {n_texts}")
    ks = default_span_ks(dim, n_texts) if ks is None else _check_ks(ks, dim, n_texts)
    projector = fit_text_span(text_features, n_components=max(ks))
    out = {}
    for k in ks:
        span = projector.truncate(k)
        out[k] = (span.project(query, renormalize), span.project(gallery, renormalize))
    return out


# ----------------------------------------------------------------------------------------------------- IsoCLIP
# IsoCLIP's (k_top, k_bottom) for image-to-image retrieval per (open_clip architecture, pretrained tag), from the
# authors' scripts simomagi/IsoCLIP exp_img-img_retrieval/clip_{b32,b16,l14}_img_retrieval.sh (OpenAI CLIP) and
# clip_{b32,b16}_open_img_retrieval.sh (OpenCLIP DataComp-XL). Other models: see isoclip_k.
ISOCLIP_IMAGE_K: dict[tuple[str, str], tuple[int, int]] = {
    ("ViT-B-32", "openai"): (150, 50),
    ("ViT-B-16", "openai"): (200, 50),
    ("ViT-L-14", "openai"): (250, 200),
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): (50, 50),
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): (100, 100),
}
_ISOCLIP_FALLBACK = (150 / 512, 50 / 512)  # CLIP B/32's setting as shares of the rank (our extrapolation)


def _linear_matrix(layer: nn.Linear) -> torch.Tensor:
    """(in [+1], out): weight transposed, the bias (if any) as an extra last row (meets a constant 1 input)."""
    matrix = layer.weight.detach().T
    if layer.bias is not None:
        matrix = torch.cat([matrix, layer.bias.detach()[None]], dim=0)
    return matrix


def projection_matrices(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(image projection P (W_v, D), text projection T (W_t, D)) of an open_clip model, float64 on CPU.

    The final linear maps of the towers, features = pre-projection features @ matrix: image ``visual.proj``
    (open_clip VisionTransformer) or ``visual.head.proj`` (timm trunk, e.g. SLIP); text ``text_projection`` (a
    parameter or a linear layer). A bias becomes an extra last row, met by a constant 1 appended to the
    pre-projection features (IsoCLIP's convention: simomagi/IsoCLIP src/encode_no_projection.py
    ``get_projection_layers``). ``model`` is an open_clip model or a :class:`~crossgap_lib.models.LoadedClip`.
    """
    model = getattr(model, "model", model)
    visual = getattr(model, "visual", None)
    head = getattr(visual, "head", None)
    if isinstance(getattr(visual, "proj", None), torch.Tensor):
        image = visual.proj.detach()
    elif isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear) \
            and all(isinstance(m, (nn.Dropout, nn.Identity)) for m in list(head)[:-1]):
        image = _linear_matrix(head[-1])
    else:
        raise ValueError(f"{type(model).__name__}: the image tower does not end in a linear projection (visual.proj "
                         "or a timm head.proj), so IsoCLIP does not apply as written; SigLIP-style attention-pool "
                         "MLPs are linearised by the IsoCLIP authors (src/encode_no_projection.py), not here")
    text = getattr(model, "text_projection", None)
    if text is None:
        text = getattr(getattr(model, "text", None), "text_projection", None)
    if isinstance(text, nn.Linear):
        text = _linear_matrix(text)
    elif isinstance(text, torch.Tensor):
        text = text.detach()
    else:
        raise ValueError(f"{type(model).__name__}: the text tower has no linear text_projection "
                         f"(got {type(text).__name__}), so IsoCLIP's inter-modal operator is undefined")
    if image.shape[1] != text.shape[1]:
        raise ValueError(f"image projection outputs {image.shape[1]} dims but text projection {text.shape[1]}")
    return image.double().cpu(), text.double().cpu()


def _isoclip_basis(image_projection: torch.Tensor, text_projection: torch.Tensor, k_top: int,
                   k_bottom: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P float64, U_k): the left singular vectors of Psi = P T^T that IsoCLIP keeps."""
    image_projection = _as_features("image_projection", image_projection).double().cpu()
    text_projection = _as_features("text_projection", text_projection).double().cpu()
    _same_dim("image_projection", image_projection, "text_projection", text_projection)
    psi = image_projection @ text_projection.T  # (W_v, W_t): the inter-modal operator
    u, s, _ = torch.linalg.svd(psi, full_matrices=False)  # singular values in decreasing order
    rank = s.numel()
    for name, k in (("k_top", k_top), ("k_bottom", k_bottom)):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"{name} must be an int >= 0, got {k!r}")
    if k_top + k_bottom >= rank:
        raise ValueError(f"k_top + k_bottom = {k_top + k_bottom} removes every one of the {rank} singular directions "
                         f"of Psi; keep k_top + k_bottom < {rank}")
    return image_projection, u[:, k_top:rank - k_bottom]


def isoclip_projector(image_projection: torch.Tensor, text_projection: torch.Tensor, k_top: int,
                      k_bottom: int) -> torch.Tensor:
    """IsoCLIP's image projector U_k U_k^T P (W_v, D), for pre-projection image features (N, W_v).

    P (W_v, D) and T (W_t, D) are the image and text projections (:func:`projection_matrices`); Psi = P T^T is the
    inter-modal operator, with SVD U S V^T. IsoCLIP drops the ``k_top`` largest and ``k_bottom`` smallest singular
    directions (anisotropic, modality-specific) and keeps the nearly isotropic middle of the spectrum where the
    modalities are aligned (Magistri et al., CVPR 2026, arXiv 2603.19862; simomagi/IsoCLIP src/retrieval.py
    ``apply_iso``, image side). Returned in float64.
    """
    image_projection, kept = _isoclip_basis(image_projection, text_projection, k_top, k_bottom)
    return kept @ (kept.T @ image_projection)


def isoclip_operator(image_projection: torch.Tensor, text_projection: torch.Tensor, k_top: int,
                     k_bottom: int) -> torch.Tensor:
    """M (D, D) such that z @ M is IsoCLIP's image feature for a post-projection image feature z (N, D).

    With z = x P, IsoCLIP computes x U_k U_k^T P (:func:`isoclip_projector`). The kept singular directions lie in
    the column space of P, so x U_k U_k^T P = z M with M = P^+ U_k U_k^T P (P^+ the pseudo-inverse) exactly: stored,
    even L2-normalised, features need no re-encoding (cosine retrieval renormalises anyway). The identity is checked;
    it can fail only for degenerate projections (kept null directions of Psi leaving the column space of P), which
    raise a ValueError.
    """
    image_projection = _as_features("image_projection", image_projection).double().cpu()
    projector = isoclip_projector(image_projection, text_projection, k_top, k_bottom)
    operator = torch.linalg.pinv(image_projection) @ projector
    residual = float((image_projection @ operator - projector).norm() / image_projection.norm())
    if residual > 1e-6:
        raise ValueError(f"IsoCLIP is not a function of the projected image features here (relative residual "
                         f"{residual:.1e} with image projection {tuple(image_projection.shape)}: a degenerate Psi); "
                         "apply isoclip_projector to pre-projection features instead")
    return operator.float()


def isoclip_k(clip, rank: int) -> tuple[int, int]:
    """IsoCLIP's (k_top, k_bottom) for a model whose Psi has ``rank`` singular directions.

    The authors' setting (:data:`ISOCLIP_IMAGE_K`, keyed by the ``name`` and ``pretrained`` of a
    :class:`~crossgap_lib.models.LoadedClip`) where they published one; otherwise CLIP B/32's setting, 150 top and
    50 bottom of 512, scaled to ``rank`` (our extrapolation: the authors tune k per model and publish no rule).
    """
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    setting = ISOCLIP_IMAGE_K.get((getattr(clip, "name", None), getattr(clip, "pretrained", None)))
    if setting is not None and sum(setting) < rank:
        return setting
    k_top, k_bottom = (round(rank * share) for share in _ISOCLIP_FALLBACK)
    return (k_top, k_bottom) if k_top + k_bottom < rank else (0, 0)


# ------------------------------------------------------------------------------------------- all baselines at once
def posthoc_methods(
    query: torch.Tensor,
    gallery: torch.Tensor,
    *,
    image_centroid_source: torch.Tensor,
    text_features: torch.Tensor,
    vocabulary_features: torch.Tensor,
    ks=None,
    clip=None,
    isoclip_ks: tuple[int, int] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every post-hoc baseline's (query (Nq, D), gallery (Ng, D)) pair, L2-normalised, keyed by method name.

    - ``center``: both minus the centroid of ``image_centroid_source`` (N, D) (:func:`mean_center`);
    - ``shift``: both moved by the gap from that centroid to the centroid of ``text_features`` (M, D), texts
      describing the gallery (:func:`shift_along_gap`, Liang et al. 2022);
    - ``pca_k<k>``: Herzog & Wang's text-span projection fit on ``vocabulary_features`` (V, D), a generic vocabulary
      (:func:`critique_vocabulary`; the lab's ``datasets.shapes.lab_vocabulary``), for each k of ``ks`` (default
      :func:`default_span_ks`; the critique's own k is D // 2) (:func:`text_span_sweep`);
    - ``isoclip`` (only with ``clip``, an open_clip model or LoadedClip whose features these are): IsoCLIP on the
      projected features (:func:`isoclip_operator`) with ``isoclip_ks`` = (k_top, k_bottom), default
      :func:`isoclip_k`. Models without linear projections (SigLIP) get no ``isoclip`` entry and a logged warning.
    """
    query = _as_features("query", query)
    gallery = _as_features("gallery", gallery)
    images = _as_features("image_centroid_source", image_centroid_source)
    texts = _as_features("text_features", text_features)
    for name, other in (("gallery", gallery), ("image_centroid_source", images), ("text_features", texts),
                        ("vocabulary_features", _as_features("vocabulary_features", vocabulary_features))):
        _same_dim("query", query, name, other)
    image_centroid, text_centroid = centroid(images), centroid(texts)
    out = {
        "center": (mean_center(query, image_centroid), mean_center(gallery, image_centroid)),
        "shift": (shift_along_gap(query, image_centroid, text_centroid),
                  shift_along_gap(gallery, image_centroid, text_centroid)),
    }
    for k, pair in text_span_sweep(query, gallery, vocabulary_features, ks).items():
        out[f"pca_k{k}"] = pair
    if clip is not None:
        try:
            image_projection, text_projection = projection_matrices(clip)
        except ValueError as err:
            log.warning("posthoc_methods: no 'isoclip' entry: %s", err)
        else:
            rank = min(image_projection.shape[0], text_projection.shape[0])
            k_top, k_bottom = isoclip_ks if isoclip_ks is not None else isoclip_k(clip, rank)
            operator = isoclip_operator(image_projection, text_projection, k_top, k_bottom)
            if operator.shape[0] != query.shape[1]:
                raise ValueError(f"clip projects to {operator.shape[0]} dims but the features have {query.shape[1]}; "
                                 "pass the model that produced them")
            out["isoclip"] = tuple(F.normalize(f @ operator.to(f.device, f.dtype), dim=1) for f in (query, gallery))
    return out
