"""Tests for crossgap_lib.gap: gap measures, similarity distributions and post-hoc baselines."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn

from crossgap_lib.datasets.shapes import COLOUR_WORDS, ShapesConfig, lab_vocabulary
from crossgap_lib.gap import (
    centroid,
    centroid_distance,
    class_overlap,
    critique_vocabulary,
    default_span_ks,
    fit_text_span,
    isoclip_k,
    isoclip_operator,
    isoclip_projector,
    matched_cosine,
    mean_center,
    posthoc_methods,
    projection_matrices,
    shift_along_gap,
    similarity_distributions,
    text_span_sweep,
)
from crossgap_lib.models import load_clip


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


# ------------------------------------------------------------------------ the critique's span, swept over k
def _unit(n: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_critique_vocabulary_is_the_bare_imagenet_names():
    names = critique_vocabulary()
    assert len(names) == 1000
    assert names[:5] == ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]
    assert names[134] == names[517] == "crane" and names[999] == "toilet tissue"  # pytorch/hub imagenet_classes.txt
    assert not any("_" in n or "," in n or n.startswith("a ") for n in names)  # bare names, no prompt template


def test_default_span_ks():
    assert default_span_ks(512, 1000) == [64, 128, 256, 384]
    assert default_span_ks(32, 53) == [4, 8, 16, 24]
    assert default_span_ks(512, 32) == [31]  # a small vocabulary supports k <= 31 only
    with pytest.raises(ValueError, match="n_texts"):
        default_span_ks(8, 1)


def test_text_span_sweep_is_the_critique_procedure():
    g = torch.Generator().manual_seed(20)
    texts = F.normalize(torch.randn(60, 16, generator=g) @ torch.randn(16, 16, generator=g) + 2.0, dim=1)
    query, gallery = _unit(5, 16, 21), _unit(7, 16, 22)
    sweep = text_span_sweep(query, gallery, texts, ks=[8, 2, 16])
    assert list(sweep) == [2, 8, 16]
    # the critique's recipe written out: top-k eigenvectors of the text covariance, U^T U f without centering, then
    # L2-normalise (Vision-Kek/Is-CLIP-Really-Misaligned cvpr26-suppl/span_projection.py and retrieval.py)
    values, vectors = torch.linalg.eigh(torch.cov(texts.double().T))
    top = vectors[:, values.argsort(descending=True)[:8]].T.float()
    for features, out in ((query, sweep[8][0]), (gallery, sweep[8][1])):
        torch.testing.assert_close(out, F.normalize(features @ top.T @ top, dim=1), atol=1e-5, rtol=0)
        assert out.shape == features.shape
    # one fit for all k: the same as fitting each k on its own
    torch.testing.assert_close(sweep[2][0], fit_text_span(texts, n_components=2).project(query), atol=1e-5, rtol=0)
    # k = D keeps every direction: the identity after renormalisation
    torch.testing.assert_close(sweep[16][0], query, atol=1e-5, rtol=0)
    torch.testing.assert_close(sweep[16][1], gallery, atol=1e-5, rtol=0)
    assert list(text_span_sweep(query, gallery, texts)) == default_span_ks(16, 60)


def test_text_span_sweep_errors():
    query, texts = _unit(4, 16, 23), _unit(10, 16, 24)
    with pytest.raises(ValueError, match="rank 9"):
        text_span_sweep(query, query, texts, ks=[12])
    with pytest.raises(ValueError, match=r"not an int in \[1, 16\]"):
        text_span_sweep(query, query, texts, ks=[0])
    with pytest.raises(ValueError, match="ks is empty"):
        text_span_sweep(query, query, texts, ks=[])
    with pytest.raises(ValueError, match="text_features has dim 8"):
        text_span_sweep(query, query, _unit(10, 8, 25), ks=[2])
    assert list(text_span_sweep(query, query, texts, ks=16)) == [16]  # k = D is allowed: the identity


# ----------------------------------------------------------------------------------------------------- IsoCLIP
def test_isoclip_removes_the_top_and_bottom_singular_directions():
    # identity-like model: image projection diag(s), text projection I, so Psi = diag(s) with its singular
    # directions on the axes; IsoCLIP keeps the middle of the spectrum and drops the anisotropic extremes
    s = torch.tensor([9.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    operator = isoclip_operator(torch.diag(s), torch.eye(8), k_top=2, k_bottom=1)
    keep = torch.tensor([0.0, 0, 1, 1, 1, 1, 1, 0])
    torch.testing.assert_close(operator, torch.diag(keep), atol=1e-6, rtol=0)
    z = _unit(6, 8, 26)
    torch.testing.assert_close(z @ operator, z * keep, atol=1e-6, rtol=0)
    # removing nothing is the identity, whatever the projections
    g = torch.Generator().manual_seed(27)
    image_projection, text_projection = torch.randn(12, 8, generator=g), torch.randn(10, 8, generator=g)
    torch.testing.assert_close(isoclip_operator(image_projection, text_projection, 0, 0), torch.eye(8), atol=1e-5,
                               rtol=0)


def test_isoclip_on_projected_features_equals_the_authors_pre_projection_form():
    g = torch.Generator().manual_seed(28)
    image_projection, text_projection = torch.randn(12, 8, generator=g), torch.randn(10, 8, generator=g)
    x = torch.randn(20, 12, generator=g, dtype=torch.float64)  # pre-projection image features
    authors = F.normalize(x @ isoclip_projector(image_projection, text_projection, 3, 2), dim=1)
    z = F.normalize((x @ image_projection.double()).float(), dim=1)  # what the pipeline stores
    ours = F.normalize(z @ isoclip_operator(image_projection, text_projection, 3, 2), dim=1)
    torch.testing.assert_close(ours.double(), authors, atol=1e-5, rtol=0)
    # Psi (12, 10) has r = 10 singular directions but rank 8: k_bottom = 2 drops its two null ones (the authors count
    # from r), k_top = 3 the largest, so 5 directions remain
    assert torch.linalg.matrix_rank(isoclip_operator(image_projection, text_projection, 3, 2)) == 5


def test_isoclip_on_crossgap_micro(caplog):
    clip = load_clip("crossgap-micro")
    model = clip.model
    image_projection, text_projection = projection_matrices(clip)
    torch.testing.assert_close(image_projection, model.visual.proj.detach().double())
    torch.testing.assert_close(text_projection, model.text_projection.detach().double())
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(29))
    with torch.no_grad():
        projected = model.encode_image(images)
        proj, model.visual.proj = model.visual.proj, None
        try:
            pre = model.encode_image(images)  # the same tower without its final projection
        finally:
            model.visual.proj = proj
    k_top, k_bottom = isoclip_k(clip, 32)
    assert (k_top, k_bottom) == (9, 3)  # CLIP B/32's 150 and 50 of 512, scaled to rank 32
    authors = F.normalize(pre.double() @ isoclip_projector(image_projection, text_projection, k_top, k_bottom), dim=1)
    out = posthoc_methods(F.normalize(projected, dim=1), F.normalize(projected, dim=1),
                          image_centroid_source=F.normalize(projected, dim=1), text_features=_unit(5, 32, 30),
                          vocabulary_features=_unit(40, 32, 31), clip=clip)
    torch.testing.assert_close(out["isoclip"][0].double(), authors, atol=1e-5, rtol=0)


def test_projection_matrices_of_linear_heads_and_refusals():
    text = nn.Linear(6, 4, bias=True)
    timm_like = SimpleNamespace(
        visual=SimpleNamespace(head=nn.Sequential(OrderedDict(drop=nn.Dropout(), proj=nn.Linear(5, 4, bias=False)))),
        text_projection=text)
    image_projection, text_projection = projection_matrices(timm_like)
    torch.testing.assert_close(image_projection, timm_like.visual.head.proj.weight.detach().T.double())
    assert text_projection.shape == (7, 4)  # the bias as an extra row, for a constant 1 input
    torch.testing.assert_close(text_projection[-1], text.bias.detach().double())
    siglip_like = SimpleNamespace(visual=SimpleNamespace(head=nn.Sequential()), text_projection=text)
    with pytest.raises(ValueError, match="does not end in a linear projection"):
        projection_matrices(siglip_like)
    with pytest.raises(ValueError, match="no linear text_projection"):
        projection_matrices(SimpleNamespace(visual=SimpleNamespace(proj=torch.randn(5, 4)), text_projection=None))


def test_isoclip_errors_and_settings(monkeypatch):
    with pytest.raises(ValueError, match="removes every one of the 8"):
        isoclip_operator(torch.randn(8, 8), torch.randn(8, 8), 5, 3)
    with pytest.raises(ValueError, match="k_top must be an int >= 0"):
        isoclip_operator(torch.randn(8, 8), torch.randn(8, 8), -1, 0)
    # the exactness check: an operator that does not reproduce the authors' projector is refused
    monkeypatch.setattr(torch.linalg, "pinv", lambda m: torch.zeros(m.shape[1], m.shape[0], dtype=m.dtype))
    with pytest.raises(ValueError, match="not a function of the projected image features"):
        isoclip_operator(torch.randn(8, 8), torch.randn(8, 8), 1, 1)
    monkeypatch.undo()
    assert isoclip_k(SimpleNamespace(name="ViT-B-32", pretrained="openai"), 512) == (150, 50)
    assert isoclip_k(SimpleNamespace(name="ViT-L-14", pretrained="openai"), 768) == (250, 200)
    assert isoclip_k(SimpleNamespace(name="ViT-B-32", pretrained="datacomp_xl_s13b_b90k"), 512) == (50, 50)
    assert isoclip_k(None, 64) == (19, 6) and isoclip_k(None, 1) == (0, 0)


# ------------------------------------------------------------------------------------------- all baselines at once
def test_posthoc_methods():
    query, gallery, texts, vocabulary = _unit(5, 16, 32), _unit(9, 16, 33), _unit(9, 16, 34), _unit(40, 16, 35)
    out = posthoc_methods(query, gallery, image_centroid_source=gallery, text_features=texts,
                          vocabulary_features=vocabulary, ks=[4, 8])
    assert list(out) == ["center", "shift", "pca_k4", "pca_k8"]  # no model: no IsoCLIP
    for q, g in out.values():
        assert q.shape == query.shape and g.shape == gallery.shape
        torch.testing.assert_close(q.norm(dim=1), torch.ones(5))
        torch.testing.assert_close(g.norm(dim=1), torch.ones(9))
    torch.testing.assert_close(out["center"][1], mean_center(gallery))  # centering removes the gallery's mean
    shifted = shift_along_gap(query, centroid(gallery), centroid(texts))
    torch.testing.assert_close(out["shift"][0], shifted)
    torch.testing.assert_close(out["pca_k8"][0], text_span_sweep(query, gallery, vocabulary, [8])[8][0])
    with pytest.raises(ValueError, match="vocabulary_features has dim 8"):
        posthoc_methods(query, gallery, image_centroid_source=gallery, text_features=texts,
                        vocabulary_features=_unit(40, 8, 36))


def test_posthoc_methods_skips_isoclip_without_linear_projections(caplog):
    query = _unit(4, 4, 37)
    siglip_like = SimpleNamespace(visual=SimpleNamespace(head=nn.Sequential()), text_projection=nn.Linear(6, 4))
    with caplog.at_level(logging.WARNING, logger="crossgap_lib.gap"):
        out = posthoc_methods(query, query, image_centroid_source=query, text_features=query,
                              vocabulary_features=_unit(10, 4, 38), ks=[2], clip=siglip_like)
    assert "isoclip" not in out and "no 'isoclip' entry" in caplog.text
    wrong_dim = SimpleNamespace(visual=SimpleNamespace(proj=torch.randn(8, 6)), text_projection=torch.randn(8, 6))
    with pytest.raises(ValueError, match="clip projects to 6 dims"):
        posthoc_methods(query, query, image_centroid_source=query, text_features=query,
                        vocabulary_features=_unit(10, 4, 38), ks=[2], clip=wrong_dim)


def test_lab_vocabulary_is_generic_not_the_label_set():
    everything = lab_vocabulary()
    assert len(everything) == len(set(everything))
    assert not set(everything) & set(ShapesConfig(patterns=("solid", "striped")).class_names)
    assert {w for words in COLOUR_WORDS.values() for w in words} <= set(everything)
    assert {"hexagon", "striped", "on a black background", "on a noisy background", "of small size",
            "in the top left", "an image", "a shape"} <= set(everything)
    config = ShapesConfig()  # 4 shapes x 4 colours, no pattern
    own = lab_vocabulary(config)
    assert set(own) < set(everything) and "hexagon" not in own and "striped" not in own and "crimson" in own
    assert lab_vocabulary({"shapes": ["ring"], "colours": ["cyan"]})[:3] == ["cyan", "turquoise", "aqua"]
    tokens = load_clip("crossgap-micro").tokenizer(everything)
    assert int((tokens != 0).sum(1).max()) < tokens.shape[1]  # every phrase fits the lab's 16-token context
    with pytest.raises(ValueError, match="expected ShapesConfig"):
        lab_vocabulary(["red"])
