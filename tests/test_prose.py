"""Tests of crossgap_lib.prose: numbers into sentences and table cells."""

import math

import pandas as pd

from crossgap_lib import prose
from crossgap_lib.claims import reported_claims


def test_ci_text_scales_and_signs():
    assert prose.ci_text(0.012, 0.004, 0.02) == "+1.2 [0.4, 2.0]"
    assert prose.ci_text(-0.5, -0.6, -0.4, scale=1, signed=False) == "-0.5 [-0.6, -0.4]"
    assert prose.ci_text(0.1, math.nan, math.nan) == "+10.0 [n/a]"
    assert prose.ci_text(-0.0123, -0.02, -0.004, digits=2) == "-1.23 [-2.00, -0.40]"


def test_verdict_follows_the_interval():
    assert prose.verdict("OTI - intra", 0.012, 0.004, 0.02).endswith("an increase.")
    assert prose.verdict("OTI - intra", -0.012, -0.02, -0.004).endswith("a decrease.")
    assert prose.verdict("OTI - intra", 0.001, -0.01, 0.012).endswith("no detectable effect.")
    assert "too few samples" in prose.verdict("x", 0.1, math.nan, math.nan)


def test_agreement_with_a_reported_difference():
    assert prose.agreement(+2.0, 0.01, 0.03) == "agrees"
    assert prose.agreement(+2.0, -0.03, -0.01) == "disagrees"
    assert prose.agreement(-5.5, -0.03, -0.01) == "agrees"
    assert prose.agreement(+2.0, -0.01, 0.01) == "inconclusive"
    assert prose.agreement_sentence(2.0, 0.01, 0.03, "CLIP").endswith("agrees in sign.")
    assert prose.agreement_sentence(2.0, math.nan, math.nan).endswith("no measured interval to compare.")


def test_effect_text_names_the_interval():
    effect = {"mean": 0.01, "low": 0.0, "high": 0.02, "interval": "t-interval over 3 seeds"}
    assert prose.effect_text(effect) == "+1.0 [0.0, 2.0] (t-interval over 3 seeds)"
    assert "95% CI, t-interval over 3 seeds" in prose.effect_sentence("OTI - intra", effect)


def test_claims_table_and_discussion():
    claims = reported_claims()
    up = {"mean": 0.05, "low": 0.01, "high": 0.09, "interval": "bootstrap over 40 queries", "what": "`clip`"}
    down = {**up, "mean": -0.05, "low": -0.09, "high": -0.01}
    measured = {"oti_image": up, "ovi_text": down, "zero_shot": down, "slip": None, "gap": None,
                "oti_peak": {**up, "low": -0.01}, "critique_pca": up}
    table = prose.claims_table(claims, measured)
    assert list(table.index) == [c.key for c in claims]
    assert table.loc["oti_image", "verdict"] == "agrees" and table.loc["ovi_text", "verdict"] == "disagrees"
    assert table.loc["zero_shot", "verdict"] == "agrees"  # reported negative, measured negative
    assert table.loc["slip", "verdict"] == "not measured" and table.loc["oti_peak", "verdict"] == "inconclusive"
    assert table.loc["oti_image", "measured effect [95% CI]"] == "+5.0 [1.0, 9.0]"
    lines = prose.discussion(table)
    assert lines[0].startswith("Of the 7 claims, 5 were measured: 3 agree")
    assert any(line.startswith("Not measured here") for line in lines)
    assert isinstance(table, pd.DataFrame)
