"""Sentences and table cells built from measured numbers, so the book's prose never states an effect by hand.

Effects are the dicts of :func:`crossgap_lib.stats.paired_effect` (``mean``, ``low``, ``high``, ``interval``), in the
values' unit (fractions: shown x100 as points).
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd
from pandas.io.formats.style import Styler

_CODE_SPAN = re.compile(r"`([^`]+)`")


def ci_text(mean: float, low: float, high: float, scale: float = 100.0, digits: int = 1, signed: bool = True) -> str:
    """``"+1.2 [0.4, 2.0]"``: a value and its confidence interval, scaled (fractions -> points by default)."""
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if any(math.isnan(v) for v in (low, high)):
        return fmt.format(mean * scale) + " [n/a]"
    return f"{fmt.format(mean * scale)} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def code_cells(table: pd.DataFrame) -> Styler:
    """``table`` for display, its Markdown code spans (a name between backticks) in text cells and labels as ``<code>``.

    A DataFrame shows a backtick as a backtick; the library's labels carry them because the same strings also go into
    Markdown sentences. Other text is HTML-escaped; numeric columns are left to the Styler's own formatting.
    """
    def render(value) -> str:
        return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(str(value), quote=False))

    text_columns = [column for column in table.columns if not pd.api.types.is_numeric_dtype(table[column])]
    return (table.style.format(render, subset=text_columns).format_index(render, axis=0)
            .format_index(render, axis=1).set_table_attributes('class="dataframe"'))


def verdict(what: str, mean: float, low: float, high: float, scale: float = 100.0, unit: str = "points",
            digits: int = 1, interval: str = "95% CI") -> str:
    """One sentence: the effect with its interval, and whether the interval excludes zero."""
    text = f"{what}: {ci_text(mean, low, high, scale, digits)} {unit} ({interval})"
    if any(math.isnan(v) for v in (low, high)):
        return text + ", with too few samples for an interval."
    if low > 0:
        return text + ": the interval lies above zero, an increase."
    if high < 0:
        return text + ": the interval lies below zero, a decrease."
    return text + ": the interval includes zero, no detectable effect."


def direction(mean: float, low: float, high: float) -> str:
    """``"up"``, ``"down"`` or ``"none"`` (interval includes zero)."""
    if low > 0:
        return "up"
    if high < 0:
        return "down"
    return "none"


def agreement(reported_delta: float, low: float, high: float) -> str:
    """Whether a measured interval agrees in sign with a reported difference: ``"agrees"``, ``"disagrees"``,
    ``"inconclusive"``."""
    measured = direction(0.0, low, high)
    if measured == "none":
        return "inconclusive"
    return "agrees" if (reported_delta > 0) == (measured == "up") else "disagrees"


def effect_text(effect: dict, scale: float = 100.0, digits: int = 1) -> str:
    """``"+1.2 [0.4, 2.0] (t-interval over 3 seeds)"``."""
    return f"{ci_text(effect['mean'], effect['low'], effect['high'], scale, digits)} ({effect['interval']})"


def effect_sentence(what: str, effect: dict, scale: float = 100.0, unit: str = "points", digits: int = 1) -> str:
    """:func:`verdict` for an effect dict, naming its interval."""
    return verdict(what, effect["mean"], effect["low"], effect["high"], scale, unit, digits,
                   interval=f"95% CI, {effect['interval']}")


def agreement_sentence(reported_delta: float, low: float, high: float, what: str = "its analogue") -> str:
    """``"The paper reports +2.7 points for its analogue: the measured interval agrees in sign."``"""
    sign = None if any(math.isnan(v) for v in (low, high)) else agreement(reported_delta, low, high)
    tail = {"agrees": "the measured interval agrees in sign.",
            "disagrees": "the measured interval has the opposite sign.",
            "inconclusive": "the measured interval includes zero, so it cannot confirm or contradict the sign.",
            None: "there is no measured interval to compare."}[sign]
    return f"The paper reports {reported_delta:+.1f} points for {what}: {tail}"


def trend_sentence(what: str, fit: dict, scale: float = 100.0, unit: str = "points", digits: int = 1,
                   up: str = "the gain grows with the gap", down: str = "the gain shrinks as the gap grows") -> str:
    """The fitted slope of :func:`crossgap_lib.stats.fit_line` with its t-interval, and its direction."""
    text = (f"The slope of {what} is {ci_text(fit['slope'], fit['slope_low'], fit['slope_high'], scale, digits)} "
            f"{unit} (95% t-interval, n = {fit['n']}, r = {fit['r']:.2f})")
    trend = direction(fit["slope"], fit["slope_low"], fit["slope_high"])
    return text + {"up": f": the interval lies above zero, so {up}.",
                   "down": f": the interval lies below zero, so {down}.",
                   "none": ": the interval includes zero, so no trend is detectable."}[trend]


def _lower_first(text: str) -> str:
    return text if len(text) < 2 or text[1].isupper() else text[0].lower() + text[1:]


def discussion(table: pd.DataFrame) -> list[str]:
    """Sentences summarising a :func:`crossgap_lib.verdicts.decisions_table`: how many claims agree, disagree, stay
    inconclusive or could not be tested."""
    counts = table["verdict"].value_counts()
    agree, disagree, unclear, untestable = (int(counts.get(v, 0)) for v in ("agrees", "disagrees", "inconclusive",
                                                                             "not testable"))
    measured = agree + disagree + unclear + untestable
    lines = [(f"Of the {len(table)} claims, {measured} were measured: "
              f"{agree} {'agrees' if agree == 1 else 'agree'} with the reported effect, "
              f"{disagree} {'goes' if disagree == 1 else 'go'} the other way, {unclear} "
              f"{'is' if unclear == 1 else 'are'} inconclusive (the corrected test is not significant) and "
              f"{untestable} {'is' if untestable == 1 else 'are'} not testable (a manipulation check failed).")]
    for value, text in (("agrees", "Agreeing"), ("disagrees", "Opposite direction or beyond the margin"),
                        ("inconclusive", "Inconclusive"), ("not testable", "Not testable here"),
                        ("not measured", "Not measured here")):
        rows = table[table["verdict"] == value]
        if len(rows):
            items = "; ".join(f"{_lower_first(r['claim'])} ({r['shown in']})" for _, r in rows.iterrows())
            lines.append(f"{text}: {items}.")
    return lines
