"""Tests for nncore.datasets: splits, digits, IDX/MNIST readers, download, pkl."""

from __future__ import annotations

import gzip
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

import nncore.datasets as ds
from nncore.datasets import DatasetError

T10K_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
T10K_IMAGES = "t10k-images-idx3-ubyte.gz"
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Serialize ``arr`` as an IDX file (big-endian) with type ``code``."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.asarray(arr).astype(dtype).tobytes()


@pytest.fixture(scope="session")
def t10k(mnist_t10k_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The t10k images (10000, 28, 28) and labels (10000,) read once."""
    return ds.read_idx(mnist_t10k_dir / T10K_IMAGES), ds.read_idx(mnist_t10k_dir / T10K_LABELS)


def closed_port() -> int:
    """A port on 127.0.0.1 with (almost certainly) nobody listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# one_hot / make_splits
# ---------------------------------------------------------------------------


def test_one_hot_values_and_range_error():
    Y = ds.one_hot(np.array([2, 0, 1]), 3, dtype=np.float32)
    assert Y.dtype == np.float32
    np.testing.assert_array_equal(Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 3 at index 1"):
        ds.one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="got -1"):
        ds.one_hot(np.array([-1]), 3)


def test_make_splits_shuffle_false_keeps_data_order_and_scales_uint8():
    X = np.arange(10 * 4, dtype=np.uint8).reshape(10, 4)
    labels = np.arange(10) % 3
    d = ds.make_splits(X, labels, n_train=6, n_eval=3, n_test=1, shuffle=False, name="toy")
    assert d.name == "toy"
    np.testing.assert_array_equal(d.train.X, X[:6] / 255.0)
    np.testing.assert_array_equal(d.eval.X, X[6:9] / 255.0)
    np.testing.assert_array_equal(d.test.X, X[9:] / 255.0)
    np.testing.assert_array_equal(d.eval.labels, labels[6:9])
    assert d.train.labels.dtype == np.int64
    assert d.describe() == {
        "name": "toy", "n_train": 6, "n_eval": 3, "n_test": 1, "n_features": 4, "n_classes": 3,
    }


def test_make_splits_shuffle_uses_seeded_permutation_and_partitions_rows():
    X = np.arange(20, dtype=np.float64).reshape(20, 1) / 19.0  # row id encoded in X
    labels = np.arange(20) % 4
    d = ds.make_splits(X, labels, n_train=12, n_eval=5, n_test=3, seed=7)
    perm = np.random.default_rng(7).permutation(20)
    np.testing.assert_array_equal(d.train.X[:, 0], X[perm[:12], 0])
    np.testing.assert_array_equal(d.train.labels, labels[perm[:12]])
    rows = np.concatenate([d.train.X, d.eval.X, d.test.X])[:, 0]
    np.testing.assert_allclose(np.sort(rows), X[:, 0])  # every row exactly once
    np.testing.assert_array_equal(d.test.Y.argmax(axis=1), d.test.labels)


def test_make_splits_zero_sizes_give_none_and_dtype_is_respected():
    X = np.random.default_rng(0).random((5, 3))
    d = ds.make_splits(X, np.zeros(5, int), n_train=5, n_classes=2, shuffle=False, dtype=np.float32)
    assert d.eval is None and d.test is None
    assert d.train.X.dtype == np.float32 and d.train.Y.dtype == np.float32
    assert d.n_classes == 2 and d.train.n == 5
    np.testing.assert_allclose(d.train.X, X.astype(np.float32))  # already in [0, 1]: unscaled


def test_make_splits_float_above_one_is_divided_by_max():
    X = np.array([[0.0, 16.0], [8.0, 4.0]])
    d = ds.make_splits(X, [0, 1], n_train=2, shuffle=False)
    np.testing.assert_array_equal(d.train.X, X / 16.0)


def test_make_splits_n_classes_defaults_to_max_over_all_rows():
    d = ds.make_splits(np.zeros((4, 2)), [0, 0, 0, 4], n_train=2, n_eval=2, shuffle=False)
    assert d.train.Y.shape == (2, 5) and d.eval.Y.shape == (2, 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_train": 2, "n_eval": -1}, "n_eval"),
        ({"n_train": 2, "n_test": -3}, "n_test"),
        ({"n_train": 2.5}, "n_train"),
        ({"n_train": 6, "n_eval": 3, "n_test": 2}, r"n_train \+ n_eval \+ n_test = .* 11 exceeds the 10 rows"),
        ({"n_train": 11}, r"n_train .*exceeds the 10 rows"),
        ({"n_train": 5, "n_classes": 2}, r"labels: expected values in \[0, 2\).*got 2"),
        ({"n_train": 5, "dtype": np.int32}, "dtype"),
    ],
)
def test_make_splits_argument_errors(kwargs, match):
    X = np.random.default_rng(0).random((10, 3))
    labels = np.arange(10) % 3
    with pytest.raises(ValueError, match=match):
        ds.make_splits(X, labels, **kwargs)


@pytest.mark.parametrize(
    ("X", "labels", "match"),
    [
        (np.array([[0.1, np.nan], [0.2, 0.3]]), [0, 1], "NaN/inf"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), [0, 1], "NaN/inf"),
        (np.array([[0.1, -0.5], [0.2, 0.3]]), [0, 1], "non-negative"),
        (np.array([[1, 300], [2, 3]]), [0, 1], r"\[0, 255\]"),
        (np.zeros((3, 2)), [0, 1], "X and labels.*3 rows in X and 2 labels"),
        (np.zeros(3), [0, 1, 2], "X: expected shape"),
        (np.zeros((2, 2)), [0.5, 1], "labels: expected integer"),
        (np.zeros((2, 2)), [0, -1], "labels: expected values >= 0, got -1"),
    ],
)
def test_make_splits_data_errors(X, labels, match):
    with pytest.raises(DatasetError, match=match):
        ds.make_splits(X, labels, n_train=1)


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_load_digits_shapes_scaling_one_hot():
    d = ds.load_digits()
    assert d.name == "digits"
    assert d.describe() == {
        "name": "digits", "n_train": 1500, "n_eval": 297, "n_test": 0,
        "n_features": 64, "n_classes": 10,
    }
    assert d.train.X.shape == (1500, 64) and d.eval.X.shape == (297, 64) and d.test is None
    assert d.train.Y.shape == (1500, 10) and d.train.labels.dtype == np.int64
    allX = np.concatenate([d.train.X, d.eval.X])
    assert allX.dtype == np.float64 and allX.min() == 0.0 and allX.max() == 1.0
    np.testing.assert_array_equal(allX * 16, np.round(allX * 16))  # exactly k/16
    np.testing.assert_array_equal(d.train.Y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(d.train.Y.argmax(axis=1), d.train.labels)
    assert set(np.unique(d.train.labels)) == set(range(10))


def test_load_digits_seeded_reproducible_and_seeds_differ():
    from sklearn.datasets import load_digits as sk_load_digits

    a = ds.load_digits(seed=3, dtype=np.float32)
    b = ds.load_digits(seed=3, dtype=np.float32)
    c = ds.load_digits(seed=4, dtype=np.float32)
    assert a.train.X.dtype == np.float32 and a.train.Y.dtype == np.float32
    np.testing.assert_array_equal(a.train.X, b.train.X)
    np.testing.assert_array_equal(a.eval.labels, b.eval.labels)
    assert not np.array_equal(a.train.labels, c.train.labels)
    sk = sk_load_digits()
    perm = np.random.default_rng(3).permutation(1797)
    np.testing.assert_array_equal(a.train.labels, sk.target[perm[:1500]])
    np.testing.assert_allclose(a.train.X, sk.data[perm[:1500]] / 16.0, rtol=1e-6)


def test_load_digits_shuffle_false_is_data_order():
    from sklearn.datasets import load_digits as sk_load_digits

    sk = sk_load_digits()
    d = ds.load_digits(n_train=1000, n_eval=500, n_test=297, shuffle=False)
    np.testing.assert_array_equal(d.train.X, sk.data[:1000] / 16.0)
    np.testing.assert_array_equal(d.eval.labels, sk.target[1000:1500])
    np.testing.assert_array_equal(d.test.labels, sk.target[1500:])


def test_load_digits_too_many_rows():
    with pytest.raises(DatasetError, match=r"exceeds the 1797 rows"):
        ds.load_digits(n_train=1500, n_eval=298)


# ---------------------------------------------------------------------------
# IDX reader
# ---------------------------------------------------------------------------


def test_read_idx_real_t10k_files(t10k):
    images, labels = t10k
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == T10K_LABEL_COUNTS
    assert images.max() == 255 and images.min() == 0
    assert images.flags.writeable  # a copy, not a view of an immutable buffer


def test_read_idx_detects_gzip_by_magic_not_extension(tmp_path, mnist_t10k_dir, t10k):
    raw = gzip.decompress((mnist_t10k_dir / T10K_LABELS).read_bytes())
    (tmp_path / "plain.gz").write_bytes(raw)  # misleading extension, not compressed
    (tmp_path / "packed.idx").write_bytes(gzip.compress(raw))  # compressed, no .gz
    np.testing.assert_array_equal(ds.read_idx(tmp_path / "plain.gz"), t10k[1])
    np.testing.assert_array_equal(ds.read_idx(tmp_path / "packed.idx"), t10k[1])


@pytest.mark.parametrize(
    ("code", "values"),
    [
        (0x09, np.array([[-128, 5], [127, 0]], dtype=np.int8)),
        (0x0B, np.array([-30000, 1, 300], dtype=np.int16)),
        (0x0C, np.array([[[-(2**31)], [2**31 - 1]]], dtype=np.int32)),
        (0x0D, np.array([0.5, -1.25, 3e38], dtype=np.float32)),
        (0x0E, np.array([1e-300, -2.5], dtype=np.float64)),
    ],
)
def test_read_idx_big_endian_types(tmp_path, code, values):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(values, code))
    got = ds.read_idx(path)
    assert got.dtype == values.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_read_idx_truncated_gzip(tmp_path, mnist_t10k_dir):
    data = (mnist_t10k_dir / T10K_LABELS).read_bytes()
    cut = tmp_path / "cut-labels.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut-labels\.gz.*truncated.*expected 10000 payload bytes.*got \d+"):
        ds.read_idx(cut)
    no_trailer = tmp_path / "no-trailer.gz"  # payload complete, CRC/size trailer missing
    no_trailer.write_bytes(data[:-4])
    with pytest.raises(DatasetError, match="truncated"):
        ds.read_idx(no_trailer)


def test_read_idx_truncated_raw_payload(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8))[:-2])
    with pytest.raises(DatasetError, match=r"short\.idx.*truncated.*expected 5 payload bytes.*got 3"):
        ds.read_idx(path)
    header_only = tmp_path / "header.idx"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetError, match=r"truncated.*expected a 16-byte header"):
        ds.read_idx(header_only)


def test_read_idx_corrupted_gzip_and_trailing_bytes(tmp_path, mnist_t10k_dir):
    data = bytearray((mnist_t10k_dir / T10K_LABELS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"flipped\.gz.*corrupted"):
        ds.read_idx(bad)
    extra = tmp_path / "extra.idx"
    extra.write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)) + b"\x07")
    with pytest.raises(DatasetError, match="expected 4 payload bytes.*got 5"):
        ds.read_idx(extra)


@pytest.mark.parametrize(
    "header",
    [
        b"PK\x03\x04",  # a zip file
        bytes([0, 1, 8, 1]),  # second byte not zero
        bytes([0, 0, 0x0A, 1]),  # unknown type code
        bytes([0, 0, 8, 0]),  # ndim 0
    ],
)
def test_read_idx_bad_magic(tmp_path, header):
    path = tmp_path / "bad.idx"
    path.write_bytes(header + b"\x00" * 16)
    with pytest.raises(DatasetError, match=r"bad\.idx.*bad magic 0x" + header.hex().upper()):
        ds.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ds.read_idx(tmp_path / "nope.idx")


# ---------------------------------------------------------------------------
# MNIST IDX pairs and directories
# ---------------------------------------------------------------------------


def _write_pair(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    ip, lp = tmp_path / "imgs.idx", tmp_path / "labs.idx"
    ip.write_bytes(idx_bytes(images))
    lp.write_bytes(idx_bytes(labels))
    return ip, lp


def test_load_mnist_idx_small_pair(tmp_path):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    ip, lp = _write_pair(tmp_path, images, np.array([1, 9, 0], dtype=np.uint8))
    X, y = ds.load_mnist_idx(ip, lp)
    assert X.shape == (3, 4) and X.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(3, 4))
    np.testing.assert_array_equal(y, [1, 9, 0])


def test_load_mnist_idx_label_out_of_range(tmp_path):
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    ip, lp = _write_pair(tmp_path, images, np.array([1, 10, 2], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"labs\.idx.*0\.\.9, got 10 at index 1"):
        ds.load_mnist_idx(ip, lp)


def test_load_mnist_idx_count_mismatch_and_swapped_files(tmp_path):
    ip, lp = _write_pair(tmp_path, np.zeros((3, 2, 2), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DatasetError, match="3 images and 2 labels"):
        ds.load_mnist_idx(ip, lp)
    with pytest.raises(DatasetError, match=r"labs\.idx: expected IDX images"):
        ds.load_mnist_idx(lp, ip)


def test_load_mnist_first_8000_train_last_2000_eval(mnist_t10k_dir, t10k):
    images, labels = t10k
    d = ds.load_mnist(mnist_t10k_dir, n_train=8000, n_eval=2000)
    assert d.name == "mnist-t10k"
    assert d.describe()["n_features"] == 784 and d.n_classes == 10 and d.test is None
    np.testing.assert_array_equal(d.train.X, images[:8000].reshape(8000, 784) / 255.0)
    np.testing.assert_array_equal(d.eval.X, images[8000:].reshape(2000, 784) / 255.0)
    np.testing.assert_array_equal(d.train.labels, labels[:8000])
    np.testing.assert_array_equal(d.eval.labels, labels[8000:])
    np.testing.assert_array_equal(d.eval.Y.argmax(axis=1), labels[8000:])


def test_load_mnist_falls_back_to_uncompressed_names(tmp_path, mnist_t10k_dir, t10k):
    for name in (T10K_IMAGES, T10K_LABELS):
        raw = gzip.decompress((mnist_t10k_dir / name).read_bytes())
        (tmp_path / name.removesuffix(".gz")).write_bytes(raw)
    d = ds.load_mnist(tmp_path, n_train=100, n_test=50, seed=1, shuffle=True, dtype=np.float32)
    perm = np.random.default_rng(1).permutation(10000)
    assert d.train.X.dtype == np.float32
    np.testing.assert_array_equal(d.test.labels, t10k[1][perm[100:150]])


def test_load_mnist_missing_file_and_bad_source(tmp_path):
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz.*tried"):
        ds.load_mnist(tmp_path, n_train=1)
    with pytest.raises(DatasetError, match="source: expected a directory"):
        ds.load_mnist(tmp_path / "nope", n_train=1)


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------


def test_download_then_load_matches_shared_files_and_uses_cache(
    tmp_path, mnist_http_server, mnist_t10k_checksums, t10k
):
    cache = tmp_path / "cache"
    d = ds.load_mnist_download(
        mnist_http_server.url, cache, checksums=mnist_t10k_checksums,
        use="t10k", n_train=10000, n_eval=0,
    )
    images, labels = t10k
    assert d.train.n == 10000
    np.testing.assert_array_equal(d.train.X, images.reshape(10000, 784) / 255.0)
    np.testing.assert_array_equal(d.train.labels, labels)
    assert sorted(mnist_http_server.requests) == sorted(f"/{n}" for n in (T10K_IMAGES, T10K_LABELS))
    assert sorted(p.name for p in cache.iterdir()) == sorted([T10K_IMAGES, T10K_LABELS])
    for name, digest in mnist_t10k_checksums.items():
        assert ds.sha256_file(cache / name) == digest

    out = ds.download_mnist(
        mnist_http_server.url + "/", cache, files=[T10K_IMAGES, T10K_LABELS],
        checksums=mnist_t10k_checksums,
    )
    assert out == cache
    assert len(mnist_http_server.requests) == 2  # nothing fetched the second time


def test_download_replaces_stale_cached_file(tmp_path, mnist_http_server, mnist_t10k_checksums):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / T10K_LABELS).write_bytes(b"stale")
    ds.download_mnist(
        mnist_http_server.url, cache, files=[T10K_LABELS], checksums=mnist_t10k_checksums
    )
    assert mnist_http_server.requests == [f"/{T10K_LABELS}"]
    assert ds.sha256_file(cache / T10K_LABELS) == mnist_t10k_checksums[T10K_LABELS]


def test_download_without_checksum_keeps_existing_file(tmp_path, mnist_http_server):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / T10K_LABELS).write_bytes(b"mine")
    ds.download_mnist(mnist_http_server.url, cache, files=[T10K_LABELS])
    assert mnist_http_server.requests == []
    assert (cache / T10K_LABELS).read_bytes() == b"mine"


def test_download_checksum_mismatch_leaves_no_file(tmp_path, mnist_http_server, mnist_t10k_checksums):
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(
        DatasetError,
        match=rf"{T10K_LABELS}: checksum mismatch.*expected sha256 {wrong}, "
        rf"got {mnist_t10k_checksums[T10K_LABELS]}",
    ):
        ds.download_mnist(
            mnist_http_server.url, cache, files=[T10K_LABELS], checksums={T10K_LABELS: wrong}
        )
    assert mnist_http_server.requests == [f"/{T10K_LABELS}"]
    assert list(cache.iterdir()) == []


def test_download_http_404_names_url(tmp_path, mnist_http_server):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=rf"{mnist_http_server.url}/missing\.gz.*HTTP 404"):
        ds.download_mnist(mnist_http_server.url, cache, files=["missing.gz"])
    assert list(cache.iterdir()) == []


def test_download_unreachable_url(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/mnist"
    with pytest.raises(DatasetError, match=rf"{url}/{T10K_LABELS}"):
        ds.download_mnist(url, tmp_path / "cache", files=[T10K_LABELS], timeout=5)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "127.0.0.1:8000/mnist"}, "base_url"),
        ({"files": ["../evil.gz"]}, "files"),
        ({"files": "t10k-labels-idx1-ubyte.gz"}, "files"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_download_argument_errors(tmp_path, kwargs, match):
    args = {"base_url": "http://127.0.0.1:9/", "cache_dir": tmp_path, **kwargs}
    with pytest.raises(DatasetError, match=match):
        ds.download_mnist(**args)


def test_load_mnist_download_bad_use(tmp_path):
    with pytest.raises(DatasetError, match="use: expected 'train' or 't10k', got 'test'"):
        ds.load_mnist_download("http://127.0.0.1:9", tmp_path, use="test")


def test_mnist_files_lists_the_standard_names():
    assert set(ds.MNIST_FILES) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    }
    for digest in ds.MNIST_FILES.values():
        assert digest is None or (len(digest) == 64 and int(digest, 16) >= 0)


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert ds.sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ---------------------------------------------------------------------------
# Nielsen's mnist.pkl.gz
# ---------------------------------------------------------------------------


def _synthetic_parts(rng: np.random.Generator):
    def part(n):
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)

    return part(30), part(10), part(5)


def test_load_mnist_pkl_synthetic(tmp_path):
    parts = _synthetic_parts(np.random.default_rng(0))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=2)
    d = ds.load_mnist_pkl(path, dtype=np.float32)
    assert d.describe() == {
        "name": "mnist-pkl", "n_train": 30, "n_eval": 10, "n_test": 5,
        "n_features": 784, "n_classes": 10,
    }
    for split, (X, y) in zip((d.train, d.eval, d.test), parts):
        assert split.X.dtype == np.float32 and split.Y.dtype == np.float32
        np.testing.assert_array_equal(split.X, X)
        np.testing.assert_array_equal(split.labels, y)
        np.testing.assert_array_equal(split.Y.argmax(axis=1), y)
    d64 = ds.load_mnist_pkl(path)
    assert d64.train.X.dtype == np.float64


def test_load_mnist_pkl_truncated_and_wrong_structure(tmp_path):
    parts = _synthetic_parts(np.random.default_rng(1))
    good = gzip.compress(pickle.dumps(parts, protocol=2))
    cut = tmp_path / "cut.pkl.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"cut\.pkl\.gz: truncated or corrupted"):
        ds.load_mnist_pkl(cut)
    two = tmp_path / "two.pkl"  # uncompressed, only two parts
    two.write_bytes(pickle.dumps(parts[:2]))
    with pytest.raises(DatasetError, match=r"two\.pkl: expected a pickled \(training, validation, test\)"):
        ds.load_mnist_pkl(two)
    scaled = tmp_path / "scaled.pkl"
    X, y = parts[0]
    scaled.write_bytes(pickle.dumps(((X * 255, y), parts[1], parts[2])))
    with pytest.raises(DatasetError, match=r"training part X: expected values in \[0, 1\]"):
        ds.load_mnist_pkl(scaled)
