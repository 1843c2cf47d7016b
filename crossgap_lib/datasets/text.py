"""Text datasets of the paper in their published on-disk formats.

Captions (Karpathy ``dataset_coco.json`` / ``dataset_flickr30k.json``, NoCaps COCO-format json): ``.labels`` is the
image id, so captions of one image share a label; the ``<split>_query`` / ``<split>_gallery`` splits take the first
caption of every image as query and the others as gallery, as the paper's text-to-text retrieval does. 20 Newsgroups
(``20news-bydate-*``) and IMDB (``aclImdb``): ``.labels`` is the class; the ``classes`` split holds one description per
class (queries for class-level retrieval). NanoBEIR: ``queries`` / ``corpus`` with relevance from ``qrels``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .base import DatasetSpec, TextDataset, bad_format, not_found, read_json

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _class_table(file: str) -> list[dict[str, str]]:
    with open(DATA_DIR / file, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _natural_key(name: str) -> list[Any]:
    """Sort key putting "2_7.txt" before "10_1.txt"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _caption_split(images: Iterable[tuple[int, list[tuple[Any, str]]]], part: str):
    """Flatten ``[(image_id, [(caption_id, caption), ...])]``; part "query" keeps the first caption, "gallery" the
    rest."""
    texts, labels, ids = [], [], []
    for image_id, captions in images:
        chosen = captions[:1] if part == "query" else captions[1:] if part == "gallery" else captions
        for caption_id, caption in chosen:
            texts.append(caption.strip())
            labels.append(int(image_id))
            ids.append(caption_id)
    return texts, labels, ids


def caption_splits(bases: tuple[str, ...]) -> tuple[str, ...]:
    """``("test", "test_query", "test_gallery", ...)`` for every base split."""
    return tuple(f"{b}{p}" for b in bases for p in ("", "_query", "_gallery"))


class KarpathyCaptions(TextDataset):
    """Karpathy split json: ``{"images": [{"split", "imgid", "sentences": [{"raw", "sentid"}, ...]}, ...]}``.

    Split ``train`` includes ``restval``, as in the Karpathy convention.
    """

    def _read(self):
        path = self.root / self.spec.options["file"]
        table = read_json(self.spec, path)
        images = table.get("images") if isinstance(table, dict) else None
        if not isinstance(images, list):
            raise bad_format(self.spec, path, "expected a dict with an 'images' list")
        base, _, part = self.split.partition("_")
        wanted = {"train": ("train", "restval")}.get(base, (base,))
        try:
            chosen = [
                (
                    image["imgid"],
                    [(s.get("sentid", f"{image['imgid']}_{k}"), s["raw"]) for k, s in enumerate(image["sentences"])],
                )
                for image in images
                if image["split"] in wanted
            ]
        except (KeyError, TypeError, AttributeError) as err:
            raise bad_format(self.spec, path, f"an image entry lacks {err} (each needs 'split', 'imgid' and "
                                              "'sentences' with 'raw')") from err
        if not chosen:
            raise not_found(self.spec, self.root, f"{self.spec.options['file']} has no images in split {base!r}")
        texts, labels, ids = _caption_split(chosen, part)
        return texts, labels, ids, None


class NoCapsCaptions(TextDataset):
    """NoCaps validation captions in COCO format:
    ``{"images": [...], "annotations": [{"image_id", "id", "caption"}]}``."""

    def _read(self):
        path = self.root / self.spec.options["file"]
        table = read_json(self.spec, path)
        annotations = table.get("annotations") if isinstance(table, dict) else None
        if not isinstance(annotations, list):
            raise bad_format(self.spec, path, "expected a dict with an 'annotations' list")
        by_image: dict[int, list[tuple[Any, str]]] = {}
        for k, a in enumerate(annotations):  # images keep the order of their first caption; captions keep file order
            try:
                by_image.setdefault(int(a["image_id"]), []).append((a.get("id", len(by_image)), a["caption"]))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise bad_format(self.spec, path, f"annotations[{k}] needs an integer 'image_id' and a 'caption' "
                                                  f"({type(err).__name__}: {err})") from err
        _, _, part = self.split.partition("_")
        texts, labels, ids = _caption_split(by_image.items(), part)
        return texts, labels, ids, None


class Newsgroups(TextDataset):
    """20 Newsgroups "bydate": ``20news-bydate-train|test/<group>/<message>`` (latin-1 text files)."""

    def _read(self):
        table = _class_table("newsgroups_classes.csv")
        groups = [row["group"] for row in table]
        classnames = [row["classname"] for row in table]
        if self.split == "classes":
            return [row["description"] for row in table], list(range(len(table))), groups, classnames
        texts, labels, ids = [], [], []
        for part in ("train", "test") if self.split == "all" else (self.split,):
            (folder,) = self._require(f"20news-bydate-{part}")
            found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
            if found != groups:
                raise not_found(
                    self.spec, folder, f"expected the 20 group folders {groups[:2]}..., found {found[:3]}..."
                )
            for label, group in enumerate(groups):
                for name in sorted(os.listdir(folder / group), key=_natural_key):
                    texts.append((folder / group / name).read_text(encoding="latin-1"))
                    labels.append(label)
                    ids.append(f"{part}/{group}/{name}")
        return texts, labels, ids, classnames


class IMDB(TextDataset):
    """Large Movie Review Dataset ``aclImdb/``: ``train|test/neg|pos/<id>_<rating>.txt``; label 0 = neg, 1 = pos."""

    def _read(self):
        table = _class_table("imdb_classes.csv")
        classnames = [row["classname"] for row in table]
        if self.split == "classes":
            return [row["description"] for row in table], [int(r["label"]) for r in table], classnames, classnames
        texts, labels, ids = [], [], []
        for part in ("train", "test") if self.split == "all" else (self.split,):
            for row in table:
                (folder,) = self._require(f"{part}/{row['folder']}")
                names = sorted(os.listdir(folder), key=_natural_key)
                for name in names:
                    review = (folder / name).read_text(encoding="utf-8", errors="replace")
                    texts.append(review.replace("<br />", " ").strip())
                    labels.append(int(row["label"]))
                    ids.append(f"{part}/{row['folder']}/{name}")
        return texts, labels, ids, classnames


# ----------------------------------------------------------------------------------------------------- NanoBEIR
def _parquet_engine() -> str | None:
    """Name of an installed parquet reader for pandas, or None."""
    for engine in ("pyarrow", "fastparquet"):
        try:
            __import__(engine)
            return engine
        except ImportError:
            continue
    return None


def _read_records(path: Path, spec: DatasetSpec | None = None) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl``, ``.parquet`` or ``.tsv`` (BEIR qrels) table as dicts."""
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    if spec is None:
                        raise ValueError(f"{path}, line {number}: invalid JSON ({err.msg})") from err
                    raise bad_format(spec, path, f"invalid JSON ({err.msg}, column {err.colno})", number) from err
        return rows
    if path.suffix == ".tsv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))
    engine = _parquet_engine()
    if engine is None:
        raise ImportError(
            f"{path} is a parquet file; reading it needs pyarrow (pip install pyarrow). Or store the same table as "
            f"{path.parent.name if path.parent.name in ('corpus', 'queries', 'qrels') else path.stem}.jsonl, "
            "one JSON object per line"
        )
    import pandas as pd

    return pd.read_parquet(path, engine=engine).to_dict("records")


class NanoBEIR(TextDataset):
    """NanoBEIR set ``Nano<Name>/``: ``corpus``, ``queries``, ``qrels`` as jsonl, parquet (HF layout) or BEIR tsv.

    ``labels`` is -1 (no classes); relevance comes from :meth:`relevance`. Texts are the ``text`` field.
    """

    PATTERNS = ("{p}.jsonl", "{p}/*.jsonl", "{p}.parquet", "{p}/*.parquet", "{p}.tsv", "{p}/*.tsv")

    def _part(self, part: str) -> list[dict[str, Any]]:
        for pattern in self.PATTERNS:
            files = sorted(self.root.glob(pattern.format(p=part)))
            if files:
                return [row for file in files for row in _read_records(file, self.spec)]
        raise not_found(self.spec, self.root, f"missing {part} ({part}.jsonl, {part}/*.parquet or {part}/*.tsv)")

    def _read(self):
        part = "queries" if self.split == "queries" else "corpus"
        rows = self._part(part)
        qrels: dict[str, set[str]] = defaultdict(set)
        for k, row in enumerate(self._part("qrels")):
            try:
                if float(row.get("score", 1)) > 0:
                    qrels[str(row["query-id"])].add(str(row["corpus-id"]))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                problem = f"row {k} needs 'query-id', 'corpus-id' and a numeric 'score' ({type(err).__name__}: {err})"
                raise bad_format(self.spec, self.root / "qrels", problem) from err
        self.qrels = dict(qrels)
        try:
            return [str(r["text"]).strip() for r in rows], [-1] * len(rows), [r["_id"] for r in rows], None
        except (KeyError, TypeError) as err:
            raise bad_format(self.spec, self.root / part, f"every row needs '_id' and 'text' (missing {err})") from err

    def relevance(self, corpus: NanoBEIR) -> torch.Tensor:
        """Bool (n_queries, n_corpus): query i is relevant to document j (call on the ``queries`` split)."""
        if self.split != "queries" or corpus.split != "corpus":
            raise ValueError(
                "relevance() needs self.split='queries' and corpus.split='corpus', "
                f"got {self.split!r}, {corpus.split!r}"
            )
        column = {doc_id: j for j, doc_id in enumerate(corpus.ids)}
        matrix = torch.zeros(len(self), len(corpus), dtype=torch.bool)
        for i, query_id in enumerate(self.ids):
            for doc_id in self.qrels.get(query_id, ()):
                if doc_id in column:
                    matrix[i, column[doc_id]] = True
        return matrix


# ------------------------------------------------------------------------------------------------------ the specs
NANOBEIR_SETS = ("ArguAna", "ClimateFEVER", "DBPedia", "FEVER", "FiQA2018", "HotpotQA", "MSMARCO", "NFCorpus", "NQ",
                 "QuoraRetrieval", "SCIDOCS", "SciFact", "Touche2020")
NANOBEIR_PAPER = ("ClimateFEVER", "DBPedia", "FEVER", "NFCorpus", "NQ", "SCIDOCS", "SciFact")  # used in the appendix

_KARPATHY_LAYOUT = ("{file}   # Karpathy split: {{'images': [{{'split': 'train|restval|val|test', 'imgid', "
                    "'sentences': [{{'raw', 'sentid'}}, ...]}}, ...]}}\n")
_KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/ (caption_datasets.zip)"

TEXT_SPECS: tuple[DatasetSpec, ...] = (
    *(
        DatasetSpec(
            name, title, "text", name, _KARPATHY_LAYOUT.format(file=file), _KARPATHY_URL, loader=KarpathyCaptions,
            splits=caption_splits(bases), required=(file,), protocol=(f"{main}_query", f"{main}_gallery", False),
            options={"file": file},
        )
        for name, title, file, bases, main in (
            ("coco", "COCO captions", "dataset_coco.json", ("test", "val", "train"), "test"),
            ("flickr30k", "Flickr30k captions", "dataset_flickr30k.json", ("val", "test", "train"), "val"),
        )
    ),
    DatasetSpec(
        "nocaps", "NoCaps captions", "text", "nocaps",
        "nocaps_val_4500_captions.json   # COCO format: {'images': [...], 'annotations': [{'image_id', 'id', "
        "'caption'}, ...]}\n",
        "https://nocaps.org/download", loader=NoCapsCaptions, splits=caption_splits(("val",)),
        required=("nocaps_val_4500_captions.json",), protocol=("val_query", "val_gallery", False),
        options={"file": "nocaps_val_4500_captions.json"},
    ),
    DatasetSpec(
        "20newsgroups", "20 Newsgroups (bydate)", "text", "20newsgroups",
        "20news-bydate-train/<group>/<message>   # 20 group folders, e.g. alt.atheism/\n"
        "20news-bydate-test/<group>/<message>    # (sklearn's scikit_learn_data/20news_home/ can be passed as root)\n",
        "http://qwone.com/~jason/20Newsgroups/20news-bydate.tar.gz", loader=Newsgroups,
        splits=("test", "train", "all", "classes"), required=("20news-bydate-test",),
        protocol=("classes", "test", False),
    ),
    DatasetSpec(
        "imdb", "IMDB Large Movie Review Dataset", "text", "aclImdb",
        "train/neg/<id>_<rating>.txt   train/pos/...\ntest/neg/...   test/pos/...\n",
        "https://ai.stanford.edu/~amaas/data/sentiment/ (aclImdb_v1.tar.gz)", loader=IMDB,
        splits=("all", "train", "test", "classes"), required=("train", "test"), protocol=("classes", "all", False),
    ),
    *(
        DatasetSpec(
            f"nano{name.lower()}", f"NanoBEIR {name}", "text", f"Nano{name}",
            "corpus.jsonl | corpus/*.parquet       # rows {'_id', 'text'}\n"
            "queries.jsonl | queries/*.parquet     # rows {'_id', 'text'}\n"
            "qrels.jsonl | qrels/*.parquet | qrels/*.tsv   # rows {'query-id', 'corpus-id'[, 'score']}\n"
            "(parquet needs pyarrow)\n",
            f"https://huggingface.co/datasets/zeta-alpha-ai/Nano{name}", loader=NanoBEIR, splits=("queries", "corpus"),
            protocol=("queries", "corpus", False),
        )
        for name in NANOBEIR_SETS
    ),
)
