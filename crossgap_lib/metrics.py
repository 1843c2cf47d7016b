"""Retrieval and classification metrics: mAP, mAP@R, P@R, R@k, the revisited Oxford/Paris protocol, zero-shot accuracy.

Every metric is a fraction in [0, 1]. :func:`retrieval_scores` ranks by cosine similarity by default (it L2-normalises
query and gallery features; ``normalize=False`` ranks by the raw dot product); the functions that take a score matrix
use the scores as given. Scores must be finite: an overflowing dot product is an error, never a silent wrong rank.

How ranks are found without sorting the gallery. For one query with R relevant gallery items, only the R relevant
scores are sorted; every gallery score is then located among them (how many relevant scores it reaches) and a
per-query histogram of those counts, summed from the top, gives for each relevant item the number of gallery items
scoring at least as high: its rank. Locating a score costs O(1) for float32 scores: uniform bins between the lowest
and highest relevant score and a lookup table of the relevant scores per bin, instead of the O(log N) per item of a
full sort. On CPU a loop compiled by numba (``_count_positions``) does this in one pass over the scores; on other
devices the same table runs as tensor operations (``_binned_positions`` + ``bincount``; O(log R)
``torch.searchsorted`` for float64). Queries are processed in chunks of ``chunk_size``; the working memory is the
chunk's float32 scores on CPU and about ``chunk_size * n_gallery * 30`` bytes with the tensor operations.

Tie rule (scikit-learn's threshold grouping). Items with equal scores are retrieved together: the rank of a relevant
item is the number of gallery items with a score >= its score (ties with non-relevant items count against it), and
the precision at a relevant item is (#relevant with score >= s) / (#items with score >= s). For AP this is exactly
``sklearn.metrics.average_precision_score``; R@k, P@R and AP@R use the same ranks. Without ties every rule agrees.

Queries without any relevant gallery item (after excluding the query itself) have undefined AP: they are skipped,
counted in ``n_skipped``, and hold NaN in the ``per_query`` tensors; if every query is skipped there is nothing to
average and a ``ValueError`` says so. :func:`revisited_map` follows the same rule per protocol (easy, medium, hard).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "auto_chunk_size",
    "retrieval_scores",
    "retrieval_scores_from_relevance",
    "revisited_map",
    "zero_shot_accuracy",
]

# Score entries per chunk when ``chunk_size`` is None: 2**20 entries (4 MB of float32 scores) keep a chunk in the CPU
# caches and amortise the per-chunk work; on a GPU pass a larger ``chunk_size``.
_CHUNK_ELEMENTS = 2**20
_BINS_PER_RELEVANT = 8  # lookup-table bins per relevant item in _binned_positions and _count_positions
_CONTIGUOUS_GALLERY_ELEMENTS = 2**26  # CPU galleries up to this size (256 MB in float32) are copied once for the matmul


# ----------------------------------------------------------------------------------------------------------- checks
def _as_features(name: str, features: Any) -> torch.Tensor:
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, dim) tensor, got shape {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(features.shape)}); expected at least one row and column")
    if not features.is_floating_point():
        features = features.float()
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values; expected finite features")
    return features


def _as_labels(name: str, labels: Any, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(labels, (str, bytes)) or (
        isinstance(labels, (list, tuple)) and any(isinstance(v, (str, bytes)) for v in labels)
    ) or (isinstance(labels, np.ndarray) and labels.dtype.kind in "US"):
        raise ValueError(
            f"{name} must hold integer labels, got strings; map them to ints first, e.g. "
            "np.unique(labels, return_inverse=True)[1]"
        )
    try:
        labels = torch.as_tensor(labels, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a 1-D sequence of integer labels of length {n} ({err})") from err
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D tensor of length {n}, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")
    return labels.long()


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    if isinstance(ks, (int, str, bytes)) or not isinstance(ks, Iterable):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}; e.g. ks=({ks!r},) or (1, 5)")
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    return ks


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows (n, D) scaled to unit L2 norm, overflow-safe; returned as is when every row already has norm 1 (+-1e-4).

    Rows are first divided by their largest absolute entry, so features of norm 1e20 (whose squared norm overflows
    float32) normalise correctly. An all-zero row stays zero (it scores 0 against everything).
    """
    norms = torch.linalg.vector_norm(features, dim=1)
    if bool(((norms - 1).abs() <= 1e-4).all()):  # already normalised: keep the exact values (cosine == dot product)
        return features
    peak = features.abs().amax(dim=1, keepdim=True)
    scaled = features / torch.where(peak > 0, peak, torch.ones_like(peak))
    return scaled / torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)


def _check_scores(scores: torch.Tensor, what: str) -> None:
    """Raise if a chunk of computed scores holds inf/NaN (ranks of such scores are meaningless)."""
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(
            f"{what} overflowed to inf/NaN in {scores.dtype}; the features are too large (norm ~1e19 or more, e.g. "
            "a diverged model). Use normalize=True (cosine similarity) or L2-normalise the features first"
        )


def auto_chunk_size(n_gallery: int, chunk_size: int | None) -> int:
    """Queries per chunk: ``chunk_size`` if given, else as many as fit in 2**20 score entries."""
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(1, n_gallery))
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


# ------------------------------------------------------------------------------------------------------------- core
def _order_keys(values: torch.Tensor) -> torch.Tensor:
    """Int64 keys in [0, 2**32) ordered like the float32 ``values`` (no NaN; -0.0 and +0.0 share a key)."""
    bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into +0.0
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31


def _binned_positions(
    sorted_rel: torch.Tensor,
    n_rel: torch.Tensor,
    scores: torch.Tensor,
    excluded: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Flat histogram slots: row * (Rmax + 1) + #{k < n_rel[row] : sorted_rel[row, k] <= scores[row, j]}, (c, N).

    The count equals ``torch.searchsorted(sorted_rel, scores, right=True)`` (sorted_rel ascending, padded with +inf);
    ``excluded`` (rows, cols) items get count 0. For float32 it runs in O(1) per score with int32 tensors: scores
    are cut into 8 * Rmax uniform bins between the row's lowest and highest relevant score; a lookup table gives the
    number of relevant scores in lower bins, one comparison with the smallest relevant score of the bin completes
    the count, and the few scores in a bin holding two or more relevant scores are located exactly by a binary
    search on order-preserving integer keys. Relevant and gallery scores go through the same monotone bin map, so
    the counts are exact.
    """
    c, r_max = sorted_rel.shape
    device = scores.device
    n_bins = _BINS_PER_RELEVANT * r_max
    row_slots = torch.arange(c, device=device) * (r_max + 1)
    if scores.dtype != torch.float32 or r_max == 0 or c * (n_bins + 2) >= 2**31:
        positions = torch.searchsorted(sorted_rel, scores, right=True) + row_slots.unsqueeze(1)
    else:
        valid = torch.arange(r_max, device=device).unsqueeze(0) < n_rel.unsqueeze(1)
        has_rel = n_rel > 0
        lowest = torch.where(has_rel, sorted_rel[:, 0], 0.0).unsqueeze(1)
        highest = sorted_rel.gather(1, (n_rel - 1).clamp_min(0).unsqueeze(1))
        highest = torch.where(has_rel.unsqueeze(1), highest, lowest)
        width = highest - lowest
        scale = torch.where(width > 0, n_bins / width.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
        scale = torch.where(torch.isfinite(scale), scale, 0.0)

        def to_bins(values: torch.Tensor) -> torch.Tensor:  # monotone non-decreasing map to [0, n_bins], int32
            return (values - lowest).mul_(scale).clamp_(0, n_bins).int()

        rel_bins = torch.where(valid, to_bins(torch.where(valid, sorted_rel, lowest)), n_bins + 1).long()
        counts = torch.zeros(c, n_bins + 2, dtype=torch.long, device=device)
        counts.scatter_add_(1, rel_bins, torch.ones_like(rel_bins))
        below = counts.cumsum(1) - counts + row_slots.unsqueeze(1)  # relevant scores in lower bins, slotted
        below = torch.where(counts > 1, -1, below).int()  # -1 marks bins needing the exact search
        smallest = torch.full((c, n_bins + 2), float("inf"), device=device)
        smallest.scatter_reduce_(1, rel_bins, sorted_rel.masked_fill(~valid, float("inf")), reduce="amin")

        flat_bins = to_bins(scores)
        flat_bins += (torch.arange(c, device=device, dtype=torch.int32) * (n_bins + 2)).unsqueeze(1)
        flat_bins = flat_bins.view(-1)
        positions = below.view(-1).index_select(0, flat_bins).view(c, -1)
        crowded = positions < 0
        positions += scores >= smallest.view(-1).index_select(0, flat_bins).view(c, -1)
        del flat_bins
        rows, cols = crowded.nonzero(as_tuple=True)
        if rows.numel():
            row_keys = _order_keys(sorted_rel) + (torch.arange(c, device=device) << 32).unsqueeze(1)
            keys = _order_keys(scores[rows, cols]) + (rows << 32)
            exact = torch.searchsorted(row_keys.view(-1), keys, right=True) - rows * r_max
            positions[rows, cols] = (exact + row_slots[rows]).to(positions.dtype)
    if excluded is not None:
        positions[excluded] = row_slots[excluded[0]].to(positions.dtype)  # count 0: below every relevant score
    return positions


def _count_positions(scores, sorted_rel, n_rel, bins_per_relevant):  # numpy in, numpy out; compiled by numba
    """Histogram of positions, (c, Rmax + 1): hist[row, p] = #items j with #{k < n_rel[row]: sorted_rel[row, k] <=
    scores[row, j]} == p. The same bin table as ``_binned_positions``, in one pass per row."""
    c, n = scores.shape
    hist = np.zeros((c, sorted_rel.shape[1] + 1), dtype=np.int64)
    for row in range(c):
        m = n_rel[row]
        if m == 0:
            hist[row, 0] = n
            continue
        rel = sorted_rel[row]
        lowest = rel[0]
        n_bins = bins_per_relevant * m
        width = rel[m - 1] - lowest
        scale = n_bins / width if width > 0 else 0.0
        if not np.isfinite(scale):
            scale = 0.0
        # bins: 0 below the lowest relevant score, 1 .. n_bins + 1 from lowest to highest, n_bins + 2 above;
        # first[b] = #relevant scores in bins < b, smallest[b] = the smallest relevant score in bin b
        first = np.zeros(n_bins + 4, dtype=np.int64)
        for k in range(m):
            first[int(min(max((rel[k] - lowest) * scale, -1.0), n_bins + 1.0) + 1.0) + 1] += 1
        for b in range(n_bins + 3):
            first[b + 1] += first[b]
        smallest = np.full(n_bins + 3, np.inf, dtype=scores.dtype)
        for b in range(n_bins + 3):
            if first[b + 1] > first[b]:
                smallest[b] = rel[first[b]]
        for j in range(n):
            s = scores[row, j]
            x = (s - lowest) * scale
            if not x == x:  # NaN (callers check scores are finite; never index out of bounds regardless)
                x = -1.0
            b = int(min(max(x, -1.0), n_bins + 1.0) + 1.0)  # the same monotone map
            lo, hi = first[b], first[b + 1]
            if hi - lo <= 1:
                lo += s >= smallest[b]
            else:  # two or more relevant scores share the bin: binary search among them
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if rel[mid] <= s:
                        lo = mid + 1
                    else:
                        hi = mid
            hist[row, lo] += 1
    return hist


@functools.cache
def _compiled_count_positions():
    """``_count_positions`` compiled by numba (cached on disk), or None where numba is not installed."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; the tensor path still works without it
        return None
    return numba.njit(nogil=True, cache=True)(_count_positions)


@functools.cache
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """A pool kept for the process: the compiled loop releases the GIL, so rows run in parallel threads."""
    return ThreadPoolExecutor(threads, thread_name_prefix="crossgap-metrics")


def _position_histogram(
    sorted_rel: torch.Tensor,
    n_rel: torch.Tensor,
    scores: torch.Tensor,
    excluded: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """hist (c, Rmax + 1): per row, how many gallery items reach exactly p of the relevant scores (p = 0..Rmax).

    On CPU a compiled loop makes one pass over the scores (rows split over ``torch.get_num_threads()`` threads);
    elsewhere ``_binned_positions`` + ``bincount``. ``excluded`` items count at p = 0 (below every relevant score).
    """
    c, r_max = sorted_rel.shape
    kernel = _compiled_count_positions() if scores.device.type == "cpu" else None
    if kernel is None:
        positions = _binned_positions(sorted_rel, n_rel, scores, excluded)
        return torch.bincount(positions.view(-1), minlength=c * (r_max + 1)).view(c, r_max + 1)
    args = (scores.contiguous().numpy(), sorted_rel.contiguous().numpy(), n_rel.numpy())
    threads = min(torch.get_num_threads(), c)
    if threads == 1:
        hist = kernel(*args, _BINS_PER_RELEVANT)
    else:
        bounds = [c * t // threads for t in range(threads + 1)]
        parts = _thread_pool(threads).map(
            lambda t: kernel(*(a[bounds[t] : bounds[t + 1]] for a in args), _BINS_PER_RELEVANT), range(threads)
        )
        hist = np.concatenate(list(parts))
    hist = torch.from_numpy(hist)
    if excluded is not None:  # move excluded items from their position to 0
        rows, cols = excluded
        held = torch.searchsorted(sorted_rel[rows], scores[rows, cols].unsqueeze(1), right=True).squeeze(1)
        hist.index_put_((rows, held), torch.full_like(held, -1), accumulate=True)
        hist.index_put_((rows, torch.zeros_like(held)), torch.ones_like(held), accumulate=True)
    return hist


def _rank_metrics(
    scores: torch.Tensor,
    rel_index: torch.Tensor,
    rel_valid: torch.Tensor,
    ks: Sequence[int],
    excluded: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-query AP, AP@R, P@R, R@k of a chunk: scores (c, N), relevant gallery ids (c, Rmax) where rel_valid.

    ``excluded`` = (rows, cols) of items removed from the ranking (never relevant).
    """
    c = scores.shape[0]
    n_rel = rel_valid.sum(1)  # (c,)
    out = {"n_relevant": n_rel}
    r_max = rel_index.shape[1]
    if r_max == 0:  # no query of the chunk has a relevant item
        nan = torch.full((c,), float("nan"), dtype=torch.float64, device=scores.device)
        out.update({"AP": nan, "AP@R": nan, "P@R": nan, **{f"R@{k}": nan for k in ks}})
        return out
    # relevant scores, ascending, padded with +inf at the end (padding never ranks below a finite score)
    rel_scores = scores.gather(1, rel_index).masked_fill_(~rel_valid, float("inf"))
    rel_scores = rel_scores.sort(dim=1).values.contiguous()
    # hist[:, p] = #gallery items whose score reaches exactly p of the relevant scores (p in [0, r_max])
    hist = _position_histogram(rel_scores, n_rel, scores, excluded)
    # items_ge[:, k] = #gallery items with score >= rel_scores[:, k] = #items whose position is > k
    items_ge = hist[:, 1:].flip(1).cumsum(1).flip(1)  # (c, r_max)
    # rel_ge[:, k] = #relevant items with score >= rel_scores[:, k]
    rel_ge = n_rel.unsqueeze(1) - torch.searchsorted(rel_scores, rel_scores, right=False)
    valid = torch.arange(r_max, device=scores.device).unsqueeze(0) < n_rel.unsqueeze(1)
    precision = torch.where(valid, rel_ge.double() / items_ge.clamp_min(1).double(), 0.0)
    n_rel_f = n_rel.double()
    in_top_r = valid & (items_ge <= n_rel.unsqueeze(1))
    skipped = n_rel == 0
    out["AP"] = (precision.sum(1) / n_rel_f).masked_fill(skipped, float("nan"))
    out["AP@R"] = ((precision * in_top_r).sum(1) / n_rel_f).masked_fill(skipped, float("nan"))
    out["P@R"] = (in_top_r.sum(1).double() / n_rel_f).masked_fill(skipped, float("nan"))
    best_rank = items_ge.gather(1, (n_rel - 1).clamp_min(0).unsqueeze(1)).squeeze(1)  # rank of top relevant item
    for k in ks:
        out[f"R@{k}"] = (best_rank <= k).double().masked_fill(skipped, float("nan"))
    return out


def _summarise(per_query: dict[str, torch.Tensor], ks: Sequence[int], keep_per_query: bool) -> dict[str, Any]:
    """Means over the queries that have a relevant item; raises if there are none."""
    n_queries = per_query["AP"].shape[0]
    kept = per_query["n_relevant"] > 0
    n_kept = int(kept.sum())
    if n_kept == 0:
        raise ValueError(
            f"no query has a relevant gallery item (all {n_queries} skipped); check the labels / relevance"
        )
    names = {"mAP": "AP", "mAP@R": "AP@R", "P@R": "P@R", **{f"R@{k}": f"R@{k}" for k in ks}}
    result: dict[str, Any] = {name: float(per_query[key][kept].mean()) for name, key in names.items()}
    result["n_queries"] = n_queries
    result["n_skipped"] = n_queries - n_kept
    if keep_per_query:
        result["per_query"] = per_query
    return result


def _per_query_buffers(n_queries: int, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Preallocated (Q,) CPU outputs, filled chunk by chunk (keeps small long-lived tensors from fragmenting the
    heap between the large per-chunk temporaries)."""
    out = {"n_relevant": torch.zeros(n_queries, dtype=torch.long)}
    for key in ("AP", "AP@R", "P@R", *[f"R@{k}" for k in ks]):
        out[key] = torch.empty(n_queries, dtype=torch.float64)
    return out


def _store(buffers: dict[str, torch.Tensor], start: int, chunk: dict[str, torch.Tensor]) -> None:
    for key, values in chunk.items():
        buffers[key][start : start + values.shape[0]] = values.cpu()


# --------------------------------------------------------------------------------------------------- public metrics
@torch.no_grad()
def retrieval_scores(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    exclude_self: bool = False,
    ks: Sequence[int] = (1,),
    chunk_size: int | None = None,
    per_query: bool = False,
    progress: bool = False,
    normalize: bool = True,
) -> dict[str, Any]:
    """Label-based retrieval metrics of queries (Q, D) against a gallery (N, D), ranked by cosine similarity.

    A gallery item is relevant to a query when their labels are equal. Returns a dict of fractions in [0, 1]:
    ``mAP``, ``mAP@R`` and ``P@R`` (R-precision; both as in Musgrave et al. 2020, R = number of relevant gallery
    items of the query), ``R@k`` for each k (1 if a relevant item is among the top k), averaged over the queries
    that have at least one relevant item; ``n_queries``; ``n_skipped`` (queries without relevant items). With
    ``per_query=True`` also ``per_query``: dict of (Q,) tensors ``AP``, ``AP@R``, ``P@R``, ``R@k`` (NaN for skipped
    queries) and ``n_relevant``, for paired statistics. ``exclude_self=True`` is for query set == gallery set
    (Q == N): query i is gallery item i and is removed from its own ranking and from its R. Ties follow
    scikit-learn's threshold grouping (module docstring). ``chunk_size`` queries are scored at once (None: as many
    as fit in 2**20 scores). ``normalize=True`` (default) L2-normalises query and gallery features, so raw
    ``encode_image`` outputs rank by cosine; features that already have unit norm are used unchanged.
    ``normalize=False`` ranks by the raw dot product (the gallery norms then weigh in). Scores that overflow raise a
    ``ValueError``.
    """
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True (cosine similarity) or False (dot product), got {normalize!r}")
    query_features = _as_features("query_features", query_features)
    gallery_features = _as_features("gallery_features", gallery_features).to(query_features.device)
    n_queries, dim = query_features.shape
    n_gallery = gallery_features.shape[0]
    if gallery_features.shape[1] != dim:
        raise ValueError(
            f"gallery_features has dim {gallery_features.shape[1]} but query_features has dim {dim}; expected equal"
        )
    gallery_features = gallery_features.to(query_features.dtype)
    if normalize:
        query_features, gallery_features = _unit_rows(query_features), _unit_rows(gallery_features)
    device = query_features.device
    query_labels = _as_labels("query_labels", query_labels, n_queries, device)
    gallery_labels = _as_labels("gallery_labels", gallery_labels, n_gallery, device)
    if exclude_self and n_queries != n_gallery:
        raise ValueError(
            f"exclude_self=True needs the query set to be the gallery set, got {n_queries} queries and "
            f"{n_gallery} gallery items"
        )
    ks = _check_ks(ks)
    chunk_size = auto_chunk_size(n_gallery, chunk_size)

    # gallery grouped by label once: the relevant items of a query with label y are one contiguous block
    order = torch.argsort(gallery_labels, stable=True)
    classes, counts = torch.unique_consecutive(gallery_labels[order], return_counts=True)
    starts = counts.cumsum(0) - counts
    slot = torch.searchsorted(classes, query_labels).clamp_max(len(classes) - 1)
    found = classes[slot] == query_labels
    query_counts = torch.where(found, counts[slot], 0)
    query_starts = starts[slot]

    # a CPU matmul against a contiguous (D, N) copy runs ~1.4x faster than against the transposed view
    gallery_t = gallery_features.T
    if device.type == "cpu" and gallery_features.numel() <= _CONTIGUOUS_GALLERY_ELEMENTS:
        gallery_t = gallery_t.contiguous()
    per_query_values = _per_query_buffers(n_queries, ks)
    chunk_starts = range(0, n_queries, chunk_size)
    for start in tqdm(chunk_starts, desc="retrieval metrics", disable=not progress):
        stop = min(start + chunk_size, n_queries)
        scores = query_features[start:stop] @ gallery_t  # (c, N)
        _check_scores(scores, f"query_features[{start}:{stop}] @ gallery_features.T")
        c_counts = query_counts[start:stop]
        r_max = int(c_counts.max()) if stop > start else 0
        offsets = torch.arange(r_max, device=device)
        rel_valid = offsets.unsqueeze(0) < c_counts.unsqueeze(1)
        block = (query_starts[start:stop].unsqueeze(1) + offsets).clamp_max(n_gallery - 1)
        rel_index = order[block]
        excluded = None
        if exclude_self:
            query_ids = torch.arange(start, stop, device=device)
            rel_valid &= rel_index != query_ids.unsqueeze(1)
            excluded = (torch.arange(stop - start, device=device), query_ids)
        _store(per_query_values, start, _rank_metrics(scores, rel_index, rel_valid, ks, excluded))
    return _summarise(per_query_values, ks, per_query)


@torch.no_grad()
def retrieval_scores_from_relevance(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    exclude: torch.Tensor | None = None,
    ks: Sequence[int] = (1,),
    chunk_size: int | None = None,
    per_query: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """The metrics of :func:`retrieval_scores` from a score matrix (Q, N) and a boolean relevance matrix (Q, N).

    For many-to-many relevance (e.g. a caption and the other captions of its image). ``exclude`` (Q, N) bool marks
    items removed from a query's ranking (e.g. the query itself); they are never relevant.
    """
    scores = _as_features("scores", scores)
    relevance = torch.as_tensor(relevance, device=scores.device)
    if relevance.shape != scores.shape:
        raise ValueError(
            f"relevance has shape {tuple(relevance.shape)}, expected the shape of scores {tuple(scores.shape)}"
        )
    if relevance.dtype != torch.bool:
        raise ValueError(f"relevance must be a bool tensor, got dtype {relevance.dtype}")
    if exclude is not None:
        exclude = torch.as_tensor(exclude, device=scores.device)
        if exclude.shape != scores.shape or exclude.dtype != torch.bool:
            raise ValueError(
                f"exclude must be a bool tensor of shape {tuple(scores.shape)}, got {exclude.dtype} "
                f"{tuple(exclude.shape)}"
            )
    ks = _check_ks(ks)
    n_queries, n_gallery = scores.shape
    chunk_size = auto_chunk_size(n_gallery, chunk_size)
    per_query_values = _per_query_buffers(n_queries, ks)
    for start in tqdm(range(0, n_queries, chunk_size), desc="retrieval metrics", disable=not progress):
        stop = min(start + chunk_size, n_queries)
        chunk_scores = scores[start:stop]
        chunk_relevance = relevance[start:stop]
        excluded = None
        if exclude is not None:
            chunk_relevance = chunk_relevance & ~exclude[start:stop]
            excluded = exclude[start:stop].nonzero(as_tuple=True)
        rows, cols = chunk_relevance.nonzero(as_tuple=True)
        n_rel = chunk_relevance.sum(1)
        r_max = int(n_rel.max())
        slot = torch.arange(rows.numel(), device=scores.device) - (n_rel.cumsum(0) - n_rel)[rows]
        rel_index = torch.zeros(stop - start, r_max, dtype=torch.long, device=scores.device)
        rel_valid = torch.zeros(stop - start, r_max, dtype=torch.bool, device=scores.device)
        rel_index[rows, slot] = cols
        rel_valid[rows, slot] = True
        _store(per_query_values, start, _rank_metrics(chunk_scores, rel_index, rel_valid, ks, excluded))
    return _summarise(per_query_values, ks, per_query)


# ------------------------------------------------------------------------------------------------ revisited protocol
def _index_list(query: int, gnd_entry: dict, key: str, n_gallery: int, device: torch.device) -> torch.Tensor:
    if key not in gnd_entry:
        raise ValueError(f"gnd[{query}] has no {key!r} list; expected keys 'easy', 'hard', 'junk'")
    index = torch.as_tensor(list(map(int, gnd_entry[key])), dtype=torch.long, device=device)
    if index.numel() and (index.min() < 0 or index.max() >= n_gallery):
        raise ValueError(f"gnd[{query}][{key!r}] has indices outside [0, {n_gallery}) of the gallery")
    return index


@torch.no_grad()
def revisited_map(scores: torch.Tensor, gnd: Sequence[dict], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """mAP and mP@k of the revisited ROxford5k / RParis6k protocol for scores (n_queries, n_gallery).

    ``gnd`` is the per-query list of dicts with ``easy``, ``hard``, ``junk`` gallery index lists (the ``gnd`` field
    of the official ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl``). Following Radenovic et al. (2018): Easy counts
    easy images as positives and ignores junk + hard; Medium counts easy + hard and ignores junk; Hard counts hard
    and ignores junk + easy. Ignored images are removed from the ranking. AP is the trapezoidal area under the
    precision-recall steps (revisitop's ``compute_ap``: for the j-th positive, j = 0.., at 0-based rank r, add
    ((j / r if r else 1) + (j + 1) / (r + 1)) / (2 * n_positives)). mP@k follows revisitop: with 1-based positive
    ranks p, k' = min(max(p), k) and P@k = #(p <= k') / k'. A non-positive tied with a positive ranks before it.
    Returns fractions in [0, 1]: keys ``easy``, ``medium``, ``hard``, ``mP@k_<protocol>``, ``n_skipped_<protocol>``.

    Skipping, as in :func:`retrieval_scores`: a query without positives in a protocol has undefined AP; it is left
    out of that protocol's means and counted in ``n_skipped_<protocol>``. A protocol where every query is skipped
    has no value: its entries are NaN and a ``UserWarning`` names it; if that holds for all three protocols a
    ``ValueError`` is raised (nothing was measured).
    """
    scores = _as_features("scores", scores)
    n_queries, n_gallery = scores.shape
    if len(gnd) != n_queries:
        raise ValueError(f"gnd has {len(gnd)} entries but scores has {n_queries} query rows; expected equal")
    ks = _check_ks(ks)
    device = scores.device
    protocols = {  # protocol -> (positive keys, ignored keys)
        "easy": (("easy",), ("junk", "hard")),
        "medium": (("easy", "hard"), ("junk",)),
        "hard": (("hard",), ("junk", "easy")),
    }
    aps: dict[str, list[float]] = {p: [] for p in protocols}
    precisions: dict[str, list[list[float]]] = {p: [] for p in protocols}
    for q, entry in enumerate(gnd):
        lists = {key: _index_list(q, entry, key, n_gallery, device) for key in ("easy", "hard", "junk")}
        row = scores[q]
        for name, (pos_keys, ignore_keys) in protocols.items():
            positives = torch.cat([lists[k] for k in pos_keys]).unique()
            if positives.numel() == 0:
                continue
            negative = torch.ones(n_gallery, dtype=torch.bool, device=device)
            negative[positives] = False
            for k in ignore_keys:
                negative[lists[k]] = False
            positive_scores = row[positives].sort(descending=True).values
            negative_scores = row[negative].sort().values
            # 0-based rank of the j-th positive among kept images: j + #negatives with score >= its score
            n_neg_ge = negative_scores.numel() - torch.searchsorted(negative_scores, positive_scores, right=False)
            j = torch.arange(positives.numel(), device=device, dtype=torch.float64)
            ranks = j + n_neg_ge.double()
            precision_before = torch.where(ranks > 0, j / ranks.clamp_min(1), 1.0)
            precision_after = (j + 1) / (ranks + 1)
            aps[name].append(float(((precision_before + precision_after) / 2).sum() / positives.numel()))
            one_based = ranks + 1
            row_precisions = []
            for k in ks:
                cutoff = min(float(one_based.max()), float(k))
                row_precisions.append(float((one_based <= cutoff).sum()) / cutoff)
            precisions[name].append(row_precisions)
    empty = [name for name in protocols if not aps[name]]
    if len(empty) == len(protocols):
        raise ValueError(
            f"no query has a positive gallery item in any protocol (all {n_queries} skipped); check gnd: every "
            "query needs a non-empty 'easy' or 'hard' list"
        )
    if empty:
        warnings.warn(
            f"revisited_map: no query has positives under the {', '.join(empty)} protocol(s) (all {n_queries} "
            "skipped); their mAP and mP@k are NaN",
            stacklevel=3,
        )
    result: dict[str, Any] = {}
    for name in protocols:
        n_kept = len(aps[name])
        result[name] = sum(aps[name]) / n_kept if n_kept else float("nan")
        for i, k in enumerate(ks):
            result[f"mP@{k}_{name}"] = sum(p[i] for p in precisions[name]) / n_kept if n_kept else float("nan")
        result[f"n_skipped_{name}"] = n_queries - n_kept
    return result


# -------------------------------------------------------------------------------------------------------- zero-shot
@torch.no_grad()
def zero_shot_accuracy(
    class_features: torch.Tensor,
    sample_features: torch.Tensor,
    labels: torch.Tensor,
    k: int = 1,
    chunk_size: int | None = None,
) -> float:
    """Top-k accuracy (fraction) of classifying samples (N, D) by dot product with class features (C, D)."""
    class_features = _as_features("class_features", class_features)
    sample_features = _as_features("sample_features", sample_features).to(class_features.device)
    n_classes, dim = class_features.shape
    if sample_features.shape[1] != dim:
        raise ValueError(
            f"sample_features has dim {sample_features.shape[1]} but class_features has dim {dim}; expected equal"
        )
    labels = _as_labels("labels", labels, sample_features.shape[0], class_features.device)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) (one per row of class_features), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    if not isinstance(k, int) or not 1 <= k <= n_classes:
        raise ValueError(f"k must be an int in [1, {n_classes}], got {k!r}")
    chunk_size = auto_chunk_size(n_classes, chunk_size)
    sample_features = sample_features.to(class_features.dtype)
    correct = 0
    for start in range(0, sample_features.shape[0], chunk_size):
        logits = sample_features[start : start + chunk_size] @ class_features.T
        top = logits.topk(k, dim=1).indices
        correct += int((top == labels[start : start + chunk_size].unsqueeze(1)).any(1).sum())
    return correct / sample_features.shape[0]
