"""Tests for crossgap_lib.gap: gap measures, similarity distributions and post-hoc baselines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from crossgap_lib.gap import (
    centroid,
    centroid_distance,
    class_overlap,
    fit_text_span,
    matched_cosine,
    mean_center,
    shift_along_gap,
    similarity_distributions,
)


def _cone(n: int, dim: int, axis: int, seed: int, spread: float = 0.3) -> torch.Tensor:
    """Normalised features clustered around basis vector ``axis`` (a stand-in for one modality's cone)."""
    g = torch.Generator().manual_seed(seed)
    raw = spread * torch.randn(n, dim, generator=g)
    raw[:, axis] += 1.0
    return F.normalize(raw, dim=1)


def test_centroid_distance_known_values():
    e = torch.eye(4)
    assert centroid_distance(e[:1].repeat(5, 1), e[1:2].repeat(3, 1)) == pytest.approx(math.sqrt(2))
    same = _cone(20, 4, 0, 0)
    assert centroid_distance(same, same) == pytest.approx(0.0, abs=1e-7)
    # inputs are normalised first: scaling a modality changes nothing
    assert centroid_distance(3 * same, _cone(10, 4, 1, 1)) == pytest.approx(centroid_distance(same, _cone(10, 4, 1, 1)))


def test_matched_cosine():
    images = _cone(10, 6, 0, 2)
    assert matched_cosine(images, images) == pytest.approx((1.0, 0.0), abs=1e-6)
    texts = torch.cat([images[:, 1:], images[:, :1]], dim=1)  # rotated copy
    mean, std = matched_cosine(images, texts)
    expected = F.cosine_similarity(images, texts)
    assert mean == pytest.approx(float(expected.mean()), abs=1e-6)
    assert std == pytest.approx(float(expected.std()), abs=1e-6)
    with pytest.raises(ValueError, match="matched pairs"):
        matched_cosine(images, texts[:5])


def test_similarity_distributions_all_pairs():
    images, texts, inverted = _cone(6, 5, 0, 3), _cone(6, 5, 1, 4), _cone(6, 5, 2, 5)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    out = similarity_distributions(images, texts, inverted, labels=labels)
    assert out["image-image"].numel() == 15 and out["text-text"].numel() == 15
    assert out["text-image"].numel() == 30 and out["text-image/matched"].numel() == 6
    assert out["inverted-image"].numel() == 30
    torch.testing.assert_close(out["text-image/matched"], (texts * images).sum(1))
    full = images @ images.T
    i, j = torch.triu_indices(6, 6, offset=1)
    torch.testing.assert_close(out["image-image"], full[i, j])
    cross = texts @ images.T
    torch.testing.assert_close(out["text-image"].sort().values, cross[~torch.eye(6, dtype=torch.bool)].sort().values)
    same = labels[i] == labels[j]
    torch.testing.assert_close(out["image-image/same-class"].sort().values, full[i, j][same].sort().values)
    torch.testing.assert_close(out["image-image/different-class"].sort().values, full[i, j][~same].sort().values)


def test_similarity_distributions_sampling_and_unpaired_sets():
    images, texts = _cone(300, 8, 0, 6), _cone(40, 8, 1, 7)
    labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(8))
    out = similarity_distributions(images, texts, labels=labels, max_pairs=1000)
    assert out["image-image"].numel() == 1000 and out["text-text"].numel() == 780
    assert out["text-image"].numel() == 1000 and "text-image/matched" not in out
    assert out["image-image/same-class"].numel() == 1000
    assert out["image-image/different-class"].numel() == 1000
    assert bool((out["image-image"].abs() <= 1 + 1e-6).all())
    again = similarity_distributions(images, texts, labels=labels, max_pairs=1000)
    torch.testing.assert_close(again["image-image"], out["image-image"])  # seeded
    # sampled same-class pairs really are same-class: compare with the exhaustive distribution's range
    full = images @ images.T
    same_mask = (labels[:, None] == labels[None]) & ~torch.eye(300, dtype=torch.bool)
    assert out["image-image/same-class"].min() >= full[same_mask].min() - 1e-6


def test_class_overlap_separated_and_mixed():
    separated = torch.cat([_cone(30, 6, 0, 9, 0.05), _cone(30, 6, 1, 10, 0.05)])
    labels = torch.tensor([0] * 30 + [1] * 30)
    result = class_overlap(separated, labels)
    assert result["auc"] == pytest.approx(1.0)
    assert result["overlap"] < 0.05 and result["frac_diff_above_median_same"] == 0.0
    assert result["n_same"] == 2 * 435 and result["n_diff"] == 900
    mixed = _cone(60, 6, 0, 11)
    shuffled = class_overlap(mixed, labels)
    assert 0.35 < shuffled["auc"] < 0.65 and shuffled["overlap"] > 0.6
    with pytest.raises(ValueError, match="same-class and one different-class"):
        class_overlap(mixed, torch.zeros(60, dtype=torch.long))


def test_mean_center():
    features = _cone(50, 6, 0, 12)
    centered = mean_center(features, renormalize=False)
    torch.testing.assert_close(centered.mean(0), torch.zeros(6), atol=1e-6, rtol=0)
    unit = mean_center(features)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(50))
    other = _cone(5, 6, 1, 13)
    torch.testing.assert_close(mean_center(other, mean=features.mean(0), renormalize=False),
                               other - features.mean(0))
    with pytest.raises(ValueError, match="mean must have shape"):
        mean_center(features, mean=torch.zeros(3))


def test_shift_along_gap_reduces_the_gap():
    images, texts = _cone(40, 6, 0, 14), _cone(40, 6, 1, 15)
    shifted = shift_along_gap(images, centroid(images), centroid(texts))
    assert centroid_distance(shifted, texts) < 0.5 * centroid_distance(images, texts)
    torch.testing.assert_close(shifted.norm(dim=1), torch.ones(40))
    unchanged = shift_along_gap(images, centroid(images), centroid(texts), alpha=0.0)
    torch.testing.assert_close(unchanged, images)
    with pytest.raises(ValueError, match="text_centroid must have shape"):
        shift_along_gap(images, centroid(images), torch.zeros(2))


def test_text_span_projection():
    g = torch.Generator().manual_seed(16)
    texts = torch.randn(100, 8, generator=g) @ torch.randn(8, 8, generator=g)
    projector = fit_text_span(texts)
    assert projector.n_components == 4  # half the dimensions by default
    basis = projector.components
    torch.testing.assert_close(basis @ basis.T, torch.eye(4), atol=1e-5, rtol=0)
    assert bool((projector.explained_variance[:-1] >= projector.explained_variance[1:]).all())
    images = torch.randn(20, 8, generator=g)
    once = projector.project(images, renormalize=False)
    torch.testing.assert_close(projector.project(once, renormalize=False), once, atol=1e-5, rtol=0)  # idempotent
    assert torch.linalg.matrix_rank(once) == 4
    torch.testing.assert_close(projector.project(images).norm(dim=1), torch.ones(20))
    # same subspace as scikit-learn's PCA
    sk = torch.as_tensor(PCA(n_components=4).fit(texts.double().numpy()).components_, dtype=torch.float32)
    torch.testing.assert_close(basis.T @ basis, sk.T @ sk, atol=1e-4, rtol=0)
    # centering subtracts the text mean before projecting
    centered = fit_text_span(texts, n_components=3, center=True)
    expected = (images - texts.mean(0)) @ centered.components.T @ centered.components
    torch.testing.assert_close(centered.project(images, renormalize=False), expected, atol=1e-5, rtol=1e-5)


def test_text_span_errors():
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_text_span(torch.randn(1, 4))
    with pytest.raises(ValueError, match="n_components"):
        fit_text_span(torch.randn(5, 4), n_components=5)
    with pytest.raises(ValueError, match="expects 4"):
        fit_text_span(torch.randn(5, 4)).project(torch.randn(2, 3))
