"""Tests of crossgap_lib.evaluation: the one protocol on the laboratory source (smoke sizes) and on a dry-run subset of
the paper source (random ViT-B-32 weights, miniature real-format datasets), in temporary caches."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from crossgap_lib import claims, metrics
from crossgap_lib.evaluation import Evidence, defined_sources, evaluate, load_source, source_assets
from crossgap_lib.stats import paired_effect


@pytest.fixture(scope="module")
def lab_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("evidence_lab")


@pytest.fixture(scope="module")
def lab(lab_cache) -> Evidence:
    return evaluate("lab-smoke", cache_dir=lab_cache, progress=False)


def test_load_source_names_dicts_and_errors():
    assert load_source("lab-smoke")["kind"] == "lab" and load_source("lab-smoke")["name"] == "lab-smoke"
    assert load_source({"kind": "paper", "models": []})["name"] == "paper"
    with pytest.raises(ValueError, match="not defined under 'sources'.*lab-smoke"):
        load_source("lab-smok")
    with pytest.raises(ValueError, match="'kind' must be one of"):
        load_source({"kind": "hub"})
    with pytest.raises(ValueError, match="name in profiles.yml or a dict"):
        load_source(3)


def test_user_sources_and_assets(tmp_path, monkeypatch):
    extra = tmp_path / "my_sources.yml"
    extra.write_text("sources:\n  my-siglip:\n    kind: paper\n    models: ['SigLIP B/16']\n"
                     "    image_datasets: [cub]\n    zero_shot_datasets: [dtd, cub]\n")
    monkeypatch.setenv("CROSSGAP_SOURCES", str(extra))
    assert load_source("my-siglip")["models"] == ["SigLIP B/16"] and "lab-smoke" in defined_sources()
    assets = source_assets("my-siglip")
    assert [m.label for m in assets["models"]] == ["SigLIP B/16"] and assets["datasets"] == ["cub", "dtd"]
    assert source_assets("lab-smoke") == {"models": [], "datasets": []}
    monkeypatch.setenv("CROSSGAP_SOURCES", str(tmp_path / "nope.yml"))
    with pytest.raises(FileNotFoundError, match="CROSSGAP_SOURCES.*not a file"):
        load_source("my-siglip")


def test_lab_evidence_holds_every_model_task_and_method(lab):
    settings = load_source("lab-smoke")["lab"]["settings"]
    assert lab.labels == [s["name"] for s in settings]
    assert dict(zip(lab.models["label"], lab.models["family"])) == {
        "clip": "clip", "clip T=0.01": "clip", "clip T=1": "clip", "soft": "soft", "intra": "slip"}
    assert lab.seeds("clip") == [0, 1] and lab.datasets("image") == ["shapes"]
    assert lab.methods("image") == ["intra", "oti", "center", "shift", "pca_prompts", "pca_captions", "prompt"]
    assert lab.methods("text") == ["intra", "ovi"] and lab.methods("zero_shot") == ["inter", "oti"]
    gap = lab.model_values("gap centroid distance")
    assert len(gap) == 10 and (gap["value"] > 0).all()
    scales = lab.model_values("logit scale").set_index(["model", "seed"])["value"]
    assert scales[("clip T=1", 0)] == pytest.approx(1.0) and scales[("clip T=0.01", 1)] == pytest.approx(100.0)
    assert set(lab.training) == set(lab.labels) and len(lab.training["clip"][0]["losses"]) > 0


def test_per_query_values_are_the_values(lab):
    for (model, seed, method), rows in lab.metric("mAP", task="image").groupby(["model", "seed", "method"]):
        ap = lab.per_query[f"{model}|{seed}|image|shapes"][method]
        assert float(ap.nanmean()) == pytest.approx(float(rows["value"].iloc[0]), abs=1e-6)
    zs = lab.metric("top-1", task="zero_shot", method="inter")
    correct = lab.per_query["clip|0|zero_shot|shapes"]["inter"]
    assert float(correct.mean()) == pytest.approx(float(zs[(zs.model == "clip") & (zs.seed == 0)]["value"].iloc[0]))


def test_intra_ap_is_recomputable_from_the_stored_features(lab):
    f = lab.features["clip"]
    ap = metrics.retrieval_scores(f["image"], f["gallery"], f["labels"], f["gallery_labels"],
                                  per_query=True)["per_query"]["AP"]
    torch.testing.assert_close(ap.double(), lab.per_query["clip|0|image|shapes"]["intra"], equal_nan=True)


def test_contrast_is_paired_effect_of_the_stored_values(lab):
    effect = lab.contrast("image", "oti", "intra", "clip")
    a = [[lab.per_query[f"clip|{s}|image|shapes"]["oti"]] for s in (0, 1)]
    b = [[lab.per_query[f"clip|{s}|image|shapes"]["intra"]] for s in (0, 1)]
    assert effect == {**paired_effect(a, b), "datasets": ["shapes"]}
    assert effect["interval"] == "t-interval over 2 seeds"
    between = lab.contrast("image", "oti", "intra", "intra", model_b="clip")
    gains = {m: [float((lab.per_query[f"{m}|{s}|image|shapes"]["oti"]
                        - lab.per_query[f"{m}|{s}|image|shapes"]["intra"]).nanmean()) for s in (0, 1)]
             for m in ("intra", "clip")}
    assert between["per_seed"] == pytest.approx([x - y for x, y in zip(gains["intra"], gains["clip"])])
    levels = lab.contrast("image", "intra", None, "soft", model_b="clip")
    level_diffs = [float((lab.per_query[f"soft|{s}|image|shapes"]["intra"]
                          - lab.per_query[f"clip|{s}|image|shapes"]["intra"]).nanmean()) for s in (0, 1)]
    assert levels["per_seed"] == pytest.approx(level_diffs) and levels["datasets"] == ["shapes"]
    with pytest.raises(ValueError, match="give model_b"):
        lab.contrast("image", "intra", None, "soft")
    table = lab.contrast_table("image", "oti", "intra")
    assert list(table["model"]) == lab.labels and table.iloc[0]["mean"] == pytest.approx(effect["mean"])
    with pytest.raises(KeyError, match="not in the evidence"):
        lab.contrast("image", "oti", "intra", "nope")


def test_curve_and_claims(lab):
    curve = lab.curve
    assert curve["model"] == "clip" and curve["steps"] == [0, 3, 6] and curve["AP"].shape == (2, 3, 16)
    assert curve["features_at_peak"].shape == curve["features_last"].shape == (16, lab.features["clip"]["oti"].shape[1])
    measured = claims.measure_claims(lab, n_boot=100)
    assert set(measured) == {c.key for c in claims.reported_claims()}
    assert measured["gap"]["what"] == "`clip T=1` vs `clip T=0.01`" and measured["slip"]["what"] == "`intra` vs `clip`"
    assert all(m is not None for m in measured.values())
    assert lab.families["intra"] == "slip" and lab.temperatures == {
        "clip": None, "clip T=0.01": 0.01, "clip T=1": 1.0, "soft": None, "intra": None}
    effect = lab.contrast("image", "oti", "intra", "clip")
    sentence = claims.model_sentence(lab, "clip", effect, "OTI - intra mAP")
    assert sentence.startswith("`clip` (clip), OTI - intra mAP:") and "mean of the 5 CLIP-family models" in sentence
    assert claims.model_sentence(lab, "soft", effect, "x").count("The paper reports") == 0  # no reported analogue
    assert "Table 4" in claims.model_sentence(lab, "clip T=1", effect, "x", note="T=1")


def test_second_call_is_a_cache_hit_and_units_resume(lab, lab_cache):
    again = evaluate("lab-smoke", cache_dir=lab_cache, progress=False)
    assert again.from_cache and not lab.from_cache
    pd.testing.assert_frame_equal(again.values, lab.values)
    (result,) = list(lab_cache.glob("evidence/*/evidence.pt"))
    result.unlink()
    resumed = evaluate("lab-smoke", cache_dir=lab_cache, progress=False)  # every model unit is stored
    assert not resumed.from_cache and resumed.timings["total"] < lab.timings["total"]
    pd.testing.assert_frame_equal(resumed.values, lab.values)


def test_parallel_processes_compute_the_evidence_once(tmp_path):
    """Two processes asking for the same evidence: one computes it, the other waits and reads it."""
    import subprocess
    import sys

    code = ("import sys; from crossgap_lib.evaluation import evaluate; "
            "e = evaluate('lab-smoke', cache_dir=sys.argv[1], progress=False); "
            "print('cached' if e.from_cache else 'computed')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = sorted(p.communicate(timeout=600)[0].strip() for p in procs)
    assert outputs == ["cached", "computed"]


def test_unwritable_cache_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder must go")
    monkeypatch.setattr("crossgap_lib.train._prepare_data", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(PermissionError, match="not writable"):
        evaluate("lab-smoke", cache_dir=blocker / "cache", progress=False)


@pytest.mark.slow
def test_dryrun_source_runs_the_paper_path(tmp_path):
    """The paper code path on a random ViT-B-32 and miniature CUB (all->all), ROxford (revisited), DTD (split json),
    COCO (Karpathy captions) and DTD zero-shot; a T=1 row from the same architecture."""
    source = {"kind": "dryrun", "name": "mini", "models": [
        "CLIP B/32", {"label": "CLIP B/32 T=1", "base": "CLIP B/32", "temperature": 1.0,
                      "pretrained": "clip_b32_coco_T1.pt"}],
        "image_datasets": ["cub", "roxford5k", "dtd"], "text_datasets": ["coco"], "zero_shot_datasets": ["dtd"],
        "curve": {"model": "CLIP B/32", "dataset": "cub", "num_pseudo_tokens": [1], "steps": 2, "record_every": 1,
                  "queries": 6},
        "inversion": {"oti": {"steps": 2}, "ovi": {"steps": 1}}, "ovi_queries": 3, "span_vocabulary": 8}
    evidence = evaluate(source, cache_dir=tmp_path, progress=False)
    assert evidence.labels == ["CLIP B/32", "CLIP B/32 T=1"] and evidence.seeds("CLIP B/32") == [0]
    assert evidence.datasets("image") == ["cub", "roxford5k", "dtd"]
    assert evidence.methods("image")[:5] == ["intra", "oti", "center", "shift", "pca_vocabulary"]
    hard = evidence.metric("mAP hard", task="image")
    assert set(hard["dataset"]) == {"roxford5k"}
    effect = evidence.contrast("image", "oti", "intra", "CLIP B/32")
    assert effect["interval"] == "t-interval over 3 datasets" and not math.isnan(effect["mean"])
    assert evidence.contrast("image", "oti", "intra", "CLIP B/32", datasets=["cub"])["interval"].startswith(
        "bootstrap over")
    prompt = evidence.contrast("image", "prompt", "intra", "CLIP B/32")  # no class prompts on revisited Oxford
    assert prompt["datasets"] == ["cub", "dtd"]
    assert claims.gap_pair(evidence) is None  # only one fixed temperature
    scales = evidence.model_values("logit scale").set_index("model")["value"]
    assert scales["CLIP B/32 T=1"] == pytest.approx(1.0, abs=1e-3) and scales["CLIP B/32"] != scales["CLIP B/32 T=1"]
    assert evidence.curve["AP"].shape[:2] == (1, 3)
    assert evidence.source["resolved"]["kind"] == "dryrun"
