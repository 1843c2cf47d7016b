"""Shared pieces of the real-format loaders: dataset specs, data root, lazy image/text datasets, clear errors.

A :class:`DatasetSpec` says where a dataset lives (``<root>/<folder>/``), what the folder must look like, where the
data is published and how the paper uses it (retrieval protocol, zero-shot split). Calling the spec builds the dataset.
Image datasets never decode an image before it is asked for; text datasets hold their texts in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

DATA_ENV = "CROSSGAP_DATA"
ON_CORRUPT = ("raise", "skip")
PathLike = str | os.PathLike


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder, index file or listed image is missing; the message says where it looked and how to fix it."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded; the message names the file."""


class DatasetFormatError(ValueError):
    """An index, split or ground-truth file exists but cannot be parsed; the message names the file, the line where
    there is one, what is wrong and how to fix it (with the expected layout)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives, what its folder must contain, where to get it and how the paper evaluates it."""

    name: str  # registry key
    title: str  # human-readable name used in messages
    modality: str  # "image" | "text"
    folder: str  # sub-folder of the data root
    layout: str  # expected layout of <root>/<folder>/ (text shown in errors and by describe())
    url: str  # where the data (and split files) are published
    splits: tuple[str, ...]  # valid splits; the first is the default
    loader: type  # class built as loader(spec, root, split, **kwargs); it reads its settings from ``options``
    required: tuple[str, ...] = ()  # paths that must exist under the dataset folder for any split
    protocol: tuple[str, str, bool] | None = None  # retrieval (query split, gallery split, exclude_self)
    zero_shot_split: str | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def describe(self) -> str:
        """Expected folder layout, source and how to point crossgap at it."""
        return (
            f"{self.title} ({self.name!r}) expected layout, under <root>/{self.folder}/:\n{self.layout.rstrip()}\n"
            f"Published at: {self.url}\n"
            f"<root> is the root= argument or ${DATA_ENV}; splits: {', '.join(self.splits)}."
        )

    def __call__(self, root: PathLike | None = None, split: str | None = None, **kwargs: Any) -> Any:
        """Build the dataset for ``split`` (default: the first listed split)."""
        return self.loader(self, root, self.splits[0] if split is None else split, **kwargs)


def data_root(root: PathLike | None = None) -> Path | None:
    """The folder holding all datasets: ``root`` if given, else ``$CROSSGAP_DATA``, else None."""
    if root is None:
        root = os.environ.get(DATA_ENV) or None
    return None if root is None else Path(root).expanduser()


def not_found(spec: DatasetSpec, looked_at: Path | None, problem: str) -> DatasetNotFoundError:
    """Error naming the dataset, the path looked at, what is wrong, the expected layout and the source."""
    where = f"at {looked_at}" if looked_at is not None else f"(no root= given and ${DATA_ENV} is not set)"
    return DatasetNotFoundError(f"{spec.title} ({spec.name!r}) not usable {where}: {problem}.\n{spec.describe()}")


def bad_format(spec: DatasetSpec, path: PathLike, problem: str, line: int | None = None) -> DatasetFormatError:
    """Error naming the dataset, the file (and 1-based line), the problem, the fix, the expected layout and source."""
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return DatasetFormatError(
        f"{spec.title} ({spec.name!r}): cannot parse {where}: {problem}. The file is truncated, corrupt or in another "
        f"format: repair it or download it again from the source below.\n{spec.describe()}"
    )


def read_json(spec: DatasetSpec, path: PathLike) -> Any:
    """``json.load`` of a dataset file; a truncated or malformed file is a :class:`DatasetFormatError` with the line."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise bad_format(spec, path, f"invalid JSON ({err.msg}, column {err.colno})", err.lineno) from err
    except UnicodeDecodeError as err:
        raise bad_format(spec, path, f"not UTF-8 text ({err.reason} at byte {err.start})") from err


def locate(spec: DatasetSpec, root: PathLike | None) -> Path:
    """Dataset folder: ``<root>/<spec.folder>`` (or ``root`` itself when it already is that folder)."""
    base = data_root(root)
    if base is None:
        raise not_found(spec, None, "no data root")
    # ``root`` itself is accepted when it is the dataset folder: named like it, or holding its required files
    candidates = [base / spec.folder] + ([base] if spec.required or base.name == spec.folder else [])
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / r).exists() for r in spec.required):
            return candidate
    folder = base / spec.folder
    if not folder.is_dir():
        raise not_found(spec, folder, "folder does not exist")
    missing = [r for r in spec.required if not (folder / r).exists()]
    raise not_found(spec, folder, f"missing {', '.join(missing)}")


def check_split(spec: DatasetSpec, split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of the spec's splits."""
    if split not in spec.splits:
        raise ValueError(f"split={split!r} is not a split of {spec.name!r}; expected one of {list(spec.splits)}")


def require(spec: DatasetSpec, root: Path, split: str, *relative: str) -> list[Path]:
    """Paths ``root / relative``, raising a layout error naming the missing ones if any does not exist."""
    paths = [root / r for r in relative]
    missing = [r for r, p in zip(relative, paths) if not p.exists()]
    if missing:
        raise not_found(spec, root, f"missing {', '.join(missing)} (needed for split {split!r})")
    return paths


def _hash_lines(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()[:16]


class ImageDataset(Dataset):
    """Lazy image dataset in a real on-disk format: ``dataset[i] -> (PIL RGB image, label int)``.

    Subclasses implement ``_read_index() -> (relative_paths, labels, classnames | None)``. ``on_corrupt="raise"``
    fails on the first undecodable image naming the file; ``on_corrupt="skip"`` decodes every image once at load
    time (see :meth:`verify`) and drops the unreadable ones with a warning, keeping images and labels aligned.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        root: PathLike | None,
        split: str,
        on_corrupt: str = "raise",
        check_files: bool = True,
        progress: bool = True,
    ):
        check_split(spec, split)
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt={on_corrupt!r}; expected one of {list(ON_CORRUPT)}")
        self.spec, self.name, self.split, self.on_corrupt = spec, spec.name, split, on_corrupt
        self.root = locate(spec, root)
        relative_paths, labels, classnames = self._read_index()
        self.relative_paths: list[str] = list(relative_paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.classnames: list[str] | None = classnames
        self.skipped: list[str] = []  # relative paths dropped by verify() under on_corrupt="skip"
        if check_files:
            self._check_files()
        if on_corrupt == "skip":
            self.verify(progress=progress)

    # --- to implement ---
    def _read_index(self) -> tuple[list[str], list[int], list[str] | None]:
        raise NotImplementedError

    # --- helpers for subclasses ---
    def _require(self, *relative: str) -> list[Path]:
        """Paths under the dataset folder, raising a layout error if any is missing."""
        return require(self.spec, self.root, self.split, *relative)

    def _check_files(self) -> None:
        missing = [p for p in self.relative_paths if not os.path.isfile(self.root / p)]
        if missing:
            raise not_found(
                self.spec,
                self.root,
                f"incomplete: {len(missing)} of {len(self.relative_paths)} images of split {self.split!r} are missing, "
                f"e.g. {', '.join(missing[:3])}",
            )

    # --- dataset API ---
    @cached_property
    def paths(self) -> list[Path]:
        """Absolute image paths, aligned with ``labels``."""
        return [self.root / p for p in self.relative_paths]

    def __len__(self) -> int:
        return len(self.relative_paths)

    def _open(self, index: int) -> Image.Image:
        with Image.open(self.root / self.relative_paths[index]) as image:
            return image.convert("RGB")

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        try:
            image = self._open(index)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            path = self.root / self.relative_paths[index]
            raise CorruptImageError(
                f"{self.spec.title} split {self.split!r}: cannot read image #{index} {path} ({error}). "
                "Replace the file, or load with on_corrupt='skip' to drop unreadable images."
            ) from error
        return image, int(self.labels[index])

    def verify(self, progress: bool = True) -> list[str]:
        """Decode every image once; return the unreadable relative paths (dropped under ``on_corrupt="skip"``)."""
        bad: list[int] = []
        for i in tqdm(range(len(self)), desc=f"verify {self.name}/{self.split}", disable=not progress):
            try:
                with Image.open(self.root / self.relative_paths[i]) as image:
                    image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads every scan
                    image.load()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                if self.on_corrupt == "raise":
                    raise CorruptImageError(
                        f"{self.spec.title} split {self.split!r}: cannot read image #{i} "
                        f"{self.root / self.relative_paths[i]} ({error})"
                    ) from error
                bad.append(i)
        bad_paths = [self.relative_paths[i] for i in bad]
        if bad:
            keep = sorted(set(range(len(self))) - set(bad))
            self.relative_paths = [self.relative_paths[i] for i in keep]
            self.labels = self.labels[torch.as_tensor(keep, dtype=torch.long)]
            self.__dict__.pop("paths", None)
            self.skipped += bad_paths
            warnings.warn(
                f"{self.spec.title} split {self.split!r}: skipped {len(bad)} unreadable image(s) under {self.root}, "
                f"e.g. {', '.join(bad_paths[:3])}",
                stacklevel=2,
            )
        return bad_paths

    def fingerprint(self) -> str:
        """Hash of dataset name, split, relative paths, labels and each file's size and modification time.

        No image is decoded (one ``stat`` per file): like a build tool, an image replaced in place (same path, new
        pixels) changes the fingerprint, so cached features keyed by it are recomputed. A missing file hashes as
        such. Content that changes while keeping both size and mtime (e.g. ``touch -r``) is not noticed.
        """
        rows = []
        for p, y in zip(self.relative_paths, self.labels.tolist()):
            try:
                st = os.stat(self.root / p)
                rows.append(f"{p}\t{y}\t{st.st_size}\t{st.st_mtime_ns}")
            except OSError:
                rows.append(f"{p}\t{y}\tmissing")
        return _hash_lines([self.name, self.split, *rows])

    def describe(self) -> str:
        """Expected folder layout of this dataset."""
        return self.spec.describe()

    def __repr__(self) -> str:
        n_classes = len(self.classnames) if self.classnames is not None else "?"
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, classes={n_classes})"


class TextDataset(Dataset):
    """Text dataset in a real on-disk format: ``.texts``, ``.labels`` (class/group id), ``.ids``;
    ``[i] -> (text, label)``.

    Subclasses implement ``_read() -> (texts, labels, ids, classnames | None)``.
    """

    def __init__(self, spec: DatasetSpec, root: PathLike | None, split: str):
        check_split(spec, split)
        self.spec, self.name, self.split = spec, spec.name, split
        self.root = locate(spec, root)
        texts, labels, ids, classnames = self._read()
        self.texts: list[str] = list(texts)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.ids: list[str] = [str(i) for i in ids]
        self.classnames: list[str] | None = classnames

    def _read(self) -> tuple[list[str], list[int], list[Any], list[str] | None]:
        raise NotImplementedError

    def _require(self, *relative: str) -> list[Path]:
        """Paths under the dataset folder, raising a layout error if any is missing."""
        return require(self.spec, self.root, self.split, *relative)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.texts[index], int(self.labels[index])

    def fingerprint(self) -> str:
        """Hash of dataset name, split, ids, labels and texts."""
        rows = [f"{i}\t{y}\t{t}" for i, y, t in zip(self.ids, self.labels.tolist(), self.texts)]
        return _hash_lines([self.name, self.split, *rows])

    def describe(self) -> str:
        """Expected folder layout of this dataset."""
        return self.spec.describe()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)})"
