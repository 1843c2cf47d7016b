"""Tests of crossgap_lib.evaluation: the one protocol on the laboratory source (smoke sizes) and on a dry-run subset of
the paper source (random ViT-B-32 weights, miniature real-format datasets), in temporary caches."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from crossgap_lib import claims, metrics, pipeline, verdicts
from crossgap_lib.evaluation import Evidence, defined_sources, evaluate, load_source, source_assets
from crossgap_lib.models import load_clip
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
        "clip": "clip", "clip ft T=0.01": "clip", "clip ft T=1": "clip", "clip ft": "clip", "soft ft": "soft",
        "soft ft image teacher": "soft", "intra": "slip"}
    assert lab.models.set_index("label")["finetuned from"].to_dict()["clip ft T=1"] == "clip"
    assert lab.seeds("clip") == [0, 1] and lab.datasets("image") == ["shapes"]
    assert lab.methods("image") == ["intra", "oti", "center", "shift", "pca_k4", "pca_k8", "pca_k16", "pca_k24",
                                    "isoclip", "prompt", "caption", "oti both"]
    assert lab.methods("text") == ["intra", "ovi"] and lab.methods("zero_shot") == ["inter", "oti"]
    gap = lab.model_values("gap centroid distance")
    assert len(gap) == 14 and (gap["value"] > 0).all()
    with_control = {m for m in lab.labels if lab.has(m, "image", "shapes", "oti both")}
    assert with_control == {"clip"}  # the Intra-OTI control: the first setting only
    scales = lab.model_values("logit scale").set_index(["model", "seed"])["value"]
    assert scales[("clip ft T=1", 0)] == pytest.approx(1.0) and scales[("clip ft T=0.01", 1)] == pytest.approx(100.0)
    assert lab.datasets("text") == ["shapes"] and not lab.has("clip ft T=1", "text", "shapes", "ovi")  # tasks subset
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
    expected = {**paired_effect(a, b), "datasets": ["shapes"]}
    torch.testing.assert_close(effect.pop("boot"), expected.pop("boot"))
    assert effect == expected
    assert effect["interval"].startswith("hierarchical bootstrap") and "2 seeds" in effect["interval"]
    between = lab.contrast("image", "oti", "intra", "intra", model_b="clip")
    gains = {m: [float((lab.per_query[f"{m}|{s}|image|shapes"]["oti"]
                        - lab.per_query[f"{m}|{s}|image|shapes"]["intra"]).nanmean()) for s in (0, 1)]
             for m in ("intra", "clip")}
    assert between["per_seed"] == pytest.approx([x - y for x, y in zip(gains["intra"], gains["clip"])])
    levels = lab.contrast("image", "intra", None, "soft ft", model_b="clip")
    level_diffs = [float((lab.per_query[f"soft ft|{s}|image|shapes"]["intra"]
                          - lab.per_query[f"clip|{s}|image|shapes"]["intra"]).nanmean()) for s in (0, 1)]
    assert levels["per_seed"] == pytest.approx(level_diffs) and levels["datasets"] == ["shapes"]
    with pytest.raises(ValueError, match="give model_b"):
        lab.contrast("image", "intra", None, "soft ft")
    table = lab.contrast_table("image", "oti", "intra")
    assert list(table["model"]) == lab.labels and table.iloc[0]["mean"] == pytest.approx(effect["mean"])
    with pytest.raises(KeyError, match="not in the evidence"):
        lab.contrast("image", "oti", "intra", "nope")


def test_curve_and_claims(lab):
    curve = lab.curve
    assert curve["model"] == "clip" and curve["steps"] == [0, 1, 2, 3, 4, 5, 6] and curve["AP"].shape == (2, 7, 16)
    assert curve["AP_seeds"].shape == (2, 7, 16) and curve["curve_seeds"] == [0, 1]  # the focus R on every seed
    torch.testing.assert_close(curve["AP_seeds"][0], curve["AP"][curve["num_pseudo_tokens"].index(curve["focus"])])
    assert curve["features_at_peak"].shape == curve["features_last"].shape == (16, lab.features["clip"]["oti"].shape[1])
    measured = claims.measure_claims(lab, n_boot=100)
    assert set(measured) == {c.key for c in claims.reported_claims()}
    assert measured["gap"]["what"] == "`clip ft T=1` vs `clip ft T=0.01`"
    assert measured["slip"]["what"] == "`intra` vs `clip`"
    assert all(m is not None for m in measured.values())
    assert lab.families["intra"] == "slip" and lab.temperatures == {
        "clip": None, "clip ft T=0.01": 0.01, "clip ft T=1": 1.0, "clip ft": None, "soft ft": None,
        "soft ft image teacher": None, "intra": None}
    effect = lab.contrast("image", "oti", "intra", "clip")
    sentence = claims.model_sentence(lab, "clip", effect, "OTI - intra mAP")
    assert sentence.startswith("`clip` (clip), OTI - intra mAP:") and "mean of the 5 CLIP-family models" in sentence
    assert claims.model_sentence(lab, "soft ft", effect, "x").count("The paper reports") == 0  # no reported analogue
    assert "Table 4" in claims.model_sentence(lab, "clip ft T=1", effect, "x", note="T=1")
    slip = claims.model_sentence(lab, "intra", lab.contrast("image", "oti", "intra", "intra", n_boot=100), "x",
                                 n_boot=100)  # Table 3: a difference of gains, not the sign of the SLIP-like gain
    assert "OTI gain of `intra` minus that of `clip`" in slip and "minus the mean CLIP-family gain" in slip
    judgement = verdicts.judge(lab, n_boot=100)  # what the reproduction page and each table page state
    assert set(judgement.decisions) == set(measured) and all(judgement.note(key) for key in measured)
    assert judgement.measured["slip"]["mean"] == pytest.approx(measured["slip"]["mean"])


def test_revisited_headline_is_the_per_query_ap_and_the_map():
    from crossgap_lib.evaluation import REVISITED_HEADLINE, _revisited_ap

    assert REVISITED_HEADLINE == "medium"  # the authors' code records all three; see its comment for the source
    torch.manual_seed(0)
    gnd = [{"easy": [0, 1], "hard": [2], "junk": [3]}, {"easy": [4], "hard": [5, 6], "junk": []},
           {"easy": [7], "hard": [9], "junk": [8]}]
    scores = _revisited_ap(torch.randn(3, 8), torch.randn(10, 8), gnd)
    assert len({scores["mAP easy"], scores["mAP medium"], scores["mAP hard"]}) == 3
    assert scores["mAP"] == scores[f"mAP {REVISITED_HEADLINE}"]
    assert float(scores["per_query"]["AP"].mean()) == pytest.approx(scores["mAP"])


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


def test_lab_caption_is_the_ground_truth_caption_against_the_gallery(lab):
    """The lab's captioning baseline is a perfect captioner: each query's own caption (ImageTask.query_texts); the
    class-only caption "a photo of a {class}." is the lab's ``prompt`` method (its template), not stored twice."""
    f = lab.features["clip"]
    figure = f["figure"]
    assert f["caption_kind"] == "ground truth" and len(f["captions"]) == f["image"].shape[0]
    assert figure["caption"].shape == f["image"].shape and len(set(f["captions"])) > 1
    ap = metrics.retrieval_scores(figure["caption"], f["gallery"], f["labels"], f["gallery_labels"],
                                  per_query=True)["per_query"]["AP"]
    torch.testing.assert_close(ap.double(), lab.per_query["clip|0|image|shapes"]["caption"], equal_nan=True)
    assert "class caption" not in lab.methods("image") and load_source("lab-smoke")["lab"].get(
        "prompt_template", "a photo of a {}.") == "a photo of a {}."
    n = figure["query_index"].numel()
    assert figure["dataset"] == "shapes" and figure["captions"] == f["captions"][:n]
    assert figure["query_images"].shape == (n, 3, 64, 64) and figure["query_images"].dtype == torch.uint8
    assert set(figure["top"]) == {"intra", "oti", "caption", "oti both"}
    for method, top in figure["top"].items():  # best first, as the stored features rank them
        query, gallery = {"intra": (f["image"], f["gallery"]), "oti": (f["oti"], f["gallery"]),
                          "caption": (figure["caption"], f["gallery"])}.get(method, (None, None))
        if query is not None:
            assert top.tolist() == (query[:n] @ gallery.T).topk(top.shape[1]).indices.tolist()
        assert set(top.flatten().tolist()) <= set(figure["gallery_index"].tolist())
    assert figure["gallery_images"].shape[0] == figure["gallery_index"].numel()


def test_latency_and_device_are_stored_per_model(lab):
    oti = lab.model_values("OTI s/query")  # the first seed of each model: timing does not depend on the seed
    assert sorted(zip(oti["model"], oti["seed"])) == sorted((m, lab.seeds(m)[0]) for m in lab.labels)
    assert (oti["value"] > 0).all()
    ovi = lab.model_values("OVI s/query")
    assert len(ovi) > 0 and (ovi["value"] > 0).all()
    assert lab.timings["device"] and lab.timings["device"] in set(lab.models["device"])
    assert lab.timings["tasks"] >= 0
    for metric in ("gap centroid distance", "gap matched cosine"):  # the modality gap of every model and seed
        assert len(lab.model_values(metric)) == sum(len(lab.seeds(m)) for m in lab.labels)


def _micro_task(gallery_is_queries: bool):
    from crossgap_lib.datasets.shapes import make_shapes
    from crossgap_lib.evaluation import ImageTask

    config = {"image_size": 32, "shapes": ["circle", "square"], "colours": ["red", "blue"]}  # 4 classes
    queries = make_shapes("test", n=12, config=config, seed=0)
    gallery = queries if gallery_is_queries else make_shapes("test", n=12, config=config, seed=0)
    return ImageTask("shapes", queries, gallery, True, list(queries.class_names))


@pytest.mark.parametrize("intra_oti", [True, False, 5, ["shapes"], ["other"]])
def test_oti_both_inverts_the_gallery_like_the_queries(intra_oti):
    """The Intra-OTI control: with a gallery identical to the queries (a separate copy), inverting the gallery gives
    the queries' OTI features (per-index seeds), so ``oti both`` equals OTI-vs-OTI on the queries themselves; a gallery
    size cap skips it unless the gallery is the query set."""
    from crossgap_lib.evaluation import ModelEntry, _image_task
    from crossgap_lib.inversion import InversionConfig

    clip = load_clip("crossgap-micro")
    oti = InversionConfig(steps=3, batch_size=16)
    entry = ModelEntry("micro", "clip", 0, oti, oti, load=None)
    results = {}
    for same in (True, False):
        task = _micro_task(same)
        tasks = {"image": [task], "prompt": "a photo of a {}.", "span_ks": [4], "intra_oti": intra_oti}
        vocabulary = pipeline.encode_texts(clip, [f"word {i}" for i in range(8)])
        values, per_query, features = _image_task(clip, entry, task, tasks, None, False,
                                                  {"vocabulary": vocabulary, "texts": vocabulary})
        results[same] = per_query, features
    if intra_oti is False or intra_oti == ["other"]:  # off, or only for another dataset
        assert all("oti both" not in pq for pq, _ in results.values())
        return
    per_query, features = results[True]
    expected = metrics.retrieval_scores(features["oti"], features["oti"], features["labels"], features["labels"],
                                        exclude_self=True, per_query=True)["per_query"]["AP"]
    torch.testing.assert_close(per_query["oti both"], expected.double(), equal_nan=True)
    assert not torch.equal(per_query["oti both"], per_query["oti"])  # OTI->OTI is not OTI->image
    if intra_oti == 5:  # a 12-image gallery is above the cap of 5: skipped, unless it is the query set (no extra cost)
        assert "oti both" not in results[False][0]
    else:  # the copy of the queries, inverted as a gallery, gives the same OTI features
        torch.testing.assert_close(results[False][0]["oti both"], per_query["oti both"], equal_nan=True)


def test_text_task_ranks_by_a_relevance_matrix_when_given():
    """NanoBEIR: labels are all -1, relevance comes from qrels; the per-query AP follows the matrix, not the labels."""
    from crossgap_lib.evaluation import ModelEntry, TextTask, _text_task
    from crossgap_lib.inversion import InversionConfig

    clip = load_clip("crossgap-micro")
    queries = ["red circle", "blue square", "green star"]
    gallery = ["a red circle", "a small blue square", "green star shape", "red square", "blue circle"]
    relevance = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    task = TextTask("nano", queries, torch.full((3,), -1), gallery, torch.full((5,), -1), relevance=relevance)
    ovi = InversionConfig(steps=2, batch_size=8)
    values, per_query = _text_task(clip, ModelEntry("micro", "clip", 0, ovi, ovi, load=None), task, None, False)
    query = pipeline.encode_texts(clip, queries, progress=False)
    scores = query @ pipeline.encode_texts(clip, gallery, progress=False).T
    expected = metrics.retrieval_scores_from_relevance(scores, relevance, per_query=True)["per_query"]["AP"]
    torch.testing.assert_close(per_query["intra"], expected.double())
    assert values["intra"]["mAP"] < 1.0 and set(per_query) == {"intra", "ovi"}  # all -1 labels would give AP 1


def test_source_options_are_checked():
    from crossgap_lib.evaluation import INTRA_OTI_PAPER_GALLERY, _intra_oti

    assert _intra_oti({"kind": "paper"}) == INTRA_OTI_PAPER_GALLERY and _intra_oti({"kind": "dryrun"}) is True
    assert _intra_oti({"kind": "lab", "intra_oti": False}) is False
    assert _intra_oti({"kind": "dryrun", "image_datasets": ["cub", "dtd"], "intra_oti": ["dtd"]}) == ["dtd"]
    with pytest.raises(ValueError, match=r"\['sop'\], which are not among"):
        _intra_oti({"kind": "dryrun", "image_datasets": ["cub", "dtd"], "intra_oti": ["sop"]})
    for bad in (0, -3, "yes", 2.5):
        with pytest.raises(ValueError, match="intra_oti must be"):
            _intra_oti({"kind": "paper", "intra_oti": bad})


@pytest.mark.slow
def test_dryrun_source_runs_the_paper_path(tmp_path):
    """The paper code path on a random ViT-B-32 and miniature CUB (all->all), ROxford (revisited), DTD (split json),
    COCO (Karpathy captions) and DTD zero-shot; a T=1 row from the same architecture."""
    source = {"kind": "dryrun", "name": "mini", "models": [
        "CLIP B/32", {"label": "CLIP B/32 T=1", "base": "CLIP B/32", "temperature": 1.0,
                      "pretrained": "clip_b32_coco_T1.pt"}],
        "image_datasets": ["cub", "roxford5k", "dtd"], "text_datasets": ["coco", "imdb", "nanoscifact"],
        "zero_shot_datasets": ["dtd"],
        "curve": {"model": "CLIP B/32", "dataset": "cub", "num_pseudo_tokens": [1], "steps": 2, "record_every": 1,
                  "queries": 6},
        "inversion": {"oti": {"steps": 2}, "ovi": {"steps": 1}}, "ovi_queries": 3, "span_vocabulary": 8, "span_ks": [4],
        "captioner": {"model": "coca_ViT-B-32", "pretrained": "mscoco_finetuned_laion2b_s13b_b90k", "seq_len": 6,
                      "datasets": ["roxford5k"]}}
    evidence = evaluate(source, cache_dir=tmp_path, progress=False)
    assert evidence.labels == ["CLIP B/32", "CLIP B/32 T=1"] and evidence.seeds("CLIP B/32") == [0]
    assert evidence.datasets("image") == ["cub", "roxford5k", "dtd"]
    assert evidence.methods("image")[:6] == ["intra", "oti", "center", "shift", "pca_k4", "isoclip"]
    hard = evidence.metric("mAP hard", task="image")
    assert set(hard["dataset"]) == {"roxford5k"}
    effect = evidence.contrast("image", "oti", "intra", "CLIP B/32")
    assert "1 seed, 3 datasets" in effect["interval"] and not math.isnan(effect["mean"])
    assert "1 seed," in evidence.contrast("image", "oti", "intra", "CLIP B/32", datasets=["cub"])["interval"]
    prompt = evidence.contrast("image", "prompt", "intra", "CLIP B/32")  # no class prompts on revisited Oxford
    assert prompt["datasets"] == ["cub", "dtd"]
    assert claims.gap_pair(evidence) is None  # only one fixed temperature
    scales = evidence.model_values("logit scale").set_index("model")["value"]
    assert scales["CLIP B/32 T=1"] == pytest.approx(1.0, abs=1e-3) and scales["CLIP B/32"] != scales["CLIP B/32 T=1"]
    assert evidence.curve["AP"].shape[:2] == (1, 3)
    assert evidence.source["resolved"]["kind"] == "dryrun"
    # the captioning baseline (random CoCa B/32 on the 4 ROxford queries), the Intra-OTI control, the textual sets
    assert evidence.contrast("image", "caption", "intra", "CLIP B/32")["datasets"] == ["roxford5k"]
    assert evidence.contrast("image", "oti both", "oti", "CLIP B/32")["datasets"] == ["cub", "roxford5k", "dtd"]
    figure = evidence.features["CLIP B/32"]["figure"]
    assert figure["dataset"] == "roxford5k" and len(figure["captions"]) == 4 and all(figure["captions"])
    assert figure["splits"] == {"query": "query", "gallery": "gallery"} and "caption" in figure["top"]
    assert evidence.datasets("text") == ["coco", "imdb", "nanoscifact"]
    assert not math.isnan(evidence.contrast("text", "ovi", "intra", "CLIP B/32", datasets=["nanoscifact"])["mean"])
    assert (evidence.model_values("OTI s/query")["value"] > 0).all()
    assert (evidence.model_values("OVI s/query")["value"] > 0).all() and evidence.timings["device"]


def test_model_contrast_and_shared_datasets(lab):
    effect = lab.model_contrast("gap matched cosine", "clip ft T=1", "clip ft T=0.01", n_boot=200)
    values = lab.model_values("gap matched cosine").set_index(["model", "seed"])["value"]
    expected = [values[("clip ft T=1", s)] - values[("clip ft T=0.01", s)] for s in (0, 1)]
    assert effect["per_seed"] == pytest.approx(expected) and effect["low"] <= effect["mean"] <= effect["high"]
    with pytest.raises(KeyError, match="no model-level value"):
        lab.model_contrast("nope", "clip", "soft ft")
    assert lab.shared_datasets("clip", "text", ["intra", "ovi"]) == ["shapes"]
    assert lab.shared_datasets("clip ft T=1", "text", ["intra", "ovi"]) == []  # its tasks skip OVI


def test_lab_units_in_worker_processes_equal_the_sequential_ones(tmp_path, monkeypatch):
    """Two single-thread worker processes (free cores permitting) give the units one process computes in order."""
    import crossgap_lib.lab

    smoke = load_source("lab-smoke")["lab"]
    lab_spec = {**smoke, "settings": [s for s in smoke["settings"] if s["name"] in ("clip", "clip ft", "soft ft")],
                "oti_curve": {**smoke["oti_curve"], "num_pseudo_tokens": [1], "focus": 1}}
    from crossgap_lib.progress import PROGRESS_ENV

    results = {}
    for workers in (1, 2):
        monkeypatch.setenv(PROGRESS_ENV, str(tmp_path / f"progress-{workers}.log"))
        monkeypatch.setattr(crossgap_lib.lab, "free_cores", lambda workers=workers: workers)
        spec = {"kind": "lab", "name": f"lab-{workers}", "lab": {**lab_spec, "num_threads": 2}}
        results[workers] = evaluate(spec, cache_dir=tmp_path / str(workers), progress=False)
    assert "in 2 processes" in (tmp_path / "progress-2.log").read_text()
    assert "processes" not in (tmp_path / "progress-1.log").read_text()
    one, two = results[1], results[2]
    assert one.labels == two.labels and len(one.values) == len(two.values) > 0
    key = ["model", "seed", "task", "dataset", "method", "metric"]
    merged = one.values.merge(two.values, on=key, suffixes=("_1", "_2"))
    timing = merged["metric"].str.contains("s/query")
    assert len(merged) == len(one.values)
    assert (merged.loc[~timing, "value_1"] - merged.loc[~timing, "value_2"]).abs().max() < 1e-4
    assert list(one.curve["curve_seeds"]) == list(two.curve["curve_seeds"])


def test_method_comparison_levels_and_contrasts_on_shared_datasets(lab):
    rows = lab.method_comparison("image", ["intra", "oti", "oti both"], [("oti", "oti both")], n_boot=200)
    assert [r["model"] for r in rows] == ["clip"]  # the Intra-OTI control: the first setting only
    row = rows[0]
    means = lab.means("image").set_index(["model", "dataset", "method"])["value"]
    assert row["datasets"] == ["shapes"] and row["levels"]["oti both"] == pytest.approx(means[("clip", "shapes",
                                                                                                 "oti both")])
    expected = lab.contrast("image", "oti", "oti both", "clip", datasets=["shapes"], n_boot=200)
    assert row["contrasts"][("oti", "oti both")]["mean"] == pytest.approx(expected["mean"])
    assert lab.method_comparison("image", ["intra", "nope"], []) == []
