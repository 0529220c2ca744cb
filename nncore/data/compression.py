"""gzip detection by content and complete-stream reading, for the file loaders.

A file is gzip-compressed when it starts with the two magic bytes ``1f 8b``
(RFC 1952), whatever its name; :func:`read_maybe_gzip` returns its
decompressed bytes (all members of a multi-member file) and says whether the
stream was cut short, so a loader can report a truncated download instead of
parsing a prefix.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from nncore.data.errors import DatasetError

__all__ = ["GZIP_MAGIC", "is_gzip", "read_maybe_gzip"]

#: The first two bytes of every gzip member.
GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | Path) -> bool:
    """Whether the file at ``path`` starts with :data:`GZIP_MAGIC`."""
    with open(path, "rb") as raw:
        return raw.read(2) == GZIP_MAGIC


def read_maybe_gzip(path: str | Path) -> tuple[bytes, str | None]:
    """Bytes of ``path``, gunzipped when it starts with the gzip magic.

    Returns ``(data, problem)``: ``problem`` is ``None`` for a complete file,
    otherwise a description of why the gzip stream is incomplete (``data`` is
    then what could be decompressed). Zero padding after the last member is
    allowed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DatasetError: a corrupted deflate stream, or non-zero bytes after the
            gzip data (the message names the path).
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw, None
    out: list[bytes] = []
    rest = raw
    while rest.startswith(GZIP_MAGIC):  # a gzip file may hold several members
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(rest))
        except zlib.error as exc:
            raise DatasetError(
                f"{path}: corrupted gzip data ({exc}); delete the file and fetch it again"
            ) from exc
        if not d.eof:
            out.append(d.flush())
            return b"".join(out), "the gzip stream ends before its end-of-stream marker"
        rest = d.unused_data
    if rest.strip(b"\x00"):
        raise DatasetError(
            f"{path}: corrupted gzip file: {len(rest)} trailing byte(s) after the gzip data"
        )
    return b"".join(out), None
