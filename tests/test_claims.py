"""Tests of crossgap_lib.claims on a hand-made evidence: Table 3 is judged as a difference of OTI gains (SLIP minus
CLIP-like), for paper rows and laboratory analogues alike, never on the sign of SLIP's own gain."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from crossgap_lib import claims
from crossgap_lib.evaluation import Evidence

CLIP_FAMILY_GAIN = (2.0 + 3.3 + 2.2 + 3.2 + 2.8) / 5  # table1_image_retrieval_avg.csv, every row but SLIP's


def _evidence(labels: dict[str, str], gains: dict[str, float], n: int = 60) -> Evidence:
    """One seed, one image dataset; per-query OTI = intra + the model's gain (plus small noise)."""
    generator = torch.Generator().manual_seed(0)
    per_query, rows = {}, []
    for model, family in labels.items():
        intra = torch.rand(n, generator=generator, dtype=torch.float64) * 0.5
        oti = intra + gains[model] + 0.002 * torch.randn(n, generator=generator, dtype=torch.float64)
        per_query[f"{model}|0|image|cub"] = {"intra": intra, "oti": oti}
        for method, values in (("intra", intra), ("oti", oti)):
            rows.append({"model": model, "seed": 0, "family": family, "task": "image", "dataset": "cub",
                         "method": method, "metric": "mAP", "value": float(values.mean())})
    models = pd.DataFrame([{"label": m, "family": f, "temperature": None} for m, f in labels.items()])
    return Evidence(source={}, models=models, values=pd.DataFrame(rows), per_query=per_query, features={}, curve={},
                    training={}, timings={})


@pytest.fixture(scope="module")
def paper_like() -> Evidence:
    """SLIP's own gain is negative, CLIP's clearly positive: the sign of SLIP's gain and Table 3 disagree."""
    return _evidence({"CLIP B/32": "clip", "SLIP B/16": "slip"}, {"CLIP B/32": 0.05, "SLIP B/16": -0.02})


def test_reported_table3_delta_is_slip_gain_minus_clip_family_gain():
    row = claims.reported_effect("SLIP B/16", "slip", None, "image")
    assert row["delta"] == pytest.approx(0.2)  # the row itself is kept for the tables
    assert row["table3_delta"] == pytest.approx(0.2 - CLIP_FAMILY_GAIN)
    analogue = claims.reported_effect("intra", "slip", None, "image")
    assert analogue["table3_delta"] == pytest.approx((0.2 + 0.4) / 2 - CLIP_FAMILY_GAIN)
    assert "table3_delta" not in claims.reported_effect("CLIP B/32", "clip", None, "image")
    assert claims.reported_effect("intra", "slip", None, "text") is None


def test_table3_effect_is_the_contrast_with_the_clip_like_model(paper_like):
    effect = claims.table3_effect(paper_like, "SLIP B/16", n_boot=200)
    reference = paper_like.contrast("image", "oti", "intra", model="SLIP B/16", model_b="CLIP B/32", n_boot=200)
    assert effect["mean"] == pytest.approx(reference["mean"]) and effect["mean"] == pytest.approx(-0.07, abs=0.002)
    assert effect["what"] == "`SLIP B/16` vs `CLIP B/32`" and effect["versus"] == "CLIP B/32"
    assert claims.table3_effect(paper_like, "CLIP B/32") is None  # not SLIP-like
    alone = _evidence({"SLIP B/16": "slip"}, {"SLIP B/16": -0.02})
    assert claims.table3_effect(alone, "SLIP B/16") is None  # no CLIP-like model to compare with


def test_slip_sentence_judges_the_difference_of_gains_not_its_own_sign(paper_like):
    own = paper_like.contrast("image", "oti", "intra", "SLIP B/16", n_boot=200)
    assert own["high"] < 0  # SLIP's own gain is negative, the reported +0.2 would "disagree"
    sentence = claims.model_sentence(paper_like, "SLIP B/16", own, "OTI - intra mAP", n_boot=200)
    assert "Table 3 is judged on the difference of gains" in sentence
    assert "OTI gain of `SLIP B/16` minus that of `CLIP B/32`" in sentence
    assert f"The paper reports {0.2 - CLIP_FAMILY_GAIN:+.1f} points" in sentence
    assert sentence.endswith("agrees in sign.") and "opposite sign" not in sentence
    clip_effect = paper_like.contrast("image", "oti", "intra", "CLIP B/32", n_boot=200)
    clip_sentence = claims.model_sentence(paper_like, "CLIP B/32", clip_effect, "OTI - intra mAP", n_boot=200)
    assert "The paper reports +2.0 points for `CLIP B/32`" in clip_sentence and "Table 3" not in clip_sentence
    alone = _evidence({"SLIP B/16": "slip"}, {"SLIP B/16": -0.02})
    assert "not judged here" in claims.model_sentence(alone, "SLIP B/16", own, "x", n_boot=200)


def test_measure_claims_slip_uses_table3_effect(paper_like):
    measured = claims.measure_claims(paper_like, n_boot=200)
    assert measured["slip"]["mean"] == pytest.approx(claims.table3_effect(paper_like, "SLIP B/16", 200)["mean"])
    assert measured["slip"]["what"] == "`SLIP B/16` vs `CLIP B/32`"
    reported = next(c for c in claims.reported_claims() if c.key == "slip")
    assert reported.reported_delta < 0 and measured["slip"]["high"] < 0  # a reproduction that agrees


def _models_only(rows: list[dict]) -> Evidence:
    return Evidence(source={}, models=pd.DataFrame(rows), values=pd.DataFrame(), per_query={}, features={}, curve={},
                    training={}, timings={})


def test_soft_pair_prefers_the_clip_loss_fine_tuning_of_the_same_base():
    nan = float("nan")
    evidence = _models_only([
        {"label": "clip", "family": "clip", "temperature": nan, "finetuned from": ""},
        {"label": "clip ft T=1", "family": "clip", "temperature": 1.0, "finetuned from": "clip"},
        {"label": "clip ft", "family": "clip", "temperature": nan, "finetuned from": "clip"},
        {"label": "soft ft", "family": "soft", "temperature": nan, "finetuned from": "clip"},
        {"label": "soft ft tau=0.2", "family": "soft", "temperature": nan, "finetuned from": "clip"},
    ])
    assert claims.soft_pair(evidence) == ("soft ft", "clip ft")
    assert claims.soft_variants(evidence, "clip ft") == ["soft ft", "soft ft tau=0.2"]
    assert claims.soft_variants(evidence, "clip") == []  # trained from scratch: no fine-tuned variants of it


def test_soft_pair_falls_back_to_the_base_clip_without_a_matched_control():
    paper = _models_only([  # the paper profile: CLIP B/32 and its soft-target fine-tuning, no CLIP-loss fine-tuning
        {"label": "CLIP B/32", "family": "clip", "temperature": None},
        {"label": "CLIP B/32 T=1", "family": "clip", "temperature": 1.0},
        {"label": "CLIP B/32 soft", "family": "soft", "temperature": None},
    ])
    assert claims.soft_pair(paper) == ("CLIP B/32 soft", "CLIP B/32")
    assert claims.soft_pair(_models_only([{"label": "c", "family": "clip", "temperature": None}])) == (None, "c")
