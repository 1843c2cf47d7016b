"""OTI curves across steps and the class-separation measures of crossgap_lib.dynamics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from crossgap_lib import dynamics, gap, metrics, pipeline
from crossgap_lib.models import load_clip


@pytest.fixture(scope="module")
def clip():
    return load_clip("crossgap-micro")


@pytest.fixture(scope="module")
def data(clip):
    generator = torch.Generator().manual_seed(1)
    dim = clip.model.visual.output_dim
    labels = torch.arange(10) % 3
    centres = F.normalize(torch.randn(3, dim, generator=generator), dim=1)
    features = F.normalize(centres[labels] + 0.8 * torch.randn(10, dim, generator=generator) / math.sqrt(dim), dim=1)
    return features, labels


def _ap(query, gallery, q_labels, g_labels, exclude_self=False):
    return metrics.retrieval_scores(query, gallery, q_labels, g_labels, exclude_self=exclude_self,
                                    per_query=True)["per_query"]["AP"]


@pytest.mark.parametrize("exclude_self", [False, True])
def test_oti_curve_matches_invert_dataset_and_retrieval_scores(clip, data, exclude_self):
    features, labels = data
    kwargs = {"num_pseudo_tokens": 2, "lr": 2e-2, "weight_decay": 0.01, "batch_size": 4, "seed": 0}
    gallery, g_labels = (features, labels) if exclude_self else (features[:7], labels[:7])
    curve = dynamics.oti_curve(clip, features, gallery, labels, g_labels, steps=4, record_every=2,
                               exclude_self=exclude_self, chunk_size=4, **kwargs)
    assert curve.steps == [0, 2, 4] and curve.ap.shape == (10, 3) and curve.loss.shape == (4,)
    # the curve's features at step s are invert_dataset's after s steps (same per-sample seeds and chunks)
    for j, s in enumerate(curve.steps[1:], start=1):
        inverted = pipeline.invert_dataset(clip, "oti", features, chunk_size=4, progress=False, steps=s, **kwargs)
        expected = _ap(inverted.features, gallery, labels, g_labels, exclude_self)
        torch.testing.assert_close(curve.ap[:, j].double(), expected.double(), atol=1e-6, rtol=0, equal_nan=True)
        if s == 4:
            torch.testing.assert_close(curve.features, inverted.features, atol=1e-6, rtol=0)
            torch.testing.assert_close(curve.loss, inverted.losses.mean(0), atol=1e-6, rtol=0)
    intra = _ap(features, gallery, labels, g_labels, exclude_self)
    torch.testing.assert_close(curve.intra_ap.double(), intra.double(), atol=1e-6, rtol=0, equal_nan=True)
    assert curve.intra_mAP == pytest.approx(float(intra.nanmean()), abs=1e-6)


def test_oti_curve_cache_and_chunking(clip, data, tmp_path):
    features, labels = data
    args = (clip, features, features, labels, labels)
    kwargs = {"steps": 2, "record_every": 1, "batch_size": 3, "exclude_self": True}
    first = dynamics.oti_curve(*args, chunk_size=3, cache_dir=tmp_path, **kwargs)
    assert list((tmp_path / "oti_curve").iterdir())
    again = dynamics.oti_curve(*args, chunk_size=3, cache_dir=tmp_path, **kwargs)
    torch.testing.assert_close(again.ap, first.ap)
    other_chunks = dynamics.oti_curve(*args, chunk_size=10, **kwargs)  # per-sample seeds: chunking does not matter
    torch.testing.assert_close(other_chunks.ap, first.ap, atol=1e-6, rtol=0, equal_nan=True)
    # queries = the first gallery items: the same per-query values as for the whole gallery as queries
    subset = dynamics.oti_curve(clip, features[:4], features, labels[:4], labels, chunk_size=3, **kwargs)
    torch.testing.assert_close(subset.ap, first.ap[:4], atol=1e-6, rtol=0, equal_nan=True)
    torch.testing.assert_close(subset.intra_ap, first.intra_ap[:4], atol=1e-6, rtol=0, equal_nan=True)


def test_oti_curve_rejects_bad_arguments(clip, data):
    features, labels = data
    with pytest.raises(ValueError, match="multiple of record_every"):
        dynamics.oti_curve(clip, features, features, labels, labels, steps=5, record_every=2)
    with pytest.raises(ValueError, match="exclude_self"):
        dynamics.oti_curve(clip, features, features[:5], labels, labels[:5], steps=2, record_every=1,
                           exclude_self=True)
    with pytest.raises(ValueError, match="labels"):
        dynamics.oti_curve(clip, features, features, labels[:3], labels, steps=2, record_every=1)


def _fake_curve(ap, intra, steps):
    ap = torch.as_tensor(ap, dtype=torch.float32)
    return dynamics.OTICurve(num_pseudo_tokens=1, steps=steps, ap=ap, intra_ap=torch.as_tensor(intra),
                             loss=torch.zeros(steps[-1]), features=torch.zeros(ap.shape[0], 2))


def test_curves_dict_and_curve_table():
    a = _fake_curve([[0.1, 0.5, 0.3], [0.1, 0.7, 0.3]], [0.2, 0.2], [0, 5, 10])
    b = _fake_curve([[0.1, 0.2, 0.4], [0.1, 0.2, 0.6]], [0.2, 0.2], [0, 5, 10])
    b.num_pseudo_tokens = 4
    curve = dynamics.curves_dict([a, b], setting="x")
    assert curve["num_pseudo_tokens"] == [1, 4] and curve["steps"] == [0, 5, 10] and curve["setting"] == "x"
    table = dynamics.curve_table(curve).set_index("R")
    assert table.loc[1, "peak_mAP"] == pytest.approx(0.6) and table.loc[1, "peak_step"] == 5
    assert table.loc[4, "peak_step"] == 10 and table.loc[4, "last_mAP"] == pytest.approx(0.5)
    assert table.loc[1, "intra_mAP"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same steps"):
        dynamics.curves_dict([a, _fake_curve([[0.1, 0.2]], [0.1], [0, 1])])


def test_cross_class_overlap_equals_class_overlap_on_one_set(data):
    features, labels = data
    ours = dynamics.cross_class_overlap(features, labels, features, labels, exclude_self=True)
    reference = gap.class_overlap(features, labels)
    for key in ("overlap", "auc", "mean_same", "mean_diff"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6)  # gap rounds cosines to float32
    assert ours["n_same"] == 2 * reference["n_same"] and ours["n_diff"] == 2 * reference["n_diff"]


def test_cross_class_overlap_separated_and_sampled():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gallery = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])
    out = dynamics.cross_class_overlap(query, torch.tensor([0, 1]), gallery, torch.tensor([0, 0, 1, 1]))
    assert out["auc"] == 1.0 and out["overlap"] == 0.0 and out["n_same"] == 4 and out["n_diff"] == 4
    sampled = dynamics.cross_class_overlap(query, torch.tensor([0, 1]), gallery, torch.tensor([0, 0, 1, 1]),
                                           max_pairs=5)
    assert sampled["n_same"] + sampled["n_diff"] == 5
    pairs = dynamics.class_similarities(query, torch.tensor([0, 1]), gallery, torch.tensor([0, 0, 1, 1]))
    assert pairs["same"].numel() == 4 and bool((pairs["same"] > 0.9).all()) and bool((pairs["different"] < 0.2).all())
    with pytest.raises(ValueError, match="same-class and different-class"):
        dynamics.cross_class_overlap(query, torch.tensor([0, 0]), gallery, torch.tensor([0, 0, 0, 0]))


@pytest.mark.parametrize("exclude_self", [False, True])
def test_per_query_auc_matches_sklearn(data, exclude_self):
    features, labels = data
    gallery = features if exclude_self else torch.cat([features, features[:4].flip(1)])
    g_labels = labels if exclude_self else torch.cat([labels, labels[:4]])
    auc = dynamics.per_query_auc(features, labels, gallery, g_labels, exclude_self=exclude_self, chunk_size=3)
    for q in range(features.shape[0]):
        keep = np.ones(gallery.shape[0], dtype=bool)
        if exclude_self:
            keep[q] = False
        scores = (gallery @ features[q]).numpy()[keep]
        assert auc[q] == pytest.approx(roc_auc_score((g_labels == labels[q]).numpy()[keep], scores), abs=1e-9)


def test_per_query_auc_ties_and_missing_classes():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gallery = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    auc = dynamics.per_query_auc(query, torch.tensor([0, 5]), gallery, torch.tensor([0, 1, 1]))
    assert auc[0] == pytest.approx(0.75)  # one tie with the same-class item (half), one clear win
    assert math.isnan(auc[1])  # no relevant gallery item


def test_closest_classes_and_joint_pca():
    features = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.05, 0.0], [0.9, 0.3, 0.0], [0.0, 0.0, 1.0], [1.0, 0.2, 0.0]])
    labels = torch.tensor([0, 0, 1, 2, 1])
    classes, cos = dynamics.closest_classes(features, labels, n=3)
    assert classes[:2] in ([0, 1], [1, 0]) and classes[2] == 2 and cos[0] == pytest.approx(1.0)
    assert 0.9 < cos[1] < 1.0 and cos[2] < 0.5
    with pytest.raises(ValueError, match="exceeds"):
        dynamics.closest_classes(features, labels, n=4)
    points, ratio = dynamics.joint_pca({"x": features, "y": -features[:2]})
    assert points["x"].shape == (5, 2) and points["y"].shape == (2, 2) and 0 < ratio.sum() <= 1 + 1e-9
    with pytest.raises(ValueError, match="same dim"):
        dynamics.joint_pca({"x": features, "y": torch.ones(2, 4)})
