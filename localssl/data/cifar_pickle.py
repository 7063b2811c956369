"""The CIFAR-10 python batches (``cifar-10-batches-py/data_batch_N``, ``test_batch``), read without running code.

A batch is a pickled ``dict`` of ``bytes`` keys: ``data`` (uint8 array, one 3072-byte row per image),
``labels`` (list of int), ``batch_label`` and ``filenames`` (bytes). Unpickling calls whatever global
the file names, so a planted ``data_batch_1`` could run any code; :class:`CifarUnpickler` admits only the
globals that rebuild a numpy array (those the official files use, ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray`` and ``numpy.dtype``, under numpy 1's and numpy 2's module names; plus numpy scalars and
``_frombuffer``, which batches re-pickled by Python 3 use) and refuses any other with the file's name.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from localssl.data.base import DatasetError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_BYTES = 3 * 32 * 32


def _numpy_function(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2), else ``numpy.core.<module>.<name>`` (numpy 1)."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except ImportError:
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        fn = _numpy_function(module, name)
        for package in ("numpy.core", "numpy._core"):
            allowed[(f"{package}.{module}", name)] = fn
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class CifarUnpickler(pickle.Unpickler):
    """An unpickler for one CIFAR-10 batch file: any global other than :data:`ALLOWED_GLOBALS` is refused."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        raise DatasetError(
            f"{self.path} is not a CIFAR-10 batch: its pickle asks for the global {module}.{name}, which the "
            "CIFAR-10 format never uses, and loading it could run code, so it was not loaded. Fix: delete this "
            f"file; download CIFAR-10 from the official site ({OFFICIAL_URL}, or `localssl data download cifar10`)"
        )


def _field(batch: dict, key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DatasetError(f"{path} has no '{key}' entry, so it is not a CIFAR-10 batch; download CIFAR-10 again")


def load_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images uint8 ``(N, 3, 32, 32)`` and labels (0..9) of one batch file, checked for the format."""
    with open(path, "rb") as fh:
        try:
            batch = CifarUnpickler(fh, path).load()
        except DatasetError:
            raise
        except Exception as err:  # truncated or garbled pickle data
            raise DatasetError(f"{path} is corrupt ({err}); download CIFAR-10 again") from err
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch; download CIFAR-10 again")
    data, labels = _field(batch, "data", path), _field(batch, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: 'data' is {what}, not uint8 (N, {IMAGE_BYTES}); download CIFAR-10 again")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DatasetError(f"{path}: 'labels' is not a list of {len(data)} labels; download CIFAR-10 again")
    if not all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) and 0 <= y <= 9 for y in labels):
        raise DatasetError(f"{path}: 'labels' holds something other than class numbers 0..9; download CIFAR-10 again")
    return data.reshape(-1, 3, 32, 32), [int(y) for y in labels]
