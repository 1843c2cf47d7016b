"""Tests for crossgap_lib.metrics: references from scikit-learn, hand-worked rankings and brute force."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

import crossgap_lib.metrics as metrics_module
from crossgap_lib.metrics import (
    _binned_positions,
    _compiled_count_positions,
    _position_histogram,
    retrieval_scores,
    retrieval_scores_from_relevance,
    revisited_map,
    zero_shot_accuracy,
)


def _features(n: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def _brute_force(scores: torch.Tensor, relevance: torch.Tensor, ks=(1,)) -> dict[str, list[float]]:
    """Per-query AP, AP@R, P@R, R@k from a full descending sort (valid without ties)."""
    out = {"AP": [], "AP@R": [], "P@R": [], **{f"R@{k}": [] for k in ks}}
    for row, rel in zip(scores, relevance):
        ranked = rel[torch.argsort(row, descending=True)].double()
        n_rel = int(ranked.sum())
        if n_rel == 0:
            continue
        hits = ranked.cumsum(0)
        precision = hits / torch.arange(1, len(ranked) + 1)
        out["AP"].append(float((precision * ranked).sum() / n_rel))
        out["AP@R"].append(float((precision * ranked)[:n_rel].sum() / n_rel))
        out["P@R"].append(float(ranked[:n_rel].sum() / n_rel))
        for k in ks:
            out[f"R@{k}"].append(float(ranked[:k].max()))
    return out


# ------------------------------------------------------------------------------------------- label-based retrieval
def test_ap_matches_sklearn_without_ties():
    query, gallery = _features(40, 8, 0), _features(300, 8, 1)
    g = torch.Generator().manual_seed(2)
    query_labels, gallery_labels = torch.randint(0, 6, (40,), generator=g), torch.randint(0, 6, (300,), generator=g)
    result = retrieval_scores(query, gallery, query_labels, gallery_labels, per_query=True)
    scores = (query @ gallery.T).numpy()
    expected = [average_precision_score((gallery_labels == query_labels[i]).numpy(), scores[i]) for i in range(40)]
    np.testing.assert_allclose(result["per_query"]["AP"].numpy(), expected, rtol=0, atol=1e-12)
    assert result["mAP"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert result["n_skipped"] == 0 and result["n_queries"] == 40


def test_rank_metrics_match_brute_force():
    query, gallery = _features(30, 6, 3), _features(200, 6, 4)
    g = torch.Generator().manual_seed(5)
    query_labels, gallery_labels = torch.randint(0, 5, (30,), generator=g), torch.randint(0, 5, (200,), generator=g)
    ks = (1, 5, 10)
    result = retrieval_scores(query, gallery, query_labels, gallery_labels, ks=ks, per_query=True)
    expected = _brute_force(query @ gallery.T, query_labels[:, None] == gallery_labels[None], ks)
    for key in ("AP@R", "P@R", *[f"R@{k}" for k in ks]):
        np.testing.assert_allclose(result["per_query"][key].numpy(), expected[key], atol=1e-12, err_msg=key)
    assert result["mAP@R"] == pytest.approx(np.mean(expected["AP@R"]))
    assert result["P@R"] == pytest.approx(np.mean(expected["P@R"]))
    assert result["R@5"] == pytest.approx(np.mean(expected["R@5"]))


def test_hand_worked_rankings():
    # query 0: relevant at ranks 1 and 3 of 5; query 1: relevant at ranks 3 and 5
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]])
    relevance = torch.tensor([[True, False, True, False, False], [False, False, True, False, True]])
    result = retrieval_scores_from_relevance(scores, relevance, ks=(1, 2, 3), per_query=True)
    per_query = result["per_query"]
    assert per_query["AP"].tolist() == pytest.approx([(1 + 2 / 3) / 2, (1 / 3 + 2 / 5) / 2])
    assert per_query["AP@R"].tolist() == pytest.approx([0.5, 0.0])  # R = 2: only the top-2 count
    assert per_query["P@R"].tolist() == pytest.approx([0.5, 0.0])
    assert per_query["R@1"].tolist() == [1.0, 0.0]
    assert per_query["R@2"].tolist() == [1.0, 0.0]
    assert per_query["R@3"].tolist() == [1.0, 1.0]
    assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 3 + 2 / 5) / 2) / 2)


def test_musgrave_map_at_r_example():
    # R = 3 relevant items retrieved at ranks 1, 3 and 5: MAP@R = (1/3) * (1/1 + 2/3) (rank 5 lies beyond R)
    scores = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    relevance = torch.tensor([[True, False, True, False, True, False]])
    result = retrieval_scores_from_relevance(scores, relevance)
    assert result["mAP@R"] == pytest.approx((1 + 2 / 3) / 3)
    assert result["P@R"] == pytest.approx(2 / 3)
    assert result["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ties_follow_sklearn_threshold_grouping():
    # a relevant item tied with a non-relevant one is retrieved together with it
    scores = torch.tensor([[0.9, 0.9, 0.5]])
    relevance = torch.tensor([[False, True, True]])
    result = retrieval_scores_from_relevance(scores, relevance, ks=(1, 2), per_query=True)
    assert result["mAP"] == pytest.approx(0.5 * 0.5 + 0.5 * (2 / 3))
    assert result["mAP"] == pytest.approx(average_precision_score([0, 1, 1], [0.9, 0.9, 0.5]))
    assert result["P@R"] == pytest.approx(0.5)  # tied pair occupies ranks 1-2, the relevant one counts at rank 2
    assert result["mAP@R"] == pytest.approx(0.5 * 0.5)
    assert result["R@1"] == 0.0 and result["R@2"] == 1.0


def test_heavy_ties_match_sklearn_through_features():
    # one-dimensional features give exact ties of the dot product
    g = torch.Generator().manual_seed(6)
    gallery = torch.randint(-3, 4, (120, 1), generator=g).float() / 4
    query = torch.tensor([[1.0], [-1.0], [0.5]])
    gallery_labels = torch.randint(0, 3, (120,), generator=g)
    query_labels = torch.tensor([0, 1, 2])
    result = retrieval_scores(query, gallery, query_labels, gallery_labels, per_query=True, normalize=False)
    scores = (query @ gallery.T).numpy()
    expected = [average_precision_score((gallery_labels == query_labels[i]).numpy(), scores[i]) for i in range(3)]
    np.testing.assert_allclose(result["per_query"]["AP"].numpy(), expected, atol=1e-12)


def test_exclude_self_matches_manual_removal():
    features = _features(60, 5, 7)
    labels = torch.randint(0, 4, (60,), generator=torch.Generator().manual_seed(8))
    result = retrieval_scores(features, features, labels, labels, exclude_self=True, ks=(1, 3), per_query=True)
    scores = features @ features.T
    expected_ap, expected_r1 = [], []
    for i in range(60):
        keep = torch.arange(60) != i
        relevant = (labels[keep] == labels[i]).numpy()
        expected_ap.append(average_precision_score(relevant, scores[i, keep].numpy()))
        expected_r1.append(float(relevant[int(scores[i, keep].argmax())]))
    np.testing.assert_allclose(result["per_query"]["AP"].numpy(), expected_ap, atol=1e-12)
    np.testing.assert_allclose(result["per_query"]["R@1"].numpy(), expected_r1)
    counts = torch.bincount(labels)
    assert torch.equal(result["per_query"]["n_relevant"], counts[labels] - 1)  # R excludes the query itself
    # without exclusion the query finds itself first
    assert retrieval_scores(features, features, labels, labels)["R@1"] == 1.0


def test_exclude_self_needs_equal_sizes():
    with pytest.raises(ValueError, match="exclude_self"):
        retrieval_scores(_features(3, 4, 0), _features(5, 4, 1), torch.zeros(3, dtype=torch.long),
                         torch.zeros(5, dtype=torch.long), exclude_self=True)


def test_chunk_size_invariance():
    query, gallery = _features(37, 8, 9), _features(150, 8, 10)
    g = torch.Generator().manual_seed(11)
    query_labels, gallery_labels = torch.randint(0, 7, (37,), generator=g), torch.randint(0, 7, (150,), generator=g)
    reference = retrieval_scores(query, gallery, query_labels, gallery_labels, ks=(1, 4), per_query=True)
    for chunk_size in (1, 5, 36, 1000):
        other = retrieval_scores(query, gallery, query_labels, gallery_labels, ks=(1, 4), chunk_size=chunk_size,
                                 per_query=True)
        for key in ("AP", "AP@R", "P@R", "R@1", "R@4"):
            torch.testing.assert_close(other["per_query"][key], reference["per_query"][key], rtol=0, atol=1e-12)


def test_queries_without_relevant_items_are_skipped():
    query, gallery = _features(4, 3, 12), _features(10, 3, 13)
    gallery_labels = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 1, 1])
    query_labels = torch.tensor([0, 5, 1, 0])  # label 5 has no gallery item
    result = retrieval_scores(query, gallery, query_labels, gallery_labels, per_query=True)
    assert result["n_skipped"] == 1
    assert math.isnan(result["per_query"]["AP"][1])
    kept = result["per_query"]["AP"][[0, 2, 3]]
    assert result["mAP"] == pytest.approx(float(kept.mean()))
    with pytest.raises(ValueError, match="no query has a relevant"):
        retrieval_scores(query, gallery, torch.full((4,), 9), gallery_labels)


def test_relevance_matrix_matches_labels_and_supports_exclusion():
    features = _features(25, 4, 14)
    labels = torch.randint(0, 3, (25,), generator=torch.Generator().manual_seed(15))
    by_labels = retrieval_scores(features, features, labels, labels, exclude_self=True, ks=(1, 2), per_query=True)
    by_matrix = retrieval_scores_from_relevance(features @ features.T, labels[:, None] == labels[None],
                                                exclude=torch.eye(25, dtype=torch.bool), ks=(1, 2), per_query=True)
    for key in ("AP", "AP@R", "P@R", "R@1", "R@2"):
        torch.testing.assert_close(by_matrix["per_query"][key], by_labels["per_query"][key], rtol=0, atol=1e-12)


def test_float64_scores_use_exact_search():
    scores = torch.randn(6, 40, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    relevance = torch.rand(6, 40, generator=torch.Generator().manual_seed(17)) < 0.3
    relevance[:, 0] = True
    result = retrieval_scores_from_relevance(scores, relevance, per_query=True)
    expected = [average_precision_score(relevance[i].numpy(), scores[i].numpy()) for i in range(6)]
    np.testing.assert_allclose(result["per_query"]["AP"].numpy(), expected, atol=1e-12)


MODES = ["random", "ties", "tiny", "mixed", "single", "equal"]


def _position_cases(mode: str):
    """Random (sorted relevant scores, n_rel, scores) chunks whose relevant scores are drawn from the scores."""
    g = torch.Generator().manual_seed(MODES.index(mode))
    for _ in range(20):
        c, n, r_max = (int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 400, (1,), generator=g)),
                       int(torch.randint(1, 60, (1,), generator=g)))
        scores = torch.randn(c, n, generator=g)
        if mode == "ties":
            scores = torch.randint(-3, 4, (c, n), generator=g).float() / 2
        elif mode == "tiny":
            scores = scores * 1e-30
        elif mode == "mixed":
            scores[:, ::2] = 0.25
            scores[0, :3] = -0.0
        elif mode == "single":
            r_max = 1
        elif mode == "equal":  # every relevant score equal: zero-width bin range
            scores[:, : n // 2 + 1] = 0.5
        n_rel = torch.randint(0, r_max + 1, (c,), generator=g)
        index = torch.randint(0, n // 2 + 1 if mode == "equal" else n, (c, r_max), generator=g)
        valid = torch.arange(r_max)[None] < n_rel[:, None]
        sorted_rel = scores.gather(1, index).masked_fill(~valid, float("inf")).sort(1).values.contiguous()
        yield sorted_rel, n_rel, scores


@pytest.mark.parametrize("mode", MODES)
def test_binned_positions_equal_searchsorted(mode):
    for sorted_rel, n_rel, scores in _position_cases(mode):
        c, r_max = sorted_rel.shape
        expected = torch.searchsorted(sorted_rel, scores, right=True) + (torch.arange(c) * (r_max + 1))[:, None]
        assert torch.equal(_binned_positions(sorted_rel, n_rel, scores).long(), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_position_histogram_equals_searchsorted(mode, dtype):
    assert _compiled_count_positions() is not None, "numba is a dependency: the compiled CPU loop must be available"
    for sorted_rel, n_rel, scores in _position_cases(mode):
        sorted_rel, scores = sorted_rel.to(dtype), scores.to(dtype)
        c, r_max = sorted_rel.shape
        positions = torch.searchsorted(sorted_rel, scores, right=True)
        expected = torch.stack([torch.bincount(row, minlength=r_max + 1) for row in positions])
        assert torch.equal(_position_histogram(sorted_rel, n_rel, scores), expected)


def test_position_histogram_paths_agree_with_exclusions(monkeypatch):
    # the compiled CPU loop (rows split over 1 or 2 threads) and the tensor path used on GPUs give the same histogram
    for sorted_rel, n_rel, scores in _position_cases("ties"):
        c, n = scores.shape
        excluded = (torch.arange(c), torch.randint(0, n, (c,), generator=torch.Generator().manual_seed(c * n)))
        compiled = []
        for threads in (1, 2):
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                compiled.append(_position_histogram(sorted_rel, n_rel, scores, excluded))
            finally:
                torch.set_num_threads(previous)
        with monkeypatch.context() as patch:
            patch.setattr(metrics_module, "_compiled_count_positions", lambda: None)
            tensor_path = _position_histogram(sorted_rel, n_rel, scores, excluded)
        assert torch.equal(compiled[0], tensor_path) and torch.equal(compiled[1], tensor_path)
        assert int(tensor_path.sum()) == c * n


def test_retrieval_scores_equal_on_both_paths(monkeypatch):
    features = F.normalize(torch.randint(-2, 3, (120, 4), generator=torch.Generator().manual_seed(21)).float(), dim=1)
    labels = torch.randint(0, 5, (120,), generator=torch.Generator().manual_seed(22))
    compiled = retrieval_scores(features, features, labels, labels, exclude_self=True, ks=(1, 5), per_query=True)
    monkeypatch.setattr(metrics_module, "_compiled_count_positions", lambda: None)
    tensor_path = retrieval_scores(features, features, labels, labels, exclude_self=True, ks=(1, 5), per_query=True)
    for key, values in compiled["per_query"].items():
        assert torch.equal(values, tensor_path["per_query"][key]), key


def test_binned_positions_handles_crowded_bins():
    # many relevant scores packed into one bin next to a far outlier force the exact search path
    scores = torch.cat([torch.linspace(0.5, 0.5001, 50), torch.tensor([10.0]), torch.rand(200) * 0.6]).unsqueeze(0)
    index = torch.arange(51).unsqueeze(0)
    sorted_rel = scores.gather(1, index).sort(1).values.contiguous()
    expected = torch.searchsorted(sorted_rel, scores, right=True)
    assert torch.equal(_binned_positions(sorted_rel, torch.tensor([51]), scores).long(), expected)
    assert torch.equal(_position_histogram(sorted_rel, torch.tensor([51]), scores),
                       torch.bincount(expected[0], minlength=52).unsqueeze(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query_features": torch.zeros(0, 4)}, "query_features is empty"),
        ({"gallery_features": torch.randn(5, 3)}, "gallery_features has dim 3"),
        ({"query_features": torch.full((2, 4), float("nan"))}, "NaN or infinite"),
        ({"query_features": torch.randn(4)}, "2-D"),
        ({"query_labels": torch.zeros(3, dtype=torch.long)}, "query_labels must be a 1-D tensor of length 2"),
        ({"gallery_labels": torch.zeros(5)}, "integer labels"),
        ({"ks": (0,)}, "ks must be"),
        ({"ks": 5}, r"ks must be .*ks=\(5,\)"),
        ({"query_labels": ["a", "b"]}, "query_labels must hold integer labels, got strings"),
        ({"gallery_labels": np.array(["a"] * 5)}, "gallery_labels must hold integer labels"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"normalize": "yes"}, "normalize must be"),
    ],
)
def test_retrieval_scores_errors(kwargs, message):
    args = {
        "query_features": torch.randn(2, 4),
        "gallery_features": torch.randn(5, 4),
        "query_labels": torch.zeros(2, dtype=torch.long),
        "gallery_labels": torch.zeros(5, dtype=torch.long),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        retrieval_scores(**args)


def test_relevance_errors():
    with pytest.raises(ValueError, match="relevance has shape"):
        retrieval_scores_from_relevance(torch.randn(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        retrieval_scores_from_relevance(torch.randn(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="exclude"):
        retrieval_scores_from_relevance(torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool), exclude=torch.ones(2))


# ------------------------------------------------------------------------------------------------ revisited protocol
def _revisited_reference(scores: torch.Tensor, gnd: list[dict], ks=(1, 5, 10)) -> dict[str, float]:
    """Straight transcription of the protocol: full ranking, ignored images removed, trapezoidal AP, mP@k."""
    protocols = {"easy": (["easy"], ["junk", "hard"]), "medium": (["easy", "hard"], ["junk"]),
                 "hard": (["hard"], ["junk", "easy"])}
    out = {}
    for name, (pos_keys, ignore_keys) in protocols.items():
        aps, prs = [], []
        for q, entry in enumerate(gnd):
            positives = {i for k in pos_keys for i in entry[k]}
            ignored = {i for k in ignore_keys for i in entry[k]} - positives
            if not positives:
                continue
            ranking = [int(i) for i in torch.argsort(scores[q], descending=True) if int(i) not in ignored]
            ranks = [r for r, item in enumerate(ranking) if item in positives]
            ap = 0.0
            for j, r in enumerate(ranks):
                before = 1.0 if r == 0 else j / r
                ap += (before + (j + 1) / (r + 1)) / (2 * len(positives))
            aps.append(ap)
            one_based = np.array(ranks) + 1
            prs.append([(one_based <= min(one_based.max(), k)).sum() / min(one_based.max(), k) for k in ks])
        out[name] = float(np.mean(aps))
        for i, k in enumerate(ks):
            out[f"mP@{k}_{name}"] = float(np.mean([p[i] for p in prs]))
    return out


def test_revisited_hand_worked():
    # gallery g0..g5 ranked g4, g0, g1, g2, g5, g3
    scores = torch.tensor([[0.8, 0.7, 0.6, 0.4, 0.9, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gnd = [{"easy": [0, 3], "hard": [2], "junk": [1]}, {"easy": [5], "hard": [], "junk": []}]
    result = revisited_map(scores, gnd)
    # easy: ranking g4 g0 g5 g3 -> positives at 0-based ranks 1, 3 -> AP 1/3; query 2: g5 first -> AP 1
    assert result["easy"] == pytest.approx((1 / 3 + 1.0) / 2)
    # medium: ranking g4 g0 g2 g5 g3 -> ranks 1, 2, 4 -> 1/12 + 7/36 + 11/60 = 83/180
    assert result["medium"] == pytest.approx((83 / 180 + 1.0) / 2)
    # hard: query 2 has no hard positive and is skipped; query 1: ranking g4 g2 g5 -> rank 1 -> 1/4
    assert result["hard"] == pytest.approx(0.25)
    assert result["n_skipped_hard"] == 1 and result["n_skipped_easy"] == 0
    assert result["mP@5_easy"] == pytest.approx((0.5 + 1.0) / 2)  # k' = min(max rank 4, 5) = 4 -> 2/4
    assert result["mP@5_medium"] == pytest.approx((0.6 + 1.0) / 2)
    assert result["mP@1_hard"] == pytest.approx(0.0)
    assert result["mP@10_hard"] == pytest.approx(0.5)  # k' = min(2, 10) = 2 -> 1/2


def test_revisited_matches_reference_on_random_ground_truth():
    g = torch.Generator().manual_seed(18)
    n_queries, n_gallery = 7, 60
    scores = torch.randn(n_queries, n_gallery, generator=g)
    gnd = []
    for _ in range(n_queries):
        perm = torch.randperm(n_gallery, generator=g).tolist()
        gnd.append({"easy": perm[:5], "hard": perm[5:9], "junk": perm[9:14], "bbx": None})
    result = revisited_map(scores, gnd)
    expected = _revisited_reference(scores, gnd)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_revisited_errors():
    with pytest.raises(ValueError, match="gnd has 1 entries"):
        revisited_map(torch.randn(2, 5), [{"easy": [], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match="outside"):
        revisited_map(torch.randn(1, 5), [{"easy": [7], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match="'junk'"):
        revisited_map(torch.randn(1, 5), [{"easy": [1], "hard": []}])


# --------------------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_accuracy_hand_example():
    classes = torch.eye(3)
    samples = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.0, 0.4], [0.1, 0.3, 0.6]])
    labels = torch.tensor([0, 1, 2, 0])
    assert zero_shot_accuracy(classes, samples, labels) == pytest.approx(2 / 4)
    assert zero_shot_accuracy(classes, samples, labels, k=2) == pytest.approx(3 / 4)
    assert zero_shot_accuracy(classes, samples, labels, k=3) == 1.0
    assert zero_shot_accuracy(classes, samples, labels, chunk_size=1) == pytest.approx(2 / 4)


def test_zero_shot_errors():
    with pytest.raises(ValueError, match="labels must lie in"):
        zero_shot_accuracy(torch.eye(3), torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="k must be"):
        zero_shot_accuracy(torch.eye(3), torch.randn(2, 3), torch.tensor([0, 1]), k=4)
    with pytest.raises(ValueError, match="sample_features has dim 2"):
        zero_shot_accuracy(torch.eye(3), torch.randn(2, 2), torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------- cosine default and overflow
def test_retrieval_scores_ranks_by_cosine_by_default_and_dot_product_on_request():
    # gallery item 0 (same label) points the query's way; item 1 (other label) is off-axis but 10x longer
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.9, 0.1], [3.0, 10.0]])
    query_labels, gallery_labels = torch.tensor([0]), torch.tensor([0, 1])
    cosine = retrieval_scores(query, gallery, query_labels, gallery_labels)
    dot = retrieval_scores(query, gallery, query_labels, gallery_labels, normalize=False)
    assert cosine["mAP"] == 1.0 and cosine["R@1"] == 1.0  # cosine 0.99 vs 0.29
    assert dot["mAP"] == 0.5 and dot["R@1"] == 0.0  # dot 0.9 vs 3.0
    # normalised inputs: the default leaves them untouched, so cosine == the old dot product exactly
    q, g = _features(30, 8, 1), _features(80, 8, 2)
    labels_q, labels_g = torch.arange(30) % 4, torch.arange(80) % 4
    a = retrieval_scores(q, g, labels_q, labels_g, per_query=True)
    b = retrieval_scores(q, g, labels_q, labels_g, per_query=True, normalize=False)
    assert torch.equal(a["per_query"]["AP"], b["per_query"]["AP"])
    # raw features: the default equals normalising first
    raw_q, raw_g = q * torch.rand(30, 1) * 50, g * torch.rand(80, 1) * 50
    c = retrieval_scores(raw_q, raw_g, labels_q, labels_g, per_query=True)
    assert torch.allclose(c["per_query"]["AP"], a["per_query"]["AP"])


_OVERFLOW_SCRIPT = textwrap.dedent(
    """
    import torch
    from crossgap_lib.metrics import retrieval_scores
    torch.manual_seed(0)
    q, g = torch.randn(20, 8) * 1e20, torch.randn(50, 8) * 1e20  # finite, but every dot product overflows float32
    ql, gl = torch.arange(20) % 5, torch.arange(50) % 5
    try:
        retrieval_scores(q, g, ql, gl, normalize=False)
    except ValueError as err:
        print("ValueError:", err)
    got = retrieval_scores(q, g, ql, gl, per_query=True)["per_query"]["AP"]
    unit = retrieval_scores(q / 1e20, g / 1e20, ql, gl, per_query=True)["per_query"]["AP"]
    print("cosine ranks match:", torch.allclose(got, unit))
    """
)


def test_huge_features_give_an_error_or_correct_ranks_not_a_crash():
    # before the fix the scores overflowed to inf and the compiled kernel indexed out of bounds: a segfault, so the
    # check runs in a subprocess (a crash fails this test instead of killing the suite)
    done = subprocess.run([sys.executable, "-c", _OVERFLOW_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"crashed with return code {done.returncode}: {done.stderr[-2000:]}"
    assert "ValueError: query_features[0:20] @ gallery_features.T overflowed" in done.stdout, done.stdout
    assert "normalize=True" in done.stdout
    assert "cosine ranks match: True" in done.stdout, done.stdout


def test_relevance_scores_with_inf_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        retrieval_scores_from_relevance(torch.tensor([[float("inf"), 1.0]]), torch.tensor([[True, False]]))


def test_revisited_skips_and_counts_like_retrieval_scores():
    scores = torch.tensor([[0.9, 0.1, 0.5]])
    gnd = [{"easy": [0], "hard": [], "junk": []}]  # no hard positive: the hard protocol has nothing to measure
    with pytest.warns(UserWarning, match="hard protocol") as record:
        result = revisited_map(scores, gnd)
    assert record[0].filename == __file__  # attributed to the caller
    assert result["easy"] == 1.0 and result["n_skipped_easy"] == 0
    assert math.isnan(result["hard"]) and result["n_skipped_hard"] == 1
    with pytest.raises(ValueError, match="no query has a positive gallery item in any protocol"):
        revisited_map(scores, [{"easy": [], "hard": [], "junk": [1]}])
