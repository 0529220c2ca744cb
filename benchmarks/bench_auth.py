"""What MLflow's basic-auth app costs a sweep: no auth vs basic-auth without and with its login cache (issue #16).

    python benchmarks/bench_auth.py [--rounds 3] [--trials 4] [--epochs 3] [--calls 30] [--out FILE] [--quick]

Three ``mlflow server --workers 1`` on loopback (servicekit's :class:`MlflowServer`), each with its own SQLite
backend store and artifacts in a fresh directory (in RAM when ``/dev/shm`` is there):

* ``none``: no authentication;
* ``auth, no cache``: ``--app-name basic-auth`` with ``auth_cache_ttl_seconds = 0``: every request checks its
  password against MLflow's slow hash (werkzeug's scrypt);
* ``auth, cache 60 s``: the same with ``auth_cache_ttl_seconds = 60``, as deploy/mlflow/basic_auth.ini sets it.

On each basic-auth server the admin creates the workers' own (non-admin) user, and everything measured runs
with that user's credentials. Measured:

1. **sweep**: ``sweeps run CONFIG -q --workers W`` as a subprocess (a digits sweep of ``--trials`` trials x
   ``--epochs`` epochs, random sampler, no pruner, the default artifacts), each in a fresh directory (its own
   SQLite study file) under a fresh study name; the three servers alternate within each of ``--rounds`` rounds
   (the order rotates from round to round), after one unmeasured warm-up sweep on ``none``. Wall time from the
   launch of the command to its exit; the requests the server answered meanwhile are counted from its access
   log (by status code), so the extra time per request can be read off. A sweep that fails is reported (kept in
   the JSON's ``failures``) and run once more; a second failure ends the benchmark.
2. **log_batch**: ``MlflowClient.log_batch`` of ``--metrics`` metrics to an existing run of each server,
   ``--calls`` calls per server, interleaved (none, no cache, cache, none, ...) after one warm-up call each.
3. **memory**: each server's peak resident memory, the sum of ``VmHWM`` (each process's own peak) over the
   processes of its group, read from ``/proc`` at the end (an upper bound of the group's peak at any one time).

Printed as a table (medians; ratio to ``none``); ``--out`` also writes the raw timings as JSON. ``--quick``: one
round, 10 calls (a smoke run). Everything started runs in its own process group and is stopped by it (on
failure too: servicekit's context managers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the repository first: tests/sweeps is no package

from servicekit import BasicAuth, MlflowServer, group_members, ram_directory

WORKER = "sweeps-worker"
#: label -> the server's auth settings (None: no auth app)
SERVERS: dict[str, int | None] = {"none": None, "auth, no cache": 0, "auth, cache 60 s": 60}
CLIENT_ENV = ("MLFLOW_", "SWEEPS_")
#: an access line of the server's log (uvicorn): method, path, status
ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


def sweep_config(name: str, trials: int, epochs: int, workers: int) -> dict[str, Any]:
    return {
        "name": name, "seed": 0,
        "data": {"source": "digits", "n_train": 300, "n_eval": 100},
        "network": {"hidden": [10]},
        "training": {"epochs": epochs, "eta": 0.5, "batch_size": 10, "lmbda": 1.0},
        "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True}},
        "study": {"n_trials": trials, "workers": workers, "sampler": {"name": "random"}, "pruner": {"name": "none"}},
    }


@contextlib.contextmanager
def client_environment(env: dict[str, str]) -> Iterator[None]:
    """This process' MLFLOW_TRACKING_* variables replaced by ``env`` for the block (MLflow's client reads
    MLFLOW_TRACKING_USERNAME / _PASSWORD at each request)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_TRACKING_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("MLFLOW_TRACKING_")]:
            del os.environ[key]
        os.environ.update(saved)


def worker_env(server: MlflowServer, password: str) -> dict[str, str]:
    """The workers' client environment for ``server``: its URI and, with auth, the workers' user."""
    return server.client_env(WORKER, password) if server.auth is not None else server.client_env()


def add_worker_user(server: MlflowServer, password: str) -> None:
    """As the admin, create the workers' own (non-admin) user, as deploy/mlflow/add_user.py does."""
    import mlflow.server

    with client_environment(server.client_env()):
        users = mlflow.server.get_app_client("basic-auth", tracking_uri=server.url)
        users.create_user(WORKER, password)
        assert users.get_user(WORKER).is_admin is False


def requests_since(server: MlflowServer, offset: int) -> dict[str, int]:
    """Requests in the server's access log after byte ``offset``, counted by status code."""
    with open(server.log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    counts: dict[str, int] = {}
    for match in ACCESS.finditer(text):
        counts[match.group(3)] = counts.get(match.group(3), 0) + 1
    return counts


def time_sweep(server: MlflowServer, password: str, work: Path, name: str, trials: int, epochs: int,
               workers: int, timeout: float) -> tuple[float, dict[str, int]]:
    """Wall time of one ``sweeps run CONFIG -q --workers W`` in a fresh directory ``work``, and the requests
    the server logged meanwhile (by status code); raises if the sweep fails."""
    import yaml

    work.mkdir(parents=True)
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(sweep_config(name, trials, epochs, workers)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_ENV + ("PG",))}
    env.update(MPLBACKEND="Agg", PYTHONUNBUFFERED="1", **worker_env(server, password))
    offset = server.log_path.stat().st_size
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(config), "-q", "--workers", str(workers)],
                          check=False, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sweeps run against {server.url} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    time.sleep(0.5)  # the last access lines reach the log
    return elapsed, requests_since(server, offset)


def log_batch_latencies(servers: dict[str, MlflowServer], password: str, calls: int, n_metrics: int
                        ) -> dict[str, list[float]]:
    """Seconds per ``log_batch`` of ``n_metrics`` metrics to one run per server, the servers interleaved."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    clients: dict[str, tuple[MlflowClient, str]] = {}
    for label, server in servers.items():
        with client_environment(worker_env(server, password)):
            client = MlflowClient(tracking_uri=server.url)
            exp_id = client.create_experiment(f"bench-auth-log-batch-{secrets.token_hex(4)}")
            clients[label] = (client, client.create_run(exp_id).info.run_id)
    out: dict[str, list[float]] = {label: [] for label in servers}
    for step in range(calls + 1):  # step 0: warm-up (connection, the cache's first check), not kept
        for label, server in servers.items():
            client, run_id = clients[label]
            now = int(time.time() * 1000)
            metrics = [Metric(f"m{i:02d}", 0.5 + i / 1000 + step / 10, now, step) for i in range(n_metrics)]
            with client_environment(worker_env(server, password)):
                t0 = time.perf_counter()
                client.log_batch(run_id, metrics=metrics)
                elapsed = time.perf_counter() - t0
            if step:
                out[label].append(elapsed)
    for label, server in servers.items():
        client, run_id = clients[label]
        with client_environment(worker_env(server, password)):
            client.set_terminated(run_id)
    return out


def password_check_seconds(repeats: int = 5) -> float:
    """Median seconds of one werkzeug ``check_password_hash`` (MLflow's hash, default method) in this process."""
    from werkzeug.security import check_password_hash, generate_password_hash

    hashed = generate_password_hash(secrets.token_hex(12))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        check_password_hash(hashed, "not-the-password")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mib(server: MlflowServer) -> float:
    """Sum over the server's process group of each process' peak resident memory (VmHWM), in MiB."""
    total_kib = 0
    for pid in group_members(server.pid) if server.pid is not None else []:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="sweeps per server, alternating (default 3; --quick 1)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=None, help="log_batch calls per server (default 30; --quick 10)")
    parser.add_argument("--metrics", type=int, default=60, help="metrics per log_batch call")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one sweep may take")
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="one round, 10 log_batch calls: a smoke run")
    args = parser.parse_args()
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    calls = args.calls if args.calls is not None else (10 if args.quick else 30)
    password = secrets.token_hex(12)

    print(f"{rounds} round(s) of: digits sweep, {args.trials} trials x {args.epochs} epochs, {args.workers} workers, "
          f"per server; then {calls} log_batch calls of {args.metrics} metrics per server; {os.cpu_count()} cores",
          flush=True)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run ..." lines from set_terminated
    sweeps: dict[str, list[float]] = {label: [] for label in SERVERS}
    requests: dict[str, list[dict[str, int]]] = {label: [] for label in SERVERS}
    failures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as fallback, \
            ram_directory(Path(fallback), prefix="bench-auth-") as root, contextlib.ExitStack() as stack:
        servers: dict[str, MlflowServer] = {}
        for i, (label, ttl) in enumerate(SERVERS.items()):
            base = root / f"server{i}"
            base.mkdir()
            auth = BasicAuth(auth_cache_ttl_seconds=ttl) if ttl is not None else None
            servers[label] = stack.enter_context(
                MlflowServer(f"sqlite:///{base / 'mlflow.db'}", base / "artifacts", base / "mlflow.log", auth=auth))
            if auth is not None:
                add_worker_user(servers[label], password)
        starts = {label: s.start_times[-1] for label, s in servers.items()}
        print("servers up in " + ", ".join(f"{label} {t:.1f} s" for label, t in starts.items()), flush=True)

        labels = list(SERVERS)
        name = f"auth-warmup-{secrets.token_hex(3)}"  # not measured: the first sweep of a run pays cold caches
        try:
            elapsed, _ = time_sweep(servers["none"], password, root / "sweeps" / name, name, args.trials,
                                    args.epochs, args.workers, args.timeout)
            print(f"  warm-up sweep (none, not counted): {elapsed:.2f} s", flush=True)
        except RuntimeError as err:
            last = [line for line in str(err).splitlines() if line.strip()][-1]
            failures.append({"round": 0, "server": "none (warm-up)", "error": last})
            print(f"  warm-up sweep (none, not counted): FAILED ({last})", flush=True)
        for r in range(rounds):
            order = labels[r % len(labels):] + labels[:r % len(labels)]  # rotate: no configuration always first
            for label in order:
                name = f"auth{labels.index(label)}-r{r}-{secrets.token_hex(3)}"
                try:
                    elapsed, counts = time_sweep(servers[label], password, root / "sweeps" / name, name,
                                                 args.trials, args.epochs, args.workers, args.timeout)
                except RuntimeError as err:  # reported and kept, then tried once more under a new name
                    last = [line for line in str(err).splitlines() if line.strip()][-1]
                    failures.append({"round": r + 1, "server": label, "error": last})
                    print(f"  round {r + 1}: {label}: FAILED ({last}); once more", flush=True)
                    name += "-again"
                    elapsed, counts = time_sweep(servers[label], password, root / "sweeps" / name, name,
                                                 args.trials, args.epochs, args.workers, args.timeout)
                sweeps[label].append(elapsed)
                requests[label].append(counts)
                print(f"  round {r + 1}: {label}: {elapsed:.2f} s, requests {counts}", flush=True)

        latencies = log_batch_latencies(servers, password, calls, args.metrics)
        rss = {label: peak_rss_mib(s) for label, s in servers.items()}
    hash_s = password_check_seconds()

    med_sweep = {label: statistics.median(v) for label, v in sweeps.items()}
    med_batch = {label: statistics.median(v) for label, v in latencies.items()}
    print(f"\n| server | sweep (median of {rounds}) | vs none | log_batch of {args.metrics} metrics (median of "
          f"{calls}) | vs none | server peak RSS |")
    print("|---|---|---|---|---|---|")
    for label in SERVERS:
        print(f"| {label} | {med_sweep[label]:.2f} s | {med_sweep[label] / med_sweep['none']:.2f}x | "
              f"{1000 * med_batch[label]:.1f} ms | {med_batch[label] / med_batch['none']:.2f}x | {rss[label]:.0f} MiB |")
    print("\nsweeps per round: " + "; ".join(f"{label} " + ", ".join(f"{t:.2f}" for t in v)
                                            for label, v in sweeps.items()))
    for label in SERVERS:
        if label != "none":
            n = statistics.median(sum(c.values()) for c in requests[label])
            extra = med_sweep[label] - med_sweep["none"]
            print(f"{label}: {n:.0f} requests per sweep (median); {extra:+.2f} s over none = "
                  f"{1000 * extra / n:+.1f} ms per request")
    for failure in failures:
        print(f"failed once, then repeated: round {failure['round']}, {failure['server']}: {failure['error']}")
    print(f"one check_password_hash in this process (werkzeug's default hash, a wrong password): {1000 * hash_s:.0f} ms")
    if args.out:
        args.out.write_text(json.dumps({
            "date": date.today().isoformat(), "cores": os.cpu_count(), "rounds": rounds, "trials": args.trials,
            "epochs": args.epochs, "workers": args.workers, "calls": calls, "metrics": args.metrics,
            "server_start_s": starts, "sweep_s": sweeps, "sweep_requests": requests, "failures": failures,
            "sweep_median_s": med_sweep,
            "log_batch_s": latencies, "log_batch_median_s": med_batch, "server_peak_rss_mib": rss,
            "check_password_hash_s": hash_s,
        }, indent=1))


if __name__ == "__main__":
    main()
