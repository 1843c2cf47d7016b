"""The paper's reported numbers and settings (with provenance), and side-by-side comparison with reproduced ones."""

from __future__ import annotations

from importlib import resources

import pandas as pd

TABLES = {
    "settings": "settings.csv",
    "table1": "table1_image_retrieval_avg.csv",
    "table2_text": "table2_text_retrieval_avg.csv",
    "table2_zero_shot": "table2_zero_shot_avg.csv",
    "table4": "table4_modality_gap.csv",
    "figure2": "figure2_digitised.csv",
    "critique": "critique_image_retrieval.csv",
}

PROVENANCE = {
    "poster": "reported (ICLR poster of the paper)",
    "poster-digitised": "reported (read off the poster's plot, about ±0.1 mAP, ±2 steps)",
    "critique": "Herzog & Wang (arXiv 2603.16100), not the paper's own numbers",
    "config": "the paper's public configuration files",
}


def reported(table: str) -> pd.DataFrame:
    """One of the paper's reported tables (see ``TABLES``), with its ``provenance`` column."""
    if table not in TABLES:
        raise ValueError(f"unknown reported table {table!r}; choose one of {sorted(TABLES)}")
    with resources.files("crossgap_lib").joinpath("data", "paper", TABLES[table]).open() as f:
        return pd.read_csv(f)


def provenance_note(frame: pd.DataFrame) -> str:
    """A sentence saying where the numbers of a reported table come from."""
    labels = sorted(set(frame["provenance"]))
    return "; ".join(f"`{label}`: {PROVENANCE.get(label, label)}" for label in labels)


def side_by_side(reported_values: pd.Series, reproduced_values: pd.Series, name: str = "") -> pd.DataFrame:
    """Reported and reproduced values on a shared index, with their difference (reproduced - reported)."""
    frame = pd.DataFrame({f"reported{name}": reported_values, f"reproduced{name}": reproduced_values})
    frame[f"difference{name}"] = frame[f"reproduced{name}"] - frame[f"reported{name}"]
    return frame
