"""Checksummed download of data files into a cache directory.

:func:`download_mnist` fetches named files from a mirror (``http(s)://`` or
``file://``, through ``urllib``) into a cache directory. A file is streamed
into a temporary file beside its destination while its SHA-256 is computed;
when a digest is known the download is kept only if it matches, and it is
moved into place with ``os.replace`` -- so the cache never holds a partial or
unverified file under the final name, and a cached file whose digest matches
(or whose digest is unknown) is never fetched again. Nothing happens at
import time.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from nncore.checks import check_real, invalid
from nncore.data.errors import DatasetError

__all__ = ["MNIST_FILES", "download_mnist", "sha256_file"]

#: The four standard MNIST file names mapped to the SHA-256 of the ``.gz``
#: file as distributed by the canonical mirror. The digests are not recorded
#: here (``None``: unknown, so a download of that file is not verified unless
#: the caller passes ``checksums=``); they are deliberately not guessed.
MNIST_FILES: dict[str, str | None] = {
    "train-images-idx3-ubyte.gz": None,
    "train-labels-idx1-ubyte.gz": None,
    "t10k-images-idx3-ubyte.gz": None,
    "t10k-labels-idx1-ubyte.gz": None,
}

#: Bytes read per chunk when hashing or downloading.
CHUNK = 1 << 20

_SCHEMES = ("http", "https", "file")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 digest of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_file_name(name: object) -> str:
    """``name`` if it is a plain file name: a non-empty string without separators, NUL, ``.``/``..``."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name):
        raise invalid("files", "download_mnist",
                      "a sequence of plain file names (no '/', '\\', NUL, '.' or '..')", name,
                      error=DatasetError)
    return name


def download_mnist(
    base_url: str,
    cache_dir: str | Path,
    *,
    files: Sequence[str] | None = None,
    checksums: Mapping[str, str | None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download MNIST files from ``base_url`` into ``cache_dir`` (idempotent).

    For each name in ``files`` (default: the four names of
    :data:`MNIST_FILES`): a file already in ``cache_dir`` is kept when its
    SHA-256 matches the known checksum, or when no checksum is known;
    otherwise ``base_url.rstrip('/') + '/' + name`` is streamed into a
    temporary file in ``cache_dir``, its SHA-256 is verified (when known) and
    it is moved into place with ``os.replace`` -- so the cache never holds a
    partial or unverified file under the final name.

    ``checksums`` maps names to hex SHA-256 digests (``None``: unknown); it
    overrides :data:`MNIST_FILES` name by name.

    Returns:
        ``Path(cache_dir)``.

    Raises:
        DatasetError: checksum mismatch (naming the file, expected and actual
            digests; the downloaded file is removed and a file already under
            that name is left untouched), HTTP error, unreachable server or
            timeout (naming the URL), bad ``base_url`` or file name.
    """
    owner = "download_mnist"
    if not isinstance(base_url, str) or urllib.parse.urlsplit(base_url).scheme.lower() not in _SCHEMES:
        raise invalid("base_url", owner, "an http://, https:// or file:// URL", base_url, error=DatasetError)
    timeout = check_real(timeout, "timeout", owner, low=0.0, low_open=True, error=DatasetError)
    if isinstance(files, (str, bytes)):
        raise invalid("files", owner, "a sequence of file names, not a single string", files,
                      error=DatasetError)
    names = [_check_file_name(n) for n in (MNIST_FILES if files is None else files)]
    known: dict[str, str | None] = {**MNIST_FILES, **(dict(checksums) if checksums else {})}
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    for name in names:
        expected = known.get(name)
        expected = expected.lower() if expected else None
        dest = cache / name
        if dest.is_file() and (expected is None or sha256_file(dest) == expected):
            continue
        url = base_url.rstrip("/") + "/" + urllib.parse.quote(name)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as resp:
                        for chunk in iter(lambda: resp.read(CHUNK), b""):
                            h.update(chunk)
                            out.write(chunk)
                except urllib.error.HTTPError as exc:
                    raise DatasetError(
                        f"download of {url} failed: HTTP {exc.code} {exc.reason}"
                    ) from exc
                except urllib.error.URLError as exc:
                    raise DatasetError(f"download of {url} failed: {exc.reason}") from exc
                except (OSError, http.client.HTTPException) as exc:
                    # timeouts, resets, incomplete reads (Content-Length not met)
                    raise DatasetError(
                        f"download of {url} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                out.flush()
                os.fsync(out.fileno())
            actual = h.hexdigest()
            if expected is not None and actual != expected:
                raise DatasetError(
                    f"{name}: checksum mismatch for {url}: expected sha256 {expected}, "
                    f"got {actual}; the download was discarded"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return cache


