"""Content-addressed, atomic, resumable chunk store.

Every expensive result in crossgap (features, inversions, teacher embeddings, trained models) is stored under
``<cache_root>/<kind>/<key>/`` where ``key`` hashes everything the result depends on. Work is split into chunks;
each chunk is written atomically (temp file + ``os.replace``), so an interrupted run loses at most the chunk in
flight and a rerun picks up where it stopped. A chunk that fails to load is recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CACHE_ENV = "CROSSGAP_CACHE"


def default_cache_root() -> Path:
    """Cache root: ``$CROSSGAP_CACHE`` or ``~/.cache/crossgap``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "crossgap")).expanduser()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return tensor_fingerprint(value)
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return repr(value)


def cache_key(**parts: Any) -> str:
    """Stable 16-hex-digit hash of keyword parts (order-independent; tensors hashed by content)."""
    blob = json.dumps(_canonical(parts), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tensor_fingerprint(tensor: torch.Tensor) -> str:
    """Hash of a tensor's dtype, shape and bytes."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's state dict (names, shapes, values): the identity of its weights."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor_fingerprint(t).encode())
    return h.hexdigest()[:16]


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (``os.umask`` can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``.

    The file gets the permissions of a plain ``open(path, "w")`` (0666 minus the process umask), not the 0600 of
    ``tempfile.mkstemp``, so a cache folder shared between users stays readable by the group the umask allows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safe_load(path: str | Path) -> Any | None:
    """Load a file written by :func:`atomic_save`; ``None`` (with a warning) if it is unreadable or corrupt."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "recompute"
        warnings.warn(
            f"crossgap cache: {path} is corrupt or unreadable ({type(err).__name__}: {err}); recomputing it.",
            stacklevel=2,
        )
        return None


_CACHE_HINT = f"Pass another cache_dir=... or set the {CACHE_ENV} environment variable to a writable folder."


def check_writable(folder: str | Path, what: str = "crossgap cache directory", hint: str = _CACHE_HINT) -> None:
    """Create ``folder`` if needed and write a probe file there; ``PermissionError`` naming it and ``hint`` if not.

    Catches a read-only folder, a file in the way (of the folder or a parent) and a full disk before any work is done.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{what} {folder} is not writable ({err}). {hint}") from err



class ChunkStore:
    """A result of ``n_items`` rows computed in chunks of ``chunk_size`` and stored under ``root/key``.

    ``compute_fn(start, stop)`` returns a dict of tensors whose first dimension is ``stop - start``.
    """

    def __init__(self, root: str | Path, key: str, n_items: int, chunk_size: int, meta: dict | None = None):
        if n_items < 1:
            raise ValueError(f"ChunkStore needs n_items >= 1, got {n_items}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.folder = Path(root) / key
        self.n_items, self.chunk_size = n_items, chunk_size
        self.meta = meta or {}
        self.n_chunks = (n_items + chunk_size - 1) // chunk_size

    @property
    def result_path(self) -> Path:
        return self.folder / "result.pt"

    def chunk_path(self, index: int) -> Path:
        return self.folder / f"chunk_{index:06d}.pt"

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        return index * self.chunk_size, min((index + 1) * self.chunk_size, self.n_items)

    def load_result(self) -> dict[str, torch.Tensor] | None:
        """The merged result if it exists and is readable."""
        if self.result_path.exists():
            return safe_load(self.result_path)
        return None

    def load_chunk(self, index: int) -> dict[str, torch.Tensor] | None:
        """Chunk ``index`` if stored and valid; ``None`` (recompute it) if missing, corrupt or of the wrong size."""
        path = self.chunk_path(index)
        if not path.exists():
            return None
        data = safe_load(path)
        start, stop = self.chunk_bounds(index)
        if not isinstance(data, dict) or any(
            not isinstance(v, torch.Tensor) or v.shape[0] != stop - start for v in data.values()
        ):
            if data is not None:
                warnings.warn(f"crossgap cache: {path} has the wrong content; recomputing it.", stacklevel=2)
            return None
        return data

    def compute_chunks(
        self,
        compute_fn: Callable[[int, int], dict[str, torch.Tensor]],
        chunk_ids: Iterable[int] | None = None,
        progress: bool = True,
        desc: str = "chunks",
    ) -> None:
        """Compute (or skip, if already stored) the given chunks; each is saved atomically when done."""
        from tqdm.auto import tqdm

        check_writable(self.folder)
        if self.meta and not (self.folder / "meta.json").exists():
            (self.folder / "meta.json").write_text(json.dumps(_canonical(self.meta), indent=1))
        ids = list(range(self.n_chunks) if chunk_ids is None else chunk_ids)
        todo = [i for i in ids if self.load_chunk(i) is None]
        if len(todo) < len(ids) and progress:
            tqdm.write(f"{desc}: resuming, {len(ids) - len(todo)} of {len(ids)} chunks already stored in {self.folder}")
        for index in tqdm(todo, desc=desc, disable=not progress or not todo, unit="chunk"):
            start, stop = self.chunk_bounds(index)
            out = compute_fn(start, stop)
            atomic_save({k: v.detach().cpu() for k, v in out.items()}, self.chunk_path(index))

    def merge(self, cleanup: bool = True) -> dict[str, torch.Tensor]:
        """Concatenate all chunks into ``result.pt`` (and delete the chunk files)."""
        parts = []
        for i in range(self.n_chunks):
            data = self.load_chunk(i)
            if data is None:
                raise RuntimeError(f"crossgap cache: chunk {i} of {self.folder} is missing; run compute_chunks first")
            parts.append(data)
        result = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        atomic_save(result, self.result_path)
        if cleanup:
            for i in range(self.n_chunks):
                self.chunk_path(i).unlink(missing_ok=True)
        return result

    def get_or_compute(
        self,
        compute_fn: Callable[[int, int], dict[str, torch.Tensor]],
        progress: bool = True,
        desc: str = "chunks",
    ) -> dict[str, torch.Tensor]:
        """Load the stored result, or compute missing chunks (resuming), merge and return it."""
        result = self.load_result()
        if result is not None:
            return result
        self.compute_chunks(compute_fn, progress=progress, desc=desc)
        return self.merge()


@contextlib.contextmanager
def exclusive(path: str | os.PathLike):
    """An exclusive advisory lock on the file ``path`` (created with its folder) for the block: processes that compute
    the same cached result (parallel notebooks, the laboratory's worker processes) take turns, and the second finds
    the first's result. Where ``fcntl`` is missing (Windows), no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def computed_once(folder: str | os.PathLike, cached: Callable[[], Any], compute: Callable[[], Any]) -> Any:
    """``cached()`` when it gives a result (not None), else ``compute()``, holding ``folder/.lock`` meanwhile, so that
    processes asking for the same result (the laboratory's workers) take turns and the second reads the first's.
    Under torchrun (``WORLD_SIZE`` > 1) the ranks compute together, so there is no lock between them."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return compute()
    with exclusive(Path(folder) / ".lock"):
        result = cached()
        return result if result is not None else compute()


def encode_distinct(texts: list[str], encode: Callable[[list[str]], torch.Tensor],
                    memo: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``encode(texts)`` stacked (N, ...), with ``encode`` called once on the distinct texts not already in ``memo``
    (a dict the caller keeps across calls, or a fresh one): generated captions repeat a lot."""
    memo = {} if memo is None else memo
    new = list(dict.fromkeys(t for t in texts if t not in memo))
    if new:
        memo.update(zip(new, encode(new)))
    return torch.stack([memo[t] for t in texts])
