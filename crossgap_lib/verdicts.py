"""How the reproduction page decides each claim, stated before any number is seen.

For every claim of :func:`crossgap_lib.claims.reported_claims` this module fixes, in code the page prints:

1. **Manipulation checks** (:func:`manipulation_checks`): did the experiment create the condition the claim is about
   (the gap closed, the intra-modal term raised image-image retrieval, the task is off its ceiling and above chance,
   the inversion reached its target, the optimisation ran into its late regime)? A claim whose check fails is
   "not testable here", whatever its effect.
2. **One interval rule**: every effect is a :func:`crossgap_lib.stats.paired_effect` (hierarchical bootstrap over
   seeds, then queries within seed), with a two-sided bootstrap p-value.
3. **What counts as agreeing.** A *directional* claim agrees when the effect has the reported sign and its p-value,
   Holm-corrected across the page's claims, is below ``ALPHA``; it disagrees when the corrected test is significant
   the other way; otherwise it is inconclusive. The two *no-effect* claims (SLIP-like training leaves almost no OTI
   gain; closing the gap makes inversion useless) are tested with a margin: equivalence (two one-sided tests) of the
   SLIP-like model's gain to 0 within ``MARGIN``, and non-superiority of the gap-closed model's gain to ``MARGIN``;
   each is joined (intersection-union: the larger p-value) with the direction of its difference of gains that the
   paper reports. They disagree when the gain lies beyond the margin (its whole 95% interval) or the difference goes
   significantly the other way.
4. **The margin** is half the smallest reported CLIP-family OTI gain (Table 1), a number fixed by the paper, not by
   our data: a gain below it is less than half of what the paper calls a gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from . import stats

ALPHA = 0.05
NULL_CLAIMS = ("slip", "gap")
CEILING = 0.95  # a retrieval mAP or accuracy at or above this leaves no room for a method to win


def margin_points() -> float:
    """The equivalence margin in points: half the smallest reported CLIP-family OTI gain of Table 1."""
    from .claims import SLIP_LABELS, reported

    table = reported("table1")
    gains = table[~table["model"].isin(SLIP_LABELS)]["delta"].astype(float)
    return float(gains.min()) / 2


@dataclass
class Check:
    """One manipulation check: what it measures, the value, the rule it must meet, and whether it does."""

    check: str
    value: str
    rule: str
    passed: bool


@dataclass
class Decision:
    """A claim's verdict with every number it rests on."""

    key: str
    verdict: str  # agrees | disagrees | inconclusive | not testable | not measured
    p: float = math.nan  # the claim's p-value before correction
    p_holm: float = math.nan
    checks: list[Check] = field(default_factory=list)
    rule: str = ""
    margin_test: str = ""  # no-effect claims: the margin test on the model's own gain and its p-value


def _level(evidence, model: str, task: str, method: str, metric: str) -> float:
    values = evidence.values
    rows = values[(values["model"] == model) & (values["task"] == task) & (values["method"] == method)
                  & (values["metric"] == metric)]
    return float(rows["value"].mean()) if len(rows) else math.nan


def _range_check(what: str, value: float, low: float, high: float = CEILING) -> Check:
    ok = not math.isnan(value) and low < value < high
    return Check(what, "n/a" if math.isnan(value) else f"{value:.3f}", f"between {low:.3f} and {high:.2f}", ok)


def _effect_check(what: str, effect: dict | None, rule: str, ok) -> Check:
    if effect is None:
        return Check(what, "not measured", rule, False)
    from .prose import ci_text

    return Check(what, ci_text(effect["mean"], effect["low"], effect["high"]), rule, bool(ok(effect)))


def manipulation_checks(evidence, n_boot: int = 2000) -> dict[str, list[Check]]:
    """Per claim key, the checks that its manipulation happened and its task can go either way."""
    from .claims import gap_pair, pick

    main, slip, pair = pick(evidence, "clip"), pick(evidence, "slip"), gap_pair(evidence)
    checks: dict[str, list[Check]] = {k: [] for k in ("oti_image", "ovi_text", "zero_shot", "slip", "gap",
                                                       "oti_peak", "critique_pca")}
    if main is not None:
        n_classes = len(evidence.features.get(main, {}).get("classnames") or []) or math.nan
        chance = 1 / n_classes if n_classes == n_classes else 0.0
        intra = _level(evidence, main, "image", "intra", "mAP")
        checks["oti_image"].append(_range_check(f"`{main}` intra-modal image mAP (off ceiling, above chance)",
                                                intra, chance))
        cos = evidence.features.get(main, {}).get("oti_cos", math.nan)
        checks["oti_image"].append(Check(f"`{main}` OTI reached its image: mean cos(OTI feature, image feature)",
                                         "n/a" if math.isnan(cos) else f"{cos:.3f}", "above 0.5",
                                         not math.isnan(cos) and cos > 0.5))
        checks["critique_pca"] = list(checks["oti_image"])
        text = _level(evidence, main, "text", "intra", "mAP")
        checks["ovi_text"].append(_range_check(f"`{main}` intra-modal text mAP (off ceiling, above chance)", text,
                                               chance))
        ovi_cos = _level(evidence, main, "text", "ovi", "cos to target")
        checks["ovi_text"].append(Check(f"`{main}` OVI reached its text: mean cos(OVI feature, text feature)",
                                        "n/a" if math.isnan(ovi_cos) else f"{ovi_cos:.3f}", "above 0.5",
                                        not math.isnan(ovi_cos) and ovi_cos > 0.5))
        top1 = _level(evidence, main, "zero_shot", "inter", "top-1")
        checks["zero_shot"].append(_range_check(f"`{main}` zero-shot top-1 (off ceiling, above chance)", top1,
                                                chance))
    if main is not None and slip is not None:
        try:
            effect = evidence.contrast("image", "intra", None, model=slip, model_b=main, n_boot=n_boot)
        except (KeyError, ValueError):
            effect = None
        checks["slip"].append(_effect_check(f"the intra-modal term raised image-image mAP: `{slip}` minus `{main}`",
                                            effect, "interval above 0", lambda e: e["low"] > 0))
    if pair is not None:
        try:
            effect = evidence.model_contrast("gap matched cosine", pair[0], pair[1], n_boot=n_boot)
        except (KeyError, ValueError):
            effect = None
        checks["gap"].append(_effect_check(f"the gap closed: matched image-text cosine of `{pair[0]}` minus "
                                           f"`{pair[1]}`", effect, "interval above 0", lambda e: e["low"] > 0))
    curve = evidence.curve
    if curve:
        index = curve["num_pseudo_tokens"].index(curve["focus"])
        loss = curve["loss"][index]
        steps = list(curve["steps"])
        # the peak the claim is about: of the mean over every curve seed and query where there are several seeds
        # (the first seed's own peak otherwise)
        peak_step = steps[int(curve["AP_seeds"].double().mean(dim=(0, 2)).argmax())] if "AP_seeds" in curve \
            else curve["peak_step"]
        # loss is recorded per optimisation step; compare its value at the peak step with the last one
        at_peak, last = float(loss[min(peak_step, len(loss) - 1)]), float(loss[-1])
        checks["oti_peak"].append(Check(f"the optimisation ran past the peak (R={curve['focus']}): OTI loss at the "
                                        f"peak step {peak_step} vs at step {len(loss)}",
                                        f"{at_peak:.3f} -> {last:.3f}", "loss falls by at least a third after the "
                                        "peak", last < at_peak * 2 / 3))
        checks["oti_peak"].append(Check("seeds in the curve", str(len(curve.get("curve_seeds", [curve["seed"]]))),
                                        "at least 2 (one verdict rule for every claim)",
                                        len(curve.get("curve_seeds", [curve["seed"]])) >= 2))
    return checks


def measure(evidence, n_boot: int = 2000) -> dict:
    """:func:`crossgap_lib.claims.measure_claims`, plus what the decision needs beyond it: the SLIP-like model's own
    OTI gain (``slip_level``), the gap-closed model's own gain (``gap_level``), and the peak claim over every seed
    of the OTI curve (the one interval rule)."""
    from .claims import gap_pair, measure_claims, pick

    measured = measure_claims(evidence, n_boot=n_boot)
    for key, model in (("slip_level", pick(evidence, "slip")), ("gap_level", (gap_pair(evidence) or (None,))[0])):
        measured[key] = None
        if model is not None:
            try:
                measured[key] = {**evidence.contrast("image", "oti", "intra", model=model, n_boot=n_boot),
                                 "what": f"`{model}`"}
            except (KeyError, ValueError):
                pass
    curve = evidence.curve
    if curve and "AP_seeds" in curve:
        measured["oti_peak"] = {**stats.peak_test(curve["AP_seeds"], curve["steps"], n_boot),
                                "what": f"`{curve['model']}`, R={curve['focus']}, "
                                        f"{len(curve['curve_seeds'])} seeds"}
    return measured


def decide(claims: list, measured: dict, checks: dict[str, list[Check]], margin: float | None = None) -> dict:
    """Verdict of every claim (:class:`Decision`), with Holm's correction across the measured claims.

    ``measured``: :func:`crossgap_lib.claims.measure_claims` (effects with ``boot`` and ``p``); for the no-effect
    claims also ``slip_level`` (the SLIP-like model's own OTI gain) and ``gap_level`` (the gap-closed model's gain).
    """
    margin = margin_points() / 100 if margin is None else margin
    raw: dict[str, float] = {}
    rules: dict[str, str] = {}
    margin_tests: dict[str, str] = {}
    for claim in claims:
        effect = measured.get(claim.key)
        if effect is None or "boot" not in effect:
            continue
        sign = 1.0 if claim.reported_delta > 0 else -1.0
        one_sided = stats.non_superiority_p(effect["boot"] * -sign, 0.0)  # P-value of "effect has the reported sign"
        if claim.key in NULL_CLAIMS:
            # the margin test is on the model's own gain: SLIP's within +-margin of zero (equivalence), the
            # gap-closed model's below +margin (non-superiority: a negative gain also means "inversion is useless")
            level = measured.get(f"{claim.key}_level")
            test = "equivalence" if claim.key == "slip" else "non-superiority"
            if level is None or "boot" not in level:
                continue
            p_null = stats.equivalence_p(level["boot"], margin) if test == "equivalence" else \
                stats.non_superiority_p(level["boot"], margin)
            raw[claim.key] = max(one_sided, p_null)
            within = f"within ±{margin * 100:.1f}" if test == "equivalence" else f"below +{margin * 100:.1f}"
            margin_tests[claim.key] = f"{test}: gain {within} points, p = {p_null:.3f} (uncorrected)"
            rules[claim.key] = (f"{test} of the gain within {margin * 100:.1f} points, and the difference of gains "
                                f"{'below' if sign < 0 else 'above'} 0 (intersection-union: the larger p-value)")
        else:
            raw[claim.key] = effect["p"]
            rules[claim.key] = "two-sided bootstrap test of 0, sign against the reported sign"
    adjusted = stats.holm(raw)
    decisions = {}
    for claim in claims:
        effect, claim_checks = measured.get(claim.key), checks.get(claim.key, [])
        decision = Decision(claim.key, "not measured", checks=claim_checks, rule=rules.get(claim.key, ""),
                            margin_test=margin_tests.get(claim.key, ""))
        if claim.key in raw:
            decision.p, decision.p_holm = raw[claim.key], adjusted[claim.key]
            sign = 1.0 if claim.reported_delta > 0 else -1.0
            if claim_checks and not all(c.passed for c in claim_checks):
                decision.verdict = "not testable"
            elif decision.p_holm < ALPHA:
                if claim.key in NULL_CLAIMS or (effect["mean"] > 0) == (sign > 0):
                    decision.verdict = "agrees"
                else:
                    decision.verdict = "disagrees"
            elif claim.key in NULL_CLAIMS:
                level = measured[f"{claim.key}_level"]
                beyond = level["low"] > margin or (claim.key == "slip" and level["high"] < -margin)
                opposite = min(1.0, effect["p"] * len(raw)) < ALPHA and (effect["mean"] > 0) != (sign > 0)
                decision.verdict = "disagrees" if beyond or opposite else "inconclusive"
            else:
                decision.verdict = "inconclusive"
        decisions[claim.key] = decision
    return decisions


def decisions_table(claims: list, measured: dict, decisions: dict, scale: float = 100.0) -> pd.DataFrame:
    """One row per claim: reported effect, manipulation checks, measured effect and interval, p-values, verdict."""
    from .claims import PROVENANCE
    from .prose import ci_text

    rows = []
    for claim in claims:
        m, d = measured.get(claim.key), decisions[claim.key]
        checks = "; ".join(("pass" if c.passed else "FAIL") + f": {c.check} = {c.value}" for c in d.checks)
        row = {"claim": claim.claim, "shown in": claim.source, "reported": claim.reported,
               "provenance": PROVENANCE.get(claim.provenance, claim.provenance), "measured as": claim.measure,
               "manipulation checks": checks or "none needed"}
        if m is None:
            row.update({"models": "", "measured effect [95% CI]": "not measured", "margin test": "",
                        "p (Holm)": "", "verdict": "not measured"})
        else:
            level = measured.get(f"{claim.key}_level")
            text = ci_text(m["mean"], m["low"], m["high"], scale)
            if level is not None:
                text += f"; gain itself {ci_text(level['mean'], level['low'], level['high'], scale)}"
            row.update({"models": m["what"], "measured effect [95% CI]": text,
                        "margin test": d.margin_test or "–",
                        "p (Holm)": "" if math.isnan(d.p_holm) else f"{d.p:.3f} ({d.p_holm:.3f})",
                        "verdict": d.verdict})
        row["test"] = d.rule
        row["key"] = claim.key
        rows.append(row)
    return pd.DataFrame(rows).set_index("key")


@dataclass
class Judgement:
    """Every claim of an evidence judged: the claims, their measured effects, manipulation checks and decisions."""

    claims: list
    measured: dict
    checks: dict[str, list[Check]]
    decisions: dict[str, Decision]

    def table(self) -> pd.DataFrame:
        """:func:`decisions_table` of the judgement."""
        return decisions_table(self.claims, self.measured, self.decisions)

    def note(self, key: str, page: str = "reproduction.html") -> str:
        """One Markdown sentence: claim ``key``'s verdict as the reproduction page decides it, and why.

        ``page``: the link to the reproduction page, as written in a notebook's Markdown output (which the book's
        build does not resolve, so it names the HTML file beside the calling page)."""
        claim = next((c for c in self.claims if c.key == key), None)
        if claim is None:
            raise ValueError(f"no claim {key!r}: the claims are {[c.key for c in self.claims]} "
                             "(crossgap_lib.claims.reported_claims)")
        decision = self.decisions[key]
        head = (f"**Verdict on the claim** \"{claim.claim}\" ({claim.source}), by the test fixed on "
                f"[Reported vs reproduced]({page}) (corrected across its {len(self.claims)} claims, after the "
                f"claim's manipulation checks): **{decision.verdict}**")
        if decision.verdict == "not measured":
            return head + ": the evidence lacks the models it needs."
        if decision.verdict == "not testable":
            failed = [c for c in decision.checks if not c.passed]
            return head + ", because a manipulation check failed: " + "; ".join(
                f"{c.check} = {c.value} (rule: {c.rule})" for c in failed) + "."
        checks = "its manipulation checks pass" if decision.checks else "it needs no manipulation check"
        margin = f"; {decision.margin_test}" if decision.margin_test else ""
        return (head + f" (p = {decision.p:.3f}, {decision.p_holm:.3f} after Holm's correction{margin}; "
                f"{checks}).")


def judge(evidence, n_boot: int = 2000) -> Judgement:
    """The reproduction page's verdicts on an evidence, computed once: :func:`measure`, :func:`manipulation_checks`
    and :func:`decide` on the reported claims of :func:`crossgap_lib.claims.reported_claims`."""
    from .claims import reported_claims

    claims = reported_claims()
    measured = measure(evidence, n_boot=n_boot)
    checks = manipulation_checks(evidence, n_boot=n_boot)
    return Judgement(claims, measured, checks, decide(claims, measured, checks))
