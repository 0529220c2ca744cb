"""nncore.data.mnist_idx: MNIST IDX pairs, directories, and download-then-load."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from nncore.data.download import sha256_file
from nncore.data.errors import DatasetError
from nncore.data.mnist_idx import MNIST_PAIRS, load_mnist, load_mnist_download, load_mnist_idx

T10K_IMAGES = "t10k-images-idx3-ubyte.gz"
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"


def _write_pair(tmp_path: Path, idx_bytes, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    ip, lp = tmp_path / "imgs.idx", tmp_path / "labs.idx"
    ip.write_bytes(idx_bytes(images))
    lp.write_bytes(idx_bytes(labels))
    return ip, lp


def test_mnist_pairs_are_the_standard_file_names():
    assert MNIST_PAIRS == {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }


def test_load_mnist_idx_small_pair(tmp_path, idx_bytes):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    ip, lp = _write_pair(tmp_path, idx_bytes, images, np.array([1, 9, 0], dtype=np.uint8))
    X, y = load_mnist_idx(ip, lp)
    assert X.shape == (3, 4) and X.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(3, 4))
    np.testing.assert_array_equal(y, [1, 9, 0])


def test_load_mnist_idx_label_out_of_range(tmp_path, idx_bytes):
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    ip, lp = _write_pair(tmp_path, idx_bytes, images, np.array([1, 10, 2], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"labs\.idx.*0\.\.9, got 10 at index 1"):
        load_mnist_idx(ip, lp)


def test_load_mnist_idx_count_mismatch_swapped_files_and_wrong_dtype(tmp_path, idx_bytes):
    ip, lp = _write_pair(tmp_path, idx_bytes, np.zeros((3, 2, 2), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DatasetError, match="3 images and 2 labels"):
        load_mnist_idx(ip, lp)
    with pytest.raises(DatasetError, match=r"labs\.idx: expected IDX images"):
        load_mnist_idx(lp, ip)
    wide = tmp_path / "wide.idx"
    wide.write_bytes(idx_bytes(np.zeros(2, np.int32), 0x0C))
    with pytest.raises(DatasetError, match=r"wide\.idx: expected IDX labels of uint8.*got int32"):
        load_mnist_idx(ip, wide)


def test_load_mnist_first_8000_train_last_2000_eval(mnist_t10k_dir, t10k):
    images, labels = t10k
    d = load_mnist(mnist_t10k_dir, n_train=8000, n_eval=2000)
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
    d = load_mnist(tmp_path, n_train=100, n_test=50, seed=1, shuffle=True, dtype=np.float32)
    perm = np.random.default_rng(1).permutation(10000)
    assert d.train.X.dtype == np.float32
    np.testing.assert_array_equal(d.test.labels, t10k[1][perm[100:150]])


def test_load_mnist_finds_gz_name_when_given_the_plain_one(tmp_path, idx_bytes):
    images = np.full((2, 1, 2), 255, dtype=np.uint8)
    (tmp_path / "imgs.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "labs").write_bytes(idx_bytes(np.array([3, 4], dtype=np.uint8)))
    d = load_mnist(tmp_path, n_train=2, images="imgs", labels="labs.gz")
    assert d.name == "mnist-imgs"
    np.testing.assert_array_equal(d.train.X, np.ones((2, 2)))
    assert d.train.labels.tolist() == [3, 4] and d.n_classes == 10


def test_load_mnist_missing_file_and_bad_source(tmp_path):
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz.*tried"):
        load_mnist(tmp_path, n_train=1)
    with pytest.raises(DatasetError, match=r"The 'source' parameter of load_mnist must be a directory holding "
                                           r"MNIST IDX files\. Got '.*nope' instead\."):
        load_mnist(tmp_path / "nope", n_train=1)


def test_load_mnist_download_bad_use(tmp_path):
    with pytest.raises(DatasetError, match=r"The 'use' parameter of load_mnist_download must be a str among "
                                           r"\{'train', 't10k'\}\. Got 'test' instead\."):
        load_mnist_download("http://127.0.0.1:9", tmp_path, use="test")
    assert list(tmp_path.iterdir()) == []  # refused before anything was fetched


def test_download_then_load_matches_shared_files_and_uses_cache(
    tmp_path, mnist_http_server, mnist_t10k_checksums, t10k
):
    cache = tmp_path / "cache"
    d = load_mnist_download(
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
        assert sha256_file(cache / name) == digest
    again = load_mnist_download(mnist_http_server.url, cache, checksums=mnist_t10k_checksums,
                                use="t10k", n_train=10, n_eval=0)
    assert again.train.n == 10
    assert len(mnist_http_server.requests) == 2  # served from the cache the second time
