import math

import pandas as pd

from crossgap_lib import report


def test_ci_text_scales_and_signs():
    assert report.ci_text(0.012, 0.004, 0.02) == "+1.2 [0.4, 2.0]"
    assert report.ci_text(-0.5, -0.6, -0.4, scale=1, signed=False) == "-0.5 [-0.6, -0.4]"
    assert report.ci_text(0.1, math.nan, math.nan) == "+10.0 [n/a]"


def test_verdict_follows_the_interval():
    assert report.verdict("OTI - intra", 0.012, 0.004, 0.02).endswith("an increase.")
    assert report.verdict("OTI - intra", -0.012, -0.02, -0.004).endswith("a decrease.")
    assert report.verdict("OTI - intra", 0.001, -0.01, 0.012).endswith("no detectable effect.")
    assert "too few samples" in report.verdict("x", 0.1, math.nan, math.nan)


def test_agreement_with_a_reported_difference():
    assert report.agreement(+2.0, 0.01, 0.03) == "agrees"
    assert report.agreement(+2.0, -0.03, -0.01) == "disagrees"
    assert report.agreement(-5.5, -0.03, -0.01) == "agrees"
    assert report.agreement(+2.0, -0.01, 0.01) == "inconclusive"


def test_contrast_table_formats_both_intervals():
    frame = pd.DataFrame([{"contrast": "OTI - intra", "mean_diff": 0.01, "seed_ci_low": 0.0, "seed_ci_high": 0.02,
                           "boot_diff": 0.01, "boot_ci_low": 0.005, "boot_ci_high": 0.015, "per_seed": [0.01]}])
    table = report.contrast_table(frame)
    assert table.loc[0, "difference [95% CI over seeds]"] == "+1.0 [0.0, 2.0]"
    assert table.loc[0, "[95% bootstrap CI over queries]"] == "+1.0 [0.5, 1.5]"
    assert "mean_diff" not in table
