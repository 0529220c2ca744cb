"""nncore.data.compression: gzip detected by content, complete / truncated / corrupted streams."""

from __future__ import annotations

import gzip

import pytest

from nncore.data.compression import GZIP_MAGIC, is_gzip, read_maybe_gzip
from nncore.data.errors import DatasetError

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes: more than one deflate block of literal-ish data


def test_magic_is_the_rfc1952_id_bytes():
    assert GZIP_MAGIC == bytes([0x1F, 0x8B])
    assert gzip.compress(b"x").startswith(GZIP_MAGIC)


def test_is_gzip_looks_at_content_not_name(tmp_path):
    plain, packed = tmp_path / "plain.gz", tmp_path / "packed.bin"
    plain.write_bytes(PAYLOAD)
    packed.write_bytes(gzip.compress(PAYLOAD))
    assert not is_gzip(plain)
    assert is_gzip(packed)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert not is_gzip(empty)


def test_plain_file_is_returned_unchanged(tmp_path):
    p = tmp_path / "raw.gz"  # misleading suffix
    p.write_bytes(PAYLOAD)
    assert read_maybe_gzip(p) == (PAYLOAD, None)


def test_gzip_file_is_decompressed_whatever_its_name(tmp_path):
    p = tmp_path / "data.idx"
    p.write_bytes(gzip.compress(PAYLOAD))
    assert read_maybe_gzip(p) == (PAYLOAD, None)


def test_every_member_of_a_multi_member_file_is_read(tmp_path):
    p = tmp_path / "two.gz"
    p.write_bytes(gzip.compress(b"first,") + gzip.compress(b"second"))
    assert read_maybe_gzip(p) == (b"first,second", None)


def test_zero_padding_after_the_stream_is_allowed(tmp_path):
    p = tmp_path / "padded.gz"
    p.write_bytes(gzip.compress(PAYLOAD) + b"\x00" * 7)
    assert read_maybe_gzip(p) == (PAYLOAD, None)


def test_trailing_garbage_is_an_error_naming_the_file_and_byte_count(tmp_path):
    p = tmp_path / "garbage.gz"
    p.write_bytes(gzip.compress(PAYLOAD) + b"\x00junk")
    with pytest.raises(DatasetError, match=r"garbage\.gz: corrupted gzip file: 5 trailing byte"):
        read_maybe_gzip(p)


def test_truncated_stream_returns_the_prefix_and_says_why(tmp_path):
    packed = gzip.compress(PAYLOAD)
    p = tmp_path / "cut.gz"
    p.write_bytes(packed[: len(packed) // 2])
    data, problem = read_maybe_gzip(p)
    assert problem is not None and "ends before its end-of-stream marker" in problem
    assert len(data) < len(PAYLOAD) and PAYLOAD.startswith(data)
    no_trailer = tmp_path / "no-trailer.gz"  # deflate data complete, CRC32/ISIZE trailer missing
    no_trailer.write_bytes(packed[:-8])
    assert read_maybe_gzip(no_trailer)[1] is not None


def test_corrupted_deflate_data_is_an_error_naming_the_file(tmp_path):
    packed = bytearray(gzip.compress(PAYLOAD))
    packed[len(packed) // 2] ^= 0xFF
    p = tmp_path / "flipped.gz"
    p.write_bytes(bytes(packed))
    with pytest.raises(DatasetError, match=r"flipped\.gz: corrupted gzip"):
        read_maybe_gzip(p)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_maybe_gzip(tmp_path / "nope.gz")
