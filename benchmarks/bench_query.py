"""Time reading per-epoch histories back: ``sweeps.query.history`` by method.

Builds (in a temporary directory, or ``--dir``) a local SQLite MLflow store in the
tracker's layout: one study experiment, a parent run and ``--runs`` trial runs
(default 200) x ``--epochs`` epochs (default 30) x every metric of a [784, 30, 10]
epoch record (``nncore.records.metric_names(2)``, 31 keys), one ``log_batch`` per
epoch. Then times, alternating inside one process:

* ``sql``  -- :mod:`sweeps.query.database`: read-only queries on the store's database
  built from MLflow's ORM tables and run through SQLAlchemy, after the check of the
  schema revision (the trial runs, then their metrics),
* ``api``  -- :mod:`sweeps.query.client`: ``MlflowClient.get_metric_history`` per run
  per key (same store),
* ``http`` -- with ``--server``, :mod:`sweeps.query.rest`:
  ``/ajax-api/2.0/mlflow/metrics/get-history-bulk`` of a local ``mlflow server``
  started on the same database, through MLflow's REST helpers (100 runs per
  request, one request per key and chunk of runs).

and prints medians, the ratios to ``sql`` and whether ``sql`` meets the targets
(under 2 s, at least 20x faster than ``api``). Every method's frame is checked
equal to the ``sql`` one.

    python benchmarks/bench_query.py [--runs 200] [--epochs 30] [--repeats 5]
                                     [--api-repeats 3] [--server] [--dir DIR]

With ``--dir DIR`` an existing store there (same runs/epochs) is reused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from nncore.records import metric_names
from sweeps import query

STUDY = "bench"


def build_store(uri: str, artifacts: Path, runs: int, epochs: int, keys: list[str]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(query.experiment_for(STUDY)) is not None:
        print(f"store: reusing {uri}")
        return
    exp = client.create_experiment(query.experiment_for(STUDY), artifact_location=str(artifacts))
    parent = client.create_run(exp, run_name=STUDY, tags={"sweeps.role": "study", "sweeps.study": STUDY})
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    ts = int(time.time() * 1000)
    for n in range(runs):
        run = client.create_run(exp, run_name=f"trial-{n:04d}", tags={
            "mlflow.parentRunId": parent.info.run_id, "sweeps.role": "trial",
            "sweeps.study": STUDY, "sweeps.trial_number": str(n)})
        rid = run.info.run_id
        client.log_batch(rid, params=[Param("eta", str(rng.uniform(0.01, 1))),
                                      Param("lmbda", str(rng.uniform(0, 10))),
                                      Param("batch_size", "10")])
        for epoch in range(1, epochs + 1):
            vals = rng.normal(size=len(keys))
            client.log_batch(rid, metrics=[Metric(k, float(v), ts + epoch, epoch)
                                           for k, v in zip(keys, vals)])
        client.set_terminated(rid, "FINISHED")
        if (n + 1) % 20 == 0 or n + 1 == runs:
            el = time.perf_counter() - t0
            print(f"  setup: {n + 1}/{runs} runs logged ({el:.0f} s, "
                  f"{el / ((n + 1) * epochs) * 1e3:.1f} ms per log_batch)", flush=True)


def start_server(uri: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("mlflow", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                       os.environ.get("PATH", "")]))
    if exe is None:
        raise SystemExit("--server: the `mlflow` executable is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", uri, "--artifacts-destination", str(workdir / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise SystemExit("mlflow server did not start:\n"
                             + (workdir / "server.log").read_text(errors="replace")[-2000:])
        time.sleep(0.25)


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5, help="timings of sql / http")
    ap.add_argument("--api-repeats", type=int, default=3, help="timings of the slow api path")
    ap.add_argument("--server", action="store_true", help="also time method='http' on a local server")
    ap.add_argument("--dir", type=Path, default=None, help="keep (or reuse) the store here")
    args = ap.parse_args()

    keys = metric_names(2)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench_query_"))
    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    print(f"store: {uri}: {args.runs} runs x {args.epochs} epochs x {len(keys)} keys "
          f"= {args.runs * args.epochs * len(keys):,} values")
    t0 = time.perf_counter()
    build_store(uri, workdir / "artifacts", args.runs, args.epochs, keys)
    print(f"setup: {time.perf_counter() - t0:.1f} s", flush=True)

    proc = url = None
    if args.server:
        t0 = time.perf_counter()
        proc, url = start_server(uri, workdir)
        print(f"server: {url} up in {time.perf_counter() - t0:.1f} s", flush=True)

    methods: list[tuple[str, str, int]] = [("sql", uri, args.repeats)]
    if url:
        methods.append(("http", url, args.repeats))
    methods.append(("api", uri, args.api_repeats))
    times: dict[str, list[float]] = {m: [] for m, _, _ in methods}
    reference: pd.DataFrame | None = None
    try:
        for rep in range(max(r for _, _, r in methods)):
            for method, target, repeats in methods:
                if rep >= repeats:
                    continue
                t0 = time.perf_counter()
                df = query.history(STUDY, tracking_uri=target, method=method)
                times[method].append(time.perf_counter() - t0)
                if reference is None:
                    reference = df
                    expected = args.runs * args.epochs * len(keys)
                    if len(df) != expected:
                        raise SystemExit(f"{method}: {len(df)} rows, expected {expected}")
                elif rep == 0:
                    pd.testing.assert_frame_equal(df, reference)
                print(f"  {method:4s} #{rep + 1}: {times[method][-1]:.3f} s", flush=True)
    finally:
        if proc is not None:
            stop_server(proc)
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    sql = statistics.median(times["sql"])
    rows = args.runs * args.epochs * len(keys)
    print()
    print(f"history() of {args.runs} runs x {args.epochs} epochs x {len(keys)} keys ({rows:,} values),"
          " local SQLite store; medians")
    print(f"| method | median | runs | x sql | values/s |")
    print(f"|---|---|---|---|---|")
    for method, _, _ in methods:
        med = statistics.median(times[method])
        print(f"| {method} | {med:.3f} s | {len(times[method])} | {med / sql:.1f}x | {rows / med:,.0f} |")
    print(f"ratio api/sql: {statistics.median(times['api']) / sql:.1f}x")
    if url:
        print(f"ratio api/http: {statistics.median(times['api']) / statistics.median(times['http']):.1f}x")
    print(f"sql < 2 s: {'yes' if sql < 2 else 'NO'} ({sql:.3f} s)")
    api = statistics.median(times["api"])
    print(f"sql >= 20x faster than api: {'yes' if api / sql >= 20 else 'NO'} ({api / sql:.1f}x)")


if __name__ == "__main__":
    main()
