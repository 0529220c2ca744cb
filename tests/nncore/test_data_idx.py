"""nncore.data.idx: the IDX format, against hand-built files and the real MNIST t10k files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from nncore.data.errors import DatasetError
from nncore.data.idx import IDX_DTYPES, read_idx

T10K_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"


def test_read_idx_hand_written_file(tmp_path):
    # header bytes written out by hand: magic 0x00000802 (uint8, 2 dims), dims 2 x 3, payload 0..5
    path = tmp_path / "hand.idx"
    path.write_bytes(bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes([0, 1, 2, 3, 4, 5]))
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == (2, 3)
    assert got.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_read_idx_hand_written_big_endian_int16(tmp_path):
    # 0x0B int16, 1 dim of 2: 0x0102 = 258 and 0xFFFE = -2
    path = tmp_path / "i16.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    got = read_idx(path)
    assert got.tolist() == [258, -2] and got.dtype == np.int16 and got.dtype.isnative


def test_type_codes_match_the_specification():
    spec = {0x08: "u1", 0x09: "i1", 0x0B: "i2", 0x0C: "i4", 0x0D: "f4", 0x0E: "f8"}
    assert {code: dt.str[1:] for code, dt in IDX_DTYPES.items()} == spec
    assert all(dt.byteorder in (">", "|") for dt in IDX_DTYPES.values())  # big-endian (1-byte: no order)


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
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), t10k[1])
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.idx"), t10k[1])


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
def test_read_idx_big_endian_types(tmp_path, idx_bytes, code, values):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(values, code))
    got = read_idx(path)
    assert got.dtype == values.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_read_idx_truncated_gzip(tmp_path, mnist_t10k_dir):
    data = (mnist_t10k_dir / T10K_LABELS).read_bytes()
    cut = tmp_path / "cut-labels.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut-labels\.gz.*truncated.*expected 10000 payload bytes.*got \d+"):
        read_idx(cut)
    no_trailer = tmp_path / "no-trailer.gz"  # payload complete, CRC/size trailer missing
    no_trailer.write_bytes(data[:-4])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(no_trailer)


def test_read_idx_truncated_raw_payload(tmp_path, idx_bytes):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8))[:-2])
    with pytest.raises(DatasetError, match=r"short\.idx.*truncated.*expected 5 payload bytes.*got 3"):
        read_idx(path)
    header_only = tmp_path / "header.idx"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetError, match=r"truncated.*expected a 16-byte header"):
        read_idx(header_only)
    tiny = tmp_path / "tiny.idx"
    tiny.write_bytes(bytes([0, 0]))
    with pytest.raises(DatasetError, match=r"expected a 4-byte header, got 2 byte"):
        read_idx(tiny)


def test_read_idx_corrupted_gzip_and_trailing_bytes(tmp_path, mnist_t10k_dir, idx_bytes):
    data = bytearray((mnist_t10k_dir / T10K_LABELS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"flipped\.gz.*corrupted"):
        read_idx(bad)
    extra = tmp_path / "extra.idx"
    extra.write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)) + b"\x07")
    with pytest.raises(DatasetError, match="expected 4 payload bytes.*got 5"):
        read_idx(extra)


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
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")
