"""Tests of crossgap_lib.prose: numbers into sentences and table cells."""

import math

import pandas as pd

from crossgap_lib import prose


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


def test_discussion_counts_every_verdict():
    table = pd.DataFrame({"claim": ["A", "B", "C", "D", "E"], "shown in": ["T1"] * 5,
                          "verdict": ["agrees", "disagrees", "inconclusive", "not testable", "not measured"]})
    lines = prose.discussion(table)
    assert lines[0].startswith("Of the 5 claims, 4 were measured: 1 agrees")
    assert "1 is not testable" in lines[0]
    assert any(line.startswith("Not measured here") for line in lines)


def test_code_cells_renders_backticked_names_as_code_and_escapes_the_rest():
    table = pd.DataFrame([{"claim": "A <b>", "check": "`clip` mAP", "value": 0.299, "models": "`m1` and `m2`"},
                          {"claim": "A <b>", "check": "cos", "value": "-5.4 [1, 2]", "models": ""}]
                         ).set_index(["claim", "check"])
    rendered = prose.code_cells(table).to_html()
    assert "<code>m1</code> and <code>m2</code>" in rendered and "<code>clip</code> mAP" in rendered
    assert "A &lt;b&gt;" in rendered and "<b>" not in rendered and "`" not in rendered
    assert ">0.299<" in rendered and 'class="dataframe"' in rendered
