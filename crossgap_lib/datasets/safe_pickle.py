"""Load a pickle without running arbitrary code: only plain containers and numpy arrays may be rebuilt.

The revisited Oxford/Paris ground truth (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``) ships as a pickle holding
dicts, lists, strings and numpy arrays. ``pickle.load`` would call any global the file names (``os.system``...);
:func:`load_pickle_safely` resolves only the globals listed in ``ALLOWED_GLOBALS`` and rejects everything else.
"""

from __future__ import annotations

import builtins
import os
import pickle
import struct
from typing import Any

import numpy as np

try:  # numpy >= 2 keeps the pickling helpers in numpy._core; numpy 1.x in numpy.core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed containers / numpy array helpers."""


class CorruptPickleError(pickle.UnpicklingError):
    """The file is empty, truncated or not a pickle at all; the message names the file."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it to store bytes: only ``str -> latin-1`` is allowed."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(
            f"_codecs.encode is allowed only as (str, 'latin1'), got ({type(text).__name__}, {encoding!r})"
        )
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as protocols 0-2 use it for an empty byte string; any argument is refused."""
    if args:
        raise UnsafePickleError("bytes(...) with arguments is not allowed in a data pickle")
    return b""


# (module, name) -> object. numpy arrays pickle as _reconstruct(ndarray, shape, dtype) + __setstate__ (protocols
# 0-4) or _frombuffer(buffer, dtype, shape, order) (protocol 5); numpy scalars as scalar(dtype, bytes). Both the
# numpy 1.x (numpy.core) and numpy 2.x (numpy._core) module names occur in files in the wild.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _multiarray._reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _multiarray.scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _numeric._frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(m, n): getattr(builtins, n) for m in ("builtins", "__builtin__") for n in ("set", "frozenset")},
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("_codecs", "encode"): _latin1_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str):
        super().__init__(file, encoding="latin1")  # latin1: Python-2 pickles of numpy arrays decode losslessly
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load {module}.{name} from a pickle; only plain containers and numpy "
                "arrays are allowed (the file is corrupt, tampered with, or not the expected data file)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in a data pickle")


def load_pickle_safely(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only dict/list/tuple/set/str/bytes/numbers and numpy arrays, dtypes and scalars.

    Raises :class:`UnsafePickleError` for a refused global and :class:`CorruptPickleError` (both
    ``pickle.UnpicklingError``) for an empty, truncated or malformed file, each naming the file.
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise CorruptPickleError(f"{path}: the file is empty (0 bytes), not a pickle; download it again")
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                OverflowError, struct.error, UnicodeDecodeError, MemoryError) as err:
            raise CorruptPickleError(
                f"{path}: truncated or malformed pickle ({type(err).__name__}: {err}); download the file again"
            ) from err
