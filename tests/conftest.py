"""Shared pytest fixtures for the nncore and sweeps test suites."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Make `import nncore` / `import sweeps` work when pytest is run from the
# repository without the project being installed.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# ... and `from servicekit import ...` (tests/servicekit.py) from any test module, and the shared
# helpers of a sibling module (`from test_reading import ...`): pytest imports test modules with
# --import-mode=importlib (pyproject.toml), so that tests/nncore and tests/sweeps can each have a
# test module per source module under the same basename (test_population.py), and it puts no test
# directory on sys.path itself.
for _path in (REPO_ROOT / "tests", REPO_ROOT / "tests" / "sweeps", REPO_ROOT / "tests" / "sweeps" / "query"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``services`` test (PostgreSQL, ``mlflow server``, loopback proxies) is ``slow`` too, wherever it
    is marked, so ``-m "not slow"`` never starts a service."""
    for item in items:
        if item.get_closest_marker("services") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


MNIST_T10K_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
#: SHA-256 of the shared offline copies of the MNIST test files.
MNIST_T10K_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    "t10k-labels-idx1-ubyte.gz": "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
}


@pytest.fixture(scope="session")
def mnist_t10k_dir() -> Path:
    """Directory holding the MNIST t10k IDX files (``$NNCORE_MNIST_T10K``).

    Defaults to ``<repo>/../shared/data/mnist-t10k``; the test is skipped
    when the files are not there.
    """
    default = REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"
    directory = Path(os.environ.get("NNCORE_MNIST_T10K", default))
    missing = [name for name in MNIST_T10K_FILES if not (directory / name).is_file()]
    if missing:
        pytest.skip(
            f"MNIST t10k files {missing} not found in {directory} "
            "(set NNCORE_MNIST_T10K to a directory holding them)"
        )
    return directory


@pytest.fixture(scope="session")
def mnist_t10k_checksums() -> dict[str, str]:
    """SHA-256 digests of the shared t10k ``.gz`` files, by file name."""
    return dict(MNIST_T10K_SHA256)


@dataclass
class LocalHTTPServer:
    """A running local HTTP server: its base URL and the paths it was asked for."""

    url: str
    requests: list[str] = field(default_factory=list)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that records each request path on its server."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output quiet


@pytest.fixture
def mnist_http_server(mnist_t10k_dir: Path) -> Iterator[LocalHTTPServer]:
    """Serve ``mnist_t10k_dir`` on ``http://127.0.0.1:<free port>`` for one test.

    ``server.requests`` lists the request paths in arrival order, so a test
    can assert what was (not) downloaded.
    """
    handler = functools.partial(_CountingHandler, directory=str(mnist_t10k_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    info = LocalHTTPServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.requests = info.requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield info
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class Services:
    """Start real servers (``mlflow server``, ``sweeps ui``) on loopback for a test, and stop them."""

    @staticmethod
    def free_port() -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @staticmethod
    @contextlib.contextmanager
    def serve(cmd: list[str], port: int, log_path: Path, *, cwd: Path | None = None,
              env: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[tuple[str, "subprocess.Popen"]]:
        """Run ``cmd`` in its own process group until ``GET /health`` answers 200; kill the group on exit."""
        import signal
        import time
        import urllib.request

        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                            if resp.status == 200:
                                break
                    except OSError:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"{' '.join(map(str, cmd[:2]))} did not answer {url}/health "
                                    f"(exit {proc.poll()}):\n{log_path.read_text(errors='replace')[-3000:]}")
                    time.sleep(0.25)
                yield url, proc
            finally:
                for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue


@pytest.fixture(scope="session")
def services() -> Services:
    return Services()
