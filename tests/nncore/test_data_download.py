"""nncore.data.download: checksummed, atomic, cached downloads (local HTTP server and file:// URLs)."""

from __future__ import annotations

import hashlib
import socket

import pytest

from nncore.data.download import MNIST_FILES, download_mnist, sha256_file
from nncore.data.errors import DatasetError

T10K_LABELS = "t10k-labels-idx1-ubyte.gz"
T10K_IMAGES = "t10k-images-idx3-ubyte.gz"


def closed_port() -> int:
    """A port on 127.0.0.1 with (almost certainly) nobody listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mnist_files_lists_the_standard_names():
    assert set(MNIST_FILES) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    }
    for digest in MNIST_FILES.values():
        assert digest is None or (len(digest) == 64 and int(digest, 16) >= 0)


def test_sha256_file_known_vector_and_multi_chunk(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")  # FIPS 180-2 test vector
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    payload = bytes(range(256)) * 9000  # 2.2 MiB: more than two 1 MiB chunks
    big.write_bytes(payload)
    assert sha256_file(big) == hashlib.sha256(payload).hexdigest()


def test_file_url_download_is_verified_and_cached(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "a.gz").write_bytes(b"payload-a")
    digest = hashlib.sha256(b"payload-a").hexdigest()
    cache = tmp_path / "cache"
    out = download_mnist(src.as_uri(), cache, files=["a.gz"], checksums={"a.gz": digest.upper()})
    assert out == cache and (cache / "a.gz").read_bytes() == b"payload-a"
    assert [p.name for p in cache.iterdir()] == ["a.gz"]  # no temporary file left behind
    (src / "a.gz").write_bytes(b"changed on the mirror")
    download_mnist(src.as_uri(), cache, files=["a.gz"], checksums={"a.gz": digest})
    assert (cache / "a.gz").read_bytes() == b"payload-a"  # verified cache hit: not fetched again


def test_download_then_cache_hit(tmp_path, mnist_http_server, mnist_t10k_checksums):
    cache = tmp_path / "cache"
    download_mnist(mnist_http_server.url, cache, files=[T10K_IMAGES, T10K_LABELS],
                   checksums=mnist_t10k_checksums)
    for name in (T10K_IMAGES, T10K_LABELS):
        assert sha256_file(cache / name) == mnist_t10k_checksums[name]
    out = download_mnist(mnist_http_server.url + "/", cache, files=[T10K_IMAGES, T10K_LABELS],
                         checksums=mnist_t10k_checksums)
    assert out == cache
    assert sorted(mnist_http_server.requests) == sorted([f"/{T10K_IMAGES}", f"/{T10K_LABELS}"])


def test_download_replaces_stale_cached_file(tmp_path, mnist_http_server, mnist_t10k_checksums):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / T10K_LABELS).write_bytes(b"stale")
    download_mnist(mnist_http_server.url, cache, files=[T10K_LABELS], checksums=mnist_t10k_checksums)
    assert mnist_http_server.requests == [f"/{T10K_LABELS}"]
    assert sha256_file(cache / T10K_LABELS) == mnist_t10k_checksums[T10K_LABELS]


def test_download_without_checksum_keeps_existing_file(tmp_path, mnist_http_server):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / T10K_LABELS).write_bytes(b"mine")
    download_mnist(mnist_http_server.url, cache, files=[T10K_LABELS])
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
        download_mnist(mnist_http_server.url, cache, files=[T10K_LABELS], checksums={T10K_LABELS: wrong})
    assert mnist_http_server.requests == [f"/{T10K_LABELS}"]
    assert list(cache.iterdir()) == []


def test_checksum_mismatch_keeps_the_file_already_cached(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "a.gz").write_bytes(b"new")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.gz").write_bytes(b"old")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_mnist(src.as_uri(), cache, files=["a.gz"], checksums={"a.gz": "1" * 64})
    assert (cache / "a.gz").read_bytes() == b"old"
    assert [p.name for p in cache.iterdir()] == ["a.gz"]


def test_download_http_404_names_url(tmp_path, mnist_http_server):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=rf"{mnist_http_server.url}/missing\.gz.*HTTP 404"):
        download_mnist(mnist_http_server.url, cache, files=["missing.gz"])
    assert list(cache.iterdir()) == []


def test_download_unreachable_url(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/mnist"
    with pytest.raises(DatasetError, match=rf"{url}/{T10K_LABELS}"):
        download_mnist(url, tmp_path / "cache", files=[T10K_LABELS], timeout=5)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "127.0.0.1:8000/mnist"},
         r"The 'base_url' parameter of download_mnist must be an http://, https:// or file:// URL\. "
         r"Got '127\.0\.0\.1:8000/mnist' instead\."),
        ({"base_url": "ftp://example.org/"}, "'base_url' parameter"),
        ({"files": ["../evil.gz"]}, r"'files' parameter of download_mnist must be a sequence of plain file names"),
        ({"files": ["ok.gz", "a/b.gz"]}, r"'files' parameter .* Got 'a/b\.gz'"),
        ({"files": ["."]}, "'files' parameter"),
        ({"files": "t10k-labels-idx1-ubyte.gz"}, "'files' parameter .* not a single string"),
        ({"timeout": 0}, r"The 'timeout' parameter of download_mnist must be a float in the range \(0\.0, inf\)"),
        ({"timeout": True}, "'timeout' parameter"),
    ],
)
def test_download_argument_errors(tmp_path, kwargs, match):
    cache = tmp_path / "cache"
    args = {"base_url": "http://127.0.0.1:9/", "cache_dir": cache, **kwargs}
    with pytest.raises(DatasetError, match=match):
        download_mnist(**args)
    assert not cache.exists()  # every argument is checked before the cache is touched
