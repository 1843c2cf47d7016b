"""The reproduction page's decision rule: checks gate verdicts, Holm corrects, margins decide no-effect claims."""

from __future__ import annotations

import math

import pytest
import torch

from crossgap_lib import stats, verdicts
from crossgap_lib.claims import reported_claims


def _effect(mean: float, spread: float = 0.002, n: int = 2000, what: str = "`m`") -> dict:
    """A measured effect with a bootstrap distribution centred on ``mean``."""
    boot = mean + spread * torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": mean, "low": low, "high": high, "p": stats.bootstrap_p(boot), "boot": boot, "what": what,
            "interval": stats.INTERVAL}


def _passing(keys) -> dict:
    return {k: [verdicts.Check(k, "1", "rule", True)] for k in keys}


def test_margin_comes_from_the_reported_table():
    assert verdicts.margin_points() == 1.0  # half of CLIP B/32's +2.0, the smallest CLIP-family gain


def test_directional_claims_agree_disagree_or_stay_inconclusive():
    claims = reported_claims()
    measured = {"oti_image": _effect(0.03), "ovi_text": _effect(-0.05), "zero_shot": _effect(0.0, 0.05),
                "critique_pca": None, "slip": None, "gap": None, "oti_peak": None}
    decisions = verdicts.decide(claims, measured, _passing(measured))
    assert decisions["oti_image"].verdict == "agrees"  # reported +, measured +
    assert decisions["ovi_text"].verdict == "disagrees"  # reported +, measured -
    assert decisions["zero_shot"].verdict == "inconclusive"
    assert decisions["slip"].verdict == "not measured"
    assert decisions["oti_image"].p_holm >= decisions["oti_image"].p  # Holm never lowers a p-value


def test_a_failed_manipulation_check_makes_a_claim_not_testable():
    claims = reported_claims()
    measured = {"oti_image": _effect(0.03)}
    checks = {"oti_image": [verdicts.Check("text at ceiling", "1.000", "below 0.95", False)]}
    assert verdicts.decide(claims, measured, checks)["oti_image"].verdict == "not testable"


def test_no_effect_claims_need_the_gain_inside_the_margin():
    claims = reported_claims()
    margin = 0.01
    inside = {"slip": _effect(-0.02), "slip_level": _effect(0.001), "gap": _effect(-0.03),
              "gap_level": _effect(-0.02)}
    decisions = verdicts.decide(claims, inside, _passing(inside), margin=margin)
    assert decisions["slip"].verdict == "agrees" and decisions["gap"].verdict == "agrees"
    beyond = {"slip": _effect(-0.02), "slip_level": _effect(0.03), "gap": _effect(-0.03), "gap_level": _effect(0.03)}
    decisions = verdicts.decide(claims, beyond, _passing(beyond), margin=margin)
    assert decisions["slip"].verdict == "disagrees" and decisions["gap"].verdict == "disagrees"
    vague = {"slip": _effect(-0.02, 0.02), "slip_level": _effect(0.0, 0.02)}
    decisions = verdicts.decide(claims, vague, _passing(vague), margin=margin)
    assert decisions["slip"].verdict == "inconclusive"  # no power: the interval is wider than the margin
    assert not math.isnan(decisions["slip"].p_holm)


def test_decisions_table_shows_checks_effects_and_verdicts():
    claims = reported_claims()
    measured = {"oti_image": _effect(0.03), "slip": _effect(-0.02), "slip_level": _effect(0.001)}
    checks = _passing(measured)
    table = verdicts.decisions_table(claims, measured, verdicts.decide(claims, measured, checks, margin=0.01))
    assert list(table.index) == [c.key for c in claims]
    assert table.loc["oti_image", "measured effect [95% CI]"].startswith("+3.0")
    assert "gain itself" in table.loc["slip", "measured effect [95% CI]"]
    assert table.loc["slip", "margin test"].startswith("equivalence: gain within ±1.0 points, p = ")
    assert table.loc["oti_image", "margin test"] == "–"
    assert table.loc["gap", "verdict"] == "not measured"
    assert table.loc["oti_image", "manipulation checks"].startswith("pass")


def test_peak_check_reads_the_peak_of_the_seed_averaged_curve():
    """The check asks whether the loss still fell after the peak the claim is about (seeds and queries averaged),
    not after the first seed's own peak."""
    import pandas as pd

    from crossgap_lib.evaluation import Evidence

    steps = [0, 5, 50, 588, 1000]
    ap = torch.tensor([0.30, 0.40, 0.36, 0.34, 0.33], dtype=torch.float64)  # the mean curve peaks at step 5
    loss = 0.06 + 0.84 * torch.exp(-torch.arange(1000) / 50)  # flat long before step 588
    curve = {"num_pseudo_tokens": [4], "focus": 4, "steps": steps, "peak_step": 588, "loss": [loss],
             "AP_seeds": ap.view(1, -1, 1).expand(3, -1, 8).clone(), "curve_seeds": [0, 1, 2], "seed": 0}
    evidence = Evidence(source={}, models=pd.DataFrame(columns=["label", "family", "temperature"]),
                        values=pd.DataFrame(), per_query={}, features={}, curve=curve, training={}, timings={})
    past_peak, seeds = verdicts.manipulation_checks(evidence)["oti_peak"]
    assert "peak step 5 " in past_peak.check and past_peak.passed and seeds.passed
    late_peak = torch.tensor([0.30, 0.31, 0.32, 0.40, 0.33], dtype=torch.float64)
    curve["AP_seeds"] = late_peak.view(1, -1, 1).expand(3, -1, 8)
    late, _ = verdicts.manipulation_checks(evidence)["oti_peak"]  # a late peak: the loss barely moves after it
    assert "peak step 588 " in late.check and not late.passed


def test_judgement_note_states_the_verdict_and_what_it_rests_on():
    claims = reported_claims()
    measured = {"oti_image": _effect(0.03), "ovi_text": _effect(0.0, 0.05), "slip": _effect(-0.02),
                "slip_level": _effect(0.001)}
    checks = {**_passing(["oti_image", "ovi_text"]),
              "slip": [verdicts.Check("the intra-modal term raised image-image mAP", "-5.4 [-6.6, -4.2]",
                                      "interval above 0", False)]}
    judgement = verdicts.Judgement(claims, measured, checks, verdicts.decide(claims, measured, checks, margin=0.01))
    agrees = judgement.note("oti_image")
    assert "**agrees**" in agrees and "Holm's correction" in agrees and "checks pass" in agrees
    assert f"across its {len(claims)} claims" in agrees and "](reproduction.html)" in agrees
    assert "**inconclusive**" in judgement.note("ovi_text")
    blocked = judgement.note("slip")
    assert "**not testable**" in blocked and "-5.4 [-6.6, -4.2] (rule: interval above 0)" in blocked
    assert "**not measured**" in judgement.note("gap")
    assert judgement.table().loc["oti_image", "verdict"] == "agrees"  # the table and the notes are one decision
    with pytest.raises(ValueError, match="no claim 'oti'.*'oti_image'"):
        judgement.note("oti")
