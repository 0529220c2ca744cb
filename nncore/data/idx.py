"""The IDX file format (LeCun's MNIST format): parsing one file into an array.

Layout of an IDX file (all integers big-endian)::

    byte 0-1   0x00 0x00
    byte 2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
               0x0D float32, 0x0E float64
    byte 3     ndim (>= 1)
    4 * ndim   one uint32 per dimension
    payload    prod(dims) items of the type, big-endian, C order

MNIST labels have magic ``0x00000801`` (2049), images ``0x00000803`` (2051).
A file may be gzip-compressed; that is decided from its first bytes (see
:mod:`nncore.data.compression`), not from its name.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from nncore.data.compression import read_maybe_gzip
from nncore.data.errors import DatasetError

__all__ = ["IDX_DTYPES", "read_idx"]

#: IDX type code (third magic byte) -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Compression is detected from the gzip magic bytes ``1f 8b``, not from the
    file name. The header is two zero bytes, a type code (``0x08`` uint8,
    ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E``
    float64), the number of dimensions, then one big-endian uint32 per
    dimension; the big-endian payload must hold exactly ``prod(dims)``
    items. MNIST labels have magic ``0x00000801`` (2049), images
    ``0x00000803`` (2051).

    Returns:
        A writable array of shape ``dims`` in native byte order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DatasetError: bad magic, truncated or corrupted file (the message
            names the path and the expected vs. actual byte counts).
    """
    path = Path(path)
    data, problem = read_maybe_gzip(path)
    fix = "delete the file and fetch it again"
    if len(data) < 4:
        raise DatasetError(
            f"{path}: truncated IDX file: expected a 4-byte header, got {len(data)} byte(s)"
            + (f" ({problem})" if problem else "")
        )
    magic = data[:4]
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES or magic[3] == 0:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(
            f"{path}: not an IDX file: bad magic 0x{magic.hex().upper()} (expected two zero "
            f"bytes, a type code in {{{codes}}} and ndim >= 1, e.g. 0x00000801 for labels, "
            "0x00000803 for images)"
        )
    dtype = IDX_DTYPES[magic[2]]
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path}: truncated IDX file: expected a {header}-byte header for {ndim} "
            f"dimension(s), got {len(data)} byte(s); {fix}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    got = len(data) - header
    if got < expected or problem:
        raise DatasetError(
            f"{path}: truncated or corrupted IDX file: expected {expected} payload bytes "
            f"for dims {dims} of {dtype.newbyteorder('=')}, got {got}"
            + (f" ({problem})" if problem else "")
            + f"; {fix}"
        )
    if got > expected:
        raise DatasetError(
            f"{path}: corrupted IDX file: expected {expected} payload bytes for dims "
            f"{dims}, got {got} ({got - expected} unexpected trailing bytes)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)
