"""Fixtures shared by the nncore data tests (the repository-wide ones are in tests/conftest.py)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

T10K_IMAGES = "t10k-images-idx3-ubyte.gz"
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"

#: IDX type code -> big-endian dtype, written out here from the format's specification.
_IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Serialize ``arr`` as an IDX file (big-endian) with type ``code``."""
    arr = np.asarray(arr)
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(_IDX_CODES[code]).tobytes()


@pytest.fixture(scope="session")
def idx_bytes() -> Callable[..., bytes]:
    """``idx_bytes(arr, code=0x08)``: the bytes of an IDX file holding ``arr``."""
    return _idx_bytes


@pytest.fixture(scope="session")
def t10k(mnist_t10k_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The t10k images ``(10000, 28, 28)`` and labels ``(10000,)``, read once (skipped without the files)."""
    from nncore.data.idx import read_idx

    return read_idx(mnist_t10k_dir / T10K_IMAGES), read_idx(mnist_t10k_dir / T10K_LABELS)
