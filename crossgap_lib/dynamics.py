"""OTI dynamics across optimisation steps, and class-separation measures across modalities.

What the book's Figure 1 / A1 / 2 pages need beyond :mod:`crossgap_lib.gap` and :mod:`crossgap_lib.metrics`:

- :func:`oti_curve`: OTI->image retrieval (per-query AP) and OTI loss at every recorded step, on any model and any
  features (real CLIPs and their datasets as well as the laboratory's tiny CLIPs). Queries run in chunks whose
  history is scored and dropped, so the memory does not grow with the number of steps times the number of queries;
  with ``cache_dir`` each chunk is saved and an interrupted run resumes. :func:`curves_dict` turns several curves
  into the format of ``crossgap_lib.lab.LabResults.oti_curve``; :func:`curve_table` summarises either (peak, step
  of the peak, value at the last step); :func:`peak_contrasts` gives confidence intervals for "peak vs intra-modal"
  and "last step vs peak", with the peak step chosen on other queries than those it is evaluated on.
- :func:`cross_class_overlap` (:func:`crossgap_lib.gap.class_overlap` for query -> gallery pairs of two sets, e.g.
  OTI features vs images), :func:`class_similarities` (the cosines behind it), :func:`per_query_auc`,
  :func:`closest_classes`, :func:`joint_pca`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from . import metrics
from .metrics import _as_features

__all__ = [
    "OTICurve",
    "class_similarities",
    "closest_classes",
    "cross_class_overlap",
    "curve_table",
    "curves_dict",
    "joint_pca",
    "oti_curve",
    "per_query_auc",
]

CURVE_CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------------------ checks
def _labels(name: str, labels: Any, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n or labels.is_floating_point():
        raise ValueError(f"{name} must be 1-D integer labels of length {n}, got {labels.dtype} {tuple(labels.shape)}")
    return labels.long().cpu()


def _pair(query: Any, gallery: Any) -> tuple[torch.Tensor, torch.Tensor]:
    query = F.normalize(_as_features("query", query).float().cpu(), dim=1)
    gallery = F.normalize(_as_features("gallery", gallery).float().cpu(), dim=1)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query has dim {query.shape[1]} but gallery has dim {gallery.shape[1]}; expected equal")
    return query, gallery


def _check_self(exclude_self: bool, n_query: int, n_gallery: int) -> None:
    """``exclude_self``: query i is gallery item i (the queries are the first Q gallery items), so Q <= N."""
    if exclude_self and n_query > n_gallery:
        raise ValueError(f"exclude_self=True needs the queries to be the first gallery items, got {n_query} queries "
                         f"and {n_gallery} gallery items")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------------- OTI curves
@dataclass
class OTICurve:
    """OTI->image retrieval against optimisation steps for one number of pseudo tokens R.

    ``ap[q, j]``: average precision of query q's OTI feature after ``steps[j]`` updates (0 = the initial pseudo
    tokens); ``intra_ap[q]``: the same query's image feature (intra-modal baseline); ``loss[t]``: mean over queries of
    1 - cos(OTI feature, image feature) before update t + 1; ``features``: the OTI features after the last update.
    """

    num_pseudo_tokens: int
    steps: list[int]
    ap: torch.Tensor  # (Q, T)
    intra_ap: torch.Tensor  # (Q,)
    loss: torch.Tensor  # (n_steps,)
    features: torch.Tensor  # (Q, D)

    @property
    def mAP(self) -> list[float]:
        """Mean AP over queries at each recorded step (queries without relevant items skipped)."""
        return torch.nanmean(self.ap.double(), dim=0).tolist()

    @property
    def intra_mAP(self) -> float:
        return float(torch.nanmean(self.intra_ap.double()))


def _chunk_ap(
    query: torch.Tensor, gallery: torch.Tensor, relevance: torch.Tensor, exclude: torch.Tensor | None
) -> torch.Tensor:
    scores = query.to(gallery.device, gallery.dtype) @ gallery.T
    result = metrics.retrieval_scores_from_relevance(scores, relevance, exclude=exclude, per_query=True)
    return result["per_query"]["AP"]


def _relevance(query_labels: torch.Tensor, gallery_labels: torch.Tensor, start: int, exclude_self: bool,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    relevance = (query_labels.unsqueeze(1) == gallery_labels.unsqueeze(0)).to(device)
    if not exclude_self:
        return relevance, None
    exclude = torch.zeros_like(relevance)
    rows = torch.arange(query_labels.numel(), device=device)
    exclude[rows, rows + start] = True
    return relevance, exclude


def log_steps(steps: int, points: int = 40) -> list[int]:
    """About ``points`` log-spaced steps in [0, steps], dense early (0, 1, 2, ...) and always ending at ``steps``."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    grid = torch.logspace(0, math.log10(steps), max(2, points), dtype=torch.float64).round().long().tolist()
    return sorted({0, *grid, steps})


def oti_curve(
    clip,
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    num_pseudo_tokens: int = 1,
    steps: int = 150,
    record_every: int = 5,
    exclude_self: bool = False,
    template: str = "a photo of {}",
    lr: float = 2e-2,
    weight_decay: float = 0.01,
    batch_size: int = 256,
    seed: int = 0,
    chunk_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    record_steps: list[int] | None = None,
) -> OTICurve:
    """OTI->image retrieval and OTI loss of image queries (Q, D) against an image gallery (N, D) across steps.

    OTI (:func:`crossgap_lib.inversion.oti`, AdamW on R = ``num_pseudo_tokens`` pseudo tokens in ``template``) runs
    for ``steps`` updates and its features are recorded every ``record_every`` updates; at each recorded step every
    query's OTI feature is ranked against the gallery (relevant: same label; ``exclude_self`` when query i is gallery
    item i, i.e. the queries are the gallery or its first Q items: gallery item i leaves query i's ranking). Queries
    are optimised in chunks of ``chunk_size`` with per-sample seeds taken from their global index, so a query's
    trajectory is the one :func:`crossgap_lib.pipeline.invert_dataset` gives it with the same parameters (up to
    floating-point rounding when batches differ). The history of a chunk is scored and dropped: memory grows with
    ``chunk_size`` times the number of recorded steps, not with Q. ``cache_dir``: chunks saved under
    ``<cache_dir>/oti_curve/<key>`` (key: model weights, features, labels and every parameter), resumed when
    interrupted, loaded on a second call. ``record_steps`` (e.g. :func:`log_steps`) records exactly those steps
    instead of every ``record_every``-th (the optimisation is recorded every step and thinned; it must end at
    ``steps``).
    """
    from . import inversion
    from .cache import ChunkStore, cache_key, tensor_fingerprint
    from .pipeline import weights_fingerprint

    query = _as_features("query_features", query_features).float().cpu()
    gallery_cpu = _as_features("gallery_features", gallery_features).float().cpu()
    if query.shape[1] != gallery_cpu.shape[1]:
        raise ValueError(f"query_features have dim {query.shape[1]}, gallery_features {gallery_cpu.shape[1]}")
    n_query, n_gallery = query.shape[0], gallery_cpu.shape[0]
    q_labels = _labels("query_labels", query_labels, n_query)
    g_labels = _labels("gallery_labels", gallery_labels, n_gallery)
    _check_self(exclude_self, n_query, n_gallery)
    for name, value in (("num_pseudo_tokens", num_pseudo_tokens), ("steps", steps), ("record_every", record_every),
                        ("batch_size", batch_size), ("chunk_size", chunk_size)):
        _positive_int(name, value)
    if record_steps is not None:
        record_steps = sorted({int(x) for x in record_steps})
        if record_steps[0] < 0 or record_steps[-1] != steps:
            raise ValueError(f"record_steps must lie in [0, steps] and end at steps={steps}, got {record_steps}")
        record_every = 1
    elif steps % record_every:
        raise ValueError(f"steps ({steps}) must be a multiple of record_every ({record_every}) so that the last step "
                         "is recorded")
    recorded = record_steps if record_steps is not None else list(range(0, steps + 1, record_every))
    try:
        device = next(clip.model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    gallery = F.normalize(gallery_cpu, dim=1).to(device)
    query = F.normalize(query, dim=1)
    oti_kwargs = {"template": template, "num_pseudo_tokens": num_pseudo_tokens, "steps": steps, "lr": lr,
                  "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed, "record_every": record_every}

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        result = inversion.oti(clip, query[start:stop], progress=False, index_offset=start, **oti_kwargs)
        relevance, exclude = _relevance(q_labels[start:stop].to(device), g_labels.to(device), start, exclude_self,
                                        device)
        history = result.history if record_steps is None else result.history[record_steps]
        ap = torch.stack([_chunk_ap(h, gallery, relevance, exclude).float() for h in history], dim=1)
        intra = _chunk_ap(query[start:stop], gallery, relevance, exclude).float()
        return {"ap": ap.cpu(), "intra_ap": intra.cpu(), "loss": result.losses.float().cpu(),
                "features": result.features.float().cpu()}

    if cache_dir is None:
        parts = [compute(s, min(s + chunk_size, n_query)) for s in range(0, n_query, chunk_size)]
        rows = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    else:
        key = cache_key(version=CURVE_CACHE_VERSION, kind="oti_curve", model=clip.name, pretrained=str(clip.pretrained),
                        weights=weights_fingerprint(clip.model), query=tensor_fingerprint(query),
                        gallery=tensor_fingerprint(gallery_cpu), query_labels=tensor_fingerprint(q_labels),
                        gallery_labels=tensor_fingerprint(g_labels), exclude_self=exclude_self, chunk_size=chunk_size,
                        device_type=device.type, record_steps=record_steps, **oti_kwargs)
        store = ChunkStore(Path(cache_dir) / "oti_curve", key, n_query, chunk_size,
                           meta={"model": clip.name, "n_query": n_query, "n_gallery": n_gallery, **oti_kwargs})
        rows = store.get_or_compute(compute, progress=progress, desc=f"OTI curve R={num_pseudo_tokens}")
    return OTICurve(num_pseudo_tokens=num_pseudo_tokens, steps=recorded, ap=rows["ap"],
                    intra_ap=rows["intra_ap"], loss=rows["loss"].double().mean(0).float(), features=rows["features"])


def curves_dict(curves: list[OTICurve], **extra: Any) -> dict:
    """Several curves (one per R, same steps) in the format of ``crossgap_lib.lab.LabResults.oti_curve``."""
    if not curves:
        raise ValueError("curves must hold at least one OTICurve")
    if any(c.steps != curves[0].steps for c in curves):
        raise ValueError("every curve must be recorded at the same steps")
    return {"num_pseudo_tokens": [c.num_pseudo_tokens for c in curves], "steps": list(curves[0].steps),
            "mAP": [c.mAP for c in curves], "loss": [c.loss.tolist() for c in curves],
            "intra_mAP": curves[0].intra_mAP, "queries": int(curves[0].ap.shape[0]), **extra}


def curve_table(curve: dict) -> pd.DataFrame:
    """Per R: peak mAP, its step, mAP at the last recorded step, loss at the last step and the intra-modal mAP.

    ``curve``: a dict like ``LabResults.oti_curve`` (keys ``num_pseudo_tokens``, ``steps``, ``mAP``, ``loss``,
    ``intra_mAP``). The earliest step wins a tie. Fractions stay fractions.
    """
    steps = list(curve["steps"])
    rows = []
    for r, maps, losses in zip(curve["num_pseudo_tokens"], curve["mAP"], curve["loss"]):
        if len(maps) != len(steps):
            raise ValueError(f"R={r}: {len(maps)} mAP values for {len(steps)} recorded steps")
        best = int(np.nanargmax(np.asarray(maps, dtype=float)))
        rows.append({"R": r, "peak_mAP": maps[best], "peak_step": steps[best], "last_mAP": maps[-1],
                     "last_step": steps[-1], "last_loss": losses[-1] if len(losses) else math.nan,
                     "intra_mAP": curve["intra_mAP"]})
    return pd.DataFrame(rows)


def class_similarities(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    exclude_self: bool = False,
    max_pairs: int = 2_000_000,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Cosines (float64) of query -> gallery pairs of the same label (``same``) and of different labels (``different``).

    Every pair (i, j) when Q * N <= ``max_pairs``, else ``max_pairs`` pairs drawn uniformly (seeded);
    ``exclude_self`` drops the pairs (i, i) when query i is gallery item i. E.g. OTI features vs images, class
    prompts vs images, images vs images.
    """
    query, gallery = _pair(query, gallery)
    q_labels = _labels("query_labels", query_labels, query.shape[0])
    g_labels = _labels("gallery_labels", gallery_labels, gallery.shape[0])
    _check_self(exclude_self, query.shape[0], gallery.shape[0])
    _positive_int("max_pairs", max_pairs)
    n_q, n_g = query.shape[0], gallery.shape[0]
    if n_q * n_g <= max_pairs:
        i, j = torch.meshgrid(torch.arange(n_q), torch.arange(n_g), indexing="ij")
        i, j = i.flatten(), j.flatten()
    else:
        generator = torch.Generator().manual_seed(seed)
        i = torch.randint(0, n_q, (max_pairs,), generator=generator)
        j = torch.randint(0, n_g, (max_pairs,), generator=generator)
    if exclude_self:
        keep = i != j
        i, j = i[keep], j[keep]
    cos = (query[i].double() * gallery[j].double()).sum(1)
    same = q_labels[i] == g_labels[j]
    return {"same": cos[same], "different": cos[~same]}


@torch.no_grad()
def cross_class_overlap(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    exclude_self: bool = False,
    bins: int = 100,
    max_pairs: int = 2_000_000,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`crossgap_lib.gap.class_overlap` for pairs (query i, gallery j) of two sets, e.g. OTI features vs images.

    The cosines of :func:`class_similarities` summarised: ``overlap`` (overlap coefficient of the same-class and
    different-class histograms on ``bins`` equal bins of [-1, 1]; 1 = identical, 0 = disjoint), ``auc``
    (probability that a same-class pair is more similar than a different-class pair, ties half), ``mean_same``,
    ``mean_diff``, ``n_same``, ``n_diff``. On one set with ``exclude_self`` it equals ``gap.class_overlap`` (each
    unordered pair counted twice).
    """
    _positive_int("bins", bins)
    pairs = class_similarities(query, query_labels, gallery, gallery_labels, exclude_self, max_pairs, seed)
    same, diff = pairs["same"], pairs["different"]
    if same.numel() == 0 or diff.numel() == 0:
        raise ValueError(f"cross_class_overlap needs same-class and different-class pairs; got {same.numel()} and "
                         f"{diff.numel()} (check labels)")
    hist_same = torch.histc(same.clamp(-1, 1), bins=bins, min=-1, max=1) / same.numel()
    hist_diff = torch.histc(diff.clamp(-1, 1), bins=bins, min=-1, max=1) / diff.numel()
    y_true = np.concatenate([np.ones(same.numel()), np.zeros(diff.numel())])
    auc = float(roc_auc_score(y_true, torch.cat([same, diff]).numpy()))
    return {"overlap": float(torch.minimum(hist_same, hist_diff).sum()), "auc": auc, "mean_same": float(same.mean()),
            "mean_diff": float(diff.mean()), "n_same": int(same.numel()), "n_diff": int(diff.numel())}


@torch.no_grad()
def per_query_auc(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    exclude_self: bool = False,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """For each query (Q, D): probability that a same-class gallery item is more similar than a different-class one.

    The ROC AUC of the query's cosines to the gallery (N, D) with same-label items as positives (ties count half);
    ``exclude_self`` removes gallery item i from query i's list (query i is gallery item i). NaN for a query without
    positives or negatives.
    Returns (Q,) float64, paired across feature kinds of the same queries (for
    :func:`crossgap_lib.stats.paired_bootstrap_ci`).
    """
    query, gallery = _pair(query, gallery)
    q_labels = _labels("query_labels", query_labels, query.shape[0])
    g_labels = _labels("gallery_labels", gallery_labels, gallery.shape[0])
    _check_self(exclude_self, query.shape[0], gallery.shape[0])
    _positive_int("chunk_size", chunk_size)
    out = torch.full((query.shape[0],), math.nan, dtype=torch.float64)
    for start in range(0, query.shape[0], chunk_size):
        stop = min(start + chunk_size, query.shape[0])
        scores = (query[start:stop].double() @ gallery.double().T).numpy()
        positive = (q_labels[start:stop].unsqueeze(1) == g_labels.unsqueeze(0)).numpy()
        valid = np.ones_like(positive)
        if exclude_self:
            valid[np.arange(stop - start), np.arange(start, stop)] = False
            scores = np.where(valid, scores, -np.inf)  # ranked below everything, then removed from the counts
        ranks = rankdata(scores, axis=1)  # average ranks: ties count half
        n_excluded = (~valid).sum(1)
        ranks = ranks - n_excluded[:, None]
        pos = positive & valid
        n_pos = pos.sum(1)
        n_neg = valid.sum(1) - n_pos
        rank_sum = np.where(pos, ranks, 0.0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        auc[(n_pos == 0) | (n_neg == 0)] = np.nan
        out[start:stop] = torch.from_numpy(auc)
    return out


@torch.no_grad()
def closest_classes(features: torch.Tensor, labels: torch.Tensor, n: int = 2) -> tuple[list[int], list[float]]:
    """``n`` classes clustered together: the two whose mean normalised features have the highest cosine, then the
    classes closest to the first of them. Returns (classes, cosine of each class mean to the first class's mean).

    The first class is the more frequent of the closest pair (the "dog" of the paper's dog-dog vs dog-cat comparison),
    the second its closest class (the "cat").
    """
    features = F.normalize(_as_features("features", features).double().cpu(), dim=1)
    labels = _labels("labels", labels, features.shape[0])
    classes, counts = torch.unique(labels, return_counts=True)
    if classes.numel() < 2:
        raise ValueError(f"closest_classes needs at least two classes, got {classes.tolist()}")
    _positive_int("n", n)
    if n > classes.numel():
        raise ValueError(f"n={n} exceeds the {classes.numel()} classes present")
    means = F.normalize(torch.stack([features[labels == c].mean(0) for c in classes]), dim=1)
    cos = means @ means.T
    off = cos.clone().fill_diagonal_(-math.inf)
    a, b = divmod(int(off.argmax()), classes.numel())
    if counts[b] > counts[a]:
        a, b = b, a
    rest = [int(k) for k in torch.argsort(off[a], descending=True) if int(k) not in (a, b)]
    chosen = [a, b, *rest][:n]
    return [int(classes[k]) for k in chosen], [float(cos[a, k]) for k in chosen]


def joint_pca(features: dict[str, torch.Tensor], n_components: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One PCA fitted on the L2-normalised features of every set together; each set projected on its components.

    Returns ({name: (N_name, n_components) array}, explained variance ratio (n_components,)).
    """
    from sklearn.decomposition import PCA

    if not features:
        raise ValueError("features must hold at least one named set")
    sets = {name: F.normalize(_as_features(name, f).double().cpu(), dim=1).numpy() for name, f in features.items()}
    dims = {x.shape[1] for x in sets.values()}
    if len(dims) != 1:
        raise ValueError(f"every set must have the same dim, got {dims}")
    pca = PCA(n_components=n_components).fit(np.concatenate(list(sets.values())))
    return {name: pca.transform(x) for name, x in sets.items()}, pca.explained_variance_ratio_
